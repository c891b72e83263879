"""L1: screen() and extract_candidate(), no execution involved."""
import pytest

from selfdev.sandbox import extract_candidate, screen

GOOD = "import torch\n\ndef merge_models(task_vectors, base, name):\n    return sum(task_vectors.values())\n"


def test_good_candidate_passes_with_hash():
    r = screen(GOOD)
    assert r.ok and r.reason is None and r.ast_hash.startswith("b2:")


def test_hash_ignores_formatting_comments_and_docstrings():
    variant = ('import torch  # the torch facade\n\n\n'
               'def merge_models(task_vectors,   base, name):\n'
               '    """Sum the experts."""\n'
               '    # comment\n'
               '    return sum( task_vectors.values() )\n')
    assert screen(variant).ast_hash == screen(GOOD).ast_hash
    other = GOOD.replace("sum(", "max(")
    assert screen(other).ast_hash != screen(GOOD).ast_hash


@pytest.mark.parametrize("code, fragment", [
    ("import os\ndef merge_models(task_vectors, base, name):\n    return base", "import of 'os'"),
    ("from os import system\ndef merge_models(task_vectors, base, name):\n    return base", "import from 'os'"),
    ("import torch.utils\ndef merge_models(task_vectors, base, name):\n    return base", "torch.utils"),
    ("def merge_models(task_vectors, base, name):\n    return __import__('os')", "dunder"),
    ("def merge_models(task_vectors, base, name):\n    return base.__class__", "dunder"),
    ("def merge_models(task_vectors, base, name):\n    return eval('1')", "'eval'"),
    ("def merge_models(task_vectors, base, name):\n    return exec('1')", "'exec'"),
    ("def merge_models(task_vectors, base, name):\n    return open('/etc/passwd')", "'open'"),
    ("def merge_models(task_vectors, base, name):\n    return getattr(base, 'numpy')", "'getattr'"),
    ("def merge_models(task_vectors, base, name):\n    return type(base)", "'type'"),
    ("def merge_models(task_vectors, base, name):\n    return vars()", "'vars'"),
    ("def merge_models(task_vectors, base, name):\n    return globals()", "'globals'"),
    ("def merge_models(task_vectors, base, name):\n    breakpoint()", "'breakpoint'"),
    ("def merge_models(task_vectors, base, name):\n    return compile('1','','eval')", "'compile'"),
    ("def merge_models(task_vectors, base, name):\n    yield base", "generators"),
    ("async def merge_models(task_vectors, base, name):\n    return base", "async"),
    ("class M(type):\n    pass\ndef merge_models(task_vectors, base, name):\n    return base", "class"),
    ("def merge_models(task_vectors, base, name):\n    return '{0.__class__}'.format(base)", "'__'"),
    ("def merge_models(task_vectors, base, name):\n    return base.numpy()", "'numpy'"),
    ("import torch\ndef merge_models(task_vectors, base, name):\n    return torch.from_file('/etc/passwd')", "'from_file'"),
    ("def merge_models(task_vectors, base, name):\n    return base.untyped_storage()", "'untyped_storage'"),
    ("import torch\ndef merge_models(task_vectors, base, name):\n    return torch.load('x')", "'load'"),
    ("import torch\ndef merge_models(task_vectors, base, name):\n    return torch.os", "'os'"),
    ("def merge_models(task_vectors, base, name):\n    g = (x for x in [1])\n    return g.gi_frame", "gi_frame"),
    ("def merge_models(task_vectors, base, name):\n    return merge_models.__globals__", "dunder"),
    ("def merge_models(task_vectors, base, name, /, _write_=None):\n    return base", "underscore"),
    ("def merge_models(task_vectors, base, name):\n    _getattr_ = 1\n    return base", "underscore"),
    ("@print\ndef merge_models(task_vectors, base, name):\n    return base", "decorators"),
    ("def merge_models(task_vectors, base):\n    return base", "signature"),
    ("def merge_models(task_vectors, base, name, *args):\n    return base", "signature"),
    ("def merge_models(a, b, c):\n    return b", "signature"),
    ("def f(task_vectors, base, name):\n    return base", "no top-level function merge_models"),
    ("def merge_models(task_vectors, base, name):\n    return base\ndef merge_models(task_vectors, base, name):\n    return base", "2 times"),
    ("def merge_models(task_vectors, base, name):\n    return base +", "syntax error"),
    ("def merge_models(task_vectors, base, name):\n    try:\n        pass\n    except* ValueError:\n        pass\n    return base", ""),
    ("def merge_models(task_vectors, base, name):\n    return b'__class__'", "'__'"),
])
def test_rejections_carry_a_precise_reason(code, fragment):
    r = screen(code)
    assert not r.ok and r.ast_hash is None
    assert fragment in r.reason, r.reason


def test_size_and_depth_limits():
    big = GOOD + "\n" + "x = 1\n" * 20000
    r = screen(big)
    assert not r.ok and "bytes" in r.reason
    deep = "def merge_models(task_vectors, base, name):\n    return " + "[" * 150 + "1" + "]" * 150 + "\n"
    r = screen(deep)
    assert not r.ok and ("nesting" in r.reason or "complex" in r.reason or "syntax" in r.reason), r.reason
    unary = "def merge_models(task_vectors, base, name):\n    return " + "-" * 50000 + "1\n"
    assert not screen(unary).ok


def test_screen_never_raises_on_garbage():
    for junk in ["", "\x00", "def", "merge_models = 3", "\ufeff" * 10, "lambda: (yield)", 42, None]:
        r = screen(junk)
        assert not r.ok and r.reason


def test_benign_constructs_pass():
    code = '''
import torch
import math
from math import sqrt
import torch.nn.functional as F

@torch.no_grad()
def merge_models(task_vectors, base, name, scale=1.0):
    vals = [t for _, t in sorted(task_vectors.items())]
    w = {i: 1.0 / (i + 1) for i in range(len(vals))}
    total = sum(w[i] * v for i, v in enumerate(vals))
    total[total.abs() < 1e-3] = 0
    total[0] += 1.0
    m = max(float(v.abs().max()) for v in vals)
    if any(v.numel() == 0 for v in vals):
        return base
    try:
        r = math.acos(min(1.0, m))
    except ValueError:
        r = 0.0
    print(f"{name}: {m:.3f} {sqrt(4)}")
    x, *rest = vals
    return total * scale + 0 * x * r
'''
    r = screen(code)
    assert r.ok, r.reason


# ----------------------------------------------------------------------------- extraction
def test_extract_from_fenced_block_with_prose():
    text = ("Here is my merge:\n\n```python\nimport torch\n\ndef merge_models(task_vectors, base, name):\n"
            "    return sum(task_vectors.values())\n```\n\nIt sums the experts.")
    got = extract_candidate(text)
    assert got.startswith("import torch") and "def merge_models" in got and "It sums" not in got
    assert screen(got).ok


def test_extract_skips_blocks_without_merge_models_and_unparseable_ones():
    text = ("```python\nprint('hi')\n```\n"
            "```python\ndef merge_models(task_vectors, base, name)\n    broken\n```\n"
            "```py\nimport math\ndef merge_models(task_vectors, base, name):\n    return base * math.e\n```\n"
            "```python\ndef merge_models(task_vectors, base, name):\n    return base\n```")
    got = extract_candidate(text)
    assert "math.e" in got and got.startswith("import math")


def test_extract_bare_code_and_missing_imports():
    text = ("Sure! The algorithm:\n"
            "def merge_models(task_vectors, base, name):\n"
            "    return torch.stack(list(task_vectors.values())).mean(0) * math.sqrt(2)\n"
            "\nThis averages the experts.")
    got = extract_candidate(text)
    assert got is not None
    assert "import torch" in got and "import math" in got and "This averages" not in got
    assert screen(got).ok


def test_extract_unterminated_fence():
    text = "```python\nimport torch\ndef merge_models(task_vectors, base, name):\n    return base * 0\n"
    assert "return base * 0" in extract_candidate(text)


def test_extract_none():
    assert extract_candidate("no code here") is None
    assert extract_candidate("```python\nx = 1\n```") is None
    assert extract_candidate("") is None


def test_extract_tilde_fence_crlf_and_helpers_kept():
    text = ("Plan:\r\n~~~python\r\nimport torch\r\n\r\ndef helper(x):\r\n    return x * 2\r\n\r\n"
            "def merge_models(task_vectors, base, name):\r\n    return helper(sum(task_vectors.values()))\r\n~~~\r\n")
    got = extract_candidate(text)
    assert "def helper" in got and screen(got).ok


def test_extract_is_fast_on_pathological_completions():
    import time
    for text in ["```\n" * 50000, "```python\n" + "x = (\n" * 20000,
                 "def merge_models(task_vectors, base, name):\n" + "    x = 1 +\n" * 20000, "````\n```\n" * 30000]:
        t0 = time.perf_counter()
        assert extract_candidate(text) is None
        assert time.perf_counter() - t0 < 3


# ----------------------------------------------------------------------------- one parse
def _count_parses(monkeypatch):
    import ast
    calls = []
    real = ast.parse
    monkeypatch.setattr(ast, "parse", lambda *a, **k: calls.append(1) or real(*a, **k))
    return calls


def test_a_screened_candidate_is_parsed_once(monkeypatch):
    from selfdev.engine.primitives import primitives_of
    from selfdev.sandbox.policy import extract_candidate_tree, screen_and_compile
    text = GOOD.replace("return", "x = torch.sign(base)\n    return")
    calls = _count_parses(monkeypatch)
    code, tree = extract_candidate_tree(text)
    used = primitives_of(code, tree)
    verdict, co = screen_and_compile(code, tree)
    assert len(calls) == 1
    assert verdict.ok and co is not None and used == ["sign"]
    assert verdict == screen_and_compile(code + "\n")[0]  # same program, hashed the same way


def test_extract_skips_stretches_that_cannot_parse(monkeypatch):
    # the tiny factory's typical completion: a good function, then garbage; an unmatched
    # bracket early in the garbage rules out every longer stretch without parsing each
    body = "import torch\n\ndef merge_models(task_vectors, base, name):\n    return base\n"
    text = body + "    x = f(1))\n" + "    y = 2\n" * 60
    calls = _count_parses(monkeypatch)
    assert extract_candidate(text) == body
    assert len(calls) <= 4


def test_screen_memo_is_bounded_and_keyed_on_the_source():
    from selfdev.sandbox import policy
    policy._memo.clear()
    first = policy.screen_and_compile(GOOD)
    assert policy.screen_and_compile(GOOD) is first
    for i in range(policy._MEMO_SIZE + 10):
        policy.screen_and_compile(f"x = {i}\n")
    assert len(policy._memo) == policy._MEMO_SIZE and GOOD not in policy._memo
