"""``run_summaries``: the runs listing folded by the engine from each run's events."""
import sqlite3

from selfdev.engine.report import summary
from selfdev.engine.runs import load_state, run_summaries
from selfdev.store import EventStore, NewEvent


def started(**extra):
    payload = {"config": {"run": {"seed": 3}}, "seed": 3, "domain": "digits",
               "generator": "grammar", "evaluator": "accuracy", "optimizer": "dpo",
               "executor": "local", "iterations": 2, "candidates": 3, **extra}
    return NewEvent("run.started", payload)


def iteration(it, scores):
    """An iteration's events: generated for every candidate, a dev score where one is given."""
    events = [NewEvent("iteration.started", {"iteration": it, "temperature": 1.0})]
    for i, score in enumerate(scores):
        cid = f"c{it}-{i}"
        events.append(NewEvent("candidate.generated",
                               {"candidate_id": cid, "iteration": it, "index": i}))
        events.append(NewEvent("candidate.screened", {"candidate_id": cid, "status": "accepted"}))
        if score is not None:
            events.append(NewEvent("candidate.evaluated",
                                   {"candidate_id": cid, "split": "dev", "score": score}))
    return events


def fresh(path, copy):
    """The listing of a copy of the file: a database never listed before, so no row is reused."""
    with sqlite3.connect(path) as source, sqlite3.connect(copy) as target:
        source.backup(target)
    source.close()
    target.close()
    with EventStore(copy, readonly=True) as store:
        return run_summaries(store)


def test_listing_follows_a_run_and_equals_a_fresh_fold(tmp_path):
    path = tmp_path / "runs.db"
    batches = [
        [started()], iteration(1, [0.5, None, 0.75]),
        [NewEvent("run.failed", {"reason": "ValueError: boom"})],
        [NewEvent("run.resumed", {"at_version": 12})], iteration(2, [0.75, 0.25, None]),
        [NewEvent("candidate.evaluated", {"candidate_id": c, "split": "test", "score": s})
         for c, s in (("c2-0", 0.6), ("c1-2", 0.7))],
        [NewEvent("run.finished", {"summary": []})],
    ]
    expected = [
        ("running", None, None, None),
        ("running", 1, 0.75, None),
        ("failed", 1, 0.75, None),
        ("running", 1, 0.75, None),
        ("running", 2, 0.75, None),
        ("running", 2, 0.75, 0.7),  # ties on dev go to the earlier iteration
        ("finished", 2, 0.75, 0.7),
    ]
    with EventStore(path, writer="test") as writer, EventStore(path, readonly=True) as reader:
        writer.append("other", [NewEvent("thing.happened", {})])  # not an engine run
        for n, (batch, want) in enumerate(zip(batches, expected)):
            writer.append("r", batch)
            rows = run_summaries(reader)
            assert rows == fresh(path, tmp_path / f"copy{n}.db")
            other, row = rows
            assert other["status"] is None and other["events"] == 1
            got = (row["status"], row["current_iteration"], row["best_dev"], row["best_test"])
            assert got == want, n
            assert row["reason"] == ("ValueError: boom" if want[0] == "failed" else None)
            (stream,) = [s for s in reader.streams() if s.run_id == "r"]
            assert (row["events"], row["last_position"]) == (stream.version, stream.last_position)
            assert row["started_at"] == stream.first_at
            assert row["finished_at"] == (stream.last_at if want[0] != "running" else None)
        assert row["domain"] == "digits" and row["config"] == {"run": {"seed": 3}}
        assert (row["iterations"], row["candidates"], row["seed"]) == (2, 3, 3)
        state = load_state(reader, "r")
        assert summary(state)["status"] == row["status"]
        assert row["best_dev"] == state.ranked()[0].dev


def test_a_replaced_file_is_never_listed_from_memory(tmp_path):
    path = tmp_path / "runs.db"
    with EventStore(path, writer="test") as store:
        store.append("r", [started()] + iteration(1, [0.5]))
        assert run_summaries(store)[0]["best_dev"] == 0.5
    path.unlink()
    with EventStore(path, writer="test") as store:  # same path, same run id, other events
        store.append("r", [started(domain="lm")] + iteration(1, [0.25, 0.125]))
        (row,) = run_summaries(store)
        assert (row["domain"], row["best_dev"]) == ("lm", 0.25)
