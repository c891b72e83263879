"""kill -9 while DPO refines the factory, then `selfdev resume`: the same result as a run that
was never interrupted (the refinement is redone from the log: same pairs, same seed, same
threads, so the same checkpoint hash, and iteration 2 samples from the same factory)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from selfdev.store import EventStore

CONFIG = """
[run]
seed = 5
iterations = 2
candidates = 16

[pairs]
p_w = 0.25
p_l = 0.25

[domain]
name = "digits"

[generator]
name = "tiny"
size = "test"
threads = 1
max_new_tokens = 200

[optimizer]
name = "dpo"
threads = 1
epochs = 3
batch_size = 2
"""


def selfdev(*args: str, home) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "selfdev.engine", *args], capture_output=True,
                          text=True, timeout=900, env={**os.environ, "SELFDEV_HOME": str(home)})


def comparable(text: str) -> dict:
    data = json.loads(text)
    for key in ("run_id", "head", "timing", "events"):
        data.pop(key)
    for stats in data["iterations"]:  # the trainer's wall-clock seconds are machine facts
        for key in [k for k in stats.get("refined", {}) if k.endswith("seconds")]:
            stats["refined"].pop(key)
    return data


def types(db) -> list[str]:
    if not db.exists():
        return []
    try:
        with EventStore(db, readonly=True) as store:
            return [e.type for e in store.iter_events()]
    except Exception:  # the writer is mid-transaction or the file is being created
        return []


@pytest.fixture(scope="module")
def config(selfdev_home, tmp_path_factory):
    from selfdev.plugins.generators.tiny import ensure_factory

    ensure_factory(selfdev_home, "test", threads=1)  # built once, before any clock starts
    path = tmp_path_factory.mktemp("cfg") / "run.toml"
    path.write_text(CONFIG)
    return path


def test_kill_during_refinement_then_resume(config, selfdev_home, tmp_path):
    ref_db = tmp_path / "ref.db"
    ref = selfdev("run", str(config), "--db", str(ref_db), "--quiet", "--json", home=selfdev_home)
    assert ref.returncode == 0, ref.stderr

    db = tmp_path / "killed.db"
    proc = subprocess.Popen([sys.executable, "-m", "selfdev.engine", "run", str(config),
                             "--db", str(db), "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "SELFDEV_HOME": str(selfdev_home)})
    deadline = time.time() + 600
    while "pairs.built" not in types(db) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(0.5)  # into the trainer: model loaded, steps running
    assert proc.poll() is None, "the run ended before refinement"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    seen = types(db)
    assert "pairs.built" in seen and "factory.refined" not in seen, \
        "the kill did not land during the refinement"

    with EventStore(db, readonly=True) as store:
        run_id = store.run_ids()[0]
    out = selfdev("resume", run_id, "--db", str(db), "--quiet", "--json", home=selfdev_home)
    assert out.returncode == 0, out.stderr
    resumed, reference = comparable(out.stdout), comparable(ref.stdout)
    assert resumed["iterations"][0]["refined"]["trained"] is True
    assert resumed == reference
    with EventStore(db, readonly=True) as store:
        refined = [e.payload for e in store.iter_events(types=["factory.refined"])]
        assert len(refined) == 1
        assert store.verify().ok
    with EventStore(ref_db, readonly=True) as store:
        ref_refined = [e.payload for e in store.iter_events(types=["factory.refined"])]
    assert refined[0]["checkpoint"] == ref_refined[0]["checkpoint"]  # same bytes, same hash
