"""Batched GSM8k-format evaluation gives the answers of one-prompt-at-a-time evaluation.

On the toymath test-size model (trained, so its answers end at a stop string or at EOS rather
than at the token limit, and prompts differ in length: left padding matters): the evaluator
with ``batch_size`` 1 and with a batch holding every problem scores the same and generates the
same text for every problem (``bench/eval.py`` measures the speed of the two).
"""
from __future__ import annotations

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from selfdev.engine.api import Context, NullProgress  # noqa: E402
from selfdev.plugins.domains.lm.model import LMModel  # noqa: E402
from selfdev.plugins.evaluators.gsm8k import GSM8kEvaluator  # noqa: E402


def evaluator(tmp_path, data, batch_size):
    ctx = Context(run_id="t", seed=0, home=tmp_path, artifacts=tmp_path / "art",
                  progress=NullProgress())
    return GSM8kEvaluator(ctx, test_file=str(data / "test.jsonl"), dev_file=str(data / "dev.jsonl"),
                          shots=0, max_new_tokens=40, batch_size=batch_size, device="cpu",
                          keep_outputs=True)


def test_batched_answers_equal_sequential_on_the_toymath_model(toymath_env, tmp_path):
    fam = toymath_env["main"]
    model = LMModel(fam["seed"], label="seed")
    one = evaluator(tmp_path, fam["data"], batch_size=1)
    many = evaluator(tmp_path, fam["data"], batch_size=64)
    m1, mb = one.evaluate(None, model, "dev"), many.evaluate(None, model, "dev")
    out1 = [r["output"] for r in one.last_outputs]
    outb = [r["output"] for r in many.last_outputs]
    assert len(out1) == len(one.items("dev")) >= 20
    assert outb == out1
    assert {k: v for k, v in mb.items() if k != "seconds"} == \
        {k: v for k, v in m1.items() if k != "seconds"}
    # the model answers (the comparison is not between two empty outputs)
    assert sum("####" in o for o in out1) >= len(out1) // 2 and m1["score"] > 0
    # and the prompts are of different lengths, so the batch was left padded
    assert len({len(p) for p in one._prompts["dev"]}) > 1
