"""The ``sft`` optimizer: fine-tunes the factory on the chosen completions only."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from selfdev.engine.api import ConfigError, Context, NullProgress, Pair

PROMPT = "Write merge_models."


@pytest.fixture(scope="session")
def tiny_factory(tmp_path_factory) -> Path:
    from selfdev.plugins.generators.tiny import ensure_factory

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return ensure_factory(tmp_path_factory.getbasetemp() / "tiny-factory-home", "test", threads=1)


@pytest.fixture
def ctx(tiny_factory, tmp_path) -> Context:
    home = tiny_factory.parents[2]
    return Context(run_id="t-sft", seed=0, home=home, artifacts=tmp_path / "artifacts",
                   progress=NullProgress())


GOOD = ("import torch\n\n\ndef merge_models(task_vectors: dict[str, torch.Tensor], base: "
        "torch.Tensor, name: str) -> torch.Tensor:\n"
        "    taus = [tau.float() for tau in task_vectors.values()]\n\n"
        "    merged = torch.stack(taus).mean(dim=0)\n\n"
        "    scale = 1.0\n    return (scale * merged).to(base.dtype)\n")


def test_sft_raises_the_likelihood_of_the_chosen(ctx, tiny_factory):
    from selfdev.plugins.factory.checkpoints import load_factory
    from selfdev.plugins.optimizers.sft import SFTOptimizer

    pairs = [Pair(PROMPT, GOOD, "import torch\nx = (", 90.0, 10.0),
             Pair(PROMPT, GOOD, "def merge_models(:", 90.0, 5.0)]
    result = SFTOptimizer(ctx, threads=1, epochs=3, batch_size=1).refine(tiny_factory, pairs, 1)
    m = result.metrics
    assert m["examples"] == 1 and m["trained"] is True   # de-duplicated chosen side only
    assert m["chosen_logp_after"] > m["chosen_logp_before"]
    assert m["steps"] == 3
    manifest = json.loads((result.checkpoint / "selfdev_factory.json").read_text())
    assert manifest["lineage"] == [{"optimizer": "sft", "iteration": 1}]
    assert manifest["factory"] == "tiny" and manifest["kind"] == "full"
    loaded = load_factory(result.checkpoint)
    assert loaded.manifest["prompt"]["mode"] == "header"


def test_sft_skips_without_examples(ctx, tiny_factory):
    from selfdev.plugins.optimizers.sft import SFTOptimizer

    result = SFTOptimizer(ctx).refine(tiny_factory, [], 1)
    assert result.checkpoint is None and result.metrics["trained"] is False


def test_sft_presets(ctx):
    from selfdev.plugins.optimizers.sft import SFTOptimizer

    opt = SFTOptimizer(ctx)
    assert opt.settings({"factory": "tiny"})[1].lora is False
    assert opt.settings({})[1].lora is True
    with pytest.raises(ConfigError):
        SFTOptimizer(ctx, preset="paper")
