"""Migrations: a blank database gets exactly this schema; reopening applies nothing twice; a file
written under an earlier schema opens, migrates and verifies with its hash chain unchanged."""

from __future__ import annotations

import sqlite3

import pytest
from sqlite_utils import Database

from selfdev.store import EventStore, NewEvent
from selfdev.store import migrations as migrations_module
from selfdev.store.opening import APPLICATION_ID
from selfdev.store.migrations import MIGRATIONS, applied_migrations, migrate, pending_migrations

EXPECTED_COLUMNS = {
    "events": {
        "position": int, "event_id": str, "run_id": str, "stream_version": int, "type": str,
        "type_version": int, "occurred_at": str, "source": str, "payload": str,
        "prev_hash": str, "hash": str,
    },
    "blobs": {"hash": str, "size": int, "content": bytes},
    "_migrations": {"name": str, "applied_at": str},
}  # fmt: skip

ALL = ["m001_events_and_blobs", "m002_projections", "m003_drop_projections", "m004_application_id"]

EXPECTED_INDEXES = {
    "events": {
        ("idx_events_type", ("type",), False),
        ("idx_events_run_position", ("run_id", "position"), False),
        ("sqlite_autoindex_events_1", ("event_id",), True),
        ("sqlite_autoindex_events_2", ("run_id", "stream_version"), True),
    },
    "blobs": {("sqlite_autoindex_blobs_1", ("hash",), True)},
}


def test_migrate_blank_pins_the_schema():
    db = Database(memory=True)
    assert migrate(db) == ALL
    assert set(db.table_names()) == set(EXPECTED_COLUMNS) | {"sqlite_sequence"}
    for table, columns in EXPECTED_COLUMNS.items():
        assert db[table].columns_dict == columns, table
    assert db["events"].pks == ["position"]
    for table, indexes in EXPECTED_INDEXES.items():
        got = {(i.name, tuple(i.columns), bool(i.unique)) for i in db[table].indexes}
        assert got == indexes, table
    triggers = {(t.name, t.table) for t in db.triggers}
    assert triggers == {
        ("events_no_update", "events"), ("events_no_delete", "events"),
        ("blobs_no_update", "blobs"), ("blobs_no_delete", "blobs"),
    }  # fmt: skip
    events_sql = db.execute("SELECT sql FROM sqlite_master WHERE name = 'events'").fetchone()[0]
    assert "AUTOINCREMENT" in events_sql and events_sql.endswith("STRICT")
    assert "UNIQUE (run_id, stream_version)" in events_sql
    assert (
        "STRICT" in db.execute("SELECT sql FROM sqlite_master WHERE name = 'blobs'").fetchone()[0]
    )
    assert applied_migrations(db) == [fn.__name__ for fn in MIGRATIONS]
    assert db.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID == 0x53444556
    assert pending_migrations(db) == []
    assert migrate(db) == []


def test_migration_names_are_numbered_in_order():
    names = [fn.__name__ for fn in MIGRATIONS]
    assert names == sorted(names) and len(set(names)) == len(names)
    assert all(name[0] == "m" and name[1:4].isdigit() and name[4] == "_" for name in names)
    assert [int(name[1:4]) for name in names] == list(range(1, len(names) + 1))


def test_opening_an_old_database_applies_only_the_new_migrations(tmp_path, monkeypatch):
    path = tmp_path / "old.db"
    monkeypatch.setattr(migrations_module, "MIGRATIONS", MIGRATIONS[:1])
    db = Database(path)
    assert migrate(db) == ["m001_events_and_blobs"]
    db.close()
    monkeypatch.undo()
    with EventStore(path) as es:
        assert applied_migrations(es.db) == ALL
        es.append("r", [NewEvent("run.started", {"domain": "d"})])
        assert es.run_ids() == ["r"] and es.verify().ok
    with EventStore(path) as es:  # nothing left to apply
        rows = es.conn.execute("SELECT name FROM _migrations").fetchall()
        assert len(rows) == len(ALL)


def dump(path, table: str) -> list[tuple]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(f"SELECT * FROM {table} ORDER BY rowid").fetchall()
    finally:
        conn.close()


def test_a_file_of_the_projection_schema_migrates_with_its_chain_unchanged(
    tmp_path, monkeypatch, make_run
):
    """m002's schema (events, blobs and the runs/candidates projections), as written before
    m003: it opens read-only as it is, and a writer drops the projections and nothing else."""
    path = tmp_path / "m002.db"
    monkeypatch.setattr(migrations_module, "MIGRATIONS", MIGRATIONS[:2])
    with EventStore(path, writer="old selfdev") as old:
        assert applied_migrations(old.db) == ALL[:2]
        old.append("a", make_run("a", blob=old.put_blob))
        old.append("b", make_run("b", finish=False))
        # what the projection code wrote beside every append
        old.conn.execute(
            "INSERT INTO runs (run_id, first_position, status, domain, events, last_position) "
            "VALUES ('a', 1, 'finished', 'tensors', ?, ?)", (old.count(run_id="a"), 20)
        )  # fmt: skip
        old.conn.execute(
            "INSERT INTO candidates (run_id, candidate_id, iteration, \"index\", dev_score) "
            "VALUES ('a', 'a-c1-2', 1, 2, 0.5)"
        )
        old.conn.commit()
    monkeypatch.undo()
    events, blobs = dump(path, "events"), dump(path, "blobs")

    with EventStore(path, readonly=True) as reader:  # readers never migrate
        assert applied_migrations(reader.db) == ALL[:2]
        before = reader.verify()
        streams = reader.streams()
    assert before.ok and before.checked == len(events) and before.blobs_checked == len(blobs)
    assert [s.run_id for s in streams] == ["a", "b"]

    with EventStore(path, writer="new selfdev") as es:
        assert applied_migrations(es.db) == ALL
        assert not es.db["runs"].exists() and not es.db["candidates"].exists()
        after = es.verify()
        assert after == before  # same events, same blobs, same heads
        assert es.streams() == streams
        more = es.append("b", make_run("b")[-1:], expected_version=streams[1].version)
        assert more[0].prev_hash == streams[1].head and es.verify().ok
    assert dump(path, "events")[: len(events)] == events and dump(path, "blobs") == blobs


def test_a_failing_migration_leaves_no_trace(monkeypatch):
    def m099_broken(db):
        db["half_done"].create({"x": int})
        db.execute("PRAGMA application_id = 7")
        raise RuntimeError("migration bug")

    monkeypatch.setattr(migrations_module, "MIGRATIONS", MIGRATIONS + [m099_broken])
    db = Database(memory=True)
    with pytest.raises(RuntimeError, match="migration bug"):
        migrate(db)
    assert "half_done" not in db.table_names()
    assert applied_migrations(db) == ALL
    assert db.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID


def test_readonly_store_leaves_an_unmigrated_database_alone(tmp_path):
    path = tmp_path / "runs.db"
    EventStore(path).close()
    before = sqlite3.connect(path).execute("SELECT count(*) FROM _migrations").fetchone()[0]
    with EventStore(path, readonly=True) as reader:
        assert reader.count() == 0
    after = sqlite3.connect(path).execute("SELECT count(*) FROM _migrations").fetchone()[0]
    assert before == after == len(MIGRATIONS)
