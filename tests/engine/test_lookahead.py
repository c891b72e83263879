"""Screening and dev runs while the factory samples (``engine/lookahead.py``): they start before
generation ends, and the log is the one the steps write one after another."""
from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from selfdev.engine import hookimpl
from selfdev.engine.api import Completion, Generator
from selfdev.engine.config import from_dict
from selfdev.engine.loop import run_config
from selfdev.engine.plugins import pm
from selfdev.plugins.evaluators.accuracy import AccuracyEvaluator
from selfdev.store import EventStore

PROGRAM = """```python
import torch
def merge_models(task_vectors, base, name):
    return {scale} * sum(task_vectors.values())
```"""

SCORED = threading.Event()   # set by the probe evaluator on its first score
SEEN_DURING_SAMPLING: list[bool] = []
WAIT_SECONDS = 60  # for a score while sampling; a test that expects none waits less


class TwoBatches(Generator):
    """Yields half of its programs, waits (up to a minute) for a candidate to be scored, then
    yields the rest: it records whether scoring had started while it was still sampling."""

    name = "two-batches"

    def generate(self, prompts, n, temperature, seed, checkpoint=None, iteration=1):
        return [c for part in self.generate_batches(prompts, n, temperature, seed) for c in part]

    def generate_batches(self, prompts, n, temperature, seed, checkpoint=None, iteration=1):
        programs = [Completion(PROGRAM.format(scale=round(0.1 * (i + 1), 2))) for i in range(n)]
        SCORED.clear()  # the baselines were scored before the iteration
        yield programs[: n // 2]
        SEEN_DURING_SAMPLING.append(SCORED.wait(WAIT_SECONDS))
        yield programs[n // 2:]


class Probe(AccuracyEvaluator):
    name = "probe"

    def evaluate(self, domain, model, split):
        SCORED.set()
        return super().evaluate(domain, model, split)


class Plugin:
    @hookimpl
    def register_generators(self, register):
        register(TwoBatches)

    @hookimpl
    def register_evaluators(self, register):
        register(Probe)


@pytest.fixture
def probe():
    pm.register(Plugin(), name="lookahead-probe")
    SEEN_DURING_SAMPLING.clear()
    yield
    pm.unregister(name="lookahead-probe")


def config(lookahead: bool, **over) -> object:
    data = {"run": {"seed": 0, "iterations": 2, "candidates": 8, "top_k": 2},
            "domain": {"name": "digits"}, "generator": {"name": "two-batches"},
            "evaluator": {"name": "probe"}, "optimizer": {"name": "none"},
            "executor": {"name": "local", "workers": 1, "lookahead": lookahead}}
    for key, value in over.items():
        data.setdefault(key, {}).update(value)
    return from_dict(data)


def test_candidates_are_scored_while_the_factory_samples(db_path, probe, monkeypatch):
    monkeypatch.setattr("selfdev.engine.lookahead.beside_factory", lambda workers: workers)
    with EventStore(db_path) as store:
        state = run_config(store, config(True, run={"iterations": 1}))
    assert state.finished is not None
    assert SEEN_DURING_SAMPLING == [True]


def test_without_lookahead_scoring_waits_for_the_factory(db_path, probe, monkeypatch):
    monkeypatch.setattr(__name__ + ".WAIT_SECONDS", 3)
    with EventStore(db_path) as store:
        run_config(store, config(False, run={"iterations": 1}))
    assert SEEN_DURING_SAMPLING == [False]


def untimed(value):
    """``value`` without its timings (keys ``duration_ms``, ``seconds``, ``*_seconds``)."""
    if isinstance(value, dict):
        return {k: untimed(v) for k, v in value.items()
                if k != "duration_ms" and not k.endswith("seconds")}
    if isinstance(value, list):
        return [untimed(v) for v in value]
    return value


def events_of(store, run_id: str, keep_order: bool) -> list:
    """(type, payload) of a run, timings aside (and ``phase.timed``; ``run.started`` names the
    executor's options, which differ; ``domain.prepared`` says whether the digits models were
    built by this run or found in the cache)."""
    out = [(e.type, untimed(e.payload)) for e in store.iter_events(run_id=run_id)
           if e.type not in ("phase.timed", "run.started", "domain.prepared")]
    return out if keep_order else sorted(out, key=repr)


def test_with_no_core_to_spare_scoring_starts_when_the_factory_is_done(db_path, probe,
                                                                        monkeypatch):
    monkeypatch.setattr("selfdev.engine.lookahead.beside_factory", lambda workers: 0)
    monkeypatch.setattr(__name__ + ".WAIT_SECONDS", 3)
    with EventStore(db_path) as store:
        state = run_config(store, config(True, run={"iterations": 1}))
    assert state.finished is not None
    assert SEEN_DURING_SAMPLING == [False]


@pytest.mark.parametrize("workers,beside", [(1, 1), (2, 1), (2, 0)])
def test_the_log_is_the_same_with_and_without_lookahead(db_path, workers, beside, monkeypatch):
    """The tiny factory (test size, batches of 8, so the lookahead gets four batches an
    iteration), two iterations, candidates run beside the factory or after it: every event
    equal; in log order with one worker."""
    from selfdev.plugins.generators.tiny import ensure_factory

    monkeypatch.setattr("selfdev.engine.lookahead.beside_factory", lambda workers: beside)
    ensure_factory(Path(os.environ["SELFDEV_HOME"]), "test", threads=1)
    over = {"generator": {"name": "tiny", "size": "test", "batch_size": 8, "threads": 1,
                          "max_new_tokens": 200},
            "evaluator": {"name": "accuracy"}, "run": {"candidates": 32},
            "executor": {"workers": workers}}
    with EventStore(db_path) as store:
        on = run_config(store, config(True, **over))
        off = run_config(store, config(False, **over))
        assert on.finished is not None and off.finished is not None
        assert len([c for c in on.candidates.values() if c.dev is not None]) >= 5
        assert events_of(store, on.run_id, workers == 1) == events_of(store, off.run_id,
                                                                       workers == 1)
