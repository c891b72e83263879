"""Bad input, as a new user meets it: one line on stderr, exit 2, no traceback, and the database
byte-identical afterwards. Then what goes with it: SIGTERM, runs whose writer died, run ids
that survive narrow terminals and pipes, and the head hash that catches a run cut short.

The table runs real ``python -m selfdev.engine`` processes where the process matters (what a
user's shell sees; permission bits, which as root need a child without CAP_DAC_OVERRIDE) and
click's runner elsewhere, to keep the file fast.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from click.testing import CliRunner

from selfdev.engine.cli import cli
from selfdev.store import EventStore, NewEvent

REPO = Path(__file__).resolve().parents[2]


def invoke(*args, env=None):
    return CliRunner().invoke(cli, [str(a) for a in args], env=env)


def selfdev(*args, env=None, as_user=False, timeout=120):
    """``python -m selfdev.engine ARGS`` as a user without root's way past permission bits."""
    cmd = [sys.executable, "-m", "selfdev.engine", *map(str, args)]
    if as_user and os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv: permission bits cannot be tested")
        drop = "-dac_override,-dac_read_search"
        cmd = [setpriv, f"--bounding-set={drop}", f"--inh-caps={drop}", "--", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO,
                          env={**os.environ, **(env or {})})


def digest(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished tiny run (the grammar control, 1 iteration of 3 candidates) and its id."""
    db = tmp_path_factory.mktemp("finished") / "runs.db"
    result = invoke("demo", "--db", db, "--generator", "grammar", "--optimizer", "none",
                    "--iterations", "1", "--candidates", "3", "--quiet", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["status"] == "finished" and data["head"].startswith("b2:")
    return db, data["run_id"], data["head"]


@pytest.fixture(scope="module")
def files(finished, tmp_path_factory):
    """Everything the table points at; the read-only folder is made writable again after."""
    db, run_id, head = finished
    d = tmp_path_factory.mktemp("bad")
    (d / "notes.txt").write_text("not a database\n")
    other = sqlite3.connect(d / "other.db")  # another application's file
    other.execute("CREATE TABLE contacts (name TEXT, phone TEXT)")
    other.execute("INSERT INTO contacts VALUES ('Ada', '555-0100')")
    other.commit()
    other.close()
    (d / "ro").mkdir()
    shutil.copy(db, d / "ro" / "runs.db")
    shutil.copy(db, d / "readonly.db")
    (d / "readonly.db").chmod(0o444)
    (d / "ro").chmod(0o555)
    (d / "generator.toml").write_text('generator = "grammar"\n[run]\niterations = 1\n')
    (d / "latin1.toml").write_bytes('[domain]\nname = "digits" # café\n'.encode("latin-1"))
    (d / "model").mkdir()  # weights but no config.json
    (d / "model" / "model.safetensors").write_bytes(b"")
    (d / "avg.py").write_text("import torch\n\n\ndef merge_models(task_vectors, base, name):\n"
                              "    return sum(task_vectors.values()) / len(task_vectors)\n")
    (d / "broken.py").write_text("import torch\n\n\ndef merge_models(task_vectors, base, name):\n"
                                 "    return sum(task_vectors.values(\n")
    yield {"dir": d, "finished": db, "run": run_id}
    (d / "ro").chmod(0o755)


@dataclass
class Case:
    name: str
    args: list[str]
    says: str  # in the one line on stderr
    db: str | None = None  # the database that must come out byte-identical
    absent: str | None = None  # a file that must not be created
    how: str = "click"  # click | process | user (a process without root's override)
    env: dict[str, str] = field(default_factory=dict)
    code: int = 2


CASES = [
    Case("a text file, to a writer", ["demo", "--db", "{d}/notes.txt", "--quiet"],
         "notes.txt is not a SQLite database", db="{d}/notes.txt", how="process"),
    Case("a text file, to a reader", ["runs", "--db", "{d}/notes.txt"],
         "notes.txt is not a SQLite database", db="{d}/notes.txt"),
    Case("another application's SQLite file, to a writer",
         ["demo", "--db", "{d}/other.db", "--quiet"],
         "other.db is not an event store: it belongs to another application (tables contacts)",
         db="{d}/other.db", absent="{d}/other.db.lock", how="process"),
    Case("another application's SQLite file, to a reader", ["show", "latest", "--db", "{d}/other.db"],
         "belongs to another application", db="{d}/other.db"),
    Case("a read-only folder, to a writer", ["resume", "{run}", "--db", "{d}/ro/runs.db", "--quiet"],
         "its folder {d}/ro is read-only", db="{d}/ro/runs.db", how="user"),
    Case("a new database in a read-only folder", ["demo", "--db", "{d}/ro/new.db", "--quiet"],
         "its folder {d}/ro is read-only", absent="{d}/ro/new.db", how="user"),
    Case("a read-only database file", ["demo", "--db", "{d}/readonly.db", "--quiet"],
         "readonly.db: the file is read-only", db="{d}/readonly.db", how="user"),
    Case("an unwritable SELFDEV_HOME, to a reader", ["runs"],
         "SELFDEV_HOME {d}/ro/home cannot be created", env={"SELFDEV_HOME": "{d}/ro/home"},
         absent="{d}/ro/home", how="user"),
    Case("an unwritable SELFDEV_HOME, to a writer", ["demo", "--quiet"],
         "its folder {d}/ro is read-only", env={"SELFDEV_HOME": "{d}/ro"}, db="{d}/ro/runs.db",
         how="user"),
    Case("generator = \"grammar\" as a string", ["run", "{d}/generator.toml", "--db", "{d}/new.db"],
         'generator = "grammar" must be a table: write [generator]', absent="{d}/new.db"),
    Case("a configuration that is not UTF-8", ["run", "{d}/latin1.toml", "--db", "{d}/new.db"],
         "latin1.toml is not UTF-8 text (byte 0xe9 on line 2)", absent="{d}/new.db"),
    Case("apply on a model directory without config.json",
         ["apply", "{d}/avg.py", "--base", "{d}/model", "--expert", "a={d}/model", "--quiet"],
         "--base: {d}/model has no config.json"),
    Case("apply an algorithm with a syntax error",
         ["apply", "{d}/broken.py", "--base", "{d}/model", "--expert", "a={d}/model", "--quiet"],
         "broken.py: line 5: '(' was never closed"),
    Case("resume --db with a typo", ["resume", "latest", "--db", "{d}/typo.db"],
         "no database at {d}/typo.db", absent="{d}/typo.db", how="process"),
    Case("events --limit -1", ["events", "latest", "--db", "{finished}", "--limit", "-1"],
         "'--limit': -1 is not in the range x>=1", db="{finished}"),
    Case("events --type that no event has",
         ["events", "latest", "--db", "{finished}", "--type", "candidate.evaluatd"],
         "--type 'candidate.evaluatd' matches no event type; the types are baseline.evaluated, "
         "candidate.evaluated,", db="{finished}"),
    Case("verify --head without its run", ["verify", "--db", "{finished}", "--head", "b2:00"],
         "--head needs the RUN it belongs to", db="{finished}"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_one_line_and_changes_nothing(files, case):
    def fill(text: str) -> str:
        return text.format(d=files["dir"], finished=files["finished"], run=files["run"])

    args = [fill(a) for a in case.args]
    env = {k: fill(v) for k, v in case.env.items()}
    db = Path(fill(case.db)) if case.db else None
    before = digest(db) if db else None
    if case.how == "click":
        result = invoke(*args, env=env)
        code, stderr = result.exit_code, result.stderr
        assert result.exception is None or isinstance(result.exception, SystemExit), \
            result.exception
    else:
        out = selfdev(*args, env=env, as_user=case.how == "user")
        code, stderr = out.returncode, out.stderr
    assert "Traceback" not in stderr
    assert (code, stderr.count("\n")) == (case.code, 1), stderr
    assert stderr.startswith("error: ") and fill(case.says) in stderr, stderr
    if db is not None:
        assert before is not None and digest(db) == before
    if case.absent:
        assert not Path(fill(case.absent)).exists()


def test_a_finished_run_in_a_read_only_folder_is_read(files, finished):
    _, run_id, head = finished
    db = files["dir"] / "ro" / "runs.db"
    before = digest(db)
    shown = selfdev("show", run_id, "--db", db, "--json", as_user=True)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["head"] == head
    checked = selfdev("verify", run_id, "--head", head, "--db", db, as_user=True)
    assert checked.returncode == 0 and f"reaches head {head}" in checked.stdout, checked.stderr
    assert digest(db) == before and sorted(os.listdir(db.parent)) == ["runs.db"]


def test_usage_errors_are_one_line_and_a_bare_group_still_shows_its_help():
    missing = invoke("show")
    assert missing.exit_code == 2
    assert missing.stderr == "error: Missing argument 'RUN'. (see `cli show --help`)\n"
    bare = invoke("sandbox")
    assert "Commands:" in bare.output and "doctor" in bare.output


# -- the audit anchor -----------------------------------------------------------------------


def test_a_truncated_finished_run_fails_verify_head(finished, tmp_path):
    db, run_id, head = finished
    shown = json.loads(invoke("show", run_id, "--db", db, "--json").stdout)
    assert shown["head"] == head
    text = invoke("show", run_id, "--db", db).stdout
    assert f"head {head}" in text  # printed whole, to be kept
    invoke("export", run_id, "--db", db, "--out", tmp_path / "out", "--top", "1")
    assert json.loads((tmp_path / "out" / "report.json").read_text())["head"] == head

    cut = tmp_path / "cut.db"
    shutil.copy(db, cut)
    conn = sqlite3.connect(cut)
    conn.execute("DROP TRIGGER events_no_delete")
    (last,) = conn.execute("SELECT max(stream_version) FROM events WHERE run_id = ?",
                           (run_id,)).fetchone()
    conn.execute("DELETE FROM events WHERE run_id = ? AND stream_version > ?", (run_id, last - 3))
    conn.execute("UPDATE sqlite_sequence SET seq = (SELECT max(position) FROM events) "
                 "WHERE name = 'events'")
    conn.commit()
    conn.close()

    plain = invoke("verify", "--db", cut)
    assert plain.exit_code == 0 and "intact" in plain.stdout  # the chain alone cannot see it
    anchored = invoke("verify", run_id, "--head", head, "--db", cut)
    assert anchored.exit_code == 1
    assert anchored.stdout.startswith(f"BROKEN: run {run_id!r} no longer reaches head {head}: "
                                      f"its log ends at event {last - 3}"), anchored.stdout
    as_json = json.loads(invoke("verify", run_id, "--head", head, "--db", cut, "--json").stdout)
    assert as_json["ok"] is False and as_json["head_reached_at"] is None
    intact = invoke("verify", run_id, "--head", head, "--db", db)
    assert intact.exit_code == 0 and f"reaches head {head} (event {last})" in intact.stdout


# -- runs whose writer died, SIGTERM -----------------------------------------------------------


def test_an_unfinished_run_is_running_only_while_its_writer_holds_the_lock(finished, tmp_path):
    db = tmp_path / "runs.db"
    shutil.copy(finished[0], db)
    with EventStore(finished[0], readonly=True) as store:
        started = store.read(types=["run.started"], limit=1)[0]
    writer = EventStore(db, writer="pytest")
    writer.append("run-cut-short", [NewEvent("run.started", started.payload)])

    def statuses():
        rows = json.loads(invoke("runs", "--db", db, "--json").stdout)
        return {r["run_id"]: r["status"] for r in rows}

    assert statuses() == {finished[1]: "finished", "run-cut-short": "running"}
    writer.close()  # as when the writer dies: the kernel drops its lock
    assert statuses() == {finished[1]: "finished", "run-cut-short": "interrupted"}
    shown = json.loads(invoke("show", "run-cut-short", "--db", db, "--json").stdout)
    assert shown["status"] == "interrupted"


def test_sigterm_stops_a_run_like_ctrl_c_and_names_it(tmp_path):
    db = tmp_path / "runs.db"
    proc = subprocess.Popen(
        [sys.executable, "-m", "selfdev.engine", "demo", "--db", str(db), "--generator", "grammar",
         "--optimizer", "none", "--iterations", "3", "--candidates", "40"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    first = proc.stderr.readline()  # "run RUN (resume with ...)", once run.started is committed
    assert first.startswith("run "), first
    run_id = first.split()[1]
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, rest = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, rest
    assert "Traceback" not in rest and rest.count("\n") == 1, rest
    assert rest.startswith(f"terminated (SIGTERM): run {run_id} stopped;")
    assert f"`selfdev resume {run_id}`" in rest
    with EventStore(db, readonly=True) as store:
        assert store.verify().ok and store.run_ids() == [run_id]
    rows = json.loads(invoke("runs", "--db", db, "--json").stdout)
    assert [r["status"] for r in rows] == ["interrupted"]


# -- what a narrow terminal and a pipe show ---------------------------------------------------


def test_run_ids_are_never_cut(finished):
    from rich.console import Console

    from selfdev.engine.report import runs_table

    db, run_id, _ = finished
    piped = invoke("runs", "--db", db).stdout  # not a terminal: no width to fit
    assert run_id in piped and "started" in piped and "…" not in piped
    rows = json.loads(invoke("runs", "--db", db, "--json").stdout)
    rows.append(dict(rows[0], run_id="transfer-20260101-000000-abcdef", status=None))
    for width in (80, 60):
        console = Console(width=width, record=True, no_color=True)
        table, dropped = runs_table(rows, width)
        console.print(table)
        text = console.export_text()
        assert run_id in text and "transfer-20260101-000000-abcdef" in text
        assert "…" not in text and max(map(len, text.splitlines())) <= width
        assert dropped[0] == "started"


def test_the_iterations_table_keeps_its_headers_at_80_columns(finished):
    from rich.console import Console

    from selfdev.engine.report import render, summary
    from selfdev.engine.runs import load_state

    db, run_id, _ = finished
    with EventStore(db, readonly=True) as store:
        data = summary(load_state(store, run_id))
    console = Console(width=80, record=True, no_color=True)
    render(data, console)
    text = console.export_text()
    table = text[text.index("iterations"):text.index("leaderboard")]
    for header in ("iter", "generated", "accepted", "executable", "best", "mean", "pairs"):
        assert header in table
    assert "…" not in table


def test_trainings_deprecation_warnings_are_filtered_and_no_others():
    from selfdev.plugins.factory.training import training_arguments

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        training_arguments(output_dir="x", learning_rate=1e-3, epochs=1, batch_size=1,
                           grad_accum=1, seed=0, max_length=8, device="cpu")
        for old in ("gradient_checkpointing", "is_gradient_checkpointing"):  # transformers 5
            warnings.warn(f"`{old}` is deprecated and will be removed in v6. Use "
                          f"`{old.replace('gradient', 'activation')}` instead.", FutureWarning)
        warnings.warn("something else is deprecated", FutureWarning)
    assert [str(w.message) for w in seen] == ["something else is deprecated"]
