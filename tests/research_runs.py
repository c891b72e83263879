"""A small database of engine-shaped runs for the researcher's commands (export, runs filters,
compare): written event by event as the engine's loop writes them, in milliseconds, where three
real runs of the engine would take 15 s.

Each run differs where the commands look: seed, temperature decay ``beta``, domain, ``[run]``
name and tags, and how it ended (finished, failed, stopped mid-way). Scores are a seeded
function of (seed, iteration, index), so the expected numbers can be computed in the tests.
"""
from __future__ import annotations

import random
from pathlib import Path

from selfdev.store import EventStore, NewEvent

#: (run id, seed, beta, domain, name, tags, end) of the database's runs, in log order
RUNS = (
    ("run-a", 0, 0.2, "digits", "beta 0.2 seed 0", ["ablation", "beta"], "finished"),
    ("run-b", 1, 0.2, "digits", "beta 0.2 seed 1", ["ablation"], "finished"),
    ("run-c", 2, 0.0, "toymath", "", [], "failed"),
    ("run-d", 3, 0.0, "digits", "beta 0 seed 3", ["beta"], "finished"),
)
CANDIDATES = 6
ITERATIONS = 2


def score(seed: int, iteration: int, index: int) -> float | None:
    """The dev score of a candidate; None: it did not execute (an error)."""
    if index == CANDIDATES - 1:
        return None
    return round(random.Random(seed * 1000 + iteration * 10 + index).uniform(40, 90), 2)


def write_run(store: EventStore, run_id: str, seed: int, beta: float, domain: str, name: str,
              tags: list[str], end: str) -> None:
    def emit(*events: NewEvent) -> None:
        store.append(run_id, list(events))

    config = {"run": {"seed": seed, "iterations": ITERATIONS, "candidates": CANDIDATES,
                      "timeout": 10.0, "top_k": 3, "name": name, "tags": tags},
              "temperature": {"t1": 1.2, "beta": beta},
              "pairs": {"p_w": 0.03, "p_l": 0.1, "elites": 3, "max_pairs": 256},
              "domain": {"name": domain}, "generator": {"name": "grammar"},
              "evaluator": {"name": "accuracy"}, "optimizer": {"name": "none"},
              "executor": {"name": "local"}}
    emit(NewEvent("run.started", {"config": config, "seed": seed, "domain": domain,
                                  "generator": "grammar", "evaluator": "accuracy",
                                  "optimizer": "none", "executor": "local",
                                  "iterations": ITERATIONS, "candidates": CANDIDATES,
                                  "selfdev_version": "0.1.0"}))
    emit(*(NewEvent("baseline.evaluated", {"label": label, "method": label, "params": {},
                                           "status": "ok", "reason": None, "dev": dev,
                                           "test": dev - 1, "metrics": {}})
           for label, dev in (("seed", 30.0 + seed), ("best TIES", 70.0 + seed))))
    for t in range(1, ITERATIONS + 1):
        emit(NewEvent("iteration.started", {"iteration": t,
                                            "temperature": round(1.2 / (1 + beta * (t - 1)), 6)}))
        for i in range(CANDIDATES):
            cid = f"i{t}-c{i:04d}"
            code = f"def merge_models(task_vectors, base, name):\n    return {seed}.{t}{i} * base\n"
            emit(NewEvent("candidate.generated", {"candidate_id": cid, "iteration": t,
                                                  "index": i, "completion": store.put_blob(code)}))
            ref = store.put_blob(code)
            emit(NewEvent("candidate.screened", {"candidate_id": cid, "status": "accepted",
                                                 "code": ref, "ast_hash": "b2:" + ref[3:35]}))
            dev = score(seed, t, i)
            if dev is None:
                emit(NewEvent("candidate.executed", {"candidate_id": cid, "status": "error",
                                                     "reason": "ValueError: boom",
                                                     "duration_ms": 3.0, "stdout": ""}))
                continue
            emit(NewEvent("candidate.executed", {"candidate_id": cid, "status": "ok",
                                                 "reason": None, "duration_ms": 10.0 + i,
                                                 "stdout": ""}),
                 NewEvent("candidate.evaluated", {"candidate_id": cid, "split": "dev",
                                                  "score": dev}))
        emit(NewEvent("iteration.finished", {"iteration": t, "stats": {}}))
        if end == "failed":
            emit(NewEvent("run.failed", {"reason": "RuntimeError: out of memory"}))
            return
    scored = sorted(((score(seed, t, i), f"i{t}-c{i:04d}") for t in range(1, ITERATIONS + 1)
                     for i in range(CANDIDATES) if score(seed, t, i) is not None), reverse=True)
    best = [cid for _, cid in scored[:3]]
    emit(*(NewEvent("candidate.evaluated", {"candidate_id": cid, "split": "test",
                                            "score": dev - 2}) for dev, cid in scored[:3]))
    emit(NewEvent("selection.tested", {"k": 3, "candidates": best, "best_dev": best[0]}))
    emit(NewEvent("run.finished", {"summary": []}))


def write_db(path: Path) -> Path:
    with EventStore(path, writer="tests/research_runs") as store:
        for spec in RUNS:
            write_run(store, *spec)
    return path
