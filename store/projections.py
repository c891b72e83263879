"""Projections: the ``runs`` and ``candidates`` tables, derived from events only.

:func:`project` folds a batch of events into per-run and per-candidate column assignments and
writes them with one upsert per (table, column set). Every handler only *sets* columns (the
event counter is the one sum), so folding a batch at once gives the same rows as applying its
events one by one. That is why the incremental update inside ``append`` and
``rebuild_projections`` agree. Unknown event types only count towards ``runs.events``; payload
fields that are missing or of an odd type never make an append fail.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from ._sql import insert_rows
from .canonical import canonical_json

# (position, run_id, type, occurred_at, payload)
ProjectedEvent = tuple[int, str, str, str, dict[str, Any]]

RUN_JSON_COLUMNS = ("config",)
CANDIDATE_JSON_COLUMNS = ("dev_metrics", "test_metrics")


_PLAIN = frozenset({str, int, float, type(None)})


def _scalar(value: Any) -> Any:
    """A value SQLite can bind: containers become canonical JSON text."""
    if type(value) in _PLAIN or isinstance(value, (str, int, float)):
        return value
    try:
        return canonical_json(value)
    except (TypeError, ValueError):
        return str(value)


def _number(value: Any) -> float | None:
    """A score or duration: a real number, else NULL (so leaderboards never sort text)."""
    if type(value) in (int, float) and value == value:
        return float(value)
    return None


class _Batch:
    def __init__(self) -> None:
        self.runs: dict[str, dict[str, Any]] = {}
        self.candidates: dict[tuple[str, str], dict[str, Any]] = {}
        self.rescore: set[str] = set()

    def candidate(self, run_id: str, payload: dict[str, Any]) -> dict[str, Any] | None:
        candidate_id = payload.get("candidate_id")
        if not isinstance(candidate_id, str) or not candidate_id:
            return None
        key = (run_id, candidate_id)
        row = self.candidates.get(key)
        if row is None:
            row = self.candidates[key] = {}
        return row


Handler = Callable[[_Batch, dict[str, Any], str, str, dict[str, Any]], None]
HANDLERS: dict[str, Handler] = {}


def handles(event_type: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        HANDLERS[event_type] = fn
        return fn

    return register


@handles("run.started")
def _run_started(batch: _Batch, run: dict, run_id: str, at: str, p: dict) -> None:
    run["status"] = "running"
    for key in ("domain", "generator", "optimizer", "evaluator", "executor"):
        run[key] = _scalar(p.get(key))
    for key in ("iterations", "candidates", "seed"):
        run[key] = _scalar(p.get(key))
    run["config"] = _scalar(p.get("config"))
    run["started_at"] = at
    run["finished_at"] = None
    run["reason"] = None


@handles("run.resumed")
def _run_resumed(batch: _Batch, run: dict, run_id: str, at: str, p: dict) -> None:
    run["status"] = "running"
    run["finished_at"] = None
    run["reason"] = None


@handles("iteration.started")
def _iteration_started(batch: _Batch, run: dict, run_id: str, at: str, p: dict) -> None:
    run["current_iteration"] = _scalar(p.get("iteration"))


@handles("run.finished")
def _run_finished(batch: _Batch, run: dict, run_id: str, at: str, p: dict) -> None:
    run["status"] = "finished"
    run["finished_at"] = at


@handles("run.failed")
def _run_failed(batch: _Batch, run: dict, run_id: str, at: str, p: dict) -> None:
    run["status"] = "failed"
    run["finished_at"] = at
    run["reason"] = _scalar(p.get("reason"))


@handles("candidate.generated")
def _candidate_generated(batch: _Batch, run: dict, run_id: str, at: str, p: dict) -> None:
    row = batch.candidate(run_id, p)
    if row is None:
        return
    row["iteration"] = _scalar(p.get("iteration"))
    row["index"] = _scalar(p.get("index"))
    row["status"] = "generated"
    row["completion"] = _scalar(p.get("completion"))
    row["prompt"] = _scalar(p.get("prompt"))


@handles("candidate.screened")
def _candidate_screened(batch: _Batch, run: dict, run_id: str, at: str, p: dict) -> None:
    row = batch.candidate(run_id, p)
    if row is None:
        return
    status = p.get("status")
    row["status"] = "screened" if status == "accepted" else _scalar(status)
    row["reason"] = _scalar(p.get("reason"))
    row["code"] = _scalar(p.get("code"))
    row["ast_hash"] = _scalar(p.get("ast_hash"))
    row["duplicate_of"] = _scalar(p.get("duplicate_of"))


@handles("candidate.executed")
def _candidate_executed(batch: _Batch, run: dict, run_id: str, at: str, p: dict) -> None:
    row = batch.candidate(run_id, p)
    if row is None:
        return
    status = p.get("status")
    row["status"] = "executed" if status == "ok" else _scalar(status)
    row["reason"] = _scalar(p.get("reason"))
    row["duration_ms"] = _number(p.get("duration_ms"))


@handles("candidate.evaluated")
def _candidate_evaluated(batch: _Batch, run: dict, run_id: str, at: str, p: dict) -> None:
    row = batch.candidate(run_id, p)
    if row is None:
        return
    split = p.get("split")
    if split in ("dev", "test"):
        row[f"{split}_score"] = _number(p.get("score"))
        row[f"{split}_metrics"] = _scalar(p.get("metrics"))
    row["status"] = "scored"
    batch.rescore.add(run_id)


def _grouped(rows: Iterable[dict[str, Any]]) -> dict[tuple[str, ...], list[tuple]]:
    groups: dict[tuple[str, ...], list[tuple]] = {}
    for row in rows:
        columns = tuple(row)
        groups.setdefault(columns, []).append(tuple(row.values()))
    return groups


_RESCORE = """
UPDATE runs SET
  best_dev = (SELECT max(dev_score) FROM candidates WHERE run_id = :run_id),
  best_test = (
    SELECT test_score FROM candidates
    WHERE run_id = :run_id AND test_score IS NOT NULL AND dev_score IS NOT NULL
    ORDER BY dev_score DESC, iteration, "index", candidate_id LIMIT 1
  )
WHERE run_id = :run_id
"""


def project(conn: sqlite3.Connection, events: Sequence[ProjectedEvent]) -> None:
    """Fold ``events`` (in position order) into the projection tables, inside the caller's
    transaction."""
    batch = _Batch()
    runs = batch.runs
    for position, run_id, type_, at, payload in events:
        run = runs.get(run_id)
        if run is None:
            run = runs[run_id] = {
                "run_id": run_id,
                "first_position": position,
                "events": 0,
                "last_position": position,
            }
        run["events"] += 1
        run["last_position"] = position
        handler = HANDLERS.get(type_)
        if handler is not None and isinstance(payload, dict):
            handler(batch, run, run_id, at, payload)

    for columns, values in _grouped(runs.values()).items():
        names = ", ".join(f'"{c}"' for c in columns)
        updates = ", ".join(
            "events = runs.events + excluded.events" if c == "events" else f'"{c}" = excluded."{c}"'
            for c in columns
            if c not in ("run_id", "first_position")
        )
        insert_rows(
            conn,
            f"INSERT INTO runs ({names})",
            values,
            f" ON CONFLICT (run_id) DO UPDATE SET {updates}",
        )

    rows = ({"run_id": k[0], "candidate_id": k[1], **v} for k, v in batch.candidates.items())
    for columns, values in _grouped(rows).items():
        names = ", ".join(f'"{c}"' for c in columns)
        sets = [f'"{c}" = excluded."{c}"' for c in columns[2:]]
        conflict = f"DO UPDATE SET {', '.join(sets)}" if sets else "DO NOTHING"
        insert_rows(
            conn,
            f"INSERT INTO candidates ({names})",
            values,
            f" ON CONFLICT (run_id, candidate_id) {conflict}",
        )

    for run_id in batch.rescore:
        conn.execute(_RESCORE, {"run_id": run_id})


def clear(conn: sqlite3.Connection) -> None:
    conn.execute("DELETE FROM candidates")
    conn.execute("DELETE FROM runs")
