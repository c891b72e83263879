"""The store contract, run against ``:memory:`` and a WAL file (the ``store`` fixture)."""

from __future__ import annotations

import re
import sqlite3
import uuid

import pytest

from selfdev.store import (
    BlobNotFoundError,
    ConcurrencyError,
    EventStore,
    InvalidEventError,
    NewEvent,
    StoredEvent,
    StoreError,
    Stream,
    canonical_json,
    content_hash,
)
from selfdev.store.records import EVENT_COLUMNS

ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


def numbered(n: int, type_: str = "thing.happened", start: int = 0) -> list[NewEvent]:
    return [NewEvent(type_, {"n": start + i}) for i in range(n)]


def literal_hash(e: StoredEvent) -> str:
    """The hash formula exactly as documented, from the public fields."""
    envelope = {
        "event_id": e.event_id,
        "run_id": e.run_id,
        "stream_version": e.stream_version,
        "type": e.type,
        "type_version": e.type_version,
        "occurred_at": e.occurred_at,
        "source": e.source,
    }
    return content_hash(
        canonical_json({"prev": e.prev_hash, "envelope": envelope, "payload": e.payload})
    )


class TestEventStoreContract:
    # -- append and read -------------------------------------------------------------------

    def test_append_returns_what_read_gives_back(self, store):
        stored = store.append(
            "r1", [NewEvent("run.started", {"b": [1, 2], "a": "é"}, source="cli")]
        )
        (e,) = stored
        assert e.position == 1 and e.stream_version == 1 and e.run_id == "r1"
        assert e.type == "run.started" and e.type_version == 1 and e.source == "cli"
        assert e.payload == {"a": "é", "b": [1, 2]}
        assert e.prev_hash == "" and e.hash.startswith("b2:") and len(e.hash) == 3 + 64
        assert ISO_UTC.match(e.occurred_at)
        assert uuid.UUID(e.event_id).version == 7
        assert store.read() == stored
        assert (
            store.conn.execute("SELECT payload FROM events").fetchone()[0] == '{"a":"é","b":[1,2]}'
        )

    def test_hash_is_the_documented_formula_and_chains(self, store):
        stored = store.append("r1", numbered(3)) + store.append("r1", numbered(2, start=3))
        prev = ""
        for e in stored:
            assert e.prev_hash == prev
            assert e.hash == literal_hash(e)
            prev = e.hash
        assert [e.stream_version for e in stored] == [1, 2, 3, 4, 5]
        assert store.head("r1") == (5, stored[-1].hash)
        assert store.head("nope") == (0, "")

    def test_event_ids_sort_like_positions_and_occurred_at_is_kept(self, store):
        stored = store.append("r1", numbered(50))
        stored += store.append("r1", [NewEvent("x", {}, occurred_at="2020-01-01T00:00:00.000000Z")])
        ids = [e.event_id for e in stored]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
        assert stored[-1].occurred_at == "2020-01-01T00:00:00.000000Z"

    def test_positions_are_global_and_versions_per_run(self, store):
        store.append("a", numbered(2))
        store.append("b", numbered(3))
        store.append("a", numbered(1))
        events = store.read()
        assert [e.position for e in events] == [1, 2, 3, 4, 5, 6]
        assert [(e.run_id, e.stream_version) for e in events] == [
            ("a", 1), ("a", 2), ("b", 1), ("b", 2), ("b", 3), ("a", 3)
        ]  # fmt: skip
        assert store.run_ids() == ["a", "b"]
        assert store.last_position() == 6
        assert store.count() == 6 and store.count(run_id="a") == 3

    def test_paging_by_position(self, store):
        for i in range(5):
            store.append("a" if i % 2 else "b", numbered(5, start=i * 5))
        pages, after = [], 0
        while page := store.read(after=after, limit=7):
            pages.append(page)
            after = page[-1].position
        assert [len(p) for p in pages] == [7, 7, 7, 4]
        assert [e.position for p in pages for e in p] == list(range(1, 26))
        assert [e.position for e in store.iter_events(page_size=4)] == list(range(1, 26))
        assert [e.position for e in store.iter_events(after=20, page_size=5)] == [
            21,
            22,
            23,
            24,
            25,
        ]
        a = store.read(run_id="a")
        assert len(a) == 10 and all(e.run_id == "a" for e in a)
        assert [e.stream_version for e in store.iter_events(run_id="a", page_size=3)] == list(
            range(1, 11)
        )
        assert store.read(run_id="a", after=a[4].position) == a[5:]

    def test_type_filters_exact_and_prefix(self, store):
        types = ["candidate.generated", "candidate.screened", "candidates.x", "candidate",
                 "run.started", "candidate.evaluated"]  # fmt: skip
        store.append("r", [NewEvent(t, {}) for t in types])
        got = lambda ts: [e.type for e in store.read(types=ts)]  # noqa: E731
        assert got(["candidate."]) == [
            "candidate.generated",
            "candidate.screened",
            "candidate.evaluated",
        ]
        assert got(["candidate"]) == ["candidate"]
        assert got(["run.started", "candidate.screened"]) == ["candidate.screened", "run.started"]
        assert got(["run.", "candidates.x"]) == ["candidates.x", "run.started"]
        assert got("run.started") == ["run.started"]  # a lone string is one type
        assert got([]) == []
        assert store.count(types=["candidate."]) == 3
        assert store.count(run_id="other", types=["candidate."]) == 0
        assert [e.type for e in store.iter_events(types=["candidate."], page_size=1)] == got(
            ["candidate."]
        )

    # -- concurrency control and validation --------------------------------------------------

    def test_expected_version(self, store):
        store.append("r", numbered(2), expected_version=0)
        store.append("r", numbered(1), expected_version=2)
        with pytest.raises(ConcurrencyError) as info:
            store.append("r", numbered(5), expected_version=2)
        assert (info.value.run_id, info.value.expected, info.value.actual) == ("r", 2, 3)
        assert isinstance(info.value, StoreError)
        assert store.count() == 3
        with pytest.raises(ConcurrencyError):
            store.append("r", [], expected_version=0)
        assert store.append("r", [], expected_version=3) == []
        assert store.append("new", numbered(1), expected_version=0)[0].stream_version == 1

    @pytest.mark.parametrize(
        "bad",
        [
            NewEvent("x", {"v": float("nan")}),
            NewEvent("x", {"v": float("inf")}),
            NewEvent("x", {"v": object()}),
            NewEvent("x", ["not", "a", "dict"]),  # type: ignore[arg-type]
            NewEvent("", {}),
            NewEvent("x", {}, type_version=0),
            NewEvent("x", {}, type_version=True),
            NewEvent("x", {}, source=None),  # type: ignore[arg-type]
            NewEvent("x", {"s": "\ud800"}),
            {"type": "x", "payload": {}},
        ],
    )
    def test_invalid_events_store_nothing(self, store, bad):
        store.append("r", numbered(1))
        with pytest.raises(InvalidEventError):
            store.append("r", numbered(2) + [bad])
        assert store.count() == 1 and store.verify().ok

    def test_invalid_run_id(self, store):
        for run_id in ("", None, 3):
            with pytest.raises(InvalidEventError):
                store.append(run_id, numbered(1))  # type: ignore[arg-type]

    # -- append-only ---------------------------------------------------------------------------

    @pytest.mark.parametrize(
        "sql",
        [
            "UPDATE events SET payload = '{}' WHERE position = 1",
            "DELETE FROM events WHERE position = 1",
            "DELETE FROM events",
            "INSERT OR REPLACE INTO events SELECT * FROM events WHERE position = 1",
            "UPDATE blobs SET size = 0",
            "DELETE FROM blobs",
        ],
    )
    def test_triggers_reject_update_and_delete(self, store, sql):
        store.append("r", numbered(2))
        store.put_blob(b"data")
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            store.conn.execute(sql)
        store.conn.rollback()
        assert store.count() == 2 and store.has_blob(content_hash(b"data"))
        assert store.verify().ok

    # -- atomicity under failure -----------------------------------------------------------------

    @pytest.mark.parametrize("error", [OSError("disk on fire"), KeyboardInterrupt()])
    def test_failure_after_rows_are_staged_stores_nothing(self, store, monkeypatch, error):
        store.append("r", numbered(3))
        before = store.streams()
        staged = []
        original = EventStore._insert_events

        def failing_insert(self, conn, rows):
            original(self, conn, rows[: len(rows) // 2])
            staged.append(conn.execute("SELECT count(*) FROM events").fetchone()[0])
            raise error  # even a BaseException rolls back

        monkeypatch.setattr(EventStore, "_insert_events", failing_insert)
        with pytest.raises(type(error)):
            store.append("r", numbered(10, start=3))
        assert staged == [8]  # five rows were in the transaction
        monkeypatch.undo()
        assert not store.conn.in_transaction
        assert store.count() == 3 and store.last_position() == 3 and store.streams() == before
        assert store.verify().ok
        later = store.append("r", numbered(2, start=3), expected_version=3)
        assert [(e.position, e.stream_version) for e in later] == [(4, 4), (5, 5)]
        assert store.verify().ok and store.verify().checked == 5

    # -- verify and tamper detection ---------------------------------------------------------------

    def test_verify_clean_store(self, store, make_run):
        assert store.verify() == store.verify()
        empty = store.verify()
        assert empty.ok and empty.checked == 0 and empty.heads == {}
        store.append("a", make_run("a", blob=store.put_blob))
        store.append("b", make_run("b", blob=store.put_blob))
        result = store.verify()
        assert result.ok and bool(result) and result.first_broken is None and result.reason is None
        assert result.checked == store.count()
        assert result.heads == {"a": store.head("a")[1], "b": store.head("b")[1]}
        assert (
            result.blobs_checked == store.conn.execute("SELECT count(*) FROM blobs").fetchone()[0]
        )
        one = store.verify("a")
        assert one.ok and one.checked == store.count(run_id="a") and set(one.heads) == {"a"}

    @pytest.mark.parametrize(
        "column, value",
        [
            ("payload", "replace(payload, '\"n\":2', '\"n\":3')"),
            ("payload", "replace(payload, ':', ': ')"),  # same JSON, other bytes
            ("type", "'thing.happened2'"),
            ("type_version", "type_version + 1"),
            ("source", "'evil'"),
            ("occurred_at", "replace(occurred_at, '.', ',')"),
            ("event_id", "event_id || '0'"),
            ("run_id", "'r2'"),
            ("stream_version", "stream_version + 100"),
            ("prev_hash", "prev_hash || '0'"),
            ("hash", "substr(hash, 1, 66) || iif(substr(hash, 67) = '0', '1', '0')"),
            ("position", "position + 100"),
        ],
    )
    def test_any_edited_column_is_found(self, store, raw, column, value):
        store.append("r", numbered(5))
        store.append("other", numbered(2))
        assert store.verify().ok
        raw("DROP TRIGGER events_no_update")
        raw(f"UPDATE events SET {column} = {value} WHERE position = 3")
        result = store.verify()
        assert not result.ok
        assert result.first_broken == 3, result.reason
        assert result.reason
        assert store.verify("other").ok

    def test_deleted_middle_row_is_found(self, store, raw):
        store.append("r", numbered(5))
        store.append("other", numbered(2))
        raw("DROP TRIGGER events_no_delete")
        raw("DELETE FROM events WHERE position = 3")
        result = store.verify()
        assert not result.ok and result.first_broken == 3 and "missing" in result.reason
        scoped = store.verify("r")
        assert not scoped.ok and scoped.first_broken == 4 and "stream_version" in scoped.reason
        assert store.verify("other").ok

    def test_deleted_last_rows_are_found(self, store, raw):
        store.append("r", numbered(5))
        raw("DROP TRIGGER events_no_delete")
        raw("DELETE FROM events WHERE position >= 4")
        result = store.verify()
        assert not result.ok and result.first_broken == 4 and "4..5" in result.reason
        # positions are never reused
        assert store.append("r", numbered(1))[0].position == 6

    def test_reordered_rows_are_found(self, store, raw):
        store.append("r", numbered(5))
        raw("DROP TRIGGER events_no_update")
        cols = (
            "event_id, stream_version, type, type_version, occurred_at, source, payload, "
            "prev_hash, hash"
        )
        two = raw(f"SELECT {cols} FROM events WHERE position = 2")[0]
        three = raw(f"SELECT {cols} FROM events WHERE position = 3")[0]
        sets = ", ".join(f"{c} = ?" for c in cols.split(", "))
        raw("UPDATE events SET stream_version = -1, event_id = 'tmp' WHERE position = 2")
        raw("UPDATE events SET stream_version = -2, event_id = 'tmp2' WHERE position = 3")
        raw(f"UPDATE events SET {sets} WHERE position = 2", three)
        raw(f"UPDATE events SET {sets} WHERE position = 3", two)
        result = store.verify()
        assert not result.ok and result.first_broken == 2

    def test_edited_blob_is_found(self, store, raw):
        ref = store.put_blob("print('hello')")
        unused = store.put_blob("never referenced")
        store.append("r", numbered(2))
        store.append(
            "r", [NewEvent("candidate.generated", {"candidate_id": "c", "completion": ref})]
        )
        store.append("other", numbered(1))
        raw("DROP TRIGGER blobs_no_update")
        raw("UPDATE blobs SET content = ? WHERE hash = ?", (b"print('pwned')", ref))
        result = store.verify()
        assert not result.ok and result.first_broken == 3 and ref in result.reason
        assert not store.verify("r").ok and store.verify("other").ok
        raw("UPDATE blobs SET content = ? WHERE hash = ?", (b"print('hello')", ref))
        raw("UPDATE blobs SET content = ? WHERE hash = ?", (b"x", unused))
        result = store.verify()
        assert not result.ok and result.first_broken is None and unused in result.reason

    # -- blobs -----------------------------------------------------------------------------

    def test_blobs_roundtrip_and_idempotence(self, store):
        ref = store.put_blob("héllo")
        assert ref == content_hash("héllo") == content_hash("héllo".encode())
        assert store.put_blob(b"h\xc3\xa9llo") == ref
        assert store.conn.execute("SELECT count(*), size FROM blobs").fetchone() == (1, 6)
        assert store.get_blob(ref) == "héllo".encode() and store.get_text(ref) == "héllo"
        assert store.has_blob(ref) and not store.has_blob("b2:" + "f" * 64)
        binary = bytes(range(256))
        assert store.get_blob(store.put_blob(binary)) == binary
        assert store.get_blob(store.put_blob(b"")) == b""
        with pytest.raises(BlobNotFoundError) as info:
            store.get_blob("b2:nope")
        assert isinstance(info.value, KeyError) and "b2:nope" in str(info.value)
        with pytest.raises(TypeError):
            store.put_blob(123)  # type: ignore[arg-type]

    # -- streams ---------------------------------------------------------------------------

    def test_streams_are_read_from_the_envelopes(self, store, make_run):
        assert store.streams() == [] and store.run_ids() == []
        b = store.append("b", [NewEvent("x", {}, occurred_at="2020-01-01T00:00:00.000000Z")])
        a = store.append("a", make_run("a", finish=False))
        b += store.append("b", numbered(2))
        a += store.append("a", make_run("a")[-1:])  # run.finished
        streams = store.streams()
        assert streams == [
            Stream("b", 3, b[-1].hash, 1, b[-1].position, b[0].occurred_at, b[-1].occurred_at),
            Stream("a", len(a), a[-1].hash, 2, a[-1].position, a[0].occurred_at,
                   a[-1].occurred_at),
        ]  # fmt: skip
        assert streams[0].first_at == "2020-01-01T00:00:00.000000Z"
        assert [(s.version, s.head) for s in streams] == [store.head("b"), store.head("a")]
        assert {s.run_id: s.head for s in streams} == store.verify().heads
        assert [s.version for s in streams] == [store.count(run_id="b"), store.count(run_id="a")]
        assert store.run_ids() == ["b", "a"]

    def test_stored_event_fields_are_the_event_columns(self, store):
        from dataclasses import fields

        table = tuple(row[1] for row in store.conn.execute("PRAGMA table_info(events)"))
        assert tuple(f.name for f in fields(StoredEvent)) == EVENT_COLUMNS == table
