"""toymath: problem generator, tokenizer, the cached tiny family and the domain on top of it."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")


from selfdev.engine.api import ConfigError, Context, NullProgress  # noqa: E402
from selfdev.plugins.domains.toymath.domain import ToyMathDomain  # noqa: E402
from selfdev.plugins.domains.toymath.family import build_family  # noqa: E402
from selfdev.plugins.domains.toymath.problems import FAMILIES, make_problems, training_text  # noqa: E402
from selfdev.plugins.domains.toymath.tokenizer import build_tokenizer  # noqa: E402
from selfdev.plugins.evaluators.gsm8k import extract_strict, gold_answer, score_outputs  # noqa: E402
from selfdev.plugins.evaluators.toymath import ToyMathEvaluator  # noqa: E402

ANNOT = re.compile(r"<<(\d+)([-+*/])(\d+)=(\d+)>>(\d+)")


def ctx(tmp_path):
    return Context(run_id="t", seed=0, home=tmp_path, artifacts=tmp_path / "art", progress=NullProgress())


# ---------------------------------------------------------------------------- generator
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_problems_are_in_gsm8k_format_and_correct(family):
    rows = make_problems(family, 200, 0)
    assert len({r["question"] for r in rows}) == 200
    for r in rows:
        assert set(r) == {"question", "answer", "family"} and r["family"] == family
        body, _, last = r["answer"].rpartition("\n")
        assert re.fullmatch(r"#### -?\d+", last), r["answer"]
        gold = int(gold_answer(r["answer"]))
        m = ANNOT.search(body)
        if family == "C":
            assert m is None and str(gold) in r["question"]
            continue
        a, op, b, c, shown = m.groups()
        a, b, c = int(a), int(b), int(c)
        assert {"+": a + b, "-": a - b, "*": a * b, "/": a // b}[op] == c == int(shown) == gold
        if op == "/":
            assert a % b == 0
        assert extract_strict(r["answer"]) == str(gold)
    # the full answers score 100% with the gsm8k extraction
    assert score_outputs([r["answer"] for r in rows], [gold_answer(r["answer"]) for r in rows])["strict"] == 1.0


def test_generator_is_deterministic_and_respects_exclusions():
    a = make_problems("A", 50, 3)
    assert a == make_problems("A", 50, 3)
    assert a != make_problems("A", 50, 4)
    held = {r["question"] for r in a[:25]}
    b = make_problems("A", 50, 3, exclude=held)
    assert not held & {r["question"] for r in b}
    with pytest.raises(ConfigError, match="unknown family"):
        make_problems("Z", 1, 0)


def test_tokenizer_is_invertible_with_one_token_per_digit():
    tok = build_tokenizer()
    assert tok.tokenize("1234") == ["1", "2", "3", "4"]
    assert tok.tokenize(" 56") == [" 5", "6"]
    for fam in FAMILIES:
        for r in make_problems(fam, 30, 9):
            text = training_text(r)
            ids = tok(text)["input_ids"]
            assert ids[0] == tok.bos_token_id and tok.unk_token_id not in ids
            assert tok.decode(ids, skip_special_tokens=True) == text


# ---------------------------------------------------------------------------- the built family
def test_family_is_cached_as_hf_directories(toymath_env):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    fam = toymath_env["main"]
    again = build_family("test", 0, ["A", "B"], "main")
    assert again["seed"] == fam["seed"] and again["experts"] == fam["experts"]
    assert again["seconds"] < 5  # cache hit
    assert fam["root"].parent.parent == toymath_env["home"] / "cache"
    manifest = json.loads((fam["root"] / "seed.json").read_text())
    assert manifest["params"] > 100_000 and manifest["build_seconds"] > 0
    for path in [fam["seed"], *fam["experts"].values()]:
        model = AutoModelForCausalLM.from_pretrained(path)
        tok = AutoTokenizer.from_pretrained(path)
        assert model.config.hidden_size == 64 and tok.eos_token == "<eos>"
    alt = toymath_env["alt"]
    assert alt["seed"] == fam["seed"] and alt["experts"]["A"] != fam["experts"]["A"]
    data = fam["data"]
    held = {json.loads(x)["question"] for f in ("dev.jsonl", "test.jsonl")
            for x in (data / f).read_text().splitlines()}
    for pool in data.glob("pool-*.jsonl"):
        assert not held & {json.loads(x)["question"] for x in pool.read_text().splitlines()}


def test_micro_build_is_deterministic_and_mlp_scope_trains_mlp_only(tmp_path, monkeypatch):
    """The same recipe gives the same bytes in a worker process and in-process."""
    kw = dict(hidden=32, intermediate=64, seed_steps=3, expert_steps=2, n_dev=4, n_test=4)
    paths = []
    for i, isolate in enumerate((True, False)):
        monkeypatch.setenv("SELFDEV_HOME", str(tmp_path / f"home{i}"))
        fam = build_family("test", 0, ["A"], "main", "mlp", threads=1, isolate=isolate, **kw)
        paths.append(fam)
    for a, b in [(paths[0]["seed"], paths[1]["seed"]), (paths[0]["experts"]["A"], paths[1]["experts"]["A"])]:
        assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    from safetensors.torch import load_file

    seed = load_file(paths[0]["seed"] / "model.safetensors")
    exp = load_file(paths[0]["experts"]["A"] / "model.safetensors")
    for n in seed:
        assert torch.equal(seed[n], exp[n]) != (".mlp." in n), n


# ---------------------------------------------------------------------------- the domain
AVERAGE = '''
import torch


def merge_models(task_vectors: dict[str, torch.Tensor], base: torch.Tensor, name: str) -> torch.Tensor:
    merged = torch.zeros_like(base)
    for tau in task_vectors.values():
        merged = merged + tau
    return merged / max(len(task_vectors), 1)
'''


def test_toymath_domain_merges_and_scores(toymath_env, tmp_path):
    from selfdev.plugins.domains.baselines import average

    dom = ToyMathDomain(ctx(tmp_path), size="test")
    info = dom.prepare()
    assert info["mode"] == "memory" and info["num_mergeable_tensors"] == 20
    assert dom.expert_names() == ["A", "B"]
    spec = dom.eval_spec()
    assert spec["shots"] == 0 and Path(spec["dev_file"]).is_file()
    ev = ToyMathEvaluator(ctx(tmp_path))
    split = ev.split_info(dom)
    assert split["mode"] == "files" and split["n_dev"] == 60 and split["n_test"] == 120
    seed = ev.evaluate(dom, dom.seed_model(), "dev")
    assert set(seed) >= {"score", "strict", "flexible", "n", "acc_A", "acc_B"} and seed["n"] == 60
    assert 0 <= seed["score"] <= 100
    cand = dom.apply(AVERAGE, timeout=60)
    assert cand.ok, cand.reason
    ref = dom.apply_function(average)
    a, b = ev.evaluate(dom, cand.model, "dev"), ev.evaluate(dom, ref.model, "dev")
    a.pop("seconds"), b.pop("seconds")
    assert a == b
    # the per-family scores are consistent with the total
    m = ev.evaluate(dom, dom.expert_model("A"), "test")
    assert abs(m["score"] - (m["acc_A"] + m["acc_B"]) / 2) < 1e-9
    assert "toymath" in dom.prompt() and "A, B" in dom.prompt()
    dom.close()


def test_toymath_options_are_validated(tmp_path):
    with pytest.raises(ConfigError, match="size"):
        ToyMathDomain(ctx(tmp_path), size="huge")
    with pytest.raises(ConfigError, match="expert_set"):
        ToyMathDomain(ctx(tmp_path), expert_set="other")
    with pytest.raises(ConfigError, match="mergeable"):
        ToyMathDomain(ctx(tmp_path), mergeable="attention")
