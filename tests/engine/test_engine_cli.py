"""The CLI through click's runner: every command, --json, and one-line errors."""
import json
import sqlite3

import pytest
from click.testing import CliRunner

from selfdev.engine.cli import cli


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory):
    db = tmp_path_factory.mktemp("cli") / "runs.db"
    result = invoke("demo", "--db", db, "--generator", "grammar", "--optimizer", "none",
                    "--iterations", "2", "--candidates", "10", "--quiet")
    assert result.exit_code == 0, result.output
    assert "best discovered" in result.output and "best TIES" in result.output
    return db


def test_runs_show_events(demo_db):
    runs = json.loads(invoke("runs", "--db", demo_db, "--json").output)
    assert len(runs) == 1 and runs[0]["status"] == "finished"
    shown = json.loads(invoke("show", "latest", "--db", demo_db, "--json").output)
    assert shown["run_id"] == runs[0]["run_id"] and len(shown["iterations"]) == 2
    text = invoke("show", runs[0]["run_id"][:12], "--db", demo_db).output
    assert "leaderboard" in text
    evs = json.loads(invoke("events", "latest", "--db", demo_db, "--type", "iteration.", "--json").output)
    assert {e["type"] for e in evs} == {"iteration.started", "iteration.finished"}


def test_export(demo_db, tmp_path):
    result = invoke("export", "latest", "--db", demo_db, "--out", tmp_path / "out", "--top", "3")
    assert result.exit_code == 0, result.output
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert "report.json" in files and len(files) == 4
    assert "def merge_models" in (tmp_path / "out" / files[0]).read_text()


def test_verify_and_tamper(demo_db, tmp_path):
    assert invoke("verify", "--db", demo_db).exit_code == 0
    copy = tmp_path / "tampered.db"
    src = sqlite3.connect(demo_db)
    dst = sqlite3.connect(copy)
    src.backup(dst)
    src.close()
    position = dst.execute("select position from events where type='candidate.evaluated' limit 1").fetchone()[0]
    dst.execute("drop trigger if exists events_no_update")
    for (name,) in dst.execute("select name from sqlite_master where type='trigger'").fetchall():
        dst.execute(f"drop trigger {name}")
    dst.execute("update events set payload = replace(payload, '\"split\":\"dev\"', '\"split\":\"dew\"') where position = ?", (position,))
    dst.commit()
    dst.close()
    result = invoke("verify", "--db", copy)
    assert result.exit_code == 1
    assert f"position {position}" in result.output


@pytest.mark.parametrize("content, message", [
    ("[run\n", "is not valid TOML"),
    ("[run]\niteratons = 2\n", "unknown key 'iteratons' in [run]"),
    ("[generator]\nname = 'gpt-17'\n", "unknown generator 'gpt-17'; allowed:"),
    ("[domain]\nname = 'digits'\nsede = 1\n", "unknown option 'sede' for domain 'digits'"),
])
def test_bad_config_is_one_line(tmp_path, content, message):
    path = tmp_path / "run.toml"
    path.write_text(content)
    result = CliRunner().invoke(cli, ["run", str(path), "--db", str(tmp_path / "x.db"), "--quiet"])
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output and result.output.count("\n") == 1


def test_unknown_run_and_missing_db(tmp_path, demo_db):
    result = CliRunner().invoke(cli, ["show", "nope", "--db", str(demo_db)])
    assert result.exit_code == 2 and "no run 'nope'" in result.output
    result = CliRunner().invoke(cli, ["runs", "--db", str(tmp_path / "none.db")])
    assert result.exit_code == 2 and "no database at" in result.output


def test_a_second_writer_is_refused_naming_the_holder(tmp_path):
    from selfdev.store import EventStore

    db = tmp_path / "runs.db"
    with EventStore(db, writer="holder-under-test"):
        result = CliRunner().invoke(cli, ["demo", "--db", str(db), "--generator", "grammar", "--candidates", "2", "--quiet"])
    assert result.exit_code == 2
    assert "holder-under-test" in result.output or "pid" in result.output
    assert "Traceback" not in result.output


def test_executor_options_replace_the_executor_table():
    from selfdev.engine.cli import with_executor

    base = {"run": {"seed": 0}, "executor": {"name": "local", "workers": 3}}
    assert with_executor(base, None, False, None)["executor"] == {"name": "local", "workers": 3}
    assert with_executor(base, None, True, None)["executor"] == {
        "name": "ray", "workers": 3, "address": "local"}
    assert with_executor(base, "ray", False, "ray://head:10001")["executor"] == {
        "name": "ray", "workers": 3, "address": "ray://head:10001"}
    ray_cfg = {"executor": {"name": "ray", "address": "auto", "num_gpus": 1}}
    assert with_executor(ray_cfg, "local", False, None)["executor"] == {"name": "local"}
    assert base["executor"] == {"name": "local", "workers": 3}  # the input is not changed


@pytest.mark.parametrize("args", [["--ray-local", "--ray-address", "auto"],
                                  ["--executor", "local", "--ray-local"]])
def test_executor_options_that_contradict_are_one_line(tmp_path, args):
    db = tmp_path / "runs.db"
    result = CliRunner().invoke(cli, ["demo", "--db", str(db), *args])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and "Traceback" not in result.output
    assert "ray" in result.output and not db.exists()
