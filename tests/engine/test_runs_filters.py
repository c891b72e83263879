"""``selfdev runs`` filters (--status, --domain, --name, --tag, --sort, -n) and run names and
tags (``[run] name``/``tags``) shown by ``runs`` and ``show``."""
import json

import pytest
from click.testing import CliRunner

from research_runs import write_db
from selfdev.engine.cli import cli
from selfdev.engine.config import ConfigError, from_dict


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    return write_db(tmp_path_factory.mktemp("runs") / "runs.db")


def ids(db, *args):
    result = CliRunner().invoke(cli, ["runs", "--db", str(db), "--json", *args])
    assert result.exit_code == 0, result.output
    return [r["run_id"] for r in json.loads(result.output)]


@pytest.mark.parametrize("args, expected", [
    ((), ["run-a", "run-b", "run-c", "run-d"]),
    (("--status", "failed"), ["run-c"]),
    (("--status", "failed", "--status", "finished"), ["run-a", "run-b", "run-c", "run-d"]),
    (("--domain", "toymath"), ["run-c"]),
    (("--name", "SEED 1"), ["run-b"]),
    (("--name", "beta 0.2"), ["run-a", "run-b"]),
    (("--tag", "beta"), ["run-a", "run-d"]),
    (("--tag", "beta", "--tag", "ablation"), ["run-a"]),
    (("--sort", "-best_dev"), ["run-a", "run-b", "run-d", "run-c"]),
    (("--sort", "best_test"), ["run-d", "run-b", "run-a", "run-c"]),  # no test score: last
    (("--sort", "-best_dev", "-n", "2"), ["run-a", "run-b"]),
    (("-n", "2"), ["run-c", "run-d"]),  # unsorted: the latest
    (("--domain", "digits", "--status", "finished", "--sort", "-seed", "--limit", "1"),
     ["run-d"]),
])
def test_filters(db, args, expected):
    assert ids(db, *args) == expected


def test_names_and_tags_in_the_listing_and_show(db):
    rows = {r["run_id"]: r for r in json.loads(
        CliRunner().invoke(cli, ["runs", "--db", str(db), "--json"]).output)}
    assert (rows["run-a"]["name"], rows["run-a"]["tags"]) == ("beta 0.2 seed 0", ["ablation", "beta"])
    assert (rows["run-c"]["name"], rows["run-c"]["tags"]) == (None, [])
    text = CliRunner().invoke(cli, ["runs", "--db", str(db), "--tag", "ablation"]).output
    assert "run-a  beta 0.2 seed 0  [ablation, beta]" in text
    assert "run-b  beta 0.2 seed 1  [ablation]" in text and "run-d" not in text
    shown = CliRunner().invoke(cli, ["show", "run-d", "--db", str(db)]).output
    assert shown.splitlines()[0] == "name: beta 0 seed 3  tags: beta"
    data = json.loads(CliRunner().invoke(cli, ["show", "run-d", "--db", str(db), "--json"]).output)
    assert (data["name"], data["tags"]) == ("beta 0 seed 3", ["beta"])


@pytest.mark.parametrize("args, message", [
    (("--sort", "colour"), "--sort 'colour': no such column; sort by one of best_dev"),
    (("--status", "done"), "'done' is not one of 'running', 'interrupted', 'finished', 'failed'"),
    (("-n", "0"), "0 is not in the range x>=1"),
])
def test_bad_filters_are_one_line(db, args, message):
    result = CliRunner().invoke(cli, ["runs", "--db", str(db), *args])
    assert result.exit_code == 2 and message in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_tags_in_the_config_are_validated():
    assert from_dict({"run": {"tags": ["a", "b"]}}).run.tags == ["a", "b"]
    with pytest.raises(ConfigError, match=r"\[run\] tags must be a list of strings"):
        from_dict({"run": {"tags": "a"}})
