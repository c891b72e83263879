"""One GPU, three phases: the start-up memory estimate and its refusals (``engine/device.py``).

The estimates are checked against numbers computed by hand for Llama-2-7B's configuration
(no weights are needed: the parameter count comes from ``config.json``); the refusals go
through ``selfdev run`` with the device's size injected (``SELFDEV_DEVICE_MEMORY``), so they run
on a CPU machine: one line naming the phase and the numbers, exit 2, nothing in the log.
"""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from selfdev.engine.api import ConfigError
from selfdev.engine.cli import cli
from selfdev.engine.device import (DeviceNeed, DevicePlan, check_device_plan, model_shape,
                                   parse_size)
from selfdev.plugins.evaluators.gsm8k import GSM8kEvaluator
from selfdev.plugins.generators.vllm import VLLMGenerator
from selfdev.plugins.optimizers.dpo import DPOOptimizer

GiB = 1 << 30
LLAMA2_7B = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
             "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32,
             "num_key_value_heads": 32, "vocab_size": 32000, "max_position_embeddings": 4096,
             "tie_word_embeddings": False, "torch_dtype": "bfloat16"}
# by hand: embeddings + head 2 * 32000 * 4096 = 262,144,000; a layer: attention 4 * 4096^2 =
# 67,108,864, MLP 3 * 4096 * 11008 = 135,266,304, two norms 8,192 -> 202,383,360; x 32 =
# 6,476,267,520; final norm 4,096. Total 6,738,415,616 (Llama-2-7B's published count).
PARAMS = 6_738_415_616
WEIGHTS = PARAMS * 2                      # bf16
KV_PER_TOKEN = 2 * 32 * 32 * 128 * 2      # K and V, 32 layers, 32 heads of 128, bf16 = 0.5 MiB
# LoRA r 256 on q, k, v, o (4 * 256 * (4096 + 4096)) and gate, up, down (3 * 256 * (4096 +
# 11008)) = 8,388,608 + 11,599,872 = 19,988,480 a layer, x 32
LORA_256 = 639_631_360


@pytest.fixture(scope="module")
def llama7b(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("llama-7b-config")
    (d / "config.json").write_text(json.dumps(LLAMA2_7B))
    return d


def test_model_shape_from_the_configuration(llama7b):
    s = model_shape(llama7b)
    assert (s.params, s.exact, s.dtype_bytes) == (PARAMS, False, 2)
    assert s.kv_bytes_per_token(2) == KV_PER_TOKEN == 512 * 1024
    assert s.lora_params(256) == LORA_256
    assert s.lora_params(8, ["q_proj", "v_proj"]) == 32 * (8 * 8192 + 8 * 8192)


def test_exact_count_from_safetensors_headers(tmp_path):
    """With weights present the count is read from the shard headers (tied embeddings count
    once), not from the Llama formula."""
    import numpy as np
    from safetensors.numpy import save_file

    cfg = dict(LLAMA2_7B, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
               num_attention_heads=2, num_key_value_heads=2, vocab_size=10)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    save_file({"a": np.zeros((3, 5), np.float32), "b": np.zeros(7, np.float32)},
              str(tmp_path / "model-1.safetensors"))
    save_file({"c": np.zeros((2, 2, 2), np.float16)}, str(tmp_path / "model-2.safetensors"))
    s = model_shape(tmp_path)
    assert (s.params, s.exact) == (15 + 7 + 8, True)


def test_phase_estimates_by_hand(llama7b):
    plan = DevicePlan(factory_model=llama7b, evaluated_model=llama7b)
    gen = VLLMGenerator.device_memory(VLLMGenerator.Options(model=str(llama7b)), plan)
    assert gen.parts == {"weights": WEIGHTS, "KV cache for 4096 tokens": KV_PER_TOKEN * 4096,
                         "LoRA r 256": LORA_256 * 2}
    assert gen.bytes == 16_903_577_600 and gen.budget == 0.85 and not gen.resident

    ev = GSM8kEvaluator.device_memory(GSM8kEvaluator.Options(backend="vllm", max_model_len=2048),
                                      plan)
    assert ev.parts == {"weights": WEIGHTS, "KV cache for 2048 tokens": KV_PER_TOKEN * 2048}
    # the hf backend: batch_size rows of 1024 prompt + max_new_tokens tokens
    hf = GSM8kEvaluator.device_memory(GSM8kEvaluator.Options(batch_size=8, max_new_tokens=256),
                                      plan)
    assert hf.parts["KV cache for 8 x 1280 tokens"] == KV_PER_TOKEN * 8 * 1280
    assert GSM8kEvaluator.device_memory(GSM8kEvaluator.Options(device="cpu"), plan) is None

    # the paper preset: LoRA r 256, the reference is the frozen copy of the adapter
    dpo = DPOOptimizer.device_memory(DPOOptimizer.Options(), plan)
    assert dpo.parts == {"weights": WEIGHTS,
                         "LoRA r 256 with gradients and Adam states": LORA_256 * 16,
                         "reference": LORA_256 * 4}
    assert dpo.bytes == 26_269_458_432
    full = DPOOptimizer.device_memory(DPOOptimizer.Options(lora=False), plan)
    assert full.parts == {"weights": WEIGHTS, "gradients and Adam states": 3 * WEIGHTS,
                          "reference": WEIGHTS}
    initial = DPOOptimizer.device_memory(DPOOptimizer.Options(reference="initial"), plan)
    assert initial.parts["reference"] == WEIGHTS
    assert DPOOptimizer.device_memory(DPOOptimizer.Options(device="cpu"), plan) is None


def test_vllm_serves_float32_checkpoints_in_16_bits(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(dict(LLAMA2_7B, torch_dtype="float32")))
    plan = DevicePlan(factory_model=tmp_path)
    assert VLLMGenerator.device_memory(VLLMGenerator.Options(model=str(tmp_path)),
                                       plan).parts["weights"] == WEIGHTS
    assert VLLMGenerator.device_memory(VLLMGenerator.Options(model=str(tmp_path), dtype="float32"),
                                       plan).parts["weights"] == 2 * WEIGHTS


def need(phase, gib, budget=None, resident=False):
    return DeviceNeed(parts={"weights": int(gib * GiB)}, budget=budget, resident=resident,
                      component=f"c-{phase}", phase=phase)


def test_check_device_plan():
    check_device_plan([need("generation", 60, 0.85), need("refinement", 70)], 80 * GiB)
    check_device_plan([need("refinement", 900)], None)  # no GPU: nothing to check
    with pytest.raises(ConfigError, match=r"the generation phase cannot fit: c-generation needs "
                                          r"70\.0 GiB \(weights 70\.0 GiB\) but "
                                          r"gpu_memory_utilization 0\.85 of the 80\.0 GiB device "
                                          r"is 68\.0 GiB"):
        check_device_plan([need("generation", 70, 0.85)], 80 * GiB)
    with pytest.raises(ConfigError, match=r"refinement phase cannot fit: c-refinement needs "
                                          r"81\.0 GiB"):
        check_device_plan([need("refinement", 81)], 80 * GiB)
    # one that keeps its 68 GiB through the other phases crowds them out
    with pytest.raises(ConfigError, match=r"the evaluation phase cannot fit: c-evaluation 40\.0 "
                                          r"GiB \+ c-generation keeps 68\.0 GiB"):
        check_device_plan([need("generation", 10, 0.85, resident=True),
                           need("evaluation", 10, 0.5)], 80 * GiB)


def test_parse_size():
    assert parse_size("80GiB") == 80 * GiB and parse_size("24 gb") == 24 * GiB
    assert parse_size("512M") == 512 << 20 and parse_size("1000") == 1000
    with pytest.raises(ConfigError, match="SELFDEV_DEVICE_MEMORY"):
        parse_size("lots")


# ------------------------------------------------------------------ through `selfdev run`

def write_config(tmp_path: Path, factory: Path, seed: Path, expert: Path, *, optimizer: str = "",
                 generator: str = "") -> Path:
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    row = json.dumps({"question": "1 + 1?", "answer": "#### 2"}) + "\n"
    (data / "dev.jsonl").write_text(row)
    (data / "test.jsonl").write_text(row)
    text = f"""
[run]
iterations = 2
candidates = 4
[domain]
name = "lm"
seed_model = "{seed}"
experts = {{a = "{expert}"}}
[generator]
name = "vllm"
model = "{factory}"
{generator}
[evaluator]
name = "gsm8k"
backend = "vllm"
dev_file = "{data / 'dev.jsonl'}"
test_file = "{data / 'test.jsonl'}"
shots = 0
[optimizer]
name = "dpo"
{optimizer}
"""
    path = tmp_path / "run.toml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    """Seed and expert directories as far as the preflight reads them (configuration and
    safetensors headers), written without torch so the refusals stay fast."""
    import numpy as np
    from safetensors.numpy import save_file

    d = tmp_path_factory.mktemp("tiny-lm")
    cfg = dict(LLAMA2_7B, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
               num_attention_heads=2, num_key_value_heads=2, vocab_size=10,
               torch_dtype="float32")
    out = []
    for name in ("seed", "a"):
        (d / name).mkdir()
        (d / name / "config.json").write_text(json.dumps(cfg))
        save_file({"model.embed_tokens.weight": np.zeros((10, 8), np.float32),
                   "model.layers.0.mlp.up_proj.weight": np.zeros((16, 8), np.float32)},
                  str(d / name / "model.safetensors"))
        out.append(d / name)
    return tuple(out)


CASES = {
    # vLLM's 15.7 GiB for the 7B factory does not fit 0.85 of a 16 GiB card
    "generation": ("16GiB", "", "",
                   "the generation phase cannot fit: generator 'vllm' needs 15.7 GiB (weights "
                   "12.6 GiB + KV cache for 4096 tokens 2.0 GiB + LoRA r 256 1.2 GiB) but "
                   "gpu_memory_utilization 0.85 of the 16.0 GiB device is 13.6 GiB"),
    # full-weights DPO on the 7B factory: weights, gradients, Adam states and a reference copy
    "refinement": ("48GiB", "lora = false", "",
                   "the refinement phase cannot fit: optimizer 'dpo' needs 62.8 GiB (weights "
                   "12.6 GiB + gradients and Adam states 37.7 GiB + reference 12.6 GiB), more "
                   "than the 48.0 GiB device"),
    # a generator that never releases the GPU crowds the evaluator's vLLM out
    "resident": ("80GiB", "", 'release = "keep"',
                 "the evaluation phase cannot fit: evaluator 'gsm8k' 68.0 GiB + generator "
                 "'vllm' keeps 68.0 GiB (release = \"keep\") = 136.0 GiB, more than the 80.0 "
                 "GiB device"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_selfdev_run_refuses_a_phase_that_cannot_fit(case, tmp_path, llama7b, tiny_lm):
    size, optimizer, generator, expected = CASES[case]
    cfg = write_config(tmp_path, llama7b, *tiny_lm, optimizer=optimizer, generator=generator)
    db = tmp_path / "runs.db"
    result = CliRunner().invoke(cli, ["run", str(cfg), "--db", str(db), "--quiet"],
                                env={"SELFDEV_DEVICE_MEMORY": size})
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: config: {expected}"), result.stderr
    if db.exists():
        assert sqlite3.connect(db).execute("select count(*) from events").fetchone()[0] == 0


def test_a_plan_that_fits_passes_the_check(tmp_path, llama7b, tiny_lm):
    """The headline configuration (vllm + gsm8k on vLLM + dpo paper preset, 7B) on an 80 GiB
    card passes the memory check: preflight goes through to the end."""
    from selfdev.engine.config import load
    from selfdev.engine.loop import preflight
    from selfdev.engine.plugins import get_registry

    cfg = load(write_config(tmp_path, llama7b, *tiny_lm))
    reg = get_registry()
    mp = pytest.MonkeyPatch()
    mp.setenv("SELFDEV_DEVICE_MEMORY", "80GiB")
    try:
        preflight(cfg, {k: reg.get(k, getattr(cfg, k).name)
                        for k in ("domain", "generator", "optimizer", "executor", "evaluator")})
        mp.setenv("SELFDEV_DEVICE_MEMORY", "8GiB")
        with pytest.raises(ConfigError, match="the generation phase cannot fit"):
            preflight(cfg, {k: reg.get(k, getattr(cfg, k).name)
                            for k in ("domain", "generator", "optimizer", "executor",
                                      "evaluator")})
    finally:
        mp.undo()
