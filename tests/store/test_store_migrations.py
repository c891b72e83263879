"""Migrations: a blank database gets exactly this schema; reopening applies nothing twice."""

from __future__ import annotations

import sqlite3

import pytest
from sqlite_utils import Database

from selfdev.store import EventStore, NewEvent
from selfdev.store import migrations as migrations_module
from selfdev.store.migrations import MIGRATIONS, applied_migrations, migrate, pending_migrations

EXPECTED_COLUMNS = {
    "events": {
        "position": int, "event_id": str, "run_id": str, "stream_version": int, "type": str,
        "type_version": int, "occurred_at": str, "source": str, "payload": str,
        "prev_hash": str, "hash": str,
    },
    "blobs": {"hash": str, "size": int, "content": bytes},
    "runs": {
        "run_id": str, "first_position": int, "status": str, "domain": str, "generator": str,
        "optimizer": str, "evaluator": str, "executor": str, "iterations": int,
        "candidates": int, "seed": int, "config": str, "started_at": str, "finished_at": str,
        "current_iteration": int, "best_dev": float, "best_test": float, "reason": str,
        "events": int, "last_position": int,
    },
    "candidates": {
        "run_id": str, "candidate_id": str, "iteration": int, "index": int, "status": str,
        "reason": str, "prompt": str, "completion": str, "code": str, "ast_hash": str,
        "duplicate_of": str, "duration_ms": float, "dev_score": float, "test_score": float,
        "dev_metrics": str, "test_metrics": str,
    },
    "_migrations": {"name": str, "applied_at": str},
}  # fmt: skip

EXPECTED_INDEXES = {
    "events": {
        ("idx_events_type", ("type",), False),
        ("idx_events_run_position", ("run_id", "position"), False),
        ("sqlite_autoindex_events_1", ("event_id",), True),
        ("sqlite_autoindex_events_2", ("run_id", "stream_version"), True),
    },
    "blobs": {("sqlite_autoindex_blobs_1", ("hash",), True)},
    "runs": {
        ("idx_runs_first_position", ("first_position",), False),
        ("sqlite_autoindex_runs_1", ("run_id",), True),
    },
    "candidates": {
        ("idx_candidates_run_dev_score", ("run_id", "dev_score"), False),
        ("idx_candidates_run_tested", ("run_id", "dev_score"), False),
        ("sqlite_autoindex_candidates_1", ("run_id", "candidate_id"), True),
    },
}


def test_migrate_blank_pins_the_schema():
    db = Database(memory=True)
    assert migrate(db) == ["m001_events_and_blobs", "m002_projections"]
    assert set(db.table_names()) == set(EXPECTED_COLUMNS) | {"sqlite_sequence"}
    for table, columns in EXPECTED_COLUMNS.items():
        assert db[table].columns_dict == columns, table
    assert db["events"].pks == ["position"]
    assert db["candidates"].pks == ["run_id", "candidate_id"]
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
        assert applied_migrations(es.db) == ["m001_events_and_blobs", "m002_projections"]
        es.append("r", [NewEvent("run.started", {"domain": "d"})])
        assert es.runs()[0]["domain"] == "d"
    with EventStore(path) as es:  # nothing left to apply
        rows = es.conn.execute("SELECT name FROM _migrations").fetchall()
        assert len(rows) == 2


def test_a_failing_migration_leaves_no_trace(monkeypatch):
    def m003_broken(db):
        db["half_done"].create({"x": int})
        raise RuntimeError("migration bug")

    monkeypatch.setattr(migrations_module, "MIGRATIONS", MIGRATIONS + [m003_broken])
    db = Database(memory=True)
    with pytest.raises(RuntimeError, match="migration bug"):
        migrate(db)
    assert "half_done" not in db.table_names()
    assert applied_migrations(db) == ["m001_events_and_blobs", "m002_projections"]


def test_readonly_store_leaves_an_unmigrated_database_alone(tmp_path):
    path = tmp_path / "runs.db"
    EventStore(path).close()
    before = sqlite3.connect(path).execute("SELECT count(*) FROM _migrations").fetchone()[0]
    with EventStore(path, readonly=True) as reader:
        assert reader.count() == 0
    after = sqlite3.connect(path).execute("SELECT count(*) FROM _migrations").fetchone()[0]
    assert before == after == len(MIGRATIONS)
