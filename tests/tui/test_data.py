"""The runs list and the writer-lock check (no Textual needed)."""
import json
import os
from datetime import timedelta

import synth
from tui_helpers import FROZEN, frozen_clock

from selfdev.store import EventStore
from selfdev.store.lock import current_holder
from selfdev.tui.data import fmt_duration, list_runs


def test_writer_holder_follows_the_lock_and_never_takes_it(tmp_path):
    path = tmp_path / "w.db"
    assert current_holder(path) is None  # no lock file at all
    with EventStore(path, writer="test writer"):
        holder = current_holder(path)
        assert holder is not None and holder["pid"] == os.getpid()
        # asking did not take the lock: a second writer is still refused for the right reason
        assert current_holder(path)["writer"] == "test writer"
    assert current_holder(path) is None  # released (the file is emptied)


def test_a_stale_lock_file_of_a_dead_writer_is_not_a_writer(tmp_path):
    path = tmp_path / "w.db"
    EventStore(path).close()
    lock = os.path.realpath(path) + ".lock"
    with open(lock, "w") as f:  # what kill -9 leaves behind: the JSON, but no flock
        json.dump({"pid": 2**22 + 12345, "host": os.uname().nodename, "command": "x",
                   "since": "2025-01-01T00:00:00Z", "writer": None}, f)
    assert current_holder(path) is None


def test_list_runs_statuses_and_durations(tmp_path):
    path = tmp_path / "runs.db"
    finished, crashed, failed = synth.write_demo_db(path)
    with EventStore(path, readonly=True) as store:
        rows = {r.run_id: r for r in list_runs(store, frozen_clock)}
    assert rows[finished].status == "finished" and rows[finished].status_label == "✓ finished"
    assert rows[crashed].status == "interrupted"
    assert rows[crashed].status_label == "⚠ interrupted (resumable)"
    assert rows[failed].status == "failed"
    assert rows[failed].reason == "ValueError: the evaluator crashed"
    assert rows[finished].iters_label == "3/3" and rows[crashed].iters_label == "1/3"
    # durations come from the log's own times (first to last event), not from the clock
    assert rows[finished].duration and rows[finished].duration < 3600
    assert rows[crashed].duration and rows[crashed].duration < 3600
    assert rows[finished].best_dev is not None and rows[finished].best_test is not None
    assert rows[finished].matches("grammar") and not rows[finished].matches("nope")


def test_running_needs_a_live_writer_and_is_the_latest_unfinished_run(tmp_path):
    path = tmp_path / "runs.db"
    with EventStore(path, writer="test") as store:
        synth.write_run(store, "run-old", iterations=1, candidates=2, stop_after="iteration:1")
        synth.write_run(store, "run-new", iterations=1, candidates=2, stop_after="iteration:1",
                        t0=FROZEN - timedelta(minutes=5))
        with EventStore(path, readonly=True) as reader:
            rows = {r.run_id: r for r in list_runs(reader, frozen_clock)}
        assert rows["run-new"].status == "running"
        assert rows["run-old"].status == "interrupted"
        # a running run's duration runs to "now" (the frozen clock)
        assert 299 <= rows["run-new"].duration <= 300
    with EventStore(path, readonly=True) as reader:
        assert {r.status for r in list_runs(reader, frozen_clock)} == {"interrupted"}


def test_fmt_duration():
    assert [fmt_duration(s) for s in (None, 0, 59.6, 61, 3600 + 120)] == \
        ["-", "0s", "1m00s", "1m01s", "1h02m"]
