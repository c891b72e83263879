"""``selfdev export RUN --format csv|jsonl|parquet``: every candidate and every event of a run,
written and read back with the csv module, json and pyarrow; ``--format py`` (the default)
still writes the top algorithms."""
import csv
import json

import pytest
from click.testing import CliRunner

from research_runs import CANDIDATES, ITERATIONS, score, write_db
from selfdev.engine.cli import cli
from selfdev.store import EventStore


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    return write_db(tmp_path_factory.mktemp("export") / "runs.db")


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def expected_candidates():
    return {f"i{t}-c{i:04d}": score(0, t, i) for t in range(1, ITERATIONS + 1)
            for i in range(CANDIDATES)}


def check_candidates(rows):
    want = expected_candidates()
    assert [r["candidate_id"] for r in rows] == list(want)
    for r in rows:
        dev = want[r["candidate_id"]]
        assert r["run_id"] == "run-a"
        assert (r["dev"] is None) == (dev is None) and (dev is None or float(r["dev"]) == dev)
        assert r["status"] == ("error" if dev is None else "scored")
        assert r["reason"] == ("ValueError: boom" if dev is None else None)
        assert r["ast_hash"].startswith("b2:") and r["code"].startswith("b2:")
        assert r["generated_at"] <= r["last_event_at"]
        assert float(r["temperature"]) == (1.2 if r["iteration"] in (1, "1") else 1.0)
    tested = [r for r in rows if r["test"] is not None]
    assert len(tested) == 3


def none_if_empty(row):
    return {k: (None if v == "" else v) for k, v in row.items()}


def test_csv_of_candidates(db, tmp_path):
    out = tmp_path / "c.csv"
    result = invoke("export", "run-a", "--db", db, "--format", "csv", "--out", out)
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"wrote {ITERATIONS * CANDIDATES} candidates of run-a to {out}"
    with out.open(newline="") as f:
        check_candidates([none_if_empty(r) for r in csv.DictReader(f)])


def test_csv_to_stdout_is_the_table_alone(db):
    result = invoke("export", "run-a", "--db", db, "--format", "csv")
    assert result.exit_code == 0, result.output
    rows = [none_if_empty(r) for r in csv.DictReader(result.output.splitlines())]
    check_candidates(rows)


def test_jsonl_of_candidates_and_events(db, tmp_path):
    out = tmp_path / "c.jsonl"
    result = invoke("export", "run-a", "--db", db, "--format", "jsonl", "--out", out, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["rows"] == ITERATIONS * CANDIDATES and summary["what"] == "candidates"
    check_candidates([json.loads(line) for line in out.read_text().splitlines()])

    out = tmp_path / "e.jsonl"
    result = invoke("export", "run-a", "--db", db, "--format", "jsonl", "--what", "events",
                    "--out", out)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    with EventStore(db, readonly=True) as store:
        stored = list(store.iter_events(run_id="run-a"))
    assert [(r["position"], r["type"], r["payload"], r["hash"]) for r in rows] == \
        [(e.position, e.type, e.payload, e.hash) for e in stored]


def test_parquet_of_candidates_and_events(db, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    out = tmp_path / "c.parquet"
    result = invoke("export", "run-a", "--db", db, "--format", "parquet", "--out", out)
    assert result.exit_code == 0, result.output
    check_candidates(pq.read_table(out).to_pylist())

    out = tmp_path / "e.parquet"
    result = invoke("export", "run-a", "--db", db, "--format", "parquet", "--what", "events",
                    "--out", out)
    assert result.exit_code == 0, result.output
    rows = pq.read_table(out).to_pylist()
    with EventStore(db, readonly=True) as store:
        stored = list(store.iter_events(run_id="run-a"))
    assert [(r["type"], json.loads(r["payload"])) for r in rows] == \
        [(e.type, e.payload) for e in stored]


def test_py_stays_the_default_and_takes_json(db, tmp_path):
    result = invoke("export", "run-a", "--db", db, "--out", tmp_path / "algos", "--top", "2",
                    "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["format"] == "py" and len(data["files"]) == 3
    assert sorted(p.name for p in (tmp_path / "algos").iterdir()) == sorted(data["files"])


@pytest.mark.parametrize("args, message", [
    (("--format", "parquet"), "--format parquet needs --out FILE.parquet"),
    (("--format", "py"), "--format py needs --out FOLDER"),
    (("--what", "events", "--out", "x"), "--what picks the table of --format csv"),
    (("--format", "xlsx"), "'xlsx' is not one of 'py', 'csv', 'jsonl', 'parquet'"),
])
def test_bad_options_are_one_line(db, args, message):
    result = invoke("export", "run-a", "--db", db, *args)
    assert result.exit_code == 2
    assert message in result.output and len(result.output.strip().splitlines()) == 1
