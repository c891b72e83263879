"""The datasette recipe (docs/datasette/metadata.yml): every canned query runs with plain
sqlite3 against a real selfdev database and returns rows, and the ones that restate a number
``selfdev show`` reports restate the same number."""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from selfdev.engine.cli import cli

yaml = pytest.importorskip("yaml")

METADATA = Path(__file__).resolve().parents[2] / "docs" / "datasette" / "metadata.yml"


@pytest.fixture(scope="module")
def queries():
    data = yaml.safe_load(METADATA.read_text())
    return data["databases"]["runs"]["queries"]


@pytest.fixture
def answer(grammar_run_db):
    conn = sqlite3.connect(f"file:{grammar_run_db}?mode=ro", uri=True)
    run_id = conn.execute("select run_id from events where type = 'run.started'").fetchone()[0]

    def run(sql):
        cur = conn.execute(sql, {"run_id": run_id} if ":run_id" in sql else {})
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row)) for row in cur.fetchall()]

    yield run
    conn.close()


def show(db):
    result = CliRunner().invoke(cli, ["show", "latest", "--db", str(db), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_every_canned_query_returns_rows(queries, answer):
    assert {"runs", "candidates", "leaderboard", "baselines", "iterations",
            "primitive_shares", "compute", "event_types"} <= set(queries)
    for name, query in queries.items():
        assert query["title"] and query["description"], name
        rows = answer(query["sql"])
        if name == "failure_reasons":
            continue  # a run where nothing failed has none: checked below
        assert rows, f"canned query {name!r} returned no rows"


def test_queries_agree_with_show(queries, answer, grammar_run_db):
    data = show(grammar_run_db)
    [run] = answer(queries["runs"]["sql"])
    assert run["run_id"] == data["run_id"] and run["last_lifecycle_event"] == "run.finished"
    assert run["best_dev"] == data["leaderboard"][0]["dev"]
    assert run["events"] == data["events"]
    candidates = answer(queries["candidates"]["sql"])
    assert len(candidates) == data["candidates"]
    top = answer(queries["leaderboard"]["sql"])[0]
    assert top["candidate_id"] == data["leaderboard"][0]["candidate_id"]
    assert "def merge_models" in top["code"]
    iterations = answer(queries["iterations"]["sql"])
    assert [(r["iteration"], r["best_dev"], r["unique_programs"]) for r in iterations] == \
        [(s["iteration"], s["best"], s["unique"]) for s in data["iterations"]]
    shares = answer(queries["primitive_shares"]["sql"])
    for s in data["iterations"]:
        assert {r["primitive"]: r["share"] for r in shares
                if r["iteration"] == s["iteration"]} == s["primitives"]
    compute = {(r["iteration"], r["phase"]): r for r in answer(queries["compute"]["sql"])}
    assert compute[(0, "baselines")]["items"] == len(data["baselines"])
    assert compute[(1, "execution")]["seconds"] == pytest.approx(
        data["timing"]["phases"][0]["execution"]["seconds"], abs=1e-3)
    failures = answer(queries["failure_reasons"]["sql"])
    failed = sum(1 for c in candidates if c["screen"] == "rejected"
                 or c["execution"] not in (None, "ok"))
    assert sum(r["candidates"] for r in failures) == failed
    assert {r["type"] for r in answer(queries["event_types"]["sql"])} >= {
        "run.started", "phase.timed", "run.finished"}
