"""File-only behaviour: WAL, read-only followers, the single-writer lock across processes."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from selfdev.store import EventStore, NewEvent, ReadOnlyError, StoreError, WriterLockedError

REPO_ROOT = Path(__file__).resolve().parents[2]

CHILD = textwrap.dedent(
    """
    import sys, time
    from selfdev.store import EventStore, NewEvent, WriterLockedError
    path, mode = sys.argv[1], sys.argv[2]
    if mode == "hold":
        es = EventStore(path, writer="child-writer")
        es.append("child", [NewEvent("thing.happened", {"n": i}) for i in range(3)])
        print("ready", flush=True)
        time.sleep(120)
    else:
        try:
            EventStore(path)
        except WriterLockedError as exc:
            print(exc, flush=True)
            sys.exit(3)
        sys.exit(0)
    """
)


def child(path, mode: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=str(REPO_ROOT),
    )


@pytest.fixture
def db_path(tmp_path):
    return tmp_path / "runs.db"


def test_file_store_uses_wal(db_path):
    with EventStore(db_path) as es:
        assert es.db.journal_mode == "wal"
        es.append("r", [NewEvent("x", {})])
    with EventStore(db_path, readonly=True) as reader:
        assert reader.db.journal_mode == "wal" and reader.count() == 1


def test_reader_follows_a_live_writer(db_path):
    writer = EventStore(db_path, writer="engine")
    reader = EventStore(db_path, readonly=True)
    try:
        assert reader.read() == [] and reader.last_position() == 0
        seen = []
        for batch in range(3):
            writer.append(
                "r", [NewEvent("thing.happened", {"batch": batch, "i": i}) for i in range(4)]
            )
            after = seen[-1].position if seen else 0
            new = reader.read(after=after)
            assert len(new) == 4 and new == writer.read(after=after)
            seen += new
        assert [e.position for e in seen] == list(range(1, 13))
        assert reader.head("r") == writer.head("r")
        assert reader.streams() == writer.streams()
        assert reader.verify().ok and reader.verify().checked == 12
        # an uncommitted write is invisible to the reader
        writer.conn.execute("BEGIN IMMEDIATE")
        writer.conn.execute(
            "INSERT INTO blobs (hash, size, content) VALUES ('b2:pending', 1, x'00')"
        )
        assert not reader.has_blob("b2:pending")
        writer.conn.execute("ROLLBACK")
    finally:
        reader.close()
        writer.close()


def test_readonly_store_never_writes(db_path):
    with EventStore(db_path) as es:
        es.append("r", [NewEvent("x", {})])
    with EventStore(db_path, readonly=True) as reader:
        with pytest.raises(ReadOnlyError):
            reader.append("r", [NewEvent("x", {})])
        with pytest.raises(ReadOnlyError):
            reader.put_blob(b"x")
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            reader.conn.execute("CREATE TABLE t (x)")
    assert not os.path.exists(str(db_path) + ".lock") or open(str(db_path) + ".lock").read() == ""


def test_readonly_does_not_migrate_or_create(tmp_path):
    with pytest.raises(StoreError, match="no such database"):
        EventStore(tmp_path / "missing.db", readonly=True)
    assert not (tmp_path / "missing.db").exists()
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.close()
    with pytest.raises(StoreError, match="not an event store"):
        EventStore(other, readonly=True)
    tables = [r[0] for r in sqlite3.connect(other).execute("SELECT name FROM sqlite_master")]
    assert tables == ["t"]
    with pytest.raises(StoreError):
        EventStore(":memory:", readonly=True)


def test_second_writer_in_process_is_refused(db_path):
    first = EventStore(db_path, writer="selfdev run demo")
    try:
        holder = json.loads(open(str(db_path) + ".lock").read())
        assert holder["pid"] == os.getpid() and holder["writer"] == "selfdev run demo"
        assert holder["host"] == socket.gethostname() and holder["since"] and holder["command"]
        with pytest.raises(WriterLockedError) as info:
            EventStore(db_path, writer="second")
        message = str(info.value)
        assert message.startswith(f"database {db_path} is being written by pid {os.getpid()} (")
        assert "selfdev run demo" in message and holder["since"] in message
        assert message.endswith("; open it read-only or wait")
        assert info.value.holder["pid"] == os.getpid()
        with EventStore(db_path, readonly=True) as reader:  # readers are never refused
            assert reader.count() == 0
    finally:
        first.close()
    assert open(str(db_path) + ".lock").read() == ""
    with EventStore(db_path) as again:  # released on close
        again.append("r", [NewEvent("x", {})])
    first.close()  # closing twice is harmless


def test_second_writer_in_another_process_is_refused(db_path):
    with EventStore(db_path, writer="parent-writer"):
        proc = child(db_path, "try")
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 3, err
        assert f"is being written by pid {os.getpid()} (parent-writer: " in out
    proc = child(db_path, "try")
    proc.communicate(timeout=30)
    assert proc.returncode == 0


def test_lock_is_released_when_the_holder_is_killed(db_path):
    proc = child(db_path, "hold")
    try:
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        with pytest.raises(WriterLockedError) as info:
            EventStore(db_path)
        assert f"pid {proc.pid} (child-writer: " in str(info.value)
        with EventStore(db_path, readonly=True) as reader:
            assert reader.count() == 3
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    with EventStore(db_path, writer="after-kill") as es:
        assert es.verify().ok and es.count() == 3
        assert es.append("child", [NewEvent("x", {})], expected_version=3)[0].position == 4


def test_store_is_usable_from_another_thread(db_path):
    with EventStore(db_path) as es:
        errors = []

        def work():
            try:
                es.append("t", [NewEvent("x", {"i": i}) for i in range(10)])
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert es.count() == 40 and es.verify().ok
        assert [e.stream_version for e in es.read()] == list(range(1, 41))


def test_writes_after_close_are_refused(db_path):
    es = EventStore(db_path)
    es.close()
    with pytest.raises(StoreError, match="closed"):
        es.append("r", [NewEvent("x", {})])


def test_store_imports_nothing_else_from_the_repository():
    import ast

    allowed = set(sys.stdlib_module_names) | {"sqlite_utils"}
    for path in sorted((REPO_ROOT / "store").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert name.split(".")[0] in allowed, f"{path.name} imports {name}"


def test_readonly_verify_finds_an_edit_made_by_another_connection(db_path):
    with EventStore(db_path) as es:
        es.append("r", [NewEvent("thing.happened", {"n": i}) for i in range(5)])
    raw = sqlite3.connect(db_path)
    raw.execute("DROP TRIGGER events_no_update")
    raw.execute("UPDATE events SET payload = '{\"n\":99}' WHERE position = 4")
    raw.commit()
    raw.close()
    with EventStore(db_path, readonly=True) as reader:
        result = reader.verify()
    assert not result.ok and result.first_broken == 4 and result.checked == 5
