"""L1 static policy: size and AST limits, our own AST pass, RestrictedPython compile.

No torch import here: screening is cheap and runs in the trusted supervisor.
"""
from __future__ import annotations

import ast
import hashlib
import re
import sys
import textwrap
import threading
import warnings
from collections import OrderedDict
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
    AST = ast.AST
    while stack:
        node, d = stack.pop()
        nodes.append(node)
        if d > depth:
            depth = d
        if len(nodes) > MAX_NODES or depth > MAX_DEPTH:
            return nodes, depth
        d += 1
        for name in node._fields:  # ast.iter_fields, inlined (the hot loop of screening)
            try:
                field = getattr(node, name)
            except AttributeError:
                continue
            if isinstance(field, AST):
                stack.append((field, d))
            elif isinstance(field, list):
                for item in field:
                    if isinstance(item, AST):
                        stack.append((item, d))
    return nodes, depth


# every node type a rule of _check_tree's loop applies to (ast.parse makes exact types)
_CHECKED_TYPES = frozenset({
    ast.Yield, ast.YieldFrom, ast.Await, ast.AsyncFor, ast.AsyncWith, ast.AsyncFunctionDef,
    ast.ClassDef, ast.Global, ast.Nonlocal, ast.Import, ast.ImportFrom, ast.Name, ast.Attribute,
    ast.arg, ast.keyword, ast.FunctionDef, ast.Lambda, ast.ExceptHandler, ast.Constant,
    ast.MatchAs, ast.MatchStar, ast.MatchMapping})


def walk_nodes(tree: ast.AST) -> list:
    """Every node under ``tree`` (``ast.walk``'s nodes, in a list; cheaper: screening walks
    every candidate)."""
    nodes = [tree]
    AST = ast.AST
    for node in nodes:  # the list grows while it is read: breadth first
        for name in node._fields:
            field = getattr(node, name, None)
            if isinstance(field, AST):
                nodes.append(field)
            elif isinstance(field, list):
                nodes.extend([item for item in field if isinstance(item, AST)])
    return nodes


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

    checked = _CHECKED_TYPES
    for node in nodes:
        if type(node) not in checked:  # most nodes: no rule below applies to them
            continue
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
    dumped = _dump(tree)
    return "b2:" + hashlib.blake2b(dumped.encode(), digest_size=16).hexdigest()


_OPTIONAL: dict[type, tuple] = {}  # class -> its fields, and which of them default to None


def _dump(node) -> str:
    """``ast.dump(node, annotate_fields=True, include_attributes=False)``, the same text (the
    hash of every recorded program depends on it), without ast.dump's layout bookkeeping (it
    only matters with ``indent``). Called on trees within MAX_DEPTH."""
    if isinstance(node, ast.AST):
        cls = type(node)
        spec = _OPTIONAL.get(cls)
        if spec is None:
            spec = _OPTIONAL[cls] = tuple((name, getattr(cls, name, ...) is None)
                                          for name in cls._fields)
        args = []
        for name, optional in spec:
            try:
                value = getattr(node, name)
            except AttributeError:
                continue
            if value is None and optional:
                continue
            args.append(f"{name}={_dump(value)}")
        return f"{cls.__name__}({', '.join(args)})"
    if isinstance(node, list):
        return "[" + ", ".join([_dump(x) for x in node]) + "]"
    return repr(node)


def parse_and_check(code: str, want_hash: bool = True,
                    tree: ast.Module | None = None) -> tuple[ast.Module, str | None]:
    """Return (transformed tree ready for compile_restricted, ast_hash) or raise _Reject.

    ``tree``, when given, must be a fresh ``ast.parse(code)`` (extraction has just parsed the
    very same string): it is used, and mutated, instead of parsing ``code`` again."""
    if not isinstance(code, str):
        raise _Reject("candidate source must be a str")
    raw = code.encode("utf-8", "surrogatepass")
    if len(raw) > MAX_SOURCE_BYTES:
        raise _Reject(f"source is {len(raw)} bytes (limit {MAX_SOURCE_BYTES})")
    if "\x00" in code:
        raise _Reject("source contains NUL bytes")
    try:
        if tree is None:
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


def compile_candidate(code: str, want_hash: bool = True, tree: ast.Module | None = None):
    """Screen and compile with RestrictedPython. Returns (code object, ast_hash).
    ``tree``: see ``parse_and_check``."""
    tree, h = parse_and_check(code, want_hash, tree)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = compile_restricted(tree, filename="<candidate>", mode="exec")
    except SyntaxError as e:
        raise _Reject(f"RestrictedPython: {e.msg if hasattr(e, 'msg') else e}")
    except (MemoryError, RecursionError) as e:
        raise _Reject(f"source too complex to compile ({type(e).__name__})")
    return res, h


_MEMO_SIZE = 4096
_memo: OrderedDict = OrderedDict()
_memo_lock = threading.Lock()


def screen_and_compile(code: str, tree: ast.Module | None = None):
    """(ScreenResult, restricted code object or None); never executes the candidate.

    Memoised on the exact source (a bounded LRU): the engine screens every completion, and the
    supervisor screens the same source again right before it runs it (each must hold alone), so
    without the memo every executed candidate was parsed, checked and compiled twice (~5-15 ms
    each at 3,000 candidates an iteration). Both results are immutable, so sharing them is safe.
    ``tree`` (a fresh ``ast.parse(code)``, consumed) saves the parse on a miss; the key stays
    the source alone, so the memo cannot tell who parsed it.
    """
    if not isinstance(code, str):
        return _screen_and_compile(code)
    with _memo_lock:
        hit = _memo.get(code)
        if hit is not None:
            _memo.move_to_end(code)
            return hit
    result = _screen_and_compile(code, tree)
    with _memo_lock:
        _memo[code] = result
        if len(_memo) > _MEMO_SIZE:
            _memo.popitem(last=False)
    return result


def forget_screens() -> None:
    """Empty the memo (benchmarks: each timed run screens from scratch)."""
    with _memo_lock:
        _memo.clear()


def _screen_and_compile(code: str, tree: ast.Module | None = None):
    try:
        co, h = compile_candidate(code, tree=tree)
    except _Reject as e:
        return ScreenResult(False, _cap(str(e)), None), None
    except Exception as e:  # defensive: a hostile source must never crash the caller
        return ScreenResult(False, _cap(f"rejected: {type(e).__name__}: {e}"), None), None
    return ScreenResult(True, None, h), co


def screen(code: str, tree: ast.Module | None = None) -> ScreenResult:
    """L1 static policy; never executes the candidate. ``tree``: see ``screen_and_compile``."""
    return screen_and_compile(code, tree)[0]


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


# Why a stretch fails to parse can rule out longer ones without parsing them. CPython 3.11:
# - these tokenizer errors are raised at one spot whatever follows it, so any source with the
#   same text up to that spot fails too (indentation errors are not among them: a shorter
#   stretch may be dedented by more);
_LOCAL_TOKEN_ERRORS = ("unmatched '", "closing parenthesis '", "unterminated string literal",
                       "invalid decimal literal", "invalid character ",
                       "leading zeros in decimal integer literals")
# - when the stretches are plain line prefixes of each other (nothing dedented), also the
#   indentation errors of the tokenizer, and the parser's generic errors: "invalid syntax" and
#   "unexpected indent/unindent" are raised only at (or after) the last token its first pass
#   read (pegen's _PyPegen_set_syntax_error; no grammar rule raises them), and a prefix
#   holding every token that pass read is parsed the same way, so it fails the same way;
#   "'(' was never closed" (raised there too, at the end of the source) names a bracket that
#   no later line closes, so it is open at the end of every prefix that opens it.
_PREFIX_ERRORS = _LOCAL_TOKEN_ERRORS + (
    "unindent does not match any outer indentation level", "inconsistent use of tabs",
    "too many levels of indentation")
_GENERIC_ERRORS = ("invalid syntax", "unexpected indent", "unexpected unindent")
_NEVER_CLOSED = re.compile(r"'[(\[{]' was never closed")
# Checked against CPython 3.11's parser; elsewhere every stretch is parsed.
_SKIPS = sys.version_info[:2] == (3, 11)
# line breaks of str.splitlines that the tokenizer does not count as lines
_ODD_BREAKS = re.compile("[\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")


def _merge_tree(src: str) -> tuple[ast.Module | None, SyntaxError | None]:
    """(the tree of ``src`` when it parses and defines a top-level ``merge_models``, else None;
    the SyntaxError when it does not parse)."""
    try:
        tree = ast.parse(src)
    except SyntaxError as e:
        return None, e
    except (ValueError, MemoryError, RecursionError):
        return None, None
    if any(isinstance(n, ast.FunctionDef) and n.name == "merge_models" for n in tree.body):
        return tree, None
    return None, None


def _fails_through(e: SyntaxError, prefixes: bool) -> int | None:
    """The last line (1-based) that ``e`` depends on: every source with the same text through
    that line fails too (``prefixes``: every line prefix of the failed source holding it);
    None when ``e`` says nothing of the kind."""
    msg = e.msg
    if not isinstance(msg, str) or not e.lineno:
        return None
    if not (msg.startswith(_PREFIX_ERRORS if prefixes else _LOCAL_TOKEN_ERRORS)
            or (prefixes and (msg in _GENERIC_ERRORS or _NEVER_CLOSED.fullmatch(msg)))):
        return None
    detected = re.search(r"detected at line (\d+)", msg)
    return max(e.lineno, e.end_lineno or 0, int(detected[1]) if detected else 0)


def _with_imports(src: str, tree: ast.Module | None) -> tuple[str, ast.Module | None]:
    """``src`` with ``import torch``/``import math`` added when used but missing, and its tree
    when that is ``tree`` (a fresh parse of ``src``, passed on so screening need not parse it
    again); None when the source changed or does not parse."""
    if tree is None:
        try:
            tree = ast.parse(src)
        except Exception:
            return src, None
    imported = set()
    used = set()
    for n in walk_nodes(tree):
        if isinstance(n, ast.Import):
            for al in n.names:
                imported.add((al.asname or al.name).split(".")[0])
        elif isinstance(n, ast.ImportFrom):
            for al in n.names:
                imported.add(al.asname or al.name)
        elif isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load):
            used.add(n.id)
    pre = [f"import {m}\n" for m in ("torch", "math") if m in used and m not in imported]
    return ("".join(pre) + src, None) if pre else (src, tree)


def _bare_candidates(text: str, failed: SyntaxError | None = None):
    """Code around a bare ``def merge_models`` (no fence): the preceding import/assignment
    lines, and the longest following stretch that parses, with its tree.

    Stretches are tried longest first. One that fails for a reason ``_fails_through`` places
    at its line k rules out the shorter ones that still hold line k, so those are counted as
    tried without being parsed (the result is that of parsing each). ``failed``: why ``text``
    itself does not parse, when known (the longest stretch is often all of it)."""
    lines = text.splitlines(keepends=True)
    # the tokenizer's line numbers are ours only without the odd line breaks
    skips = _SKIPS and _ODD_BREAKS.search(text) is None
    idx = [i for i, ln in enumerate(lines) if re.match(r"^\s*def\s+merge_models\s*\(", ln)]
    for di in idx[:3]:
        start = di
        j = di - 1
        while j >= 0 and re.match(r"^(\s*$|\s*#|import\s|from\s+\w|@|[A-Za-z_][A-Za-z0-9_]*\s*=)", lines[j]):
            start = j
            j -= 1
        # no common indentation in the shortest stretch: then none in any (they all hold it),
        # dedent only empties blank lines, and each stretch is a line prefix of the longer ones
        shortest = "".join(lines[start:di + 1])
        prefixes = textwrap.dedent("x\n" + shortest) == "x\n" + textwrap.dedent(shortest)
        tries = 0
        fails_from = None  # stretches ending at or after this line index are known to fail
        for end in range(min(len(lines), di + 400), di, -1):
            tries += 1
            if tries > 150:
                break
            if fails_from is not None and end >= fails_from:
                continue
            src = textwrap.dedent("".join(lines[start:end]))
            tree, err = (None, failed) if failed is not None and src == text else _merge_tree(src)
            if tree is not None:
                yield src, tree
                break
            bad_line = None if err is None or not skips else _fails_through(err, prefixes)
            if bad_line is not None:
                fails_from = start + bad_line


def extract_candidate_tree(text: str) -> tuple[str | None, ast.Module | None]:
    """``extract_candidate(text)`` and, when extraction already parsed exactly that source, its
    fresh tree (else None), for ``screen_and_compile(code, tree)`` and ``primitives_of``."""
    if not isinstance(text, str) or not text:
        return None, None
    text = text[:MAX_COMPLETION_CHARS].replace("\r\n", "\n")
    for b in _fenced_blocks(text):
        b = textwrap.dedent(b)
        tree, err = _merge_tree(b)
        if tree is not None:
            return _finish(b, tree)
        for src, tree in _bare_candidates(b, err):
            return _finish(src, tree)
    tree, err = _merge_tree(text)
    if tree is not None:
        return _finish(text, tree)
    for src, tree in _bare_candidates(text, err):
        return _finish(src, tree)
    return None, None


def _finish(src: str, tree: ast.Module) -> tuple[str, ast.Module | None]:
    code = src.strip("\n") + "\n"
    return _with_imports(code, tree if code == src else None)


def extract_candidate(text: str) -> str | None:
    """Pull the first block that defines a parseable ``merge_models`` out of an LLM completion:
    fenced blocks first (in order), then bare code. Returns the source (with ``import
    torch``/``import math`` added when used but missing), or None."""
    return extract_candidate_tree(text)[0]
