"""The :class:`EventStore`: an append-only, hash-chained event log in one SQLite file.

A recorder in eventsourcing's sense: it stores, chains and reads events without interpreting
their types or payloads; what a run *means* is the engine's fold (``selfdev.engine.state``).
Blobs live in :mod:`.blobs` and the integrity check in :mod:`.verify`; the methods here add
the connection, the locks and the transactions around them.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlite_utils import Database

from . import blobs, opening
from ._sql import insert_rows
from .canonical import GENESIS_HASH, canonical_json, event_hash_fields, parse_json
from .errors import ConcurrencyError, InvalidEventError, ReadOnlyError, StoreError
from .ids import new_event_ids, utc_now
from .lock import WriterLock
from .migrations import migrate
from .records import (
    INSERT_EVENTS,
    SELECT_EVENTS,
    NewEvent,
    StoredEvent,
    Stream,
    event_from_row,
)
from .verify import VerifyResult, verify

__all__ = ["EventStore", "NewEvent", "StoredEvent", "Stream", "VerifyResult"]

# Each run's first and last event, found through the (run_id, ...) indexes: the recursive part
# hops from one run_id to the next (a skip scan), so the cost grows with the number of runs,
# not of events.
_STREAMS = """
WITH RECURSIVE ids(run_id) AS (
    SELECT min(run_id) FROM events
    UNION ALL
    SELECT (SELECT min(run_id) FROM events WHERE run_id > ids.run_id) FROM ids
    WHERE ids.run_id IS NOT NULL
), spans(run_id, first, last) AS (
    SELECT run_id,
           (SELECT min(position) FROM events WHERE run_id = ids.run_id),
           (SELECT max(position) FROM events WHERE run_id = ids.run_id)
    FROM ids WHERE run_id IS NOT NULL
)
SELECT spans.run_id, l.stream_version, l.hash, spans.first, spans.last, f.occurred_at,
       l.occurred_at
FROM spans
JOIN events AS f ON f.position = spans.first
JOIN events AS l ON l.position = spans.last
ORDER BY spans.first
"""


def _types_clause(types: Sequence[str] | str) -> tuple[str, list[str]]:
    if isinstance(types, str):
        types = [types]
    exact = [t for t in types if not t.endswith(".")]
    parts: list[str] = []
    params: list[str] = []
    if exact:
        parts.append(f"type IN ({', '.join('?' for _ in exact)})")
        params.extend(exact)
    for prefix in (t for t in types if t.endswith(".")):
        # "candidate." <= type < "candidate/" ('/' follows '.'): a range the type index serves
        parts.append("(type >= ? AND type < ?)")
        params.extend([prefix, prefix[:-1] + "/"])
    if not parts:
        return "0", []
    return "(" + " OR ".join(parts) + ")", params


def _where(
    run_id: str | None, types: Sequence[str] | str | None, after: int = 0
) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    if after:
        clauses.append("position > ?")
        params.append(after)
    if run_id is not None:
        clauses.append("run_id = ?")
        params.append(run_id)
    if types is not None:
        clause, type_params = _types_clause(types)
        clauses.append(clause)
        params.extend(type_params)
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


class EventStore:
    """Append-only event log. See the package docstring for the contract."""

    def __init__(
        self,
        path: str | os.PathLike[str] = ":memory:",
        *,
        readonly: bool = False,
        writer: str | None = None,
    ) -> None:
        self.path = os.fspath(path)
        self.readonly = readonly
        self.memory = self.path == ":memory:"
        self._lock = threading.RLock()
        self._writer_lock: WriterLock | None = None
        self._closed = False
        if readonly:
            self.db = self._open_readonly()
            return
        conn = None
        try:
            if not self.memory:
                # what can be refused is refused before the lock file or any table exists
                exists = opening.check_path(self.path, must_exist=False)
                opening.check_writable(self.path, exists)
                conn = sqlite3.connect(self.path, check_same_thread=False)
                opening.check_ours(conn, self.path)  # reads the schema only
                try:
                    self._writer_lock = WriterLock(self.path, writer)
                except OSError as exc:
                    raise StoreError(f"cannot create the writer lock "
                                     f"{exc.filename or self.path}: {exc.strerror}") from None
            else:
                conn = sqlite3.connect(self.path, check_same_thread=False)
            self.db = Database(conn)
            try:
                if not self.memory:
                    self.db.enable_wal()
                    # WAL + NORMAL: a commit survives a crash of the process; only a power
                    # loss can lose the last commits (never corrupt the log).
                    self.db.execute("PRAGMA synchronous=NORMAL")
                migrate(self.db)
            except sqlite3.OperationalError as exc:
                raise StoreError(f"cannot write the database {self.path}: {exc}") from exc
        except BaseException:
            if conn is not None:
                conn.close()
            if self._writer_lock is not None:
                self._writer_lock.release()
            raise

    def _open_readonly(self) -> Database:
        """``mode=ro`` (or ``immutable=1`` in a read-only folder when no writer can exist:
        see :func:`.opening.connect_readonly`); never creates, migrates or locks anything."""
        if self.memory:
            raise StoreError("a read-only store needs a database file, not :memory:")
        opening.check_path(self.path, must_exist=True)
        conn = opening.connect_readonly(self.path)
        db = Database(conn)
        try:
            if not db["events"].exists():
                raise StoreError(f"{self.path} is not an event store (it has no events table)")
        except BaseException:
            conn.close()
            raise
        return db

    # -- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        """Close the database and give back the writer lock. Safe to call twice."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self.db.close()
            finally:
                if self._writer_lock is not None:
                    self._writer_lock.release()

    def note_writer(self, **fields: Any) -> None:
        """Tell readers more about this writer through its lock file (see
        :meth:`.lock.WriterLock.note`); a read-only or in-memory store has none to tell."""
        if self._writer_lock is not None:
            self._writer_lock.note(**fields)

    def __enter__(self) -> EventStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        mode = "readonly" if self.readonly else "writer"
        return f"<EventStore {self.path} {mode}{' closed' if self._closed else ''}>"

    @property
    def conn(self) -> sqlite3.Connection:
        return self.db.conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction: committed on success, rolled back on any exception."""
        if self.readonly:
            raise ReadOnlyError(f"{self.path} was opened read-only")
        with self._lock:
            if self._closed:
                raise StoreError("the store is closed")
            conn = self.db.conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    @contextmanager
    def _snapshot(self) -> Iterator[sqlite3.Connection]:
        """A read transaction, so several queries see the same committed state."""
        with self._lock:
            conn = self.db.conn
            if conn.in_transaction:
                yield conn
                return
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")

    # -- appending -------------------------------------------------------------------------

    @staticmethod
    def _check(run_id: str, events: Sequence[NewEvent]) -> list[str]:
        if not isinstance(run_id, str) or not run_id:
            raise InvalidEventError("run_id must be a non-empty string")
        payloads = []
        for i, e in enumerate(events):
            if not isinstance(e, NewEvent):
                raise InvalidEventError(f"event {i} is a {type(e).__name__}, not a NewEvent")
            if not isinstance(e.type, str) or not e.type:
                raise InvalidEventError(f"event {i}: type must be a non-empty string")
            if not isinstance(e.payload, dict):
                raise InvalidEventError(f"event {i} ({e.type}): payload must be a dict")
            if type(e.type_version) is not int or e.type_version < 1:
                raise InvalidEventError(f"event {i} ({e.type}): type_version must be an int >= 1")
            if not isinstance(e.source, str):
                raise InvalidEventError(f"event {i} ({e.type}): source must be a string")
            if e.occurred_at is not None and not isinstance(e.occurred_at, str):
                raise InvalidEventError(f"event {i} ({e.type}): occurred_at must be a string")
            try:
                payloads.append(canonical_json(e.payload))
            except (TypeError, ValueError, RecursionError) as exc:
                raise InvalidEventError(
                    f"event {i} ({e.type}): payload is not JSON: {exc}"
                ) from exc
        return payloads

    @staticmethod
    def _unencodable(run_id: str, events: Sequence[NewEvent], payloads: list[str]) -> str:
        """Which text could not be UTF-8 encoded (a lone surrogate), for the error message."""
        try:
            run_id.encode("utf-8")
        except UnicodeEncodeError:
            return "run_id"
        for i, (e, payload) in enumerate(zip(events, payloads)):
            for name, text in (("type", e.type), ("source", e.source), ("payload", payload),
                               ("occurred_at", e.occurred_at or "")):  # fmt: skip
                try:
                    text.encode("utf-8")
                except UnicodeEncodeError:
                    return f"event {i} ({e.type!r}): {name}"
        return "an event"  # pragma: no cover

    def append(
        self,
        run_id: str,
        events: Sequence[NewEvent],
        *,
        expected_version: int | None = None,
    ) -> list[StoredEvent]:
        """Append ``events`` to run ``run_id`` in one transaction: all of them or none.

        Raises :class:`ConcurrencyError` when ``expected_version`` is given and is not the
        run's current stream version (0 for a new run).
        """
        events = list(events)
        payloads = self._check(run_id, events)
        with self._write() as conn:
            version, prev = self._head(conn, run_id)
            if expected_version is not None and expected_version != version:
                raise ConcurrencyError(run_id, expected_version, version)
            if not events:
                return []
            position = self._high_water(conn)
            now = utc_now()
            rows = []
            stored = []
            for event_id, e, payload_json in zip(new_event_ids(len(events)), events, payloads):
                position += 1
                version += 1
                at = e.occurred_at or now
                try:
                    h = event_hash_fields(
                        prev, event_id, run_id, version, e.type, e.type_version, at, e.source,
                        payload_json,
                    )  # fmt: skip
                except UnicodeEncodeError as exc:
                    where = self._unencodable(run_id, events, payloads)
                    raise InvalidEventError(f"{where} is not valid Unicode: {exc}") from exc
                rows.append((position, event_id, run_id, version, e.type, e.type_version, at,
                             e.source, payload_json, prev, h))  # fmt: skip
                stored.append(StoredEvent(position, event_id, run_id, version, e.type,
                                          e.type_version, at, e.source, parse_json(payload_json),
                                          prev, h))  # fmt: skip
                prev = h
            self._insert_events(conn, rows)
        return stored

    def _insert_events(self, conn: sqlite3.Connection, rows: list[tuple]) -> None:
        try:
            insert_rows(conn, INSERT_EVENTS, rows)
        except sqlite3.IntegrityError as exc:
            raise StoreError(f"append rejected by the database: {exc}") from exc

    @staticmethod
    def _head(conn: sqlite3.Connection, run_id: str) -> tuple[int, str]:
        row = conn.execute(
            "SELECT stream_version, hash FROM events WHERE run_id = ? "
            "ORDER BY stream_version DESC LIMIT 1",
            (run_id,),
        ).fetchone()
        return (row[0], row[1]) if row else (0, GENESIS_HASH)

    @staticmethod
    def _high_water(conn: sqlite3.Connection) -> int:
        """The highest position ever used (positions are never reused)."""
        row = conn.execute(
            "SELECT max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'events'), 0),"
            " coalesce((SELECT max(position) FROM events), 0))"
        ).fetchone()
        return row[0]

    # -- reading ---------------------------------------------------------------------------

    def read(
        self,
        *,
        run_id: str | None = None,
        after: int = 0,
        types: Sequence[str] | None = None,
        limit: int | None = None,
    ) -> list[StoredEvent]:
        """Events with ``position > after`` in position order.

        ``types`` holds exact types and/or prefixes ending in ``"."`` (``"candidate."``).
        Page with ``after=events[-1].position``. A read-only store sees events committed since
        its previous call, so calling this in a loop follows a live run.
        """
        where, params = _where(run_id, types, after)
        sql = SELECT_EVENTS + where + " ORDER BY position"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(int(limit))
        with self._lock:
            rows = self.db.conn.execute(sql, params).fetchall()
        return [event_from_row(r) for r in rows]

    def iter_events(
        self,
        *,
        run_id: str | None = None,
        after: int = 0,
        types: Sequence[str] | None = None,
        page_size: int = 1000,
    ) -> Iterator[StoredEvent]:
        """Every matching event after ``after``, read ``page_size`` at a time."""
        if page_size < 1:
            raise ValueError("page_size must be >= 1")
        while True:
            page = self.read(run_id=run_id, after=after, types=types, limit=page_size)
            yield from page
            if len(page) < page_size:
                return
            after = page[-1].position

    def count(self, *, run_id: str | None = None, types: Sequence[str] | None = None) -> int:
        where, params = _where(run_id, types)
        with self._lock:
            return self.db.conn.execute("SELECT count(*) FROM events" + where, params).fetchone()[0]

    def last_position(self) -> int:
        """The highest position stored (0 for an empty log)."""
        with self._lock:
            row = self.db.conn.execute("SELECT coalesce(max(position), 0) FROM events").fetchone()
        return row[0]

    def head(self, run_id: str) -> tuple[int, str]:
        """``(stream_version, hash)`` of the run's last event; ``(0, "")`` for no events."""
        with self._lock:
            return self._head(self.db.conn, run_id)

    def streams(self) -> list[Stream]:
        """Every run's stream (positions, version, head hash, first and last time), in the
        order of each run's first event. Read from the envelopes alone, whatever the types."""
        with self._lock:
            return [Stream(*row) for row in self.db.conn.execute(_STREAMS)]

    def types(self, *, run_id: str | None = None) -> list[str]:
        """The distinct event types stored (in one run, or in all), sorted. Names only: the
        store still interprets none of them."""
        where, params = _where(run_id, None)
        with self._lock:
            rows = self.db.conn.execute(
                "SELECT DISTINCT type FROM events" + where + " ORDER BY type", params
            ).fetchall()
        return [r[0] for r in rows]

    def run_ids(self) -> list[str]:
        """Run ids in the order of their first event."""
        return [s.run_id for s in self.streams()]

    # -- blobs (see .blobs) -----------------------------------------------------------------

    def put_blob(self, data: bytes | str) -> str:
        """Store ``data`` (text as UTF-8) once; returns its ref ``content_hash(data)``."""
        data = blobs.as_bytes(data)
        with self._write() as conn:
            return blobs.put(conn, data)

    def get_blob(self, ref: str) -> bytes:
        """The bytes stored under ``ref``; :class:`BlobNotFoundError` if there are none."""
        with self._lock:
            return blobs.get(self.db.conn, ref)

    def get_text(self, ref: str) -> str:
        return self.get_blob(ref).decode("utf-8")

    def has_blob(self, ref: str) -> bool:
        with self._lock:
            return blobs.has(self.db.conn, ref)

    # -- verification (see .verify) ------------------------------------------------------------

    def verify(self, run_id: str | None = None, *, head: str | None = None) -> VerifyResult:
        """Re-derive every hash, prev_hash link and stream_version from what reads back.

        With no ``run_id`` also checks that positions run 1..N without holes and that no
        event after the last one was deleted (``sqlite_sequence``), then that every blob's
        content matches its ref. With a ``run_id``, only that run's chain is checked, and only
        the broken blobs its payloads mention are reported. With ``head`` (a hash the run's
        last event had, kept elsewhere) the run's chain must still reach it, which is what
        catches a tail deleted together with its ``sqlite_sequence``. See
        :func:`.verify.verify`.
        """
        with self._snapshot() as conn:
            return verify(conn, run_id, head)
