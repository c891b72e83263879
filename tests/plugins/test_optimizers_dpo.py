"""The ``dpo`` optimizer on the test-size tiny factory (CPU, seeded).

The direction test is a run in miniature: sample from the factory, run every program through
the digits domain's sandbox and score it on dev, build preference pairs from the dev scores,
refine once with DPO, then sample again with the same seed and temperature.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from selfdev.engine.api import ConfigError, Context, NullProgress, Pair

PROMPT = "Write merge_models."  # the tiny factory conditions on its header, not on this


@pytest.fixture(scope="session")
def factory_home(tmp_path_factory) -> Path:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return tmp_path_factory.getbasetemp() / "tiny-factory-home"   # shared with the other files


@pytest.fixture(scope="session")
def tiny_factory(factory_home) -> Path:
    from selfdev.plugins.generators.tiny import ensure_factory

    return ensure_factory(factory_home, "test", threads=1)


@pytest.fixture
def ctx(factory_home, tmp_path) -> Context:
    return Context(run_id="t-dpo", seed=0, home=factory_home, artifacts=tmp_path / "artifacts",
                   progress=NullProgress())


@pytest.fixture
def gen(ctx, tiny_factory):
    from selfdev.plugins.generators.tiny import TinyGenerator

    return TinyGenerator(ctx, size="test", threads=1, max_new_tokens=256)


def build_pairs(texts: list[str], scores: list[float | None], p_w: float, p_l: float) -> list[Pair]:
    """As the engine does (DESIGN step 6): rank the scored candidates by dev score; chosen = top
    ``p_w``, rejected = bottom ``p_l``; every chosen x rejected pair with a strictly higher
    score. Candidates that did not run have no score and are not used."""
    ranked = sorted(((s, t) for s, t in zip(scores, texts) if s is not None), key=lambda x: -x[0])
    n = len(ranked)
    chosen = ranked[:max(1, math.ceil(p_w * n))]
    rejected = [r for r in ranked[-max(1, math.ceil(p_l * n)):] if r not in chosen]
    return [Pair(PROMPT, c[1], r[1], c[0], r[0]) for c in chosen for r in rejected if c[0] > r[0]]


def draw(gen, digits, accuracy, n: int, temperature: float, seed: int,
         checkpoint: Path | None = None) -> tuple[list[str], list[float | None], dict]:
    from selfdev.plugins.commands.factory_stats import run_candidates
    from selfdev.plugins.factory.programs import candidate_code

    completions = gen.generate([PROMPT], n, temperature, seed, checkpoint=checkpoint)
    texts = [c.text for c in completions]
    runs = run_candidates([candidate_code(t) for t in texts], digits, accuracy)
    scores = [s if status == "ok" else None for status, s in runs]
    ok = [s for s in scores if s is not None]
    stats = {"executable_rate": len(ok) / n, "mean_score": sum(ok) / len(ok) if ok else 0.0,
             "mean_score_all": sum(ok) / n}
    return texts, scores, stats


def test_dpo_moves_the_factory_in_the_intended_direction(ctx, gen, tiny_factory, digits,
                                                         accuracy):
    from selfdev.plugins.optimizers.dpo import DPOOptimizer

    temperature = 1.0
    texts, scores, run_stats = draw(gen, digits, accuracy, 48, temperature, seed=11)
    # a small run: wider fractions than the paper's 3% / 10% so that there are pairs at all
    pairs = build_pairs(texts, scores, p_w=0.25, p_l=0.25)
    assert len(pairs) >= 4, (run_stats, len(pairs))

    opt = DPOOptimizer(ctx, threads=1)
    result = opt.refine(tiny_factory, pairs, iteration=1)
    m = result.metrics
    assert result.checkpoint is not None and result.checkpoint.is_dir()
    assert result.checkpoint.parent == ctx.artifacts / "factory"
    # the log-probability margin chosen - rejected on those pairs increases
    assert m["logp_margin_after"] > m["logp_margin_before"]
    assert m["logp_accuracy_after"] >= m["logp_accuracy_before"]
    assert m["loss_last"] < m["loss_first"]
    assert m["steps"] >= 1 and len(m["losses"]) == m["steps"]

    # sampling at the same temperature and seed: higher executable rate or mean score
    _, _, before = draw(gen, digits, accuracy, 48, temperature, seed=99)
    _, _, after = draw(gen, digits, accuracy, 48, temperature, seed=99,
                       checkpoint=result.checkpoint)
    assert (after["executable_rate"] > before["executable_rate"]
            or after["mean_score"] > before["mean_score"]), (before, after)
    # and not by breaking the factory: the expected score of a draw (a failure counts 0) rises
    assert after["mean_score_all"] > before["mean_score_all"], (before, after)


@pytest.fixture
def small_pairs(gen) -> list[Pair]:
    """Pairs without running anything: longer completions chosen (cheap, for mechanics)."""
    texts = [c.text for c in gen.generate([PROMPT], 8, 0.9, seed=5)]
    texts = sorted(set(texts), key=len)
    return [Pair(PROMPT, c, r, 1.0, 0.0) for c in texts[-2:] for r in texts[:2]]


def test_iterative_refinement_uses_the_current_factory_as_reference(ctx, tiny_factory,
                                                                    small_pairs):
    """trl would otherwise reload the *original* checkpoint as the reference (feasibility §3):
    with reference = current, trl's first logged reward margin is exactly 0 in round 2 too."""
    from selfdev.plugins.optimizers.dpo import DPOOptimizer

    opt = DPOOptimizer(ctx, threads=1, epochs=1, batch_size=4)
    first = opt.refine(tiny_factory, small_pairs, iteration=1)
    second = opt.refine(first.checkpoint, small_pairs, iteration=2)
    assert second.metrics["reward_margin_first"] == pytest.approx(0.0, abs=1e-6)
    manifest = json.loads((second.checkpoint / "selfdev_factory.json").read_text())
    assert Path(manifest["initial"]) == tiny_factory.resolve()
    assert [x["iteration"] for x in manifest["lineage"]] == [1, 2]
    assert manifest["prompt"]["mode"] == "header"
    # the initial factory as reference: round 2 starts away from it
    initial_ref = DPOOptimizer(ctx, threads=1, epochs=1, batch_size=4, reference="initial")
    third = initial_ref.refine(first.checkpoint, small_pairs, iteration=3)
    assert abs(third.metrics["reward_margin_first"]) > 1e-4


def test_lora_refinement_writes_an_adapter_the_generator_applies(ctx, gen, tiny_factory,
                                                                 small_pairs):
    from selfdev.plugins.factory.checkpoints import adapter_base, is_adapter
    from selfdev.plugins.optimizers.dpo import DPOOptimizer

    opt = DPOOptimizer(ctx, threads=1, lora=True, lora_r=4, lora_alpha=8, learning_rate=5e-3,
                       epochs=1, batch_size=4)
    result = opt.refine(tiny_factory, small_pairs, iteration=1)
    ckpt = result.checkpoint
    assert is_adapter(ckpt) and not (ckpt / "model.safetensors").exists()
    assert adapter_base(ckpt) == tiny_factory
    assert result.metrics["lora"] is True and result.metrics["logp_margin_after"] > result.metrics["logp_margin_before"]
    out = gen.generate([PROMPT], 2, 0.8, seed=1, checkpoint=ckpt)
    assert len(out) == 2
    # continuing the same adapter (iteration 2): trl's frozen copy of it is the reference
    again = opt.refine(ckpt, small_pairs, iteration=2)
    assert is_adapter(again.checkpoint)
    assert again.metrics["reward_margin_first"] == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("optimizer", ["dpo", "sft"])
def test_refined_weights_do_not_depend_on_the_thread_count(ctx, tiny_factory, small_pairs,
                                                            optimizer):
    """Automatic threads follow the machine's load (plugins/factory/threads.py), which is only
    safe because the refined weights are the same, bit for bit, with 1 and 2 threads."""
    from selfdev.plugins.optimizers.dpo import DPOOptimizer
    from selfdev.plugins.optimizers.sft import SFTOptimizer

    cls = DPOOptimizer if optimizer == "dpo" else SFTOptimizer
    weights = []
    for threads in (1, 2):
        result = cls(ctx, threads=threads, epochs=1, batch_size=4,
                     measure_margin=False).refine(tiny_factory, small_pairs, iteration=1)
        # read now: the second refinement (same run and iteration) replaces the directory
        weights.append((result.checkpoint / "model.safetensors").read_bytes())
    assert weights[0] == weights[1]


def test_no_pairs_and_bad_checkpoints(ctx, tmp_path):
    from selfdev.engine.api import SelfdevError
    from selfdev.plugins.optimizers.dpo import DPOOptimizer

    opt = DPOOptimizer(ctx)
    with pytest.raises(ConfigError, match="local factory checkpoint"):
        opt.refine(None, [Pair("p", "a", "b")], iteration=1)
    with pytest.raises(SelfdevError, match="neither a model"):
        opt.refine(tmp_path, [Pair("p", "a", "b")], iteration=1)


def test_empty_pairs_skip_training(ctx, tiny_factory):
    from selfdev.plugins.optimizers.dpo import DPOOptimizer

    result = DPOOptimizer(ctx).refine(tiny_factory, [Pair("p", "same", "same")], iteration=1)
    assert result.checkpoint is None and result.metrics["trained"] is False


def test_option_validation(ctx):
    from selfdev.plugins.optimizers.dpo import DPOOptimizer

    with pytest.raises(ConfigError, match="reference"):
        DPOOptimizer(ctx, reference="previous")
    with pytest.raises(ConfigError, match="preset"):
        DPOOptimizer(ctx, preset="huge")
    with pytest.raises(ConfigError, match="loss_type"):
        DPOOptimizer(ctx, loss_type="magic")
    opt = DPOOptimizer(ctx)
    assert opt.settings({"factory": "tiny"})[0] == "tiny"
    preset, paper = opt.settings({})
    assert preset == "paper" and paper.lora and paper.lora_r == 256
    assert paper.learning_rate == 1e-6 and paper.beta == 0.01
