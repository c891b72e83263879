"""``selfdev sweep``: a grid of real runs (digits, grammar, none; 2 seeds x 2 betas) into one
database, found again and resumed as a whole, also after the sweep process is killed with
SIGKILL mid-way; and its bad input, refused before anything is written."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from selfdev.engine.cli import cli
from selfdev.engine.sweep import parse_seeds, parse_set
from selfdev.store import EventStore, NewEvent
from selfdev.store.errors import StoreError

CONFIG = """\
[run]
iterations = 2
candidates = 5
top_k = 2
[domain]
name = "digits"
[generator]
name = "grammar"
[optimizer]
name = "none"
"""
GRID = ["--seeds", "0-1", "--set", "temperature.beta=0,0.4", "--name", "grid"]


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    path = tmp_path_factory.mktemp("sweep") / "tiny.toml"
    path.write_text(CONFIG)
    return path


def sweep_cli(config, db, *args):
    return CliRunner().invoke(cli, ["sweep", str(config), *GRID, "--db", str(db), *args])


@pytest.fixture(scope="module")
def reference(config):
    """The grid swept once, uninterrupted, with two worker processes."""
    db = config.parent / "reference.db"
    result = sweep_cli(config, db, "--workers", "2", "--json")
    assert result.exit_code == 0, result.output
    return db, json.loads(result.stdout)


def by_point(result):
    """(seed, beta) -> what compare says of that point's run, run ids and times left out."""
    records = {r["run_id"]: r for r in result["comparison"]["runs"]}
    out = {}
    for p in result["points"]:
        r = records[p["run_id"]]
        out[(p["seed"], p["values"]["temperature.beta"])] = (
            r["iterations"], r["best_dev"], r["best_test"], r["baselines"], r["status"])
    return out


def test_parse_seeds_and_sets():
    assert parse_seeds("0-4") == [0, 1, 2, 3, 4]
    assert parse_seeds("0-2,7,1") == [0, 1, 2, 7]
    assert parse_set("temperature.beta=0,0.1, 0.4") == ("temperature.beta", [0, 0.1, 0.4])
    assert parse_set("generator.name=tiny,grammar") == ("generator.name", ["tiny", "grammar"])


def test_grid_in_one_database_tagged_and_compared(reference):
    db, result = reference
    points = result["points"]
    assert [(p["seed"], p["values"]) for p in points] == [
        (0, {"temperature.beta": 0.0}), (1, {"temperature.beta": 0.0}),
        (0, {"temperature.beta": 0.4}), (1, {"temperature.beta": 0.4})]
    assert all(p["status"] == "finished" for p in points)
    with EventStore(db, readonly=True) as store:
        assert sorted(store.run_ids()) == sorted(p["run_id"] for p in points)
        started = [store.read(run_id=p["run_id"], limit=1)[0].payload["config"] for p in points]
    assert all(c["run"]["tags"] == ["sweep:grid"] for c in started)
    assert started[2]["run"]["name"] == "grid: seed=0 temperature.beta=0.4"
    assert [(c["run"]["seed"], c["temperature"]["beta"]) for c in started] == [
        (0, 0.0), (1, 0.0), (0, 0.4), (1, 0.4)]
    # the temperature decays as each run's beta says: T2 = 1.2 / (1 + beta)
    temps = {r["config"]["temperature.beta"]: r["iterations"][1]["temperature"]
             for r in result["comparison"]["runs"]}
    assert temps == {0.0: pytest.approx(1.2), 0.4: pytest.approx(1.2 / 1.4, abs=1e-4)}
    groups = result["comparison"]["groups"]
    assert [(g["values"], g["n"]) for g in groups] == [({"temperature.beta": 0.0}, 2),
                                                       ({"temperature.beta": 0.4}, 2)]
    # and compare finds the sweep again by its name
    again = CliRunner().invoke(cli, ["compare", "--sweep", "grid", "--group-by",
                                     "temperature.beta", "--db", str(db), "--json"])
    assert again.exit_code == 0, again.output
    assert json.loads(again.output)["groups"] == groups


def test_same_sweep_again_skips_finished_runs(config, reference):
    db, result = reference
    again = sweep_cli(config, db)
    assert again.exit_code == 0, again.output
    assert "4 finished already, 0 to resume, 0 to start" in again.stderr
    assert "iterations by group" in again.stdout
    with EventStore(db, readonly=True) as store:
        assert len(store.run_ids()) == 4


def test_changed_configuration_under_the_same_name_is_refused(config, reference):
    db, _ = reference
    changed = config.parent / "changed" / config.name
    changed.parent.mkdir(exist_ok=True)
    changed.write_text(CONFIG.replace("candidates = 5", "candidates = 6"))
    result = sweep_cli(changed, db)
    assert result.exit_code == 2
    assert result.output.startswith("error: sweep 'grid': run ") and \
        "run.candidates = 5 there, 6 now" in result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize("args, message", [
    (["--seeds", "4-1"], "error: --seeds '4-1': the range 4-1 runs backwards"),
    (["--seeds", "a"], "error: --seeds 'a': expected integers and ranges"),
    (["--set", "beta=0,1"], "error: --set 'beta=0,1': expected SECTION.KEY=V1,V2"),
    (["--set", "temperature.beta=0,,1"], "error: --set 'temperature.beta=0,,1': a value is empty"),
    (["--set", "run.seed=1,2"], "error: --set run.seed: sweep seeds with --seeds"),
    (["--set", "temperature.bta=0"], "error: config: unknown key 'bta' in [temperature]"),
    (["--set", "temperature.beta=0,x"],
     "error: config: [temperature] beta must be a number, got 'x' (sweep point seed=0 "
     "temperature.beta=x)"),
    (["--set", "generator.nope=1"], "error: config: unknown option 'nope' for generator"),
    (["--name", "a b"], "error: --name 'a b': use letters, digits"),
])
def test_bad_input_is_one_line_and_writes_nothing(config, tmp_path, args, message):
    db = tmp_path / "bad.db"
    result = CliRunner().invoke(cli, ["sweep", str(config), *args, "--db", str(db)])
    assert result.exit_code == 2, result.output
    assert result.output.startswith(message), result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not db.exists()


def test_a_writer_of_several_runs_shows_each_running(tmp_path):
    """A sweep writes several runs at once and names them in the lock file: `selfdev runs`
    shows each of them running; without the note only the run written last is."""
    from selfdev.engine.runs import run_summaries, writer_statuses

    db = tmp_path / "two.db"
    with EventStore(db) as writer:
        for run_id in ("run-x", "run-y"):
            writer.append(run_id, [NewEvent("run.started", {
                "config": {}, "seed": 0, "domain": "digits", "generator": "grammar",
                "evaluator": "accuracy", "optimizer": "none", "executor": "local",
                "iterations": 1, "candidates": 1, "selfdev_version": "0"})])

        def statuses():
            with EventStore(db, readonly=True) as reader:
                return {r["run_id"]: r["status"]
                        for r in writer_statuses(reader, run_summaries(reader))}

        assert statuses() == {"run-x": "interrupted", "run-y": "running"}
        writer.note_writer(runs=["run-x", "run-y"])
        assert statuses() == {"run-x": "running", "run-y": "running"}
        shown = CliRunner().invoke(cli, ["show", "run-x", "--db", str(db), "--json"])
        assert json.loads(shown.output)["status"] == "running"
    assert set(statuses().values()) == {"interrupted"}  # the writer is gone


def _holders(db: Path) -> list[int]:
    """Pids of live processes whose command line names ``db`` (the sweep and its workers)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().split(") ", 1)[1][0]
        except OSError:
            continue
        if state != "Z" and str(db).encode() in cmd:
            pids.append(int(entry.name))
    return pids


@pytest.mark.slow
def test_killed_with_sigkill_and_resumed_gives_the_uninterrupted_results(config, reference,
                                                                         tmp_path):
    db = tmp_path / "killed.db"
    command = [sys.executable, "-m", "selfdev.engine", "sweep", str(config), *GRID,
               "--db", str(db), "--workers", "2"]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 120
    try:
        while True:  # kill once candidates are being scored and before the grid is done
            assert proc.poll() is None, f"the sweep ended before it was killed: {proc.stderr.read()}"
            assert time.monotonic() < deadline, "no candidate was scored in 120 s"
            if db.exists():
                try:
                    with EventStore(db, readonly=True) as store:
                        if store.count(types=["candidate.evaluated"]) >= 3:
                            break
                except StoreError:  # the file exists, its tables not yet
                    pass
            time.sleep(0.1)
        # the lock file names the runs in flight: each unfinished run shows as running
        listed = CliRunner().invoke(cli, ["runs", "--db", str(db), "--json"])
        unfinished = [r["status"] for r in json.loads(listed.output)
                      if r["status"] not in ("finished", "failed")]
        assert unfinished and set(unfinished) == {"running"}, listed.output
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    with EventStore(db, readonly=True) as store:
        assert store.count(types=["run.finished"]) < 4
    # the workers die with the writer (they would otherwise go on computing for no one)
    for _ in range(100):
        if not _holders(db):
            break
        time.sleep(0.1)
    assert not _holders(db), "worker processes outlived the killed sweep"

    resumed = subprocess.run([*command, "--json"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "to resume" in resumed.stderr and "0 to resume" not in resumed.stderr
    result = json.loads(resumed.stdout)
    with EventStore(db, readonly=True) as store:
        assert store.count(types=["run.resumed"]) >= 1  # a run was indeed cut mid-way
        assert sorted(store.run_ids()) == sorted(p["run_id"] for p in result["points"])
        assert store.verify().ok
    assert by_point(result) == by_point(reference[1])
