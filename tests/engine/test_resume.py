"""kill -9 of the engine at any moment, then `selfdev resume`, completes the run with no lost and
no duplicated candidates, and `show --json` equals an uninterrupted run with the same seed."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from selfdev.store import EventStore

ARGS = ["--generator", "grammar", "--optimizer", "none", "--iterations", "2", "--candidates", "16", "--seed", "3", "--quiet", "--json"]


def selfdev(*args, **kw):
    return subprocess.run([sys.executable, "-m", "selfdev.engine", *args], capture_output=True,
                          text=True, timeout=600, **kw)


def comparable(text):
    data = json.loads(text)
    data.pop("run_id")
    data.pop("head")  # the last event's hash: it commits to the run id and the timestamps
    data.pop("timing")
    data.pop("events")  # a resumed run has its run.resumed marker(s) in addition
    return data


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    db = tmp_path_factory.mktemp("ref") / "runs.db"
    out = selfdev("demo", "--db", str(db), *ARGS)
    assert out.returncode == 0, out.stderr
    return comparable(out.stdout)


def count_events(db):
    if not db.exists():
        return 0
    try:
        with EventStore(db, readonly=True) as store:
            return store.count()
    except Exception:
        return 0


@pytest.mark.parametrize("kill_at", [1, 25, 60])
def test_kill_9_then_resume(tmp_path, reference, kill_at):
    db = tmp_path / "runs.db"
    proc = subprocess.Popen([sys.executable, "-m", "selfdev.engine", "demo", "--db", str(db), *ARGS],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while count_events(db) < kill_at and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before the kill point"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with EventStore(db, readonly=True) as store:
        run_id = store.run_ids()[0]
        assert store.verify().ok
    out = selfdev("resume", run_id, "--db", str(db), "--quiet", "--json")
    assert out.returncode == 0, out.stderr
    assert comparable(out.stdout) == reference
    with EventStore(db, readonly=True) as store:
        generated = [e.payload["candidate_id"] for e in store.iter_events(types=["candidate.generated"])]
        assert len(generated) == len(set(generated)) == 32
        executed = [e.payload["candidate_id"] for e in store.iter_events(types=["candidate.executed"])]
        assert len(executed) == len(set(executed))
        assert store.verify().ok
