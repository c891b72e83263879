"""The ``lm`` domain's stream mode: a sharded, bf16, tied-embedding model merged through ONE
sandbox child per candidate, bit for bit equal to the in-process merge; per-tensor limits and
verdicts through the domain."""
from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from selfdev.engine.api import Context, NullProgress  # noqa: E402
from selfdev.plugins.domains.lm.domain import LMDomain  # noqa: E402
from selfdev.plugins.domains.lm.io import INDEX_FILE, ModelDir  # noqa: E402

# a candidate whose arithmetic the in-process run repeats exactly (sums in a fixed order)
TIES_LIKE = '''
import torch


def merge_models(task_vectors: dict[str, torch.Tensor], base: torch.Tensor, name: str) -> torch.Tensor:
    tvs = [task_vectors[e] for e in sorted(task_vectors)]
    sign = torch.sign(tvs[0] + tvs[1])
    merged = torch.zeros_like(base)
    for tau in tvs:
        merged = merged + torch.where(torch.sign(tau) == sign, tau, torch.zeros_like(tau))
    return merged * 0.75
'''


def bf16_llama(path, seed: int, perturb_from=None):
    """A tiny Llama in bfloat16, tied embeddings, saved in several shards."""
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    from selfdev.plugins.domains.toymath.tokenizer import build_tokenizer

    tok = build_tokenizer()
    torch.manual_seed(seed)
    if perturb_from is None:
        cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128,
                          tie_word_embeddings=True, bos_token_id=tok.bos_token_id,
                          eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
        model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    else:
        model = AutoModelForCausalLM.from_pretrained(perturb_from, dtype=torch.bfloat16)
        with torch.no_grad():
            for p in model.parameters():
                p.add_((0.02 * torch.randn(p.shape)).to(p.dtype))
    model.save_pretrained(path, max_shard_size="20KB")
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def bf16_family(tmp_path_factory):
    root = tmp_path_factory.mktemp("bf16")
    seed = bf16_llama(root / "seed", 0)
    return seed, {e: bf16_llama(root / e, i + 1, perturb_from=seed) for i, e in enumerate(("x", "y"))}


def tensors(path) -> dict:
    d = ModelDir.open(path)
    return {n: d.get(n) for n in d.names}


def domain(tmp_path, family, **kw):
    seed, experts = family
    ctx = Context(run_id="t", seed=0, home=tmp_path, artifacts=tmp_path / "art", progress=NullProgress())
    dom = LMDomain(ctx, seed_model=str(seed), experts={k: str(v) for k, v in experts.items()},
                   in_memory_mb=0, out_shard_mb=0, **kw)
    dom.out_shard_bytes = 30_000  # several output shards
    return dom


@pytest.fixture(scope="module")
def dom(tmp_path_factory, bf16_family):
    """One stream-mode domain (one warm StreamSandbox) for the module."""
    d = domain(tmp_path_factory.mktemp("dom"), bf16_family, tensor_timeout=2.0)
    d.prepare()
    yield d
    d.close()


def test_sharded_bf16_tied_model_through_one_child_equals_the_in_process_merge(tmp_path, bf16_family, dom):
    from transformers import AutoModelForCausalLM

    seed, _ = bf16_family
    assert (seed / INDEX_FILE).is_file() and len(set(json.loads((seed / INDEX_FILE).read_text())
                                                     ["weight_map"].values())) > 2
    info = dom.prepare()
    assert info["mode"] == "stream" and info["num_mergeable_tensors"] >= 15
    sb = dom.stream_sandbox()
    parent, before = sb.parent_pid, list(sb.children)

    cand = dom.apply(TIES_LIKE, timeout=60, out_dir=tmp_path / "sandboxed")
    assert cand.ok, cand.reason
    # one child for every tensor of the model: the supervisor's own record of the children it
    # handed a candidate to, and the pid the verdict came from
    assert sb.children == before + [cand.details["pid"]]
    assert sb.parent_pid == parent and not sb.restarts
    assert cand.details["tensors"] == len(dom.mergeable) == info["num_mergeable_tensors"]

    ns: dict = {}
    exec(TIES_LIKE, ns)  # the same code, trusted, in this process
    ref = dom.apply_function(ns["merge_models"], out_dir=tmp_path / "in-process")
    assert ref.ok, ref.reason
    a, b, s = tensors(tmp_path / "sandboxed"), tensors(tmp_path / "in-process"), tensors(seed)
    assert set(a) == set(b) == set(s) and "lm_head.weight" not in a  # the tied copy: never written
    for n in a:
        assert a[n].dtype == s[n].dtype == torch.bfloat16, n  # the seed's dtype
        assert torch.equal(a[n].view(torch.int16), b[n].view(torch.int16)), n  # bit for bit
    assert not torch.equal(a["model.layers.0.mlp.up_proj.weight"], s["model.layers.0.mlp.up_proj.weight"])
    out = tmp_path / "sandboxed"
    assert (out / INDEX_FILE).is_file() and len(list(out.glob("model-*.safetensors"))) > 1
    assert json.loads((out / "config.json").read_text())["tie_word_embeddings"] is True
    for f in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        assert (out / f).is_file(), f

    model = AutoModelForCausalLM.from_pretrained(out)  # loads as is, re-tied
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert torch.equal(model.model.embed_tokens.weight, a["model.embed_tokens.weight"])

    again = dom.apply(TIES_LIKE, timeout=60)  # a second candidate: one more child, same parent
    assert again.ok and sb.children == before + [cand.details["pid"], again.details["pid"]]
    assert sb.parent_pid == parent


def test_a_wrong_shape_or_a_stall_at_tensor_k_ends_the_candidate_with_its_verdict(tmp_path, bf16_family, dom):
    k_name = dom.mergeable[6]
    wrong = ("import torch\n\ndef merge_models(task_vectors, base, name):\n"
             f"    if name == {k_name!r}:\n        return torch.zeros(3)\n    return base * 0\n")
    out = dom.apply(wrong, timeout=60, out_dir=tmp_path / "wrong")
    assert out.status == "rejected" and "shape" in out.reason and k_name in out.reason
    assert out.details["tensor"] == k_name and out.model is None
    assert not (tmp_path / "wrong").exists() and not (tmp_path / "wrong.partial").exists()
    stall = ("import torch\n\ndef merge_models(task_vectors, base, name):\n"
             f"    if name == {k_name!r}:\n        n = 0\n        while True:\n            n = n + 1\n"
             "    return base * 0\n")
    out = dom.apply(stall, timeout=60)
    assert out.status == "timeout" and "per-tensor limit of 2 s" in out.reason and k_name in out.reason
    assert out.details["limit"] == "tensor"
    # the total budget: 0.5 s of compute is too little for this slow candidate's tensors, a
    # budget of 60 s is plenty (the per-tensor limit still 2 s)
    slow = ("import torch\n\ndef merge_models(task_vectors, base, name):\n"
            "    x = base\n    for i in range(6000):\n        x = x * 1.0\n    return base * 0\n")
    out = dom.apply(slow, timeout=0.5)
    assert out.status == "timeout" and out.details["limit"] == "total", out.reason
    assert "total compute budget of 0.5 s" in out.reason
    assert dom.apply(slow, timeout=60).ok
    # it scales with the number of mergeable parameters (timeout_per_gparam)
    roomy = domain(tmp_path / "c", bf16_family, timeout_per_gparam=1e7)
    n = roomy.prepare()["num_mergeable_params"]
    assert dom.budget(0.5) == 0.5 and roomy.budget(0.5) == pytest.approx(0.5 + 1e7 * n / 1e9)
    roomy.close()


def test_a_stored_tied_lm_head_is_neither_merged_nor_written(tmp_path, tiny_llama):
    """Some checkpoints store ``lm_head.weight`` although the config ties it: it is not
    merged, not written twice, and transformers ties it to the merged embeddings on load."""
    from safetensors.torch import load_file, save_file
    from transformers import AutoModelForCausalLM

    from selfdev.plugins.domains.baselines import average

    seed, experts = tiny_llama()
    for d in [seed, *experts.values()]:
        t = load_file(d / "model.safetensors")
        t["lm_head.weight"] = t["model.embed_tokens.weight"].clone()
        save_file(t, d / "model.safetensors", metadata={"format": "pt"})
    dom = domain(tmp_path, (seed, experts))
    dom.prepare()
    assert "lm_head.weight" not in dom.mergeable and "model.embed_tokens.weight" in dom.mergeable
    out = dom.apply_function(average, out_dir=tmp_path / "merged")  # the same writer as candidates
    assert out.ok, out.reason
    merged = tensors(tmp_path / "merged")
    assert "lm_head.weight" not in merged
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    assert torch.equal(model.lm_head.weight, merged["model.embed_tokens.weight"])
    assert not torch.equal(merged["model.embed_tokens.weight"], load_file(seed / "model.safetensors")
                           ["model.embed_tokens.weight"])
    dom.close()
