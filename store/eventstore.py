"""The :class:`EventStore`: an append-only, hash-chained event log in one SQLite file."""

from __future__ import annotations

import os
import sqlite3
import threading
import urllib.parse
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlite_utils import Database

from . import projections
from ._sql import insert_rows
from .canonical import (
    GENESIS_HASH,
    _event_hash_unchecked,
    canonical_json,
    content_hash,
    event_hash_fields,
    parse_json,
)
from .errors import (
    BlobNotFoundError,
    ConcurrencyError,
    InvalidEventError,
    ReadOnlyError,
    StoreError,
)
from .ids import new_event_ids, utc_now
from .lock import WriterLock
from .migrations import migrate

EVENT_COLUMNS = (
    "position",
    "event_id",
    "run_id",
    "stream_version",
    "type",
    "type_version",
    "occurred_at",
    "source",
    "payload",
    "prev_hash",
    "hash",
)
_SELECT = f"SELECT {', '.join(EVENT_COLUMNS)} FROM events"
_INSERT = (
    f"INSERT INTO events ({', '.join(EVENT_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in EVENT_COLUMNS)})"
)
_loads = parse_json
_INSERT_HEAD = f"INSERT INTO events ({', '.join(EVENT_COLUMNS)})"


@dataclass
class NewEvent:
    """An event to append. ``payload`` must be a JSON object (see :func:`canonical_json`)."""

    type: str
    payload: dict[str, Any]
    type_version: int = 1
    source: str = "engine"
    occurred_at: str | None = None


@dataclass(slots=True)
class StoredEvent:
    """An event as stored; ``payload`` is parsed back from its canonical JSON.

    Not frozen: a frozen dataclass costs ~1.5 us more per instance, a fifth of the append
    budget. Changing an instance changes nothing stored.
    """

    position: int
    event_id: str
    run_id: str
    stream_version: int
    type: str
    type_version: int
    occurred_at: str
    source: str
    payload: dict[str, Any]
    prev_hash: str
    hash: str


@dataclass
class VerifyResult:
    """Outcome of :meth:`EventStore.verify`; truthy when ``ok``.

    ``first_broken`` is the global position of the first event that fails (for missing rows,
    the first missing position), or, for a blob whose content does not match its ref, the
    position of the first checked event whose payload mentions that ref (``None`` if none
    does). ``heads`` maps each checked run to the hash of its last event.
    """

    ok: bool
    checked: int
    first_broken: int | None = None
    reason: str | None = None
    heads: dict[str, str] = field(default_factory=dict)
    blobs_checked: int = 0

    def __bool__(self) -> bool:
        return self.ok


def _event_from_row(row: tuple) -> StoredEvent:
    return StoredEvent(
        row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7],
        _loads(row[8]), row[9], row[10],
    )  # fmt: skip


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
        if not self.memory:
            self._writer_lock = WriterLock(self.path, writer)
        try:
            conn = sqlite3.connect(self.path, check_same_thread=False)
            self.db = Database(conn)
            if not self.memory:
                self.db.enable_wal()
                # WAL + NORMAL: a commit survives a crash of the process; only a power loss
                # can lose the last commits (never corrupt the log).
                self.db.execute("PRAGMA synchronous=NORMAL")
            migrate(self.db)
        except BaseException:
            if self._writer_lock is not None:
                self._writer_lock.release()
            raise

    def _open_readonly(self) -> Database:
        if self.memory:
            raise StoreError("a read-only store needs a database file, not :memory:")
        if not os.path.exists(self.path):
            raise StoreError(f"no such database: {self.path}")
        uri = "file:" + urllib.parse.quote(os.path.abspath(self.path)) + "?mode=ro"
        conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
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
        run's current stream version (0 for a new run). Projections are updated in the same
        transaction.
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
                    h = _event_hash_unchecked(
                        prev, event_id, run_id, version, e.type, e.type_version, at, e.source,
                        payload_json,
                    )  # fmt: skip
                except UnicodeEncodeError as exc:
                    where = self._unencodable(run_id, events, payloads)
                    raise InvalidEventError(f"{where} is not valid Unicode: {exc}") from exc
                rows.append((position, event_id, run_id, version, e.type, e.type_version, at,
                             e.source, payload_json, prev, h))  # fmt: skip
                stored.append(StoredEvent(position, event_id, run_id, version, e.type,
                                          e.type_version, at, e.source, _loads(payload_json),
                                          prev, h))  # fmt: skip
                prev = h
            self._insert_events(conn, rows)
            self._project(conn, stored)
        return stored

    def _insert_events(self, conn: sqlite3.Connection, rows: list[tuple]) -> None:
        try:
            insert_rows(conn, _INSERT_HEAD, rows)
        except sqlite3.IntegrityError as exc:
            raise StoreError(f"append rejected by the database: {exc}") from exc

    def _project(self, conn: sqlite3.Connection, events: Sequence[StoredEvent]) -> None:
        projections.project(
            conn, [(e.position, e.run_id, e.type, e.occurred_at, e.payload) for e in events]
        )

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
        sql = _SELECT + where + " ORDER BY position"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(int(limit))
        with self._lock:
            rows = self.db.conn.execute(sql, params).fetchall()
        return [_event_from_row(r) for r in rows]

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

    def run_ids(self) -> list[str]:
        """Run ids in the order of their first event."""
        with self._lock:
            rows = self.db.conn.execute(
                "SELECT run_id FROM events GROUP BY run_id ORDER BY min(position)"
            ).fetchall()
        return [r[0] for r in rows]

    # -- blobs -----------------------------------------------------------------------------

    def put_blob(self, data: bytes | str) -> str:
        """Store ``data`` (text as UTF-8) once; returns its ref ``content_hash(data)``."""
        if isinstance(data, str):
            data = data.encode("utf-8")
        elif not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"blob data must be bytes or str, not {type(data).__name__}")
        data = bytes(data)
        ref = content_hash(data)
        with self._write() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO blobs (hash, size, content) VALUES (?, ?, ?)",
                (ref, len(data), data),
            )
        return ref

    def get_blob(self, ref: str) -> bytes:
        with self._lock:
            row = self.db.conn.execute(
                "SELECT content FROM blobs WHERE hash = ?", (ref,)
            ).fetchone()
        if row is None:
            raise BlobNotFoundError(f"no blob {ref}")
        content = row[0]
        return content.encode("utf-8") if isinstance(content, str) else bytes(content)

    def get_text(self, ref: str) -> str:
        return self.get_blob(ref).decode("utf-8")

    def has_blob(self, ref: str) -> bool:
        with self._lock:
            return (
                self.db.conn.execute("SELECT 1 FROM blobs WHERE hash = ?", (ref,)).fetchone()
                is not None
            )

    # -- verification ----------------------------------------------------------------------

    def verify(self, run_id: str | None = None) -> VerifyResult:
        """Re-derive every hash, prev_hash link and stream_version from what reads back.

        With no ``run_id`` also checks that positions run 1..N without holes and that no
        event after the last one was deleted (``sqlite_sequence``), then that every blob's
        content matches its ref. With a ``run_id``, only that run's chain is checked, and only
        the broken blobs its payloads mention are reported. The first problem found (lowest
        position; event problems before blob problems) is reported; scanning goes on to count
        every event and fill ``heads``. Truncating a run's tail cannot be told from a shorter
        run except by comparing ``heads`` with a head recorded elsewhere.
        """
        first: int | None = None
        reason: str | None = None
        checked = 0
        heads: dict[str, str] = {}
        versions: dict[str, int] = {}
        with self._snapshot() as conn:
            if run_id is None:
                cursor = conn.execute(_SELECT + " ORDER BY position")
            else:
                cursor = conn.execute(_SELECT + " WHERE run_id = ? ORDER BY position", (run_id,))
            expected_position = 1
            for pos, eid, rid, sv, typ, tv, at, src, payload, prev, h in cursor:
                checked += 1
                last_hash = heads.get(rid, GENESIS_HASH)
                last_version = versions.get(rid, 0)
                heads[rid] = h
                # a non-integer version (only possible by editing the schema) breaks the chain
                versions[rid] = sv if type(sv) is int else last_version + 1
                if first is not None:
                    continue  # only the first problem is reported; keep counting and heads
                calc = event_hash_fields(prev, eid, rid, sv, typ, tv, at, src, payload)
                if run_id is None and pos != expected_position:
                    first = expected_position
                    reason = (
                        f"position {expected_position} is missing (next is {pos}): "
                        "events were deleted"
                    )
                elif sv != last_version + 1:
                    first = pos
                    reason = (
                        f"position {pos}: run {rid!r} jumps from stream_version {last_version} "
                        f"to {sv}: events were deleted or reordered"
                    )
                elif prev != last_hash:
                    first = pos
                    reason = (
                        f"position {pos}: prev_hash does not match the hash of the previous "
                        f"event of run {rid!r}"
                    )
                elif calc != h:
                    first = pos
                    reason = f"position {pos}: stored hash does not match its content (edited)"
                expected_position = pos + 1
            if run_id is None and first is None:
                seq = conn.execute(
                    "SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'events'), 0)"
                ).fetchone()[0]
                if seq >= expected_position:
                    first = expected_position
                    reason = (
                        f"positions {expected_position}..{seq} are missing: "
                        "the last events were deleted"
                    )
            blobs_checked = 0
            blob_problem: str | None = None
            blob_position: int | None = None
            for ref, size, content in conn.execute("SELECT hash, size, content FROM blobs"):
                blobs_checked += 1
                if blob_problem is not None or first is not None:
                    continue
                data = content.encode("utf-8") if isinstance(content, str) else content
                if not isinstance(data, bytes) or content_hash(data) != ref:
                    problem = f"blob {ref}: content does not match its ref"
                elif size != len(data):
                    problem = f"blob {ref}: size {size} does not match its content ({len(data)})"
                else:
                    continue
                where, params = "instr(payload, ?) > 0", [ref]
                if run_id is not None:
                    where += " AND run_id = ?"
                    params.append(run_id)
                row = conn.execute(
                    f"SELECT min(position) FROM events WHERE {where}", params
                ).fetchone()
                if run_id is not None and row[0] is None:
                    continue  # not this run's blob
                blob_problem, blob_position = problem, row[0]
            if first is None and blob_problem is not None:
                first, reason = blob_position, blob_problem
        ok = reason is None
        return VerifyResult(ok, checked, first, reason, heads, blobs_checked)

    # -- projections -----------------------------------------------------------------------

    def rebuild_projections(self, page_size: int = 5000) -> None:
        """Empty the projection tables and fold every event into them again."""
        with self._write() as conn:
            projections.clear(conn)
            after = 0
            while True:
                rows = conn.execute(
                    "SELECT position, run_id, type, occurred_at, payload FROM events "
                    "WHERE position > ? ORDER BY position LIMIT ?",
                    (after, page_size),
                ).fetchall()
                if not rows:
                    break
                projections.project(conn, [(p, r, t, a, _loads(pl)) for p, r, t, a, pl in rows])
                after = rows[-1][0]

    def _dicts(self, sql: str, params: Sequence[Any], json_columns: Sequence[str]) -> list[dict]:
        with self._lock:
            cursor = self.db.conn.execute(sql, params)
            names = [d[0] for d in cursor.description]
            rows = [dict(zip(names, r)) for r in cursor.fetchall()]
        for row in rows:
            for column in json_columns:
                if isinstance(row.get(column), str):
                    try:
                        row[column] = _loads(row[column])
                    except ValueError:
                        pass
        return rows

    def runs(self) -> list[dict[str, Any]]:
        """The ``runs`` projection, in order of each run's first event (``config`` parsed)."""
        return self._dicts(
            "SELECT * FROM runs ORDER BY first_position", (), projections.RUN_JSON_COLUMNS
        )

    def run(self, run_id: str) -> dict[str, Any] | None:
        """One row of :meth:`runs`, or None."""
        rows = self._dicts(
            "SELECT * FROM runs WHERE run_id = ?", (run_id,), projections.RUN_JSON_COLUMNS
        )
        return rows[0] if rows else None

    def candidates(self, run_id: str) -> list[dict[str, Any]]:
        """The run's candidates by iteration and index (metrics parsed)."""
        return self._dicts(
            'SELECT * FROM candidates WHERE run_id = ? ORDER BY iteration, "index", candidate_id',
            (run_id,),
            projections.CANDIDATE_JSON_COLUMNS,
        )

    def leaderboard(self, run_id: str, limit: int | None = None) -> list[dict[str, Any]]:
        """Candidates with a dev score, best first (ties: iteration, index); adds ``rank``."""
        sql = (
            "SELECT * FROM candidates WHERE run_id = ? AND dev_score IS NOT NULL "
            'ORDER BY dev_score DESC, iteration, "index", candidate_id'
        )
        params: list[Any] = [run_id]
        if limit is not None:
            sql += " LIMIT ?"
            params.append(int(limit))
        rows = self._dicts(sql, params, projections.CANDIDATE_JSON_COLUMNS)
        return [{"rank": i, **row} for i, row in enumerate(rows, 1)]
