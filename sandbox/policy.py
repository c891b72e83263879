"""L1 static policy: size and AST limits, our own AST pass, RestrictedPython compile.

No torch import here: screening is cheap and runs in the trusted supervisor.
"""
from __future__ import annotations

import ast
import functools
import hashlib
import re
import textwrap
import warnings
from dataclasses import dataclass

from RestrictedPython import compile_restricted

MAX_SOURCE_BYTES = 64 * 1024
MAX_NODES = 20_000
MAX_DEPTH = 80

ALLOWED_IMPORTS = {"torch", "math", "torch.linalg", "torch.nn", "torch.nn.functional", "torch.fft"}

FORBIDDEN_NAMES = {
    "exec", "eval", "compile", "open", "getattr", "setattr", "delattr", "hasattr", "type",
    "vars", "globals", "locals", "dir", "breakpoint", "input", "memoryview", "help", "super",
    "object", "classmethod", "staticmethod", "property",
}
# attributes that only ever lead out of the sandbox (the runtime allowlist blocks them too;
# rejecting them statically gives a precise reason early)
FORBIDDEN_ATTRS = {
    "numpy", "untyped_storage", "storage", "typed_storage", "from_file", "data_ptr",
    "share_memory_", "tofile", "dump", "dumps", "load", "save", "os", "sys", "builtins",
    "ctypes", "importlib", "subprocess", "hub", "serialization", "multiprocessing",
    "distributed", "jit", "package", "ops", "classes", "cpp_extension", "utils", "compile",
    "format_map", "set_", "resize_", "as_strided", "register_hook", "backward", "apply_",
    "map_", "map2_", "gi_frame", "gi_code", "f_back", "f_globals", "f_locals", "f_builtins",
    "tb_frame", "tb_next", "cr_frame", "ag_frame", "mro", "system", "popen",
    "set_num_threads", "set_default_dtype", "set_default_tensor_type", "set_printoptions",
    "from_numpy", "frombuffer", "from_dlpack", "to_dlpack", "pin_memory", "cuda", "is_shared",
    "filename", "library", "profiler", "autograd", "fx", "export", "onnx", "backends",
    "set_grad_enabled", "use_deterministic_algorithms", "dropout",
}
ALLOWED_DECORATORS = {"torch.no_grad", "torch.inference_mode"}
ARG_NAMES = ("task_vectors", "base", "name")


@dataclass(frozen=True)
class ScreenResult:
    ok: bool
    reason: str | None
    ast_hash: str | None


class _Reject(Exception):
    pass


def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = _dotted(node.value)
        return None if inner is None else inner + "." + node.attr
    return None


def _line(node: ast.AST) -> str:
    n = getattr(node, "lineno", None)
    return f"line {n}: " if n else ""


def _check_ident(name: str | None, node: ast.AST, what: str) -> None:
    if name is None or name == "_":  # the conventional throw-away name is fine
        return
    if "__" in name:
        raise _Reject(f"{_line(node)}dunder {what} {name!r} is not allowed")
    if name.startswith("_"):
        raise _Reject(f"{_line(node)}{what} {name!r} starts with an underscore (not allowed)")


def _iter_depth(tree: ast.AST) -> tuple[list, int]:
    """(all nodes, max depth), computed iteratively (no recursion on hostile input)."""
    stack = [(tree, 1)]
    nodes = []
    depth = 0
    iter_fields = ast.iter_fields
    AST = ast.AST
    while stack:
        node, d = stack.pop()
        nodes.append(node)
        if d > depth:
            depth = d
        if len(nodes) > MAX_NODES or depth > MAX_DEPTH:
            return nodes, depth
        d += 1
        for _name, field in iter_fields(node):
            if isinstance(field, AST):
                stack.append((field, d))
            elif isinstance(field, list):
                for item in field:
                    if isinstance(item, AST):
                        stack.append((item, d))
    return nodes, depth


def _check_tree(tree: ast.Module, nodes: list) -> None:
    merges = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == "merge_models"]
    all_merges = [n for n in nodes if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and n.name == "merge_models"]
    if not merges:
        raise _Reject("no top-level function merge_models(task_vectors, base, name) defined")
    if len(all_merges) != 1:
        raise _Reject(f"merge_models is defined {len(all_merges)} times (exactly one definition required)")
    fn = merges[0]
    if isinstance(fn, ast.AsyncFunctionDef):
        raise _Reject(f"{_line(fn)}merge_models must not be async")
    a = fn.args
    pos = [x.arg for x in a.posonlyargs + a.args]
    if a.vararg or a.kwarg or tuple(pos[:3]) != ARG_NAMES:
        raise _Reject(f"{_line(fn)}merge_models must have the signature (task_vectors, base, name); got ({', '.join(pos)})")
    n_defaults = len(a.defaults)
    if len(pos) - n_defaults > 3 or any(d is None for d in a.kw_defaults):
        raise _Reject(f"{_line(fn)}merge_models: parameters after (task_vectors, base, name) need defaults")

    for node in nodes:
        if isinstance(node, (ast.Yield, ast.YieldFrom)):
            raise _Reject(f"{_line(node)}generators (yield) are not allowed")
        if isinstance(node, (ast.Await, ast.AsyncFor, ast.AsyncWith, ast.AsyncFunctionDef)):
            raise _Reject(f"{_line(node)}async code is not allowed")
        if isinstance(node, ast.ClassDef):
            raise _Reject(f"{_line(node)}class definitions are not allowed")
        if isinstance(node, (ast.Global, ast.Nonlocal)):
            for nm in node.names:
                _check_ident(nm, node, "name")
        if isinstance(node, ast.Import):
            for al in node.names:
                if al.name not in ALLOWED_IMPORTS:
                    raise _Reject(f"{_line(node)}import of {al.name!r} is not allowed (only torch and math)")
                _check_ident(al.asname, node, "import alias")
        elif isinstance(node, ast.ImportFrom):
            if node.level or node.module not in ALLOWED_IMPORTS:
                raise _Reject(f"{_line(node)}import from {node.module!r} is not allowed (only torch and math)")
            for al in node.names:
                if al.name == "*":
                    raise _Reject(f"{_line(node)}star imports are not allowed")
                _check_ident(al.name, node, "imported name")
                _check_ident(al.asname, node, "import alias")
                if al.name in FORBIDDEN_ATTRS:
                    raise _Reject(f"{_line(node)}importing {node.module}.{al.name} is not allowed")
        elif isinstance(node, ast.Name):
            _check_ident(node.id, node, "name")
            if node.id in FORBIDDEN_NAMES:
                raise _Reject(f"{_line(node)}use of {node.id!r} is not allowed")
        elif isinstance(node, ast.Attribute):
            _check_ident(node.attr, node, "attribute")
            if node.attr in FORBIDDEN_ATTRS:
                raise _Reject(f"{_line(node)}attribute {node.attr!r} is not allowed")
        elif isinstance(node, ast.arg):
            _check_ident(node.arg, node, "argument")
        elif isinstance(node, ast.keyword):
            _check_ident(node.arg, node, "keyword")
        elif isinstance(node, (ast.FunctionDef, ast.Lambda)):
            if isinstance(node, ast.FunctionDef):
                _check_ident(node.name, node, "function name")
                for dec in node.decorator_list:
                    target = dec.func if isinstance(dec, ast.Call) else dec
                    dn = _dotted(target)
                    if dn not in ALLOWED_DECORATORS or (isinstance(dec, ast.Call) and (dec.args or dec.keywords)):
                        raise _Reject(f"{_line(node)}decorators are not allowed (except @torch.no_grad())")
        elif isinstance(node, ast.ExceptHandler):
            _check_ident(node.name, node, "exception name")
        elif isinstance(node, ast.Constant):
            v = node.value
            if isinstance(v, str) and "__" in v:
                raise _Reject(f"{_line(node)}string constants containing '__' are not allowed")
            if isinstance(v, bytes) and b"__" in v:
                raise _Reject(f"{_line(node)}bytes constants containing '__' are not allowed")
        elif isinstance(node, ast.MatchAs) or isinstance(node, ast.MatchStar):
            _check_ident(node.name, node, "name")
        elif isinstance(node, ast.MatchMapping):
            _check_ident(node.rest, node, "name")


class _GenToList(ast.NodeTransformer):
    """Generator expressions become list comprehensions: same values for merge code, and no
    generator objects (with their frames) ever exist in the candidate's world."""

    def visit_GeneratorExp(self, node: ast.GeneratorExp) -> ast.AST:
        self.generic_visit(node)
        return ast.copy_location(ast.ListComp(elt=node.elt, generators=node.generators), node)


class _AugSubscript(ast.NodeTransformer):
    """``a[k] op= v`` (rejected by RestrictedPython) becomes ``a[k] = a[k] op v`` when ``a`` and
    ``k`` have no calls (so evaluating them twice is unobservable). Same values for lists,
    dicts and tensors."""

    def visit_AugAssign(self, node: ast.AugAssign) -> ast.AST:
        self.generic_visit(node)
        t = node.target
        if isinstance(t, ast.Subscript) and not any(isinstance(n, (ast.Call, ast.NamedExpr, ast.Await)) for n in ast.walk(t)):
            load = ast.Subscript(value=_reload(t.value), slice=_reload(t.slice), ctx=ast.Load())
            new = ast.Assign(targets=[t], value=ast.BinOp(left=load, op=node.op, right=node.value), lineno=node.lineno)
            return ast.copy_location(new, node)
        return node


def _reload(node: ast.AST) -> ast.AST:
    import copy
    n = copy.deepcopy(node)
    for sub in ast.walk(n):
        if hasattr(sub, "ctx"):
            sub.ctx = ast.Load()
    return n


def _strip_docstrings(nodes: list) -> None:
    for node in nodes:
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]


def ast_hash(tree: ast.AST) -> str:
    dumped = ast.dump(tree, annotate_fields=True, include_attributes=False)
    return "b2:" + hashlib.blake2b(dumped.encode(), digest_size=16).hexdigest()


def parse_and_check(code: str, want_hash: bool = True) -> tuple[ast.Module, str | None]:
    """Return (transformed tree ready for compile_restricted, ast_hash) or raise _Reject."""
    if not isinstance(code, str):
        raise _Reject("candidate source must be a str")
    raw = code.encode("utf-8", "surrogatepass")
    if len(raw) > MAX_SOURCE_BYTES:
        raise _Reject(f"source is {len(raw)} bytes (limit {MAX_SOURCE_BYTES})")
    if "\x00" in code:
        raise _Reject("source contains NUL bytes")
    try:
        tree = ast.parse(code, filename="<candidate>", mode="exec")
    except SyntaxError as e:
        raise _Reject(f"syntax error: line {e.lineno}: {e.msg}")
    except (MemoryError, RecursionError, ValueError) as e:
        raise _Reject(f"source too complex to parse ({type(e).__name__})")
    nodes, depth = _iter_depth(tree)
    if len(nodes) > MAX_NODES:
        raise _Reject(f"AST has more than {MAX_NODES} nodes")
    if depth > MAX_DEPTH:
        raise _Reject(f"AST nesting deeper than {MAX_DEPTH}")
    _check_tree(tree, nodes)
    _strip_docstrings(nodes)
    h = ast_hash(tree) if want_hash else None
    changed = False
    if any(isinstance(n, ast.GeneratorExp) for n in nodes):
        tree = _GenToList().visit(tree)
        changed = True
    if any(isinstance(n, ast.AugAssign) and isinstance(n.target, ast.Subscript) for n in nodes):
        tree = _AugSubscript().visit(tree)
        changed = True
    if changed:
        ast.fix_missing_locations(tree)
    return tree, h


def compile_candidate(code: str, want_hash: bool = True):
    """Screen and compile with RestrictedPython. Returns (code object, ast_hash)."""
    tree, h = parse_and_check(code, want_hash)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = compile_restricted(tree, filename="<candidate>", mode="exec")
    except SyntaxError as e:
        raise _Reject(f"RestrictedPython: {e.msg if hasattr(e, 'msg') else e}")
    except (MemoryError, RecursionError) as e:
        raise _Reject(f"source too complex to compile ({type(e).__name__})")
    return res, h


def screen_and_compile(code: str):
    """(ScreenResult, restricted code object or None); never executes the candidate.

    Memoised on the exact source (a bounded LRU): the engine screens every completion, and the
    supervisor screens the same source again right before it runs it (each must hold alone), so
    without the memo every executed candidate was parsed, checked and compiled twice (~5-15 ms
    each at 3,000 candidates an iteration). Both results are immutable, so sharing them is safe.
    """
    if not isinstance(code, str):
        return _screen_and_compile(code)
    return _screen_and_compile_memo(code)


def _screen_and_compile(code: str):
    try:
        co, h = compile_candidate(code)
    except _Reject as e:
        return ScreenResult(False, _cap(str(e)), None), None
    except Exception as e:  # defensive: a hostile source must never crash the caller
        return ScreenResult(False, _cap(f"rejected: {type(e).__name__}: {e}"), None), None
    return ScreenResult(True, None, h), co


_screen_and_compile_memo = functools.lru_cache(maxsize=4096)(_screen_and_compile)


def screen(code: str) -> ScreenResult:
    """L1 static policy; never executes the candidate."""
    return screen_and_compile(code)[0]


def _cap(s: str, n: int = 500) -> str:
    return s if len(s) <= n else s[:n] + "..."


# --------------------------------------------------------------------------- extraction
MAX_COMPLETION_CHARS = 256 * 1024
_FENCE_OPEN = re.compile(r"^[ \t]{0,3}(`{3,}|~{3,})[ \t]*([^`\n]*)$")


def _fenced_blocks(text: str) -> list[str]:
    """Fenced code blocks, in order (linear time; an unterminated last fence counts)."""
    blocks = []
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        m = _FENCE_OPEN.match(lines[i])
        if not m:
            i += 1
            continue
        fence = m.group(1)
        body = []
        i += 1
        while i < len(lines):
            stripped = lines[i].strip()
            if stripped and set(stripped) == {fence[0]} and len(stripped) >= len(fence):
                break
            body.append(lines[i])
            i += 1
        blocks.append("\n".join(body))
        i += 1
    return blocks


def _defines_merge(src: str) -> bool:
    try:
        tree = ast.parse(src)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return False
    return any(isinstance(n, ast.FunctionDef) and n.name == "merge_models" for n in tree.body)


def _add_imports(src: str) -> str:
    try:
        tree = ast.parse(src)
    except Exception:
        return src
    imported = set()
    used = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.Import):
            for al in n.names:
                imported.add((al.asname or al.name).split(".")[0])
        elif isinstance(n, ast.ImportFrom):
            for al in n.names:
                imported.add(al.asname or al.name)
        elif isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load):
            used.add(n.id)
    pre = [f"import {m}\n" for m in ("torch", "math") if m in used and m not in imported]
    return "".join(pre) + src if pre else src


def _bare_candidates(text: str):
    """Code around a bare ``def merge_models`` (no fence): the preceding import/assignment
    lines, and the longest following stretch that parses."""
    lines = text.splitlines(keepends=True)
    idx = [i for i, ln in enumerate(lines) if re.match(r"^\s*def\s+merge_models\s*\(", ln)]
    for di in idx[:3]:
        start = di
        j = di - 1
        while j >= 0 and re.match(r"^(\s*$|\s*#|import\s|from\s+\w|@|[A-Za-z_][A-Za-z0-9_]*\s*=)", lines[j]):
            start = j
            j -= 1
        tries = 0
        for end in range(min(len(lines), di + 400), di, -1):
            tries += 1
            if tries > 150:
                break
            src = textwrap.dedent("".join(lines[start:end]))
            if _defines_merge(src):
                yield src
                break


def extract_candidate(text: str) -> str | None:
    """Pull the first block that defines a parseable ``merge_models`` out of an LLM completion:
    fenced blocks first (in order), then bare code. Returns the source (with ``import
    torch``/``import math`` added when used but missing), or None."""
    if not isinstance(text, str) or not text:
        return None
    text = text[:MAX_COMPLETION_CHARS].replace("\r\n", "\n")
    for b in _fenced_blocks(text):
        b = textwrap.dedent(b)
        if _defines_merge(b):
            return _add_imports(b.strip("\n") + "\n")
        for src in _bare_candidates(b):
            return _add_imports(src.strip("\n") + "\n")
    if _defines_merge(text):
        return _add_imports(text.strip("\n") + "\n")
    for src in _bare_candidates(text):
        return _add_imports(src.strip("\n") + "\n")
    return None
