"""L2 capabilities: the torch/math facades, the RestrictedPython guards and builtins.

Jail side: built once in the warm parent (:func:`build_env`), used in each candidate's child.
Deny by default: every attribute the candidate reaches goes through ``guarded_getattr``, which
consults a per-type allowlist. Violations are recorded out of band (``Env.violations``) so a
candidate that catches the exception is still rejected.
"""
from __future__ import annotations

import math
import operator

import torch
from RestrictedPython.Guards import guarded_iter_unpack_sequence, guarded_unpack_sequence, safe_builtins
from RestrictedPython.transformer import INSPECT_ATTRIBUTES

Tensor = torch.Tensor


class PolicyViolation(Exception):
    """Raised when the candidate touches something outside its capabilities."""


# --------------------------------------------------------------------------- allowlists
TORCH_FUNCS = """
abs absolute acos acosh add addbmm addcdiv addcmul addmm addmv addr all allclose amax amin
aminmax angle any argmax argmin argsort argwhere asin asinh atan atan2 atanh atleast_1d
atleast_2d atleast_3d baddbmm bincount bitwise_and bitwise_not bitwise_or bitwise_xor
block_diag bmm broadcast_shapes broadcast_tensors broadcast_to bucketize cartesian_prod cat
cdist ceil chain_matmul cholesky chunk clamp clamp_max clamp_min clip clone column_stack
combinations concat concatenate conj copysign corrcoef cos cosh cosine_similarity
count_nonzero cov cross cummax cummin cumprod cumsum cumulative_trapezoid deg2rad det diag
diag_embed diagflat diagonal diff digamma dist div divide dot dsplit dstack einsum eq equal
erf erfc erfinv exp exp2 expm1 fix flatten flip fliplr flipud float_power floor floor_divide
fmax fmin fmod frac frexp gather gcd ge ger gradient greater greater_equal gt heaviside
histc hsplit hstack hypot i0 index_add index_copy index_fill index_put index_reduce
index_select inner inverse is_complex is_floating_point is_nonzero is_tensor isclose
isfinite isin isinf isnan isneginf isposinf isreal kron kthvalue lcm ldexp le lerp less
less_equal lgamma log log10 log1p log2 logaddexp logaddexp2 logcumsumexp logdet
logical_and logical_not logical_or logical_xor logit logsumexp lt lu_unpack masked_fill
masked_scatter masked_select matmul matrix_exp matrix_power max maximum mean median
meshgrid min minimum mm mode moveaxis movedim msort mul multiply mv mvlgamma nan_to_num
nanmean nanmedian nanquantile nansum narrow narrow_copy ne neg negative nextafter nonzero
norm not_equal numel outer permute pinverse polygamma positive pow prod promote_types
quantile rad2deg ravel real imag reciprocal relu remainder renorm repeat_interleave reshape
result_type roll rot90 round rsqrt scatter scatter_add scatter_reduce searchsorted select
select_scatter sgn sigmoid sign signbit sin sinc sinh slice_scatter slogdet softmax
log_softmax sort split sqrt square squeeze stack std std_mean sub subtract sum svd swapaxes
swapdims t take take_along_dim tan tanh tensor_split tensordot tile topk trace transpose
trapezoid trapz tril tril_indices triu triu_indices true_divide trunc unbind unflatten
unique unique_consecutive unravel_index unsqueeze vander var var_mean vdot view_as_real
view_as_complex vsplit vstack where xlogy can_cast is_same_size is_grad_enabled
""".split()

CREATION = {"zeros", "ones", "full", "empty", "arange", "linspace", "logspace", "eye",
            "tensor", "as_tensor", "zeros_like", "ones_like", "full_like", "empty_like",
            "scalar_tensor"}
RANDOM = {"rand", "randn", "randint", "randperm", "bernoulli", "normal", "multinomial",
          "poisson", "rand_like", "randn_like", "randint_like"}

DTYPE_ATTRS = """float32 float float64 double float16 half bfloat16 int8 int16 short int32 int
int64 long uint8 bool complex64 cfloat complex128 cdouble""".split()

LINALG_FUNCS = """cholesky cond cross det diagonal eig eigh eigvals eigvalsh inv lstsq lu
lu_factor matmul matrix_exp matrix_norm matrix_power matrix_rank multi_dot norm pinv qr
slogdet solve svd svdvals tensorinv tensorsolve vander vecdot vector_norm""".split()

NNF_FUNCS = """normalize cosine_similarity softmax log_softmax relu gelu sigmoid tanh
pairwise_distance pad one_hot silu softplus hardtanh threshold""".split()

FFT_FUNCS = """fft ifft rfft irfft fft2 ifft2 rfft2 irfft2 fftn ifftn rfftn irfftn fftfreq
rfftfreq fftshift ifftshift""".split()

TENSOR_ATTRS = set("""
abs abs_ absolute acos acos_ acosh add add_ addbmm addcdiv addcdiv_ addcmul addcmul_ addmm
addmv addr all allclose amax amin aminmax angle any argmax argmin argsort argwhere asin
asinh atan atan2 atanh bfloat16 bincount bitwise_and bitwise_not bitwise_or bitwise_xor
bmm bool broadcast_to byte ceil ceil_ char chunk clamp clamp_ clamp_max clamp_max_
clamp_min clamp_min_ clip clip_ clone conj contiguous copy_ copysign cos cosh count_nonzero
cov corrcoef cpu cross cummax cummin cumprod cumsum data deg2rad det detach device diag
diag_embed diagflat diagonal diff digamma dim dist div div_ divide dot double dsplit dtype
element_size eq eq_ equal erf erfinv exp exp_ expand expand_as expm1 fill_ fill_diagonal_
fix flatten flip fliplr flipud float float_power floor floor_ floor_divide fmax fmin fmod
frac gather gcd ge ge_ ger greater gt gt_ half hardshrink heaviside histc hsplit hypot i0
imag index_add index_add_ index_copy index_copy_ index_fill index_fill_ index_put
index_put_ index_reduce index_select inner int inverse is_complex is_contiguous
is_floating_point is_nonzero is_signed isclose isfinite isinf isnan isneginf isposinf
isreal item itemsize kron kthvalue layout lcm ldexp le le_ lerp lerp_ lgamma log log10
log1p log2 log_ log_softmax logaddexp logcumsumexp logdet logical_and logical_not
logical_or logical_xor logit logsumexp long lt lt_ masked_fill masked_fill_ masked_scatter
masked_scatter_ masked_select matmul matrix_exp matrix_power max maximum mean median min
minimum mm mode moveaxis movedim msort mT mH mul mul_ multiply mv nan_to_num nan_to_num_
nanmean nanmedian nanquantile nansum narrow narrow_copy nbytes ndim ndimension ne ne_ neg
neg_ negative nelement nextafter nonzero norm numel outer permute pinverse polygamma pow
pow_ prod quantile rad2deg ravel real reciprocal reciprocal_ relu relu_ remainder renorm
repeat repeat_interleave requires_grad reshape reshape_as roll rot90 round round_ rsqrt
scatter scatter_ scatter_add scatter_add_ scatter_reduce scatter_reduce_ select sgn
shape short sigmoid sigmoid_ sign sign_ signbit sin sin_ sinc sinh size slogdet softmax
sort split sqrt sqrt_ square square_ squeeze squeeze_ std stride sub sub_ subtract sum
sum_to_size svd swapaxes swapdims t t_ take take_along_dim tan tanh tanh_ tensor_split
tile tolist topk trace transpose transpose_ tril tril_ triu triu_ true_divide trunc
trunc_ type_as unbind unflatten unfold unique unique_consecutive unsqueeze unsqueeze_ var
vdot view view_as vsplit where xlogy zero_ T H is_sparse is_cuda is_leaf storage_offset
new_zeros new_ones new_full new_empty new_tensor to
""".split())
TENSOR_RANDOM = {"bernoulli", "bernoulli_", "uniform_", "normal_", "random_", "exponential_",
                 "geometric_", "cauchy_", "log_normal_", "multinomial"}

STR_ATTRS = set("""lower upper strip lstrip rstrip split rsplit join startswith endswith
replace find rfind index rindex count isdigit isalpha isalnum isspace isnumeric isdecimal
isupper islower title capitalize zfill partition rpartition splitlines center ljust rjust
casefold swapcase removeprefix removesuffix expandtabs format""".split())
TYPE_ATTRS = {
    dict: {"keys", "values", "items", "get", "copy", "pop", "setdefault", "update", "clear", "popitem"},
    list: {"append", "extend", "insert", "pop", "remove", "index", "count", "sort", "reverse", "copy", "clear"},
    tuple: {"count", "index"},
    set: {"add", "update", "union", "intersection", "difference", "symmetric_difference",
          "discard", "remove", "issubset", "issuperset", "isdisjoint", "copy", "pop", "clear",
          "intersection_update", "difference_update"},
    frozenset: {"union", "intersection", "difference", "symmetric_difference", "issubset",
                "issuperset", "isdisjoint", "copy"},
    int: {"real", "imag", "conjugate", "bit_length", "numerator", "denominator"},
    bool: {"real", "imag"},
    float: {"real", "imag", "conjugate", "is_integer", "as_integer_ratio"},
    complex: {"real", "imag", "conjugate"},
    range: {"start", "stop", "step", "count", "index"},
    slice: {"start", "stop", "step"},
    torch.Size: {"numel", "count", "index"},
    torch.dtype: {"is_floating_point", "is_complex", "is_signed", "itemsize"},
    torch.device: {"type", "index"},
    torch.finfo: {"bits", "eps", "max", "min", "tiny", "smallest_normal", "resolution", "dtype"},
    torch.iinfo: {"bits", "max", "min", "dtype"},
    torch.Generator: {"manual_seed", "initial_seed"},
}
GETITEM_TYPES = (dict, list, tuple, str, range, Tensor, torch.Size)


class Env:
    """Per-candidate mutable state (lives only in the child)."""

    def __init__(self, numel_cap: int, print_cap: int = 64 * 1024):
        self.violations: list[str] = []
        self.numel_cap = numel_cap
        self.result_cap = None  # the torch function mode of _make_result_cap (set by build_env)
        self.print_cap = print_cap
        self.printed: list[str] = []
        self.printed_len = 0
        self.truncated = 0

    def violate(self, msg: str) -> PolicyViolation:
        if len(self.violations) < 20:
            self.violations.append(msg[:300])
        return PolicyViolation(msg)

    def write_out(self, s: str) -> None:
        room = self.print_cap - self.printed_len
        if room <= 0:
            self.truncated += len(s)
            return
        if len(s) > room:
            self.truncated += len(s) - room
            s = s[:room]
        self.printed.append(s)
        self.printed_len += len(s)

    # the checks shared by the facade's wrappers; each raises ``self.violate(...)``
    def cap(self, n: int, what: str) -> None:
        if n > self.numel_cap:
            raise self.violate(f"{what}: {n} elements requested (cap {self.numel_cap})")

    def check_device(self, kwargs: dict, what: str) -> None:
        dev = kwargs.get("device")
        if dev is not None and str(dev) != "cpu":
            raise self.violate(f"{what}: only device='cpu' is available")
        if kwargs.get("pin_memory"):
            raise self.violate(f"{what}: pin_memory is not allowed")
        if "out" in kwargs and not isinstance(kwargs["out"], Tensor):
            raise self.violate(f"{what}: out= must be a tensor")

    def need_gen(self, kwargs: dict, what: str) -> None:
        g = kwargs.get("generator")
        if not isinstance(g, torch.Generator):
            raise self.violate(f"{what}: random functions need a seeded torch.Generator (pass generator=g)")


class Facade:
    """A namespace object whose attributes are vetted callables/values only."""

    __slots__ = ("_name", "_attrs")

    def __init__(self, name: str, attrs: dict):
        object.__setattr__(self, "_name", name)
        object.__setattr__(self, "_attrs", dict(attrs))

    def __getattr__(self, item):
        attrs = object.__getattribute__(self, "_attrs")
        if item in attrs:
            return attrs[item]
        raise AttributeError(f"module {object.__getattribute__(self, '_name')!r} has no attribute {item!r} in the sandbox")

    def __setattr__(self, key, value):
        raise AttributeError("the sandbox's modules are read-only")

    def __delattr__(self, item):
        raise AttributeError("the sandbox's modules are read-only")

    def __repr__(self):
        return f"<sandboxed module {object.__getattribute__(self, '_name')!r}>"

    def __dir__(self):
        return sorted(object.__getattribute__(self, "_attrs"))


def _size_numel(args, kwargs) -> int:
    size = kwargs.get("size")
    if size is None:
        if len(args) == 1 and isinstance(args[0], (list, tuple, torch.Size)):
            size = args[0]
        else:
            size = [a for a in args if isinstance(a, int) and not isinstance(a, bool)]
    if isinstance(size, int):
        size = [size]
    n = 1
    for s in size:
        n *= max(int(s), 0)
    return n


RETURN_TYPE_FIELDS = frozenset((
    "values", "indices", "U", "S", "Vh", "V", "Q", "R", "L", "eigenvalues", "eigenvectors",
    "solution", "residuals", "rank", "singular_values", "sign", "logabsdet", "mantissa",
    "exponent", "LU", "pivots", "P", "counts", "inverse_indices", "output", "info"))

_IOPS = {"+=": operator.iadd, "-=": operator.isub, "*=": operator.imul, "/=": operator.itruediv,
         "//=": operator.ifloordiv, "%=": operator.imod, "**=": operator.ipow, "@=": operator.imatmul,
         "&=": operator.iand, "|=": operator.ior, "^=": operator.ixor, "<<=": operator.ilshift,
         ">>=": operator.irshift}


# Deliberately closures. The candidate receives functions only (the guards below, under
# ``_``-names it cannot even spell, and the wrapped torch functions in the facades), and a
# function gives it no attribute at all: guarded_getattr allows none on function objects, and
# ``__closure__``, ``__globals__`` and ``__self__`` are dunders the static policy rejects. So
# what the guards consult (the Env and its violation list, the real torch functions behind
# the wrappers, the id table of genuine facades, the builtins) is never reachable as data: a
# candidate cannot, say, empty ``env.violations`` after catching a PolicyViolation. Guard
# objects with methods would hold the same only as long as no allowlist ever named their type.
# The _make_* helpers split the closure by topic without changing that: each returns closures
# over the same Env, and they are module globals, reachable only through ``__globals__``.
def build_env(numel_cap: int):
    """One candidate environment: ``(env, make_globals)``. Built once in the warm parent; each
    forked child gets its own copy (its own Env, its own violations and printed output)."""
    env = Env(numel_cap)
    env.result_cap = _make_result_cap(env)
    modules, facades = _make_modules(env)
    tensor_attr = _make_tensor_attr(env)
    guarded_getattr = _make_getattr(env, facades, tensor_attr)
    template = _make_guards(env, modules, guarded_getattr)

    def make_globals():
        return dict(template)

    return env, make_globals


def _make_result_cap(env: Env):
    """The element cap on every path, as a torch function mode the child enters around the
    candidate: each torch function, tensor method, operator and index the candidate runs
    has its tensor results checked against ``env.numel_cap``. The wrappers below refuse
    oversized *requests* before anything is allocated; this catches the rest: views that
    promise more elements than exist (``expand``, ``broadcast_to``, ``unfold``), checked
    before any later op materialises them, and ops whose output outgrows their inputs
    (broadcasting, ``outer``, ``kron``, ``pad``...), checked as they return (their one
    allocation is bounded by the address-space limit)."""
    from torch.overrides import TorchFunctionMode

    cap = env.numel_cap

    def check(x, func) -> None:
        if isinstance(x, Tensor):
            n = x.numel()
            if n > cap:
                name = getattr(func, "__name__", None) or "a torch operation"
                raise env.violate(f"{name}: a tensor of {n} elements (cap {cap})")
        elif type(x) in (tuple, list) or type(x).__module__ == "torch.return_types":
            for y in x:
                if isinstance(y, Tensor):
                    check(y, func)

    class ElementCap(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            out = func(*args, **kwargs) if kwargs else func(*args)
            if type(out) is Tensor:  # the common case, kept cheap (~1.5 us per op in all)
                if out.numel() > cap:
                    check(out, func)
            elif out is not None:
                check(out, func)
            return out

    return ElementCap()


def _make_modules(env: Env) -> tuple[dict, dict]:
    """The torch and math facades: (import name -> facade, id -> every genuine facade)."""
    def wrap_creation(fname):
        real = getattr(torch, fname)
        target = {"empty": torch.zeros, "empty_like": torch.zeros_like}.get(fname, real)

        def f(*args, **kwargs):
            env.check_device(kwargs, f"torch.{fname}")
            if fname in ("zeros", "ones", "empty", "full"):
                a = args[:-1] if fname == "full" and "fill_value" not in kwargs else args
                if fname == "full" and "size" in kwargs:
                    a = ()
                env.cap(_size_numel(a, kwargs), f"torch.{fname}")
            elif fname == "eye":
                n = int(args[0] if args else kwargs.get("n", 0))
                m = int(args[1] if len(args) > 1 else kwargs.get("m", n) or n)
                env.cap(n * m, "torch.eye")
            elif fname == "arange":
                nums = [float(a) for a in args if isinstance(a, (int, float))]
                if len(nums) == 1:
                    start, end, step = 0.0, nums[0], 1.0
                else:
                    start, end = (nums + [0.0, 0.0])[:2]
                    step = nums[2] if len(nums) > 2 else float(kwargs.get("step", 1))
                    if "end" in kwargs:
                        end = float(kwargs["end"])
                if step == 0 or not all(map(math.isfinite, (start, end, step))):
                    raise env.violate("torch.arange: bad range")
                env.cap(int(max(0, math.ceil((end - start) / step))), "torch.arange")
            elif fname in ("linspace", "logspace"):
                steps = args[2] if len(args) > 2 else kwargs.get("steps", 0)
                env.cap(int(steps), f"torch.{fname}")
            return target(*args, **kwargs)

        f.__name__ = fname
        return f

    def wrap_random(fname):
        real = getattr(torch, fname)

        def f(*args, **kwargs):
            env.check_device(kwargs, f"torch.{fname}")
            env.need_gen(kwargs, f"torch.{fname}")
            if fname in ("rand", "randn"):
                env.cap(_size_numel(args, kwargs), f"torch.{fname}")
            elif fname == "randint":
                size = kwargs.get("size", args[-1] if args and isinstance(args[-1], (tuple, list, torch.Size)) else ())
                env.cap(_size_numel((size,), {}), "torch.randint")
            elif fname == "randperm":
                env.cap(int(args[0] if args else kwargs.get("n", 0)), "torch.randperm")
            elif fname == "normal" and "size" in kwargs:
                env.cap(_size_numel((), kwargs), "torch.normal")
            return real(*args, **kwargs)

        f.__name__ = fname
        return f

    def forbidden(fname, why):
        def f(*a, **k):
            raise env.violate(f"{fname} is not allowed in the sandbox: {why}")
        return f

    tattrs = {n: getattr(torch, n) for n in TORCH_FUNCS if hasattr(torch, n)}
    for n in CREATION:
        tattrs[n] = wrap_creation(n)
    for n in RANDOM:
        if hasattr(torch, n):
            tattrs[n] = wrap_random(n)
    for n in DTYPE_ATTRS:
        tattrs[n] = getattr(torch, n)
    class _TensorTypeMeta(type):
        def __instancecheck__(cls, obj):
            return isinstance(obj, Tensor)

        def __subclasscheck__(cls, sub):
            return isinstance(sub, type) and issubclass(sub, Tensor)

        def __call__(cls, *a, **k):
            raise env.violate("torch.Tensor(...) is not allowed; use torch.zeros/torch.tensor")

    class TensorType(metaclass=_TensorTypeMeta):
        """Stands in for ``torch.Tensor`` in isinstance checks only."""

    class _GeneratorTypeMeta(type):
        def __instancecheck__(cls, obj):
            return isinstance(obj, torch.Generator)

        def __call__(cls, device="cpu"):
            if str(device) != "cpu":
                raise env.violate("torch.Generator: only device='cpu' is available")
            return torch.Generator()

    class GeneratorType(metaclass=_GeneratorTypeMeta):
        pass

    tattrs["Tensor"] = TensorType
    tattrs["Generator"] = GeneratorType
    tattrs["Size"] = torch.Size
    tattrs["finfo"] = torch.finfo
    tattrs["iinfo"] = torch.iinfo
    tattrs["no_grad"] = torch.no_grad
    tattrs["inference_mode"] = torch.inference_mode
    tattrs["pi"] = math.pi
    tattrs["e"] = math.e
    tattrs["inf"] = math.inf
    tattrs["nan"] = math.nan
    tattrs["strided"] = torch.strided
    tattrs["get_num_threads"] = torch.get_num_threads
    tattrs["device"] = lambda d="cpu": torch.device("cpu") if str(d) == "cpu" else (_ for _ in ()).throw(env.violate("torch.device: only 'cpu'"))
    tattrs["manual_seed"] = forbidden("torch.manual_seed", "use g = torch.Generator().manual_seed(seed) and pass generator=g")
    tattrs["seed"] = forbidden("torch.seed", "use a seeded torch.Generator")
    tattrs["dropout"] = forbidden("torch.dropout", "uses the global RNG; use torch.bernoulli(p, generator=g)")
    linalg = Facade("torch.linalg", {n: getattr(torch.linalg, n) for n in LINALG_FUNCS if hasattr(torch.linalg, n)})
    nnf = Facade("torch.nn.functional", {n: getattr(torch.nn.functional, n) for n in NNF_FUNCS if hasattr(torch.nn.functional, n)})
    nn = Facade("torch.nn", {"functional": nnf})
    fft = Facade("torch.fft", {n: getattr(torch.fft, n) for n in FFT_FUNCS if hasattr(torch.fft, n)})
    tattrs["linalg"] = linalg
    tattrs["nn"] = nn
    tattrs["fft"] = fft
    torch_facade = Facade("torch", tattrs)
    math_facade = Facade("math", {n: getattr(math, n) for n in dir(math) if not n.startswith("_")})
    modules = {"torch": torch_facade, "math": math_facade, "torch.linalg": torch_facade,
               "torch.nn": torch_facade, "torch.nn.functional": torch_facade, "torch.fft": torch_facade}
    facades = {id(torch_facade): torch_facade, id(math_facade): math_facade, id(linalg): linalg,
               id(nnf): nnf, id(nn): nn, id(fft): fft}
    return modules, facades


def _make_tensor_attr(env: Env):
    """``tensor_attr(t, name)``: an allowed tensor attribute, wrapped where it needs checks."""
    def tensor_random(t, name):
        meth = getattr(t, name)

        def f(*args, **kwargs):
            env.need_gen(kwargs, f"Tensor.{name}")
            return meth(*args, **kwargs)
        return f

    def tensor_to(t):
        def f(*args, **kwargs):
            for a in list(args) + list(kwargs.values()):
                if isinstance(a, (torch.dtype, Tensor, bool)) or a is None:
                    continue
                if isinstance(a, (str, torch.device)) and str(a) == "cpu":
                    continue
                raise env.violate("Tensor.to: only dtypes (and device 'cpu') are allowed")
            return t.to(*args, **kwargs)
        return f

    def tensor_new(t, name):
        meth = getattr(t, name)

        def f(*args, **kwargs):
            env.check_device(kwargs, f"Tensor.{name}")
            if name != "new_tensor":
                a = args[:-1] if name == "new_full" else args
                env.cap(_size_numel(a, kwargs), f"Tensor.{name}")
            return meth(*args, **kwargs)
        return f

    def tensor_repeat(t):
        def f(*sizes):
            reps = sizes[0] if len(sizes) == 1 and isinstance(sizes[0], (tuple, list, torch.Size)) else sizes
            n = t.numel()
            for r in reps:
                n *= max(int(r), 0)
            env.cap(n, "Tensor.repeat")
            return t.repeat(*sizes)
        return f

    def tensor_attr(t, name):
        if name in TENSOR_RANDOM:
            return tensor_random(t, name)
        if name in TENSOR_ATTRS:
            if name == "to":
                return tensor_to(t)
            if name.startswith("new_"):
                return tensor_new(t, name)
            if name == "repeat":
                return tensor_repeat(t)
            return getattr(t, name)
        raise env.violate(f"Tensor attribute {name!r} is not allowed in the sandbox")

    return tensor_attr


def _make_getattr(env: Env, facades: dict, tensor_attr):
    """``_getattr_``: every attribute the candidate reads, against a per-type allowlist."""
    def safe_format(s):
        import string

        def f(*args, **kwargs):
            for _lit, field, spec, _conv in string.Formatter().parse(s):
                for part in (field or "", spec or ""):
                    if "." in (field or "") or "[" in (field or "") or "{" in (spec or ""):
                        raise env.violate("str.format with attribute/index lookups is not allowed; use an f-string")
            return s.format(*args, **kwargs)
        return f

    def guarded_getattr(obj, name, *default):
        if type(name) is not str:
            raise env.violate("attribute name must be a str")
        if name.startswith("_") or name in INSPECT_ATTRIBUTES:
            raise env.violate(f"attribute {name!r} is not allowed")
        tp = type(obj)
        if tp is Facade:
            if id(obj) in facades:
                try:
                    return getattr(obj, name)
                except AttributeError:
                    if default:
                        return default[0]
                    raise env.violate(f"{obj!r} has no attribute {name!r} in the sandbox")
        if isinstance(obj, Tensor):
            if tp is not Tensor and tp is not torch.nn.Parameter:
                raise env.violate(f"tensor subclass {tp.__name__} is not allowed")
            return tensor_attr(obj, name)
        if tp is str:
            if name == "format":
                return safe_format(obj)
            if name in STR_ATTRS:
                return getattr(obj, name)
            raise env.violate(f"str attribute {name!r} is not allowed")
        allowed = TYPE_ATTRS.get(tp)
        if allowed is not None and name in allowed:
            return getattr(obj, name)
        if tp.__module__ == "torch.return_types" and isinstance(obj, tuple):
            if name in RETURN_TYPE_FIELDS:
                return getattr(obj, name)
        if isinstance(obj, BaseException) and name == "args":
            return obj.args
        raise env.violate(f"attribute {name!r} of {tp.__name__!r} objects is not allowed in the sandbox")

    return guarded_getattr


def _make_guards(env: Env, modules: dict, guarded_getattr) -> dict:
    """The globals RestrictedPython's compiled code calls (``_getattr_``, ``_write_``, ...)
    and the candidate's builtins."""
    def guarded_getitem(obj, key):
        if isinstance(obj, GETITEM_TYPES) or type(obj).__module__ == "torch.return_types":
            if isinstance(obj, Tensor) and type(obj) is not Tensor:
                raise env.violate("tensor subclass indexing is not allowed")
            return obj[key]
        raise env.violate(f"indexing {type(obj).__name__!r} objects is not allowed")

    class _TensorWriter:
        __slots__ = ("t",)

        def __init__(self, t):
            object.__setattr__(self, "t", t)

        def __setitem__(self, k, v):
            object.__getattribute__(self, "t")[k] = v

        def __setattr__(self, k, v):
            raise env.violate(f"setting tensor attribute {k!r} is not allowed")

        def __delattr__(self, k):
            raise env.violate("deleting tensor attributes is not allowed")

    def guarded_write(obj):
        tp = type(obj)
        if tp is dict or tp is list:
            return obj
        if tp is Tensor:
            return _TensorWriter(obj)
        raise env.violate(f"writing to {tp.__name__!r} objects is not allowed")

    def inplacevar(op, x, y):
        f = _IOPS.get(op)
        if f is None:
            raise env.violate(f"operator {op} is not allowed")
        return f(x, y)

    def guarded_import(name, globals=None, locals=None, fromlist=(), level=0):
        if level != 0 or name not in modules:
            raise env.violate(f"import of {name!r} is not allowed")
        return modules[name]

    class PrintCollector:
        def __init__(self, _getattr_=None):
            pass

        def write(self, s):
            env.write_out(str(s))

        def __call__(self):
            return "".join(env.printed)

        def _call_print(self, *objects, **kwargs):
            kwargs["file"] = self
            kwargs.pop("flush", None)
            print(*objects, **kwargs)

    def apply(f, *a, **kw):
        return f(*a, **kw)

    def guarded_iter(ob):
        return iter(ob)

    b = dict(safe_builtins)
    for n in ("setattr", "delattr", "id", "issubclass", "callable", "__build_class__"):
        b.pop(n, None)
    b.update({
        "min": min, "max": max, "sum": sum, "enumerate": enumerate, "sorted": sorted, "zip": zip,
        "list": list, "dict": dict, "tuple": tuple, "set": set, "frozenset": frozenset,
        "any": any, "all": all, "abs": abs, "round": round, "len": len, "range": range,
        "float": float, "int": int, "bool": bool, "str": str, "isinstance": isinstance,
        "reversed": reversed, "map": map, "filter": filter, "divmod": divmod, "pow": pow,
        "complex": complex, "repr": repr, "hash": hash, "chr": chr, "ord": ord, "slice": slice,
        "ArithmeticError": ArithmeticError, "AssertionError": AssertionError,
        "Exception": Exception, "IndexError": IndexError, "KeyError": KeyError,
        "LookupError": LookupError, "NotImplementedError": NotImplementedError,
        "OverflowError": OverflowError, "RuntimeError": RuntimeError, "TypeError": TypeError,
        "ValueError": ValueError, "ZeroDivisionError": ZeroDivisionError,
        "FloatingPointError": FloatingPointError, "StopIteration": StopIteration,
        "__import__": guarded_import,
    })
    return {
        "__builtins__": b,
        "__name__": "candidate",
        "_getattr_": guarded_getattr,
        "_getitem_": guarded_getitem,
        "_write_": guarded_write,
        "_getiter_": guarded_iter,
        "_inplacevar_": inplacevar,
        "_iter_unpack_sequence_": guarded_iter_unpack_sequence,
        "_unpack_sequence_": guarded_unpack_sequence,
        "_apply_": apply,
        "_print_": PrintCollector,
    }
