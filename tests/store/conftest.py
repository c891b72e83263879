"""Fixtures for the store tests: a store per backend, raw SQL outside the API, event factories."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from selfdev.store import EventStore, NewEvent


@pytest.fixture(params=["memory", "wal-file"])
def store(request: pytest.FixtureRequest, tmp_path: Path):
    """A writable store, once in memory and once on a WAL file."""
    path = ":memory:" if request.param == "memory" else tmp_path / "runs.db"
    es = EventStore(path, writer="pytest")
    yield es
    es.close()


@pytest.fixture
def raw(store: EventStore) -> Callable[..., list[tuple]]:
    """Run SQL behind the store's back (what a tamperer with sqlite3 would do), committed.

    For a file this is a separate plain sqlite3 connection; ``:memory:`` has no other way in
    than the store's own connection.
    """

    def run(sql: str, params: tuple = ()) -> list[tuple]:
        if store.memory:
            conn = store.conn
            rows = conn.execute(sql, params).fetchall()
            conn.commit()
            return rows
        conn = sqlite3.connect(store.path)
        try:
            rows = conn.execute(sql, params).fetchall()
            conn.commit()
            return rows
        finally:
            conn.close()

    return run


def engine_run(
    run_id: str = "run-1",
    *,
    iterations: int = 2,
    per_iteration: int = 4,
    blob: Callable[[str], str] | None = None,
    finish: bool = True,
) -> list[NewEvent]:
    """A run's events shaped like the engine's, with every candidate outcome represented."""
    ref = blob or (lambda text: "b2:" + "0" * 64)
    events = [
        NewEvent(
            "run.started",
            {"config": {"seed": 7, "domain": {"name": "tensors"}}, "domain": "tensors",
             "generator": "tiny", "optimizer": "dpo", "evaluator": "mse", "executor": "local",
             "iterations": iterations, "candidates": per_iteration, "seed": 7},
        )
    ]  # fmt: skip
    outcomes = ["ok", "rejected", "duplicate", "timeout", "error"]
    devs: list[tuple[float, int, int, str]] = []
    for it in range(1, iterations + 1):
        events.append(NewEvent("iteration.started", {"iteration": it, "temperature": 0.7}))
        for i in range(per_iteration):
            cid = f"{run_id}-c{it}-{i}"
            events.append(
                NewEvent("candidate.generated",
                         {"candidate_id": cid, "iteration": it, "index": i,
                          "completion": ref(f"completion {cid}"), "prompt": ref("prompt")})
            )  # fmt: skip
            outcome = outcomes[(it + i) % len(outcomes)]
            if outcome in ("rejected", "duplicate"):
                events.append(
                    NewEvent("candidate.screened",
                             {"candidate_id": cid, "status": outcome, "reason": f"{outcome}!",
                              "code": None, "ast_hash": None})
                )  # fmt: skip
                continue
            events.append(
                NewEvent("candidate.screened",
                         {"candidate_id": cid, "status": "accepted", "reason": None,
                          "code": ref(f"code {cid}"), "ast_hash": f"ast-{cid}"})
            )  # fmt: skip
            events.append(
                NewEvent("candidate.executed",
                         {"candidate_id": cid, "status": outcome,
                          "reason": None if outcome == "ok" else outcome, "duration_ms": 10.0 + i})
            )  # fmt: skip
            if outcome == "ok":
                score = round(0.1 * ((it * 7 + i * 3) % 10), 3)
                devs.append((-score, it, i, cid))
                events.append(
                    NewEvent("candidate.evaluated",
                             {"candidate_id": cid, "split": "dev", "score": score,
                              "metrics": {"mse": 1 - score}})
                )  # fmt: skip
        events.append(
            NewEvent("iteration.finished", {"iteration": it, "stats": {"n": per_iteration}})
        )
    if finish:
        top = [cid for *_, cid in sorted(devs)[:2]]
        for rank, cid in enumerate(top):
            events.append(
                NewEvent("candidate.evaluated",
                         {"candidate_id": cid, "split": "test", "score": 0.5 - 0.1 * rank,
                          "metrics": {"mse": 0.5}})
            )  # fmt: skip
        events.append(NewEvent("selection.tested", {"k": 2, "candidates": top}))
        events.append(NewEvent("run.finished", {"summary": {}}))
    return events


@pytest.fixture
def make_run() -> Callable[..., list[NewEvent]]:
    return engine_run

