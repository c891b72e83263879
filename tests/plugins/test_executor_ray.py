"""The ``ray`` executor on a real local Ray cluster (one per test session, 2 CPUs).

It must give the log ``local`` gives (same candidates, scores, ``show --json`` timings aside),
survive a worker process killed mid-iteration (the lost work is retried once and recorded, no
candidate lost or recorded twice), and refuse to run candidates on a worker without the
sandbox's layers.
"""
from __future__ import annotations

import json
import os
import signal
import sys

import pytest
from click.testing import CliRunner

from selfdev.engine import plugins as plugin_mod
from selfdev.engine.cli import cli
from selfdev.engine.config import from_dict
from selfdev.engine.loop import Runner, start_run
from selfdev.engine.api import SelfdevError
from selfdev.store import EventStore

SEED, CANDIDATES = 5, 40


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory):
    """One local cluster for the whole session (starting one costs seconds and both cores)."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             _temp_dir=str(tmp_path_factory.mktemp("ray")))
    yield ray
    ray.shutdown()


def config(executor: dict) -> dict:
    return {"run": {"seed": SEED, "iterations": 1, "candidates": CANDIDATES, "top_k": 3},
            "domain": {"name": "digits"}, "generator": {"name": "grammar"},
            "optimizer": {"name": "none"}, "executor": executor}


def start(db, executor: dict) -> tuple[EventStore, str]:
    store = EventStore(str(db))
    return store, start_run(store, from_dict(config(executor)))


def show_json(db, run_id: str) -> dict:
    res = CliRunner().invoke(cli, ["show", run_id, "--json", "--db", str(db)])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    for key in ("run_id", "timing", "head"):  # differ between any two runs
        data.pop(key, None)
    data["config"].pop("executor")
    for key in ("seconds", "cached", "cache"):
        data["domain"].pop(key, None)
    return data


def results(store: EventStore, run_id: str) -> dict[str, tuple]:
    """candidate -> (status, reason, dev score) from the log; asserts one result each."""
    executed, scores = {}, {}
    for e in store.iter_events(run_id=run_id):
        if e.type == "candidate.executed":
            assert e.payload["candidate_id"] not in executed, "recorded twice"
            executed[e.payload["candidate_id"]] = (e.payload["status"], e.payload["reason"])
        elif e.type == "candidate.evaluated" and e.payload["split"] == "dev":
            scores[e.payload["candidate_id"]] = e.payload["score"]
    return {cid: (*v, scores.get(cid)) for cid, v in executed.items()}


def event_types(store: EventStore, run_id: str) -> list[tuple[str, str | None]]:
    return [(e.type, e.payload.get("candidate_id")) for e in store.iter_events(run_id=run_id)]


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    db = tmp_path_factory.mktemp("local") / "runs.db"
    store, run_id = start(db, {"name": "local"})
    Runner(store, run_id).run()
    yield db, store, run_id
    store.close()


def test_ray_gives_the_log_local_gives(ray_cluster, local_run, tmp_path):
    db0, store0, run0 = local_run
    db = tmp_path / "runs.db"
    store, run_id = start(db, {"name": "ray", "workers": 2})
    Runner(store, run_id).run()
    expected = results(store0, run0)
    assert len(expected) >= CANDIDATES // 2  # most grammar candidates are accepted and run
    assert results(store, run_id) == expected
    assert event_types(store, run_id) == event_types(store0, run0)  # same log order
    assert show_json(db, run_id) == show_json(db0, run0)
    store.close()


class Killer:
    """A listener that SIGKILLs one Ray worker process after the third recorded candidate,
    while that worker still has candidates in flight (queued behind its current one)."""

    def __init__(self, executor) -> None:
        self.executor, self.seen, self.killed = executor, 0, None

    @plugin_mod.hookspecs.hookimpl
    def on_event(self, event) -> None:
        if event.type == "candidate.executed":
            self.seen += 1
            if self.seen == 3 and self.killed is None:
                self.killed = self.executor.worker_info[0]["pid"]
                os.kill(self.killed, signal.SIGKILL)


def test_a_killed_worker_loses_nothing(ray_cluster, local_run, tmp_path):
    _, store0, run0 = local_run
    store, run_id = start(tmp_path / "runs.db", {"name": "ray", "workers": 2, "max_retries": 1})
    runner = Runner(store, run_id)
    killer = Killer(runner.component("executor"))
    plugin_mod.pm.register(killer, name="test-killer")
    try:
        state = runner.run()
    finally:
        plugin_mod.pm.unregister(killer)
    assert state.finished is not None and killer.killed is not None
    retried = [e.payload for e in store.iter_events(run_id=run_id)
               if e.type == "candidate.retried"]
    assert retried, "the killed worker's work was not retried"
    assert all(r["attempt"] == 1 and f"pid {killer.killed}" in r["reason"] for r in retried)
    assert len({r["candidate_id"] for r in retried}) == len(retried)  # each retried once
    # every candidate exactly once (results() asserts no duplicate), with local's results
    assert results(store, run_id) == results(store0, run0)
    types = event_types(store, run_id)
    for r in retried:  # the retry is recorded just before the candidate's result
        at = types.index(("candidate.retried", r["candidate_id"]))
        assert types[at + 1] == ("candidate.executed", r["candidate_id"])
    store.close()


def test_a_worker_without_the_sandbox_layers_refuses_work(ray_cluster, tmp_path):
    store, run_id = start(tmp_path / "runs.db",
                          {"name": "ray", "workers": 1, "require_layers": ["no-such-layer"]})
    with pytest.raises(SelfdevError, match="refuses candidate work.*no-such-layer"):
        Runner(store, run_id).run()
    failed = [e for e in store.iter_events(run_id=run_id) if e.type == "run.failed"]
    assert failed and not [e for e in store.iter_events(run_id=run_id)
                           if e.type == "candidate.executed"]
    store.close()


def test_bad_address_and_missing_ray_are_one_line(monkeypatch):
    from selfdev.engine.config import check_options
    from selfdev.plugins.executors import ray as ray_executor

    with pytest.raises(SelfdevError, match="address.*'local'.*'auto'.*ray://HOST:PORT"):
        check_options("executor", ray_executor.RayExecutor, {"address": "cluster"})
    monkeypatch.setitem(sys.modules, "ray", None)  # what an install without the extra sees
    with pytest.raises(SelfdevError, match=r"pip install 'selfdev\[ray\]'"):
        ray_executor.import_ray()
