"""Configuration problems that can be known before the first candidate are refused before
``run.started`` is written: one line on stderr, exit 2, and no run in the database (not a
started-then-failed run that ``resume`` would fail the same way forever)."""
from __future__ import annotations

import sqlite3

import pytest
from click.testing import CliRunner

from selfdev.engine.cli import cli

BASE = {"run": "iterations = 2\ncandidates = 3",
        "domain": 'name = "digits"', "generator": 'name = "grammar"', "optimizer": 'name = "none"'}


def config(tmp_path, **sections: str):
    parts = {**BASE, **sections}
    text = "\n".join(f"[{k}]\n{v}" for k, v in parts.items())
    path = tmp_path / "run.toml"
    path.write_text(text + "\n")
    return path


CASES = {
    "grammar with dpo": ({"optimizer": 'name = "dpo"'}, "has none"),
    "grammar with sft": ({"optimizer": 'name = "sft"'}, "has none"),
    "replay with dpo": ({"generator": 'name = "replay"\nrun = "x"', "optimizer": 'name = "dpo"'},
                        "has none"),
    "lm without seed_model": ({"domain": 'name = "lm"\nexperts = {a = "/nonexistent/a"}'},
                              "seed_model"),
    "unknown evaluator option": ({"evaluator": "shots = 3"}, "shots"),
    "invalid executor option": ({"executor": 'name = "local"\nworkers = 0'}, "workers"),
    "missing evaluator data": ({"evaluator": 'name = "gsm8k"\ntest_file = "/nonexistent/t.jsonl"'},
                               "/nonexistent/t.jsonl"),
    "missing seed model directory": (
        {"domain": 'name = "lm"\nseed_model = "/nonexistent/seed"\nexperts = {a = "/nonexistent/a"}'},
        "/nonexistent/seed"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_refused_before_the_log(case, tmp_path):
    sections, needle = CASES[case]
    db = tmp_path / "runs.db"
    result = CliRunner().invoke(cli, ["run", str(config(tmp_path, **sections)), "--db", str(db),
                                      "--quiet"])
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert needle in lines[0]
    if db.exists():
        count = sqlite3.connect(db).execute("select count(*) from events").fetchone()[0]
        assert count == 0, f"{count} events were written"


def test_gsm8k_with_no_data_anywhere(tmp_path, monkeypatch):
    """No test_file, a domain that supplies none (digits), and no GSM8k folder: refused before
    the log, naming where data may come from (before: found only when the first model was
    scored, after run.started)."""
    monkeypatch.setenv("SELFDEV_GSM8K_DIR", str(tmp_path / "empty"))
    db = tmp_path / "runs.db"
    path = config(tmp_path, evaluator='name = "gsm8k"')
    result = CliRunner().invoke(cli, ["run", str(path), "--db", str(db), "--quiet"])
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "has no data" in lines[0] and "SELFDEV_GSM8K_DIR" in lines[0]
    if db.exists():
        assert sqlite3.connect(db).execute("select count(*) from events").fetchone()[0] == 0
    # the same run with the data folder given gets past the check
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "test.jsonl").write_text("")
    from selfdev.plugins.evaluators.gsm8k import GSM8kEvaluator
    from selfdev.plugins.domains.digits import DigitsDomain

    GSM8kEvaluator.preflight_run(GSM8kEvaluator.Options(), {"domain": DigitsDomain}, {})


def test_unreadable_model_directory(tmp_path):
    """A directory that exists but holds no safetensors weights is refused as well."""
    (tmp_path / "seed").mkdir()
    (tmp_path / "seed" / "pytorch_model.bin").write_bytes(b"x")
    db = tmp_path / "runs.db"
    domain = f'name = "lm"\nseed_model = "{tmp_path / "seed"}"\nexperts = {{a = "{tmp_path / "seed"}"}}'
    result = CliRunner().invoke(cli, ["run", str(config(tmp_path, domain=domain)), "--db", str(db),
                                      "--quiet"])
    assert result.exit_code == 2, result.output
    assert len(result.stderr.strip().splitlines()) == 1 and "safetensors" in result.stderr
    assert sqlite3.connect(db).execute("select count(*) from events").fetchone()[0] == 0


def test_one_iteration_never_refines(tmp_path):
    """grammar + dpo for one iteration trains nothing, so it is not refused."""
    from selfdev.engine.config import from_dict
    from selfdev.engine.loop import preflight
    from selfdev.engine.plugins import get_registry

    cfg = from_dict({"run": {"iterations": 1, "candidates": 3}, "domain": {"name": "digits"},
                     "generator": {"name": "grammar"}, "optimizer": {"name": "dpo"}})
    reg = get_registry()
    preflight(cfg, {"generator": reg.get("generator", "grammar"),
                    "optimizer": reg.get("optimizer", "dpo")})
