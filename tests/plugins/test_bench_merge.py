"""``bench/merge.py``'s models: TinyLlama's shape, deterministic, loadable by transformers and
by the ``lm`` domain (the timing itself is the benchmark's job, never a test's)."""
from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

MERGE_PY = Path(__file__).resolve().parents[2] / "bench" / "merge.py"
MICRO = dict(hidden=64, layers=2, intermediate=128, heads=4, kv_heads=2, vocab=96)


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_merge", MERGE_PY)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _digest(d: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(d.iterdir()):
        h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()


def test_tinyllama_shape_has_tinyllamas_parameter_count(bench):
    # TinyLlama-1.1B (untied embeddings): 1,100,048,384 parameters
    assert bench.num_params(bench.SIZES["tinyllama"]) == 1_100_048_384
    cfg = bench.llama_config(bench.SIZES["tinyllama"])
    assert (cfg["hidden_size"], cfg["num_hidden_layers"], cfg["intermediate_size"],
            cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["vocab_size"]) == \
        (2048, 22, 5632, 32, 4, 32000)


def test_models_are_deterministic_sharded_and_load_in_transformers(bench, tmp_path, monkeypatch):
    transformers = pytest.importorskip("transformers")
    from selfdev.plugins.domains.lm.io import ModelDir

    monkeypatch.setattr(bench, "SHARD_BYTES", 40_000)  # several shards even at this size
    bench.build_model(tmp_path / "a", MICRO, "x")
    bench.build_model(tmp_path / "b", MICRO, "x")
    bench.build_model(tmp_path / "seed", MICRO, "seed")
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert len(bench.weight_files(tmp_path / "a")) > 1
    model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "a")
    assert sum(p.numel() for p in model.parameters()) == bench.num_params(MICRO)
    assert next(model.parameters()).dtype == torch.bfloat16
    seed, x = ModelDir.open(tmp_path / "seed"), ModelDir.open(tmp_path / "a")
    try:
        name = "model.layers.1.mlp.down_proj.weight"
        tau = x.get(name).float() - seed.get(name).float()
        assert 0.001 < tau.std().item() < 0.004  # experts = seed + N(0, 0.002²), in bf16
    finally:
        seed.close()
        x.close()
