"""The ``vllm`` generator without vLLM: a one-line error before any work, and cheap imports."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from engine.api import Context, NullProgress, SelfdevError
from plugins.generators import vllm as vllm_plugin


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
    code = ("import sys; from engine.api import Context, NullProgress, SelfdevError\n"
            "from pathlib import Path\n"
            "from plugins.generators import vllm as v\n"
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
