"""Numbered schema migrations, applied in order every time a writable store opens.

llm-style: plain functions ``mNNN_what_it_does(db)`` appended to :data:`MIGRATIONS`; the names
already applied are kept in ``_migrations(name, applied_at)``. Each migration runs in one
transaction together with its bookkeeping row, so a fresh database and an old one take the same
path. Never edit a migration that has shipped: add a new one. No migration may touch a row of
``events`` or ``blobs``: the hash chain is the same before and after every migration.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable

from sqlite_utils import Database

from .ids import utc_now
from .opening import APPLICATION_ID

Migration = Callable[[Database], None]
MIGRATIONS: list[Migration] = []


def migration(fn: Migration) -> Migration:
    MIGRATIONS.append(fn)
    return fn


def applied_migrations(db: Database) -> list[str]:
    if not db["_migrations"].exists():
        return []
    return [row[0] for row in db.execute("SELECT name FROM _migrations ORDER BY rowid")]


def pending_migrations(db: Database) -> list[str]:
    done = set(applied_migrations(db))
    return [fn.__name__ for fn in MIGRATIONS if fn.__name__ not in done]


def migrate(db: Database) -> list[str]:
    """Apply every pending migration; returns the names applied now."""
    db["_migrations"].create(
        {"name": str, "applied_at": str}, pk="name", not_null={"applied_at"}, if_not_exists=True
    )
    done = set(applied_migrations(db))
    applied = []
    for fn in MIGRATIONS:
        if fn.__name__ in done:
            continue
        with db.atomic():
            fn(db)
            db["_migrations"].insert({"name": fn.__name__, "applied_at": utc_now()})
        applied.append(fn.__name__)
    return applied


def _append_only(db: Database, table: str) -> None:
    for action in ("UPDATE", "DELETE"):
        db.execute(
            f"CREATE TRIGGER {table}_no_{action.lower()} BEFORE {action} ON {table} "
            f"BEGIN SELECT RAISE(ABORT, '{table} are append-only'); END"
        )


@migration
def m001_events_and_blobs(db: Database) -> None:
    # Raw SQL: sqlite-utils cannot declare AUTOINCREMENT or a table-level UNIQUE. AUTOINCREMENT
    # keeps the high-water mark in sqlite_sequence, so verify() notices deleted tail events.
    db.execute(
        textwrap.dedent(
            """\
        CREATE TABLE events (
            position INTEGER PRIMARY KEY AUTOINCREMENT,
            event_id TEXT NOT NULL UNIQUE,
            run_id TEXT NOT NULL,
            stream_version INTEGER NOT NULL,
            type TEXT NOT NULL,
            type_version INTEGER NOT NULL,
            occurred_at TEXT NOT NULL,
            source TEXT NOT NULL,
            payload TEXT NOT NULL,
            prev_hash TEXT NOT NULL,
            hash TEXT NOT NULL,
            UNIQUE (run_id, stream_version)
        ) STRICT"""
        )
    )
    db["events"].create_index(["run_id", "position"], index_name="idx_events_run_position")
    db["events"].create_index(["type"], index_name="idx_events_type")
    _append_only(db, "events")
    db["blobs"].create(
        {"hash": str, "size": int, "content": bytes},
        pk="hash",
        not_null={"size", "content"},
        strict=True,
    )
    _append_only(db, "blobs")


@migration
def m002_projections(db: Database) -> None:
    # shipped, so kept as it was: m003 drops these tables again
    db["runs"].create(
        {
            "run_id": str,
            "first_position": int,
            "status": str,
            "domain": str,
            "generator": str,
            "optimizer": str,
            "evaluator": str,
            "executor": str,
            "iterations": int,
            "candidates": int,
            "seed": int,
            "config": str,
            "started_at": str,
            "finished_at": str,
            "current_iteration": int,
            "best_dev": float,
            "best_test": float,
            "reason": str,
            "events": int,
            "last_position": int,
        },
        pk="run_id",
        defaults={"events": 0},
        not_null={"events"},
    )
    db["runs"].create_index(["first_position"], index_name="idx_runs_first_position")
    db["candidates"].create(
        {
            "run_id": str,
            "candidate_id": str,
            "iteration": int,
            "index": int,
            "status": str,
            "reason": str,
            "prompt": str,
            "completion": str,
            "code": str,
            "ast_hash": str,
            "duplicate_of": str,
            "duration_ms": float,
            "dev_score": float,
            "test_score": float,
            "dev_metrics": str,
            "test_metrics": str,
        },
        pk=("run_id", "candidate_id"),
    )
    db["candidates"].create_index(
        ["run_id", "dev_score"], index_name="idx_candidates_run_dev_score"
    )
    # best_test looks among the few candidates that have a test score
    db.execute(
        "CREATE INDEX idx_candidates_run_tested ON candidates (run_id, dev_score) "
        "WHERE test_score IS NOT NULL"
    )


@migration
def m003_drop_projections(db: Database) -> None:
    # The store records events without interpreting their types: what a run means is the
    # engine's fold (selfdev.engine.state), the one read model. m002's tables were a second,
    # type-aware read model derived from the events alone, so dropping them loses no
    # information (their indexes go with them).
    for table in ("candidates", "runs"):
        db[table].drop(ignore=True)


@migration
def m004_application_id(db: Database) -> None:
    # Marks the file as selfdev's in SQLite's own header (``PRAGMA application_id``, "SDEV"),
    # so that opening another application's SQLite file can be refused before anything is
    # written to it (see .opening). Transactional like any header change: it is rolled back
    # with the bookkeeping row if either fails. The header is not part of any hash.
    db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
