"""``selfdev compare``: configuration differences, iterations side by side (the numbers of
``selfdev show``), baselines, and groups with mean ± sd and a 95 % t-interval."""
import json
import math
import statistics

import pytest
from click.testing import CliRunner

from research_runs import write_db
from selfdev.engine.cli import cli
from selfdev.engine.compare import interval


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    return write_db(tmp_path_factory.mktemp("compare") / "runs.db")


def invoke(db, *args):
    return CliRunner().invoke(cli, ["compare", "--db", str(db), *args])


def as_json(db, *args):
    result = invoke(db, *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def show(db, run):
    result = CliRunner().invoke(cli, ["show", run, "--db", str(db), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_differences_iterations_and_best_are_those_of_show(db):
    data = as_json(db, "run-a", "run-b", "run-d")
    assert [r["run_id"] for r in data["runs"]] == ["run-a", "run-b", "run-d"]
    # seed and beta differ; the names differ too, but a name is a label, not configuration
    assert data["differences"] == ["run.seed", "temperature.beta"]
    assert data["groups"] is None
    for record in data["runs"]:
        shown = show(db, record["run_id"])
        assert record["iterations"] == shown["iterations"]  # reused, not re-derived
        best = next(r for r in shown["table"] if r["method"] == "best discovered")
        assert (record["best_dev"], record["best_test"]) == (best["dev"], best["test"])
        assert record["baselines"]["seed"] == {
            k: next(r for r in shown["table"] if r["method"] == "seed")[k] for k in ("dev", "test")}


def test_group_by_beta_against_a_hand_computation(db):
    data = as_json(db, "run-a", "run-b", "run-d", "--group-by", "temperature.beta")
    assert data["group_by"] == ["temperature.beta"]
    groups = {g["values"]["temperature.beta"]: g for g in data["groups"]}
    assert list(groups) == [0.0, 0.2]  # ascending
    assert groups[0.2]["runs"] == ["run-a", "run-b"] and groups[0.0]["runs"] == ["run-d"]
    best = [show(db, r)["leaderboard"][0]["dev"] for r in ("run-a", "run-b")]
    mean, sd = statistics.mean(best), statistics.stdev(best)
    t975_df1 = 12.7062  # Student t, two-sided 95 %, one degree of freedom (printed tables)
    half = t975_df1 * sd / math.sqrt(2)
    got = groups[0.2]["metrics"]["best_dev"]
    assert got["n"] == 2
    assert got["mean"] == pytest.approx(mean, abs=1e-6)
    assert got["sd"] == pytest.approx(sd, abs=1e-6)
    assert (got["lo"], got["hi"]) == (pytest.approx(mean - half, abs=1e-3),
                                      pytest.approx(mean + half, abs=1e-3))
    single = groups[0.0]["metrics"]["best_dev"]  # one run: no spread, no interval
    assert (single["n"], single["sd"], single["lo"]) == (1, None, None)
    # per iteration: the executable rate of iteration 2 over the group's two runs
    rates = [show(db, r)["iterations"][1]["executable_rate"] for r in ("run-a", "run-b")]
    it2 = next(s for s in groups[0.2]["iterations"] if s["iteration"] == 2)
    assert it2["executable_rate"]["mean"] == pytest.approx(statistics.mean(rates))


def test_interval_with_five_values():
    values = [0.91, 0.93, 0.90, 0.95, 0.92]
    got = interval(values + [None])  # a run without a score is left out, not counted as 0
    mean, sd = statistics.mean(values), statistics.stdev(values)
    half = 2.7764 * sd / math.sqrt(5)  # t(0.975, df=4) from a printed table
    assert got["n"] == 5
    assert (got["mean"], got["sd"]) == (pytest.approx(mean), pytest.approx(sd, abs=1e-6))
    assert got["half_width"] == pytest.approx(half, abs=1e-4)
    assert interval([None])["mean"] is None


def test_group_by_seed_and_selection_by_tag(db):
    data = as_json(db, "--tag", "beta", "--group-by", "seed")
    assert [r["run_id"] for r in data["runs"]] == ["run-a", "run-d"]
    assert [g["values"] for g in data["groups"]] == [{"run.seed": 0}, {"run.seed": 3}]
    assert data["group_by"] == ["run.seed"]


def test_text_fits_80_columns(db):
    for args in (("run-a", "run-b", "run-d"), ("--tag", "ablation", "run-d", "--group-by",
                                               "temperature.beta")):
        result = invoke(db, *args)
        assert result.exit_code == 0, result.output
        lines = result.output.splitlines()
        assert max(len(line) for line in lines) <= 80, result.output
        assert "configuration differences" in result.output
    text = invoke(db, "run-a", "run-b", "run-d").output
    assert "iterations side by side" in text and "temperature.beta" in text
    assert "87.91" in text  # run-a's best dev
    grouped = invoke(db, "--tag", "ablation", "run-d", "--group-by", "temperature.beta").output
    assert "95% t-interval" in grouped and "±" in grouped


@pytest.mark.parametrize("args, message", [
    (("run-a",), "error: compare needs two runs or more"),
    (("run-a", "run-zz"), "error: no run 'run-zz'"),
    (("run-a", "run-b", "--group-by", "colour"), "error: --group-by 'colour': no compared run"),
    (("--sweep", "nope"), "error: no run has sweep 'nope'"),
])
def test_bad_input_is_one_line(db, args, message):
    result = invoke(db, *args)
    assert result.exit_code == 2
    assert result.output.startswith(message), result.output
    assert len(result.output.strip().splitlines()) == 1


def test_an_empty_group_by_is_one_group_of_every_run(db):
    """What ``selfdev sweep`` over seeds only reports: the interval over all its runs."""
    from selfdev.engine.compare import compare_runs
    from selfdev.store import EventStore

    with EventStore(db, readonly=True) as store:
        data = compare_runs(store, ["run-a", "run-b", "run-d"], [])
    (group,) = data["groups"]
    assert (group["values"], group["n"], group["runs"]) == ({}, 3, ["run-a", "run-b", "run-d"])
    best = [r["best_dev"] for r in data["runs"]]
    assert group["metrics"]["best_dev"]["sd"] == pytest.approx(statistics.stdev(best), abs=1e-6)
