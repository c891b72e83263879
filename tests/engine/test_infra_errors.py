"""Only a candidate's own code can fail the candidate. An exception of the evaluator (trusted
code: out of memory, a CUDA error, missing data) fails the run naming it, and ``resume`` redoes
that candidate, so the run ends as if nothing had happened, instead of recording the candidate
as a permanent ``error`` and shrinking the pool of scored candidates."""
from __future__ import annotations

from pathlib import Path

import pytest

import selfdev
from selfdev.engine.api import SelfdevError
from selfdev.engine.loop import Runner
from selfdev.engine.report import summary
from selfdev.engine.runs import load_state
from selfdev.plugins.evaluators.accuracy import AccuracyEvaluator

#: the folder of the call counter and of the failure flag (set by the test)
FILES: dict[str, Path] = {}


class FlakyAccuracy(AccuracyEvaluator):
    """``accuracy``, except that the call numbered in the flag file raises once (the flag is
    removed first, as a transient failure that is gone on the retry)."""

    name = "flaky-accuracy"

    def evaluate(self, domain, model, split):
        counter, flag = FILES["dir"] / "calls", FILES["dir"] / "fail-at"
        calls = int(counter.read_text()) + 1 if counter.exists() else 1
        counter.write_text(str(calls))
        if flag.exists() and calls == int(flag.read_text()):
            flag.unlink()
            raise MemoryError("injected: the evaluator ran out of memory")
        return super().evaluate(domain, model, split)


class Plugin:
    @selfdev.hookimpl
    def register_evaluators(self, register):
        register(FlakyAccuracy)


def comparable(state, store):
    data = summary(state, head=store.head(state.run_id)[1])
    for key in ("run_id", "head", "timing", "events"):
        data.pop(key, None)
    return data


def config():
    return {"run": {"seed": 5, "iterations": 1, "candidates": 8, "timeout": 20, "top_k": 3},
            "domain": {"name": "digits"}, "generator": {"name": "grammar"},
            "evaluator": {"name": "flaky-accuracy"}, "optimizer": {"name": "none"}}


def test_evaluator_failure_fails_the_run_and_resume_completes(selfdev_engine, tmp_path):
    selfdev_engine.register(Plugin(), name="test-flaky-evaluator")
    FILES["dir"] = tmp_path
    reference = selfdev_engine.run(config())
    baseline_calls = 2 * len(reference.baselines)
    expected = comparable(reference, selfdev_engine.store)
    assert all(c.execution != "error" for c in reference.candidates.values())

    # the 3rd candidate scored on dev fails once (calls restart at 1 for the second run)
    (tmp_path / "calls").unlink()
    (tmp_path / "fail-at").write_text(str(baseline_calls + 3))
    with pytest.raises(SelfdevError, match="MemoryError"):
        selfdev_engine.run(config())
    store = selfdev_engine.store
    run_id = [r for r in store.run_ids() if r != reference.run_id][0]
    failed = load_state(store, run_id)
    assert failed.failed and "injected" in failed.failed
    last = list(store.iter_events(run_id=run_id))[-1]
    assert last.type == "run.failed"
    assert last.payload["exception"].endswith("MemoryError")
    assert last.payload["plugin"] == "test-flaky-evaluator"
    assert not any(c.execution == "error" for c in failed.candidates.values())

    resumed = Runner(store, run_id).run()
    assert comparable(resumed, store) == expected
