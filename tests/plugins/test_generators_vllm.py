"""The ``vllm`` generator without vLLM: a one-line error before any work, and cheap imports."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from selfdev.engine.api import Context, NullProgress, SelfdevError
from selfdev.plugins.generators import vllm as vllm_plugin


@pytest.fixture
def ctx(tmp_path: Path) -> Context:
    return Context(run_id="t", seed=0, home=tmp_path, artifacts=tmp_path / "art",
                   progress=NullProgress())


def test_missing_vllm_is_one_clear_line(ctx, monkeypatch):
    monkeypatch.setattr(vllm_plugin, "vllm_available", lambda: False)
    with pytest.raises(SelfdevError) as err:
        vllm_plugin.VLLMGenerator(ctx, model=str(ctx.home))
    msg = str(err.value)
    assert "\n" not in msg
    assert "vLLM" in msg and "pip install 'selfdev[vllm]'" in msg and "hf" in msg


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed")
def test_really_missing_here(ctx):
    with pytest.raises(SelfdevError, match="not installed"):
        vllm_plugin.VLLMGenerator(ctx, model=str(ctx.home))


def test_cli_prints_one_line(tmp_path):
    """Through the CLI: `selfdev demo --generator vllm` style failures print `error: ...` once."""
    code = ("import sys; from selfdev.engine.api import Context, NullProgress, SelfdevError\n"
            "from pathlib import Path\n"
            "from selfdev.plugins.generators import vllm as v\n"
            "v.vllm_available = lambda: False\n"
            "try:\n"
            "    v.VLLMGenerator(Context('t', 0, Path('.'), Path('.'), NullProgress()), model='m')\n"
            "except SelfdevError as e:\n"
            "    print(f'error: {e}')\n"
            "print('torch' in sys.modules, 'vllm' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[2], timeout=60)
    lines = out.stdout.strip().splitlines()
    assert lines[0].startswith("error: the vllm generator needs vLLM")
    assert lines[1] == "False False"  # the plugin module imports neither torch nor vllm


# ------------------------------------------------------------------------------------------
# the request logic, against a stand-in vllm module (the real one needs a CUDA GPU)


class _FakeLLM:
    instances: list = []

    def __init__(self, model, **kwargs):
        self.model, self.kwargs, self.calls = model, kwargs, []
        _FakeLLM.instances.append(self)

    def generate(self, requests, params, lora_request=None, use_tqdm=True):
        from types import SimpleNamespace

        self.calls.append((requests, params, lora_request))
        return [SimpleNamespace(outputs=[SimpleNamespace(
            text=f"def merge_models(task_vectors, base, name):  # seed {p.seed}\n    return base",
            token_ids=[1, 2, 3], finish_reason="stop")]) for p in params]


@pytest.fixture
def fake_vllm(monkeypatch):
    import types

    from dataclasses import dataclass

    @dataclass
    class SamplingParams:
        n: int = 1
        temperature: float = 1.0
        top_p: float = 1.0
        top_k: int = -1
        max_tokens: int = 16
        seed: int | None = None
        stop: list | None = None

    @dataclass
    class LoRARequest:
        lora_name: str
        lora_int_id: int
        lora_path: str

    vllm = types.ModuleType("vllm")
    vllm.LLM, vllm.SamplingParams = _FakeLLM, SamplingParams
    lora = types.ModuleType("vllm.lora")
    request = types.ModuleType("vllm.lora.request")
    request.LoRARequest = LoRARequest
    monkeypatch.setitem(sys.modules, "vllm", vllm)
    monkeypatch.setitem(sys.modules, "vllm.lora", lora)
    monkeypatch.setitem(sys.modules, "vllm.lora.request", request)
    monkeypatch.setattr(vllm_plugin, "vllm_available", lambda: True)
    _FakeLLM.instances = []
    return vllm


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    import os
    import shutil

    from selfdev.plugins.generators.tiny import ensure_factory

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    factory = ensure_factory(tmp_path_factory.getbasetemp() / "tiny-factory-home", "test",
                             threads=1)
    dest = tmp_path_factory.mktemp("vllm") / "model"
    shutil.copytree(factory, dest, ignore=shutil.ignore_patterns("selfdev_factory.json"))
    return dest


def test_requests_seeds_and_lora_per_iteration(ctx, fake_vllm, model_dir, tmp_path):
    from selfdev.plugins.factory.checkpoints import load_tokenizer

    gen = vllm_plugin.VLLMGenerator(ctx, model=str(model_dir), max_new_tokens=32, top_p=0.9)
    out = gen.generate(["Write merge_models."], 3, 1.1, seed=5)
    assert len(out) == 3 and all(c.meta["finish"] == "stop" and not c.meta["lora"] for c in out)
    engine = _FakeLLM.instances[0]
    assert engine.model == str(model_dir) and engine.kwargs["enable_lora"] is True
    requests, params, lora = engine.calls[0]
    assert lora is None
    assert [p.seed for p in params] == [vllm_plugin.derive_seed(5, 0, i) % 2 ** 31 for i in range(3)]
    assert params[0].temperature == 1.1 and params[0].max_tokens == 32 and params[0].top_p == 0.9
    # plain mode (no chat template, no manifest): the prompt's own token ids
    tok = load_tokenizer(model_dir)
    assert requests[0]["prompt_token_ids"] == tok("Write merge_models.")["input_ids"]

    # an adapter checkpoint: same engine, a LoRARequest
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text('{"base_model_name_or_path": "%s"}' % model_dir)
    gen.generate(["Write merge_models."], 2, 1.0, seed=6, checkpoint=adapter)
    assert len(_FakeLLM.instances) == 1
    _, _, lora = engine.calls[1]
    assert lora.lora_path == str(adapter.resolve()) and lora.lora_int_id == 1

    # a full-weights checkpoint: the engine restarts on it
    full = tmp_path / "full"
    import shutil

    shutil.copytree(model_dir, full)
    gen.generate(["Write merge_models."], 1, 1.0, seed=7, checkpoint=full)
    assert len(_FakeLLM.instances) == 2 and _FakeLLM.instances[1].model == str(full)
