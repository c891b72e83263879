"""The grammar generator: determinism, temperature, diversity, validity, and merge quality."""
import ast
import re

import pytest
import torch

from selfdev.engine.api import Completion, ConfigError
from selfdev.engine.plugins import get_registry
from selfdev.plugins.generators.grammar import BROKEN_KINDS, GrammarGenerator, corpus

FENCE = re.compile(r"```python\n(.*?)```", re.S)


def code_of(completion: Completion) -> str:
    match = FENCE.search(completion.text)
    if match:
        return match.group(1)
    return completion.text.split("```python\n", 1)[1]  # a truncated answer has no closing fence


def normalised_ast(code: str) -> str:
    tree = ast.parse(code)
    for node in ast.walk(tree):  # drop docstrings so only the algorithm counts
        if isinstance(node, (ast.FunctionDef, ast.Module)) and node.body \
                and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant):
            node.body = node.body[1:]
    return ast.dump(tree, include_attributes=False)


@pytest.fixture(scope="module")
def gen(make_ctx):
    return GrammarGenerator(make_ctx())


@pytest.fixture(scope="module")
def sample(gen):
    return gen.generate(["prompt"], 200, 1.0, seed=11)


def test_deterministic_per_seed_index_and_temperature(gen):
    a = gen.generate(["p"], 12, 1.0, seed=3)
    b = gen.generate(["p"], 12, 1.0, seed=3, checkpoint=None, iteration=2)
    assert [c.text for c in a] == [c.text for c in b]
    assert [c.text for c in gen.generate(["p"], 5, 1.0, seed=3)] == [c.text for c in a[:5]]
    assert [c.text for c in gen.generate(["p"], 12, 1.0, seed=4)] != [c.text for c in a]
    assert [c.text for c in gen.generate(["p"], 12, 0.4, seed=3)] != [c.text for c in a]
    two = gen.generate(["p", "q"], 3, 1.0, seed=3)
    assert [c.prompt_index for c in two] == [0, 0, 0, 1, 1, 1]
    assert [c.text for c in two[:3]] == [c.text for c in a[:3]]


def test_completions_look_like_llm_answers(sample):
    assert len(sample) == 200 and all(isinstance(c, Completion) for c in sample)
    for c in sample:
        intro = c.text.split("```", 1)[0].strip()
        assert intro and intro.endswith((".", "!")), c.text[:80]
        assert c.meta["generator"] == "grammar" and c.meta["temperature"] == 1.0
        assert c.meta["broken"] in (None, *BROKEN_KINDS)


def test_diverse(sample):
    working = [code_of(c) for c in sample if c.meta["broken"] is None]
    distinct = {normalised_ast(code) for code in working}
    assert len(distinct) >= 0.95 * len(working)
    primitives = {p.split(":")[0] for c in sample for p in c.meta["primitives"]}
    assert len(primitives) >= 25


def test_working_programs_follow_the_contract(sample):
    working = [c for c in sample if c.meta["broken"] is None]
    assert len(working) >= 180
    for c in working:
        code = code_of(c)
        tree = ast.parse(code)
        fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef))
        assert fn.name == "merge_models"
        assert [a.arg for a in fn.args.args] == ["task_vectors", "base", "name"]
        assert ast.get_docstring(fn)
        imports = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert imports <= {"torch", "math"} and "torch" in imports
        names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
        attrs = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
        assert not any(x.startswith("_") for x in names | attrs)
        assert not names & {"getattr", "exec", "eval", "open", "type", "globals", "compile"}
        assert "__" not in code


def test_temperature_scales_complexity(gen):
    def mean_primitives(t):
        comps = gen.generate(["p"], 150, t, seed=5)
        return sum(len(c.meta["primitives"]) for c in comps) / len(comps)

    def distinct(t):
        comps = gen.generate(["p"], 150, t, seed=5)
        return len({p for c in comps for p in c.meta["primitives"]})

    assert mean_primitives(0.2) < mean_primitives(1.0) < mean_primitives(2.0)
    assert distinct(0.2) < distinct(1.5)


def test_broken_rate(make_ctx):
    none = GrammarGenerator(make_ctx(), broken_rate=0.0).generate(["p"], 100, 1.5, seed=1)
    assert all(c.meta["broken"] is None for c in none)
    half = GrammarGenerator(make_ctx(), broken_rate=0.5).generate(["p"], 300, 1.0, seed=1)
    kinds = [c.meta["broken"] for c in half if c.meta["broken"]]
    assert 100 <= len(kinds) <= 200 and set(kinds) == set(BROKEN_KINDS)
    with pytest.raises(ConfigError, match="broken_rate"):
        GrammarGenerator(make_ctx(), broken_rate=2)


def test_corpus(make_ctx):
    programs = corpus(40, seed=2)
    assert programs == corpus(40, seed=2) and programs != corpus(40, seed=3)
    assert len(programs) == 40 and len(set(programs)) == 40
    for code in programs:
        assert "```" not in code
        compile(code, "corpus", "exec")
        assert "def merge_models(task_vectors" in code


def test_programs_merge_digits(digits, dev_score, sample):
    """Run 30 programs in-process (trusted test code; the engine only runs them sandboxed)."""
    seed_score = dev_score(digits.seed_model())
    ok = beat_seed = 0
    picked = [c for c in sample if c.meta["broken"] is None][:30]
    for c in picked:
        namespace = {}
        exec(compile(code_of(c), "candidate", "exec"), namespace)
        with torch.no_grad():
            out = digits.apply_function(namespace["merge_models"])
        if out.ok:
            ok += 1
            beat_seed += dev_score(out.model) > seed_score + 1
    assert ok >= 28
    assert beat_seed >= 15


def test_registered():
    assert get_registry().get("generator", "grammar") is GrammarGenerator
