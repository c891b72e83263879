"""The read side the CLI and the TUI share: open the log, name a run, fold its state, list runs.

``selfdev tui`` and every read command of ``selfdev`` go through these functions, so a run
reference (an id, a unique prefix, or ``latest``) means the same everywhere, and ``selfdev runs``
and the TUI's runs list show the same rows.
"""
from __future__ import annotations

import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from selfdev.engine.api import SelfdevError, selfdev_home


def default_db() -> Path:
    """``$SELFDEV_HOME/runs.db``."""
    return selfdev_home() / "runs.db"


def open_store(db: Path | None, *, readonly: bool, create: bool = True) -> Any:
    """The event store at ``db`` (default :func:`default_db`).

    Read-only opens never create it, and neither does a writer with ``create=False``
    (``selfdev resume`` continues a run, so a mistyped ``--db`` must not leave a new, empty
    database behind). Whatever the store refuses (not SQLite, another application's file, a
    read-only file or folder) comes back as its one-line :class:`~selfdev.store.StoreError`.
    """
    from selfdev.store import EventStore, StoreError, WriterLockedError

    path = db or default_db()
    if (readonly or not create) and not path.exists():
        raise SelfdevError(f"no database at {path} (run `selfdev demo` or pass --db)")
    if not readonly:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SelfdevError(f"cannot create the folder {path.parent} for the database: "
                               f"{exc.strerror}") from None
    try:
        return EventStore(path, readonly=readonly, writer=" ".join(sys.argv))
    except StoreError as exc:
        if db is not None or isinstance(exc, WriterLockedError):
            raise
        raise SelfdevError(f"{exc} (the default database, in $SELFDEV_HOME: set SELFDEV_HOME "
                           "or pass --db)") from None


def resolve_run(store: Any, ref: str) -> str:
    """A run id, a unique prefix of one, or ``latest``."""
    ids = store.run_ids()
    if ref == "latest":
        if not ids:
            raise SelfdevError("the database holds no runs")
        return ids[-1]
    if ref in ids:
        return ref
    matches = [i for i in ids if i.startswith(ref)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise SelfdevError(f"no run {ref!r}; `selfdev runs` lists them")
    raise SelfdevError(f"run {ref!r} is ambiguous: {', '.join(matches[:5])}")


def load_state(store: Any, run_id: str) -> Any:
    """The folded :class:`~selfdev.engine.state.RunState` of one run (with the primitives of
    programs screened before ``candidate.screened`` recorded them: :func:`fill_primitives`)."""
    from selfdev.engine.state import fold

    state = fold(store.iter_events(run_id=run_id))
    fill_primitives(store, state)
    return state


def fill_primitives(store: Any, state: Any) -> None:
    """Give each candidate whose ``candidate.screened`` predates its ``primitives`` field the
    primitives of its program, read from the program's blob: the same function the engine
    records them with (``engine/primitives.py``), so old and new runs show the same numbers.
    A program whose blob is missing keeps None (unknown)."""
    from selfdev.engine.primitives import primitives_of
    from selfdev.store import StoreError

    for c in state.candidates.values():
        if c.primitives is None and c.code:
            try:
                c.primitives = primitives_of(store.get_text(c.code))
            except (StoreError, UnicodeDecodeError):
                continue


#: what the runs listing folds of each run: its lifecycle, iterations and scores
LISTING_TYPES = ("run.", "iteration.started", "candidate.generated", "candidate.evaluated")
#: the fields of ``run.started`` each listed run shows
STARTED_FIELDS = ("domain", "generator", "optimizer", "evaluator", "executor", "iterations",
                  "candidates", "seed", "config")


@dataclass
class _Listed:
    head: str  # the stream's head hash when ``row`` was made
    row: dict[str, Any]
    state: Any = None  # the RunState folded so far, kept while the run is unfinished
    position: int = 0  # position and hash of the last event folded into ``state``
    hash: str = ""


_LISTED: dict[tuple[str, str], _Listed] = {}
_LISTED_LOCK = threading.Lock()


def run_summaries(store: Any) -> list[dict[str, Any]]:
    """One row per run, in the order of each run's first event: what ``selfdev runs`` prints
    and the TUI's runs list shows (status, components, iteration, best dev and test scores).

    The store tells each run's stream (positions, event count, first and last time) without
    reading a type; the rest is :func:`selfdev.engine.state.fold` over the run's
    :data:`LISTING_TYPES` events, so the listing and ``selfdev show`` agree by construction.
    Rows are kept per database and run, keyed by the stream's head hash (which commits to every
    event of the run), and an unfinished run's fold goes on from its last folded event once
    that event's hash is found again: polling a database (the TUI does, every two seconds)
    reads only what was appended since.
    """
    with _LISTED_LOCK:
        if len(_LISTED) > 1024:
            _LISTED.clear()
        return [dict(_listed(store, stream)) for stream in store.streams()]


def _listed(store: Any, stream: Any) -> dict[str, Any]:
    from selfdev.engine.report import status
    from selfdev.engine.state import RunState, apply

    key = (os.path.abspath(store.path), stream.run_id)
    entry = _LISTED.get(key)
    if entry is not None and entry.head == stream.head:
        return entry.row
    state, position, last_hash = RunState(), 0, ""
    if entry is not None and entry.state is not None and entry.position:
        at = store.read(run_id=stream.run_id, after=entry.position - 1, limit=1)
        if at and at[0].position == entry.position and at[0].hash == entry.hash:
            state, position, last_hash = entry.state, entry.position, entry.hash
    _LISTED.pop(key, None)  # a fold that fails half-way must not be continued
    for event in store.iter_events(run_id=stream.run_id, after=position, types=LISTING_TYPES,
                                   page_size=5000):
        if event.position > stream.last_position:
            break  # appended after the stream was read: the next listing folds it
        apply(state, event)
        position, last_hash = event.position, event.hash
    started = state.started
    ranked = state.ranked()
    run_status = status(state) if started is not None else None  # None: not an engine run
    run_section = ((getattr(started, "config", None) or {}).get("run") or {})
    row = {
        "run_id": stream.run_id,
        "name": run_section.get("name") or None,
        "tags": list(run_section.get("tags") or []),
        "status": run_status,
        **{name: getattr(started, name, None) for name in STARTED_FIELDS},
        "current_iteration": max(state.iterations, default=None),
        "best_dev": ranked[0].dev if ranked else None,
        "best_test": next((c.test for c in ranked if c.test is not None), None),
        "reason": state.failed if run_status == "failed" else None,
        "started_at": stream.first_at,
        "finished_at": stream.last_at if run_status in ("finished", "failed") else None,
        "events": stream.version,
        "first_position": stream.first_position,
        "last_position": stream.last_position,
    }
    unfinished = state.finished is None
    _LISTED[key] = _Listed(stream.head, row, state if unfinished else None, position, last_hash)
    return row


def writer_statuses(store: Any, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` (from :func:`run_summaries`) with each unfinished run's status told by the
    writer lock: a run whose log neither finished nor failed is ``running`` only while a
    process holds the database's writer lock and only if it is the run written last (one
    writer writes one run at a time, and a resumed run records ``run.resumed`` first); any
    other is ``interrupted``: its writer died or was stopped, and ``selfdev resume``
    continues it. A writer of several runs at once (``selfdev sweep``) names them in the lock
    file, and those are the running ones. The lock is read, never taken
    (:func:`selfdev.store.lock.current_holder`).
    """
    if not any(r.get("status") == "running" for r in rows):
        return rows
    latest = max(rows, key=lambda r: r.get("last_position") or 0)["run_id"]
    live = _live_runs(store, latest)
    return [dict(r, status="interrupted")
            if r.get("status") == "running" and r["run_id"] not in live else r for r in rows]


def writer_status(store: Any, run_id: str, status: str) -> str:
    """One run's status as :func:`writer_statuses` tells it (``selfdev show``): reads only
    the streams' envelopes, not every run's events."""
    if status != "running":
        return status
    streams = store.streams()
    latest = max(streams, key=lambda s: s.last_position).run_id if streams else None
    return status if run_id in _live_runs(store, latest) else "interrupted"


def _live_runs(store: Any, latest: str | None) -> set[str]:
    """The runs a live writer is writing: those its lock file names (``runs``), else the one
    written last; none when no writer holds the lock."""
    from selfdev.store.lock import current_holder

    if getattr(store, "memory", False):  # only its own writer can see a :memory: database
        return {latest} if latest and not getattr(store, "readonly", True) else set()
    holder = current_holder(store.path)
    if holder is None:
        return set()
    runs = holder.get("runs")
    if isinstance(runs, list) and all(isinstance(r, str) for r in runs):
        return set(runs)
    return {latest} if latest else set()


#: the columns of ``selfdev export --what candidates`` (one row per candidate, in log order)
CANDIDATE_COLUMNS = ("run_id", "candidate_id", "iteration", "index", "temperature", "status",
                     "screen", "execution", "reason", "ast_hash", "code", "duplicate_of",
                     "dev", "test", "duration_ms", "generated_at", "last_event_at")
#: the columns of ``selfdev export --what events`` (``payload`` is the event's JSON object)
EVENT_COLUMNS = ("position", "event_id", "run_id", "stream_version", "type", "type_version",
                 "occurred_at", "source", "payload", "prev_hash", "hash")


def candidate_rows(store: Any, run_id: str) -> list[dict[str, Any]]:
    """Every candidate of a run as a flat row (:data:`CANDIDATE_COLUMNS`), for export.

    The values come from the same :func:`~selfdev.engine.state.fold` as ``selfdev show``; the
    fold keeps no clock times, so the one pass over the log also notes when each candidate was
    generated and when its last event was written (the sandbox's own ``duration_ms`` is the
    candidate's compute; these two tell the wall time around it, queueing included)."""
    from selfdev.engine.state import RunState, apply

    state = RunState()
    first: dict[str, str] = {}
    last: dict[str, str] = {}
    for event in store.iter_events(run_id=run_id):
        apply(state, event)
        cid = event.payload.get("candidate_id") if event.type.startswith("candidate.") else None
        if isinstance(cid, str):
            first.setdefault(cid, event.occurred_at)
            last[cid] = event.occurred_at
    rows = []
    for c in sorted(state.candidates.values(), key=lambda c: (c.iteration, c.index)):
        it = state.iterations.get(c.iteration)
        rows.append({
            "run_id": run_id, "candidate_id": c.candidate_id, "iteration": c.iteration,
            "index": c.index, "temperature": it.temperature if it is not None else None,
            "status": c.status, "screen": c.screen, "execution": c.execution,
            "reason": c.reason, "ast_hash": c.ast_hash, "code": c.code,
            "duplicate_of": c.duplicate_of, "dev": c.dev, "test": c.test,
            "duration_ms": c.duration_ms, "generated_at": first.get(c.candidate_id),
            "last_event_at": last.get(c.candidate_id),
        })
    return rows


def event_rows(store: Any, run_id: str) -> list[dict[str, Any]]:
    """Every event of a run, envelope and payload, in log order (:data:`EVENT_COLUMNS`)."""
    return [{"position": e.position, "event_id": e.event_id, "run_id": e.run_id,
             "stream_version": e.stream_version, "type": e.type, "type_version": e.type_version,
             "occurred_at": e.occurred_at, "source": e.source, "payload": e.payload,
             "prev_hash": e.prev_hash, "hash": e.hash}
            for e in store.iter_events(run_id=run_id)]
