"""Benign merges keep working and return exactly what the same code returns unsandboxed."""

import pytest
import torch

from sandbox_helpers import TIES, src

TASK_ARITHMETIC = src("""
lam = 0.3
return lam * sum(task_vectors.values())
""")

DARE = src("""
p = 0.5
seed = sum(ord(c) for c in name)
g = torch.Generator()
g.manual_seed(seed)
out = torch.zeros_like(base)
for e in sorted(task_vectors):
    tv = task_vectors[e]
    keep = torch.bernoulli(torch.full_like(tv, 1 - p), generator=g)
    out += tv * keep / (1 - p)
return out / len(task_vectors)
""")

SLERP = src("""
names = sorted(task_vectors)
a, b = task_vectors[names[0]].flatten(), task_vectors[names[1]].flatten()
t = 0.5
na, nb = a.norm().item(), b.norm().item()
if na == 0 or nb == 0:
    return (1 - t) * task_vectors[names[0]] + t * task_vectors[names[1]]
cos = max(-1.0, min(1.0, float((a @ b).item()) / (na * nb)))
omega = math.acos(cos)
if abs(math.sin(omega)) < 1e-6:
    out = (1 - t) * a + t * b
else:
    s = math.sin(omega)
    out = (math.sin((1 - t) * omega) / s) * a + (math.sin(t * omega) / s) * b
return out.reshape(base.shape)
""")

MAGNITUDE = src("""
merged = sum(task_vectors.values()) / len(task_vectors)
flat = merged.abs().flatten()
k = max(1, int(0.3 * flat.numel()))
thr = flat.kthvalue(flat.numel() - k + 1).values
return torch.where(merged.abs() >= thr, merged, torch.zeros_like(merged))
""")

BREADCRUMBS = src("""
out = torch.zeros_like(base)
for e, tv in sorted(task_vectors.items()):
    flat = tv.flatten().clone()
    order = torch.sort(flat.abs()).indices
    n = flat.numel()
    lo, hi = int(0.1 * n), int(0.9 * n)
    mask = torch.zeros(n, dtype=torch.bool)
    mask[order[lo:hi]] = True
    flat[~mask] = 0.0
    out += flat.reshape(base.shape)
return out / len(task_vectors)
""")

LOW_RANK = src("""
merged = sum(task_vectors.values())
if merged.dim() != 2:
    return merged / len(task_vectors)
U, S, Vh = torch.linalg.svd(merged, full_matrices=False)
r = max(1, min(merged.shape) // 4)
return (U[:, :r] * S[:r]) @ Vh[:r, :] / len(task_vectors)
""")

PYTHONIC = '''
import torch
import math

SCALE = 0.5


def helper(x, *, power=2):
    return x ** power


def merge_models(task_vectors, base, name):
    """Ordinary Python all over."""
    items = sorted(task_vectors.items())
    norms = [(e, float(t.norm())) for e, t in items]
    ranked = sorted(norms, key=lambda p: p[1], reverse=True)
    weights = {e: w for e, w in zip([e for e, _ in ranked], [3, 2, 1])}
    total = 0
    for i, (e, t) in enumerate(items):
        total += weights.get(e, 1) * t
    biggest = max(n for _, n in norms)
    smallest = min(n for _, n in norms)
    if any(n > 1e6 for _, n in norms) or not all(n >= 0 for _, n in norms):
        raise ValueError("weird norms")
    try:
        ratio = biggest / smallest
    except ZeroDivisionError:
        ratio = 1.0
    squares = [helper(k, power=2) for k in range(3)]
    a, b, *rest = squares
    total = total * (SCALE / sum(weights.values()))
    acc = 0
    acc += a + b
    flags = {k: v for k, v in enumerate(rest)}
    print(f"{name}: ratio={ratio:.3f} shape={tuple(base.shape)} acc={acc} {flags}")
    print("%s done" % name, len(items))
    out = total.clone()
    out[0] = out[0] * 1.0
    return out
'''

BENIGN = {
    "task_arithmetic": TASK_ARITHMETIC, "ties": TIES, "dare": DARE, "slerp": SLERP,
    "magnitude": MAGNITUDE, "breadcrumbs": BREADCRUMBS, "low_rank_svd": LOW_RANK, "pythonic": PYTHONIC,
}


def run_unsandboxed(code, base, tvs):
    """The reference: the same code executed with the real torch, in-process."""
    ns = {}
    exec(compile(code, "<ref>", "exec"), ns)
    out = {}
    for n in base:
        out[n] = ns["merge_models"]({e: tvs[e][n].clone() for e in tvs}, base[n].clone(), n)
    return out


@pytest.mark.parametrize("kind", sorted(BENIGN))
def test_benign_merge_matches_unsandboxed(sb, inputs, kind, capsys):
    base, tvs = inputs
    code = BENIGN[kind]
    res = sb.run(code)
    assert res.status == "ok", (res.status, res.reason)
    old = torch.get_num_threads()
    torch.set_num_threads(1)  # the sandbox child runs single-threaded
    try:
        ref = run_unsandboxed(code, base, tvs)
    finally:
        torch.set_num_threads(old)
    assert set(res.tensors) == set(base)
    for n in base:
        got = res.tensors[n]
        assert got.dtype == base[n].dtype and got.shape == base[n].shape
        assert torch.equal(got, ref[n]), f"{kind}: {n} differs from the unsandboxed result"


def test_print_is_captured(sb):
    res = sb.run(PYTHONIC)
    assert res.status == "ok"
    assert "fc1.weight: ratio=" in res.stdout and "done 3" in res.stdout


def test_inputs_are_copies_and_not_shared_between_candidates(sb, inputs):
    base, tvs = inputs
    vandal = src("""
for t in task_vectors.values():
    t.zero_()
    t.add_(1000.0)
base.fill_(7.0)
return base * 0
""")
    assert sb.run(vandal).status == "ok"
    # host tensors untouched
    assert float(base["fc1.bias"].abs().max()) < 100
    # and the next candidate sees pristine inputs
    res = sb.run(TASK_ARITHMETIC)
    ref = run_unsandboxed(TASK_ARITHMETIC, base, tvs)
    assert all(torch.equal(res.tensors[n], ref[n]) for n in base)


def test_dtypes_other_than_float32():
    from selfdev.sandbox import Sandbox
    base = {"h": torch.randn(8, 8).to(torch.bfloat16), "d": torch.randn(5, dtype=torch.float64),
            "i": torch.arange(6, dtype=torch.int64), "m": torch.tensor([True, False, True])}
    tvs = {"a": {k: v.clone() for k, v in base.items()}, "b": {k: v.clone() for k, v in base.items()}}
    code = src("return task_vectors['a'].clone()")
    with Sandbox(base, tvs, timeout=10) as s:
        res = s.run(code)
    assert res.status == "ok", res.reason
    for k in base:
        assert res.tensors[k].dtype == base[k].dtype
        assert torch.equal(res.tensors[k], base[k])


def test_math_and_torch_facade_values(sb):
    code = src("""
assert math.pi == torch.pi
g = torch.Generator().manual_seed(3)
r = torch.rand(base.shape, generator=g)
assert isinstance(base, torch.Tensor) and isinstance(g, torch.Generator)
assert base.dtype == torch.float32 and base.device.type == 'cpu'
info = torch.finfo(base.dtype)
return torch.zeros_like(base) + 0 * r + 0 * info.eps
""")
    res = sb.run(code)
    assert res.status == "ok", res.reason


def test_from_imports_and_aliases(sb, inputs):
    code = ("import torch as T\nfrom math import sqrt\nimport torch.nn.functional as F\nfrom torch import linalg\n"
            "def merge_models(task_vectors, base, name):\n"
            "    m = T.stack(list(task_vectors.values())).mean(0)\n"
            "    n = linalg.vector_norm(m) + F.relu(m).sum() * 0\n"
            "    return m * (sqrt(4.0) / 2.0) + 0 * n\n")
    res = sb.run(code)
    assert res.status == "ok", res.reason
