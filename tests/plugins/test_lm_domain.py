"""The ``lm`` domain on tiny random Llama directories: I/O, checks, merging, sandbox, loading."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")


from selfdev.engine.api import ConfigError, Context, NullProgress  # noqa: E402
from selfdev.plugins.domains.baselines import average, task_arithmetic  # noqa: E402
from selfdev.plugins.domains.lm.domain import LMDomain  # noqa: E402
from selfdev.plugins.domains.lm.io import INDEX_FILE, ModelDir, ShardWriter, mergeable_filter  # noqa: E402
from selfdev.plugins.domains.lm.model import LMModel  # noqa: E402

AVERAGE = '''
import torch


def merge_models(task_vectors: dict[str, torch.Tensor], base: torch.Tensor, name: str) -> torch.Tensor:
    merged = torch.zeros_like(base)
    for tau in task_vectors.values():
        merged = merged + tau
    return merged / max(len(task_vectors), 1)
'''


def ctx(tmp_path):
    return Context(run_id="t", seed=0, home=tmp_path, artifacts=tmp_path / "art", progress=NullProgress())


def st(path: Path) -> dict:
    d = ModelDir.open(path)
    return {n: d.get(n) for n in d.names}


# ---------------------------------------------------------------------------- I/O
def test_model_dir_reads_single_and_sharded(tmp_path, make_tiny_llama):
    one = make_tiny_llama(tmp_path / "one")
    many = make_tiny_llama(tmp_path / "many", max_shard_size="20KB")
    assert (many / INDEX_FILE).is_file()
    a, b = ModelDir.open(one), ModelDir.open(many)
    assert len({t.file for t in b.tensors.values()}) > 1
    assert a.names == b.names and "lm_head.weight" not in a.names  # tied: stored once
    assert all(torch.equal(a.get(n), b.get(n)) for n in a.names)
    assert a.num_params == sum(t.numel for t in a.tensors.values())


def test_model_dir_refuses_missing_or_pickled_weights(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no model.safetensors"):
        ModelDir.open(tmp_path / "empty")
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "pytorch_model.bin").write_bytes(b"x")
    with pytest.raises(ConfigError, match="convert it"):
        ModelDir.open(tmp_path / "bin")
    with pytest.raises(ConfigError, match="not found"):
        ModelDir.open(tmp_path / "nowhere")


def test_shard_writer_writes_an_index_transformers_can_load(tmp_path, make_tiny_llama):
    from transformers import AutoModelForCausalLM

    src = make_tiny_llama(tmp_path / "src")
    tensors = st(src)
    out = tmp_path / "out"
    from selfdev.plugins.domains.lm.io import copy_model_files

    copy_model_files(src, out)
    w = ShardWriter(out, max_shard_bytes=30_000)
    for n, t in tensors.items():
        w.add(n, t)
    w.close()
    index = json.loads((out / INDEX_FILE).read_text())
    assert set(index["weight_map"]) == set(tensors) and len(set(index["weight_map"].values())) > 1
    assert not list(out.glob("*.tmp.safetensors"))
    m1 = AutoModelForCausalLM.from_pretrained(src)
    m2 = AutoModelForCausalLM.from_pretrained(out)
    ids = torch.tensor([[1, 5, 6, 7]])
    assert torch.equal(m1(ids).logits, m2(ids).logits)


def test_mergeable_selector():
    from selfdev.plugins.domains.lm.io import TensorInfo

    f = TensorInfo("x", (2,), "F32", "f")
    i = TensorInfo("x", (2,), "I64", "f")
    mlp = mergeable_filter("mlp")
    assert mlp("model.layers.0.mlp.up_proj.weight", f)
    assert not mlp("model.layers.0.self_attn.q_proj.weight", f)
    assert not mlp("model.layers.0.mlp.up_proj.weight", i)       # never integer buffers
    assert mergeable_filter("re:q_proj")("model.layers.0.self_attn.q_proj.weight", f)
    assert mergeable_filter("all")("model.norm.weight", f)
    with pytest.raises(ConfigError, match="mergeable"):
        mergeable_filter("attention")


# ---------------------------------------------------------------------------- architecture checks
def test_mismatched_expert_is_refused_naming_the_first_differing_tensor(tmp_path, make_tiny_llama):
    seed = make_tiny_llama(tmp_path / "seed")
    wide = make_tiny_llama(tmp_path / "wide", hidden=64)
    dom = LMDomain(ctx(tmp_path), seed_model=str(seed), experts={"w": str(wide)})
    with pytest.raises(ConfigError, match=r"expert 'w' does not match the seed at tensor "
                                          r"'model.embed_tokens.weight': shape \[162, 64\] vs the seed's \[162, 32\]"):
        dom.prepare()
    untied = make_tiny_llama(tmp_path / "untied", tie=False)
    with pytest.raises(ConfigError, match="tensor 'lm_head.weight' is in the expert"):
        LMDomain(ctx(tmp_path), seed_model=str(seed), experts={"u": str(untied)}).prepare()
    deep = make_tiny_llama(tmp_path / "deep", layers=3)
    with pytest.raises(ConfigError, match="'model.layers.2.input_layernorm.weight' is in the expert"):
        LMDomain(ctx(tmp_path), seed_model=str(seed), experts={"d": str(deep)}).prepare()


def test_options_are_validated(tmp_path, make_tiny_llama):
    with pytest.raises(ConfigError, match="seed_model"):
        LMDomain(ctx(tmp_path)).prepare()
    with pytest.raises(ConfigError, match="mergeable"):
        LMDomain(ctx(tmp_path), mergeable="heads")
    seed = make_tiny_llama(tmp_path / "seed")
    with pytest.raises(ConfigError, match="at least one expert"):
        LMDomain(ctx(tmp_path), seed_model=str(seed)).prepare()


# ---------------------------------------------------------------------------- merging
def test_memory_and_stream_modes_give_the_same_merge(tmp_path, tiny_llama):
    seed, experts = tiny_llama(max_shard_size="20KB")
    mem = LMDomain(ctx(tmp_path), seed_model=str(seed), experts={k: str(v) for k, v in experts.items()})
    stream = LMDomain(ctx(tmp_path), seed_model=str(seed), experts={k: str(v) for k, v in experts.items()},
                      in_memory_mb=0, chunk_mb=0, out_shard_mb=0)
    assert mem.prepare()["mode"] == "memory" and stream.prepare()["mode"] == "stream"
    a = mem.apply_function(task_arithmetic)
    b = stream.apply_function(task_arithmetic)
    assert a.ok and b.ok and b.details["tensors"] > 2
    assert isinstance(b.model, LMModel) and not b.model.overrides
    merged = st(b.model.source)
    seed_t, e = st(seed), {k: st(v) for k, v in experts.items()}
    for n, v in merged.items():
        expected = seed_t[n] + (e["x"][n] - seed_t[n]) + (e["y"][n] - seed_t[n])
        assert torch.allclose(v, expected, atol=1e-6), n
        assert torch.allclose(a.model.overrides[n], v, atol=1e-6)
    mem.close()
    stream.close()


def test_mlp_scope_leaves_everything_else_at_the_seed(tmp_path, tiny_llama):
    seed, experts = tiny_llama()
    dom = LMDomain(ctx(tmp_path), seed_model=str(seed), experts={k: str(v) for k, v in experts.items()},
                   mergeable="mlp")
    info = dom.prepare()
    assert info["num_mergeable_tensors"] == 6  # 2 layers x gate/up/down
    assert all(".mlp." in n for n in dom.mergeable)
    out = dom.apply_function(average)
    merged_dir = out.model.save(tmp_path / "merged")
    m, s = st(merged_dir), st(seed)
    for n in m:
        if ".mlp." in n:
            assert not torch.equal(m[n], s[n])
        else:
            assert torch.equal(m[n], s[n]), n
    dom.close()


def test_candidate_runs_in_the_sandbox_and_matches_the_trusted_baseline(tmp_path, tiny_llama):
    seed, experts = tiny_llama()
    dom = LMDomain(ctx(tmp_path), seed_model=str(seed), experts={k: str(v) for k, v in experts.items()})
    cand = dom.apply(AVERAGE, timeout=60)
    assert cand.ok, cand.reason
    ref = dom.apply_function(average)
    for n in dom.mergeable:
        assert torch.allclose(cand.model.overrides[n], ref.model.overrides[n], atol=1e-6)
    rejected = dom.apply("import os\n" + AVERAGE, timeout=30)
    assert rejected.status == "rejected"
    wrong = dom.apply("import torch\n\ndef merge_models(task_vectors, base, name):\n"
                      "    return torch.zeros(3)\n", timeout=30)
    assert wrong.status == "rejected" and "shape" in (wrong.reason or "")
    raised = dom.apply("import torch\n\ndef merge_models(task_vectors, base, name):\n"
                       "    raise ValueError('no')\n", timeout=30)
    assert raised.status == "error"
    dom.close()


def test_stream_mode_applies_candidates_tensor_by_tensor(tmp_path, tiny_llama):
    seed, experts = tiny_llama()
    dom = LMDomain(ctx(tmp_path), seed_model=str(seed), experts={k: str(v) for k, v in experts.items()},
                   in_memory_mb=0)
    dom.prepare()
    cand = dom.apply(AVERAGE, timeout=120, out_dir=tmp_path / "cand")
    assert cand.ok, cand.reason
    assert cand.details["tensors"] == len(dom.mergeable) >= 2 and cand.model.source == tmp_path / "cand"
    ref = dom.apply_function(average)
    a, b = st(tmp_path / "cand"), st(ref.model.source)
    assert all(torch.allclose(a[n], b[n], atol=1e-6) for n in a)
    bad = dom.apply("import torch\n\ndef merge_models(task_vectors, base, name):\n"
                    "    return base * float('nan')\n", timeout=60)
    assert bad.status == "rejected" and "non-finite" in bad.reason
    dom.close()


def test_trusted_function_failures_become_outcomes(tmp_path, tiny_llama):
    seed, experts = tiny_llama()
    dom = LMDomain(ctx(tmp_path), seed_model=str(seed), experts={k: str(v) for k, v in experts.items()})

    def broken(task_vectors, base, name):
        raise RuntimeError("boom")

    out = dom.apply_function(broken)
    assert out.status == "error" and "boom" in out.reason
    out = dom.apply_function(lambda tv, b, n: b.double())
    assert out.status == "rejected" and "dtype" in out.reason
    dom.close()


# ---------------------------------------------------------------------------- handles and loading
def test_merged_directory_loads_in_transformers_with_the_same_logits(tmp_path, tiny_llama):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    seed, experts = tiny_llama()
    dom = LMDomain(ctx(tmp_path), seed_model=str(seed), experts={k: str(v) for k, v in experts.items()})
    out = dom.apply_function(average)
    mem_model, tok = out.model.load("cpu")
    ids = tok(["Question: Tom has 3 apples.\nAnswer:"], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        mem_logits = mem_model(ids).logits.clone()
    saved = out.model.save(tmp_path / "merged")
    for f in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
              "model.safetensors"):
        assert (saved / f).is_file(), f
    loaded = AutoModelForCausalLM.from_pretrained(saved)
    tok2 = AutoTokenizer.from_pretrained(saved)
    assert tok2("Tom has 3")["input_ids"] == tok("Tom has 3")["input_ids"]
    with torch.no_grad():
        assert torch.allclose(loaded(ids).logits, mem_logits, atol=1e-5)
    # loading the seed handle afterwards restores the seed values in the shared cached model
    seed_model, _ = dom.seed_model().load("cpu")
    ref = AutoModelForCausalLM.from_pretrained(seed)
    with torch.no_grad():
        assert torch.allclose(seed_model(ids).logits, ref(ids).logits, atol=1e-6)
    dom.close()


def test_prompt_names_the_signature_the_experts_and_example_tensors(tmp_path, tiny_llama):
    seed, experts = tiny_llama()
    dom = LMDomain(ctx(tmp_path), seed_model=str(seed), experts={k: str(v) for k, v in experts.items()},
                   mergeable="mlp")
    text = dom.prompt()
    assert "def merge_models(task_vectors: dict[str, torch.Tensor], base: torch.Tensor, name: str)" in text
    assert "x, y" in text and "mlp" in text and "MLP" in text
    assert "```python" in text
    labels = [b.label for b in dom.baselines()]
    assert "task_arithmetic lam=0.5" in labels and "model_stock" in labels and "slerp t=0.5" in labels
    dom.close()


def test_hf_generation_is_batch_invariant_and_stops(tmp_path, tiny_llama):
    """Greedy decoding with left padding gives the same text alone and in a batch."""
    from selfdev.plugins.evaluators.gsm8k import hf_generate

    seed, _ = tiny_llama()
    model, tok = LMModel(seed).load("cpu")
    prompts = ["Question: Tom has 3 apples.\nAnswer:",
               "Question: There are 12 marbles in a box. Sam puts 4 more marbles in the box.\nAnswer:",
               "Question: Mia has 9 cards.\nAnswer:"]
    together = hf_generate(model, tok, prompts, 12, ["Question:"], batch_size=8)
    alone = [hf_generate(model, tok, [p], 12, ["Question:"], batch_size=1)[0] for p in prompts]
    assert together == alone
    assert all(isinstance(t, str) for t in together)


def test_gsm8k_evaluator_end_to_end_with_a_tiny_model(tmp_path, tiny_llama):
    from selfdev.plugins.evaluators.gsm8k import GSM8kEvaluator, default_gsm8k_dir

    if default_gsm8k_dir() is None:
        pytest.skip("GSM8k data not found")
    seed, experts = tiny_llama()
    ev = GSM8kEvaluator(ctx(tmp_path), shots=2, dev_size=4, test_limit=3, max_new_tokens=6, keep_outputs=True)
    m = ev.evaluate(None, str(seed), "dev")  # a model directory works as a handle too
    assert m["n"] == 4 and 0 <= m["score"] <= 100 and set(m) >= {"strict", "flexible", "seconds"}
    assert len(ev.last_outputs) == 4 and "output" in ev.last_outputs[0]
    assert ev.evaluate(None, str(seed), "test")["n"] == 3


def test_eval_data_option_feeds_the_evaluator(tmp_path, tiny_llama):
    seed, experts = tiny_llama()
    data = tmp_path / "data"
    data.mkdir()
    for f in ("test.jsonl", "dev.jsonl"):
        (data / f).write_text('{"question": "Tom has 2 apples. How many apples does Tom have?", '
                              '"answer": "Tom has 2 apples.\\n#### 2"}\n')
    dom = LMDomain(ctx(tmp_path), seed_model=str(seed), experts={k: str(v) for k, v in experts.items()},
                   eval_data=str(data))
    assert dom.eval_spec() == {"test_file": str(data / "test.jsonl"), "dev_file": str(data / "dev.jsonl")}
    assert LMDomain(ctx(tmp_path), seed_model=str(seed), experts={k: str(v) for k, v in experts.items()},
                    eval_data={"test_file": "x.jsonl", "shots": 0}).eval_spec()["shots"] == 0
    from selfdev.plugins.evaluators.gsm8k import GSM8kEvaluator

    ev = GSM8kEvaluator(ctx(tmp_path), shots=0, max_new_tokens=4)
    assert ev.evaluate(dom, dom.seed_model(), "dev")["n"] == 1
    assert ev.split_info(dom)["mode"] == "files"
    dom.close()
