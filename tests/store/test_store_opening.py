"""Opening files: only selfdev's, refused before anything is written, readable from a read-only
folder; and ``verify(run, head=...)``, the anchor that catches a run cut short."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from selfdev.store import EventStore, NewEvent, StoreError
from selfdev.store.opening import APPLICATION_ID

REPO_ROOT = Path(__file__).resolve().parents[2]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def foreign(path: Path, *, app_id: int = 0, wal: bool = False, table: str = "t") -> Path:
    conn = sqlite3.connect(path)
    if wal:
        conn.execute("PRAGMA journal_mode=wal")
    conn.execute(f"CREATE TABLE {table} (x)")
    conn.execute(f"INSERT INTO {table} VALUES (1)")
    if app_id:
        conn.execute(f"PRAGMA application_id = {app_id}")
    conn.commit()
    conn.close()
    return path


def tables(path: Path) -> set[str]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        conn.close()


def finished_log(path: Path) -> tuple[str, str]:
    """A closed WAL file with one run: (run id, head hash)."""
    with EventStore(path, writer="pytest") as es:
        stored = es.append("r", [NewEvent("thing.happened", {"n": i}) for i in range(5)])
    return "r", stored[-1].hash


@pytest.mark.parametrize("readonly", [False, True])
@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p.write_text("hello, I am a text file\n") and p, "is not a SQLite database"),
        (lambda p: foreign(p), "another application (tables t)"),
        (lambda p: foreign(p, table="events", wal=True), "another application (tables events)"),
        (lambda p: foreign(p, app_id=0x4D505446), "application_id 0x4d505446"),
    ],
    ids=["text", "foreign", "foreign-events-table", "foreign-app-id"],
)
def test_what_is_not_ours_is_refused_before_anything_is_written(tmp_path, make, message, readonly):
    path = make(tmp_path / "their.db")
    before = digest(path)
    with pytest.raises(StoreError, match=re.escape(message)):
        EventStore(path, readonly=readonly)
    assert digest(path) == before
    assert not (tmp_path / "their.db.lock").exists()
    if message != "is not a SQLite database":
        assert "_migrations" not in tables(path)


def test_new_files_carry_the_application_id_and_old_ones_still_open(tmp_path):
    path = tmp_path / "runs.db"
    finished_log(path)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    # a file from before m004: application id 0, selfdev's tables only
    conn.execute("PRAGMA application_id = 0")
    conn.execute("DELETE FROM _migrations WHERE name = 'm004_application_id'")
    conn.commit()
    conn.close()
    with EventStore(path, readonly=True) as reader:
        assert reader.count() == 5 and reader.verify().ok
    with EventStore(path) as writer:
        assert writer.conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
        assert writer.verify().ok
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")  # `touch runs.db` first: a new file, not a foreign one
    with EventStore(empty) as es:
        es.append("r", [NewEvent("x", {})])


def test_a_directory_is_not_a_database(tmp_path):
    with pytest.raises(StoreError, match="is a directory"):
        EventStore(tmp_path)
    with pytest.raises(StoreError, match="is a directory"):
        EventStore(tmp_path, readonly=True)


# -- read-only files and folders -------------------------------------------------------------
# root writes through permission bits, so as root these run in a child without
# CAP_DAC_OVERRIDE: what an ordinary user meets.

CHILD = textwrap.dedent(
    """
    import sys
    from selfdev.store import EventStore, StoreError
    path, mode = sys.argv[1], sys.argv[2]
    try:
        with EventStore(path, readonly=mode == "read") as es:
            print("ok", es.count(), es.verify().ok, es.verify("r", head=sys.argv[3]).ok)
    except StoreError as exc:
        print("refused:", exc)
    """
)


def as_user(*args: str) -> str:
    cmd = [sys.executable, "-c", CHILD, *args]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv: permission bits cannot be tested")
        drop = "-dac_override,-dac_read_search"
        cmd = [setpriv, f"--bounding-set={drop}", f"--inh-caps={drop}", "--", *cmd]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=REPO_ROOT,
                         env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
    return out.stdout.strip()


@pytest.fixture
def archive(tmp_path):
    """A finished log in a folder nobody may write; made writable again afterwards."""
    folder = tmp_path / "archive"
    folder.mkdir()
    run_id, head = finished_log(folder / "runs.db")
    assert not (folder / "runs.db-wal").exists() and not (folder / "runs.db-shm").exists()
    folder.chmod(0o555)
    yield folder / "runs.db", head
    folder.chmod(0o755)


def test_a_finished_log_in_a_read_only_folder_stays_readable(archive):
    path, head = archive
    before = digest(path)
    assert as_user(str(path), "read", head) == "ok 5 True True"
    assert as_user(str(path), "write", head).startswith(
        f"refused: cannot write the database {path}: its folder")
    assert digest(path) == before
    assert sorted(os.listdir(path.parent)) == ["runs.db", "runs.db.lock"]


def test_uncheckpointed_commits_in_a_read_only_folder_are_not_silently_skipped(tmp_path):
    """A writer killed mid-run leaves its last commits in ``-wal``; an immutable open would
    read the file without them, so the reader is refused, naming the -wal file."""
    live, copy = tmp_path / "live", tmp_path / "copy"
    live.mkdir()
    copy.mkdir()
    es = EventStore(live / "runs.db")
    stored = es.append("r", [NewEvent("thing.happened", {"n": i}) for i in range(3)])
    for name in ("runs.db", "runs.db-wal"):  # what the folder holds while the writer runs
        shutil.copy(live / name, copy / name)
    es.close()
    assert (copy / "runs.db-wal").stat().st_size > 0
    copy.chmod(0o555)
    try:
        said = as_user(str(copy / "runs.db"), "read", stored[-1].hash)
    finally:
        copy.chmod(0o755)
    assert said.startswith(f"refused: cannot read {copy / 'runs.db'}: its last commits are "
                           "still in runs.db-wal"), said


def test_a_read_only_file_is_refused_to_a_writer_and_open_to_readers(tmp_path):
    path = tmp_path / "runs.db"
    _, head = finished_log(path)
    path.chmod(0o444)
    before = digest(path)
    assert as_user(str(path), "write", head) == (
        f"refused: cannot write the database {path}: the file is read-only; "
        "readers can still open it read-only")
    assert as_user(str(path), "read", head) == "ok 5 True True"
    assert digest(path) == before


# -- the head anchor -------------------------------------------------------------------------


def test_a_run_cut_short_passes_the_chain_but_not_its_head(tmp_path):
    path = tmp_path / "runs.db"
    with EventStore(path) as es:
        es.append("r", [NewEvent("thing.happened", {"n": i}) for i in range(5)])
        es.append("other", [NewEvent("thing.happened", {"n": 0})])
        head = es.head("r")[1]
        assert es.verify("r", head=head).reached == 5
    conn = sqlite3.connect(path)
    conn.execute("DROP TRIGGER events_no_delete")
    conn.execute("DELETE FROM events WHERE run_id = 'r' AND stream_version > 3")
    # renumber what follows and reset the high-water mark: no hole is left for verify to see
    conn.execute("DROP TRIGGER events_no_update")
    conn.execute("UPDATE events SET position = 4 WHERE run_id = 'other'")
    conn.execute("UPDATE sqlite_sequence SET seq = 4 WHERE name = 'events'")
    conn.commit()
    conn.close()
    with EventStore(path, readonly=True) as es:
        assert es.verify().ok and es.verify("r").ok  # the chain alone cannot see it
        cut = es.verify("r", head=head)
        assert not cut.ok and cut.first_broken is None and cut.reached is None
        assert f"run 'r' no longer reaches head {head}" in cut.reason
        assert "ends at event 3" in cut.reason
        earlier = es.read(run_id="r")[1].hash  # a head recorded earlier is still reached
        assert es.verify("r", head=earlier).reached == 2
        with pytest.raises(ValueError, match="run_id"):
            es.verify(head=head)
