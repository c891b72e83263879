"""``selfdev tui``: the click command, lazy Textual import, one-line errors."""
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from selfdev.tui.cli import INSTALL_HINT, tui_cmd

REPO = Path(__file__).resolve().parents[2]


def test_help_names_the_arguments():
    result = CliRunner().invoke(tui_cmd, ["--help"])
    assert result.exit_code == 0
    assert "[RUN]" in result.output and "--db" in result.output


def test_missing_database_and_unknown_run_are_one_line(tmp_path, demo_db):
    result = CliRunner().invoke(tui_cmd, ["--db", str(tmp_path / "none.db")])
    assert result.exit_code != 0 and "no database" in result.output
    assert "Traceback" not in result.output
    junk = tmp_path / "junk.db"
    junk.write_text("not sqlite")
    result = CliRunner().invoke(tui_cmd, ["--db", str(junk)])
    assert result.exit_code != 0 and "not a SQLite database" in result.output
    path, _ = demo_db
    result = CliRunner().invoke(tui_cmd, ["nope", "--db", str(path)])
    assert result.exit_code != 0 and "no run 'nope'" in result.output


def test_without_textual_it_says_which_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "textual", None)
    result = CliRunner().invoke(tui_cmd, ["--db", str(tmp_path / "x.db")])
    assert result.exit_code == 1
    assert result.output.strip() == INSTALL_HINT


def test_importing_the_command_does_not_import_textual():
    code = "import sys, tui.cli; print('textual' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, check=True).stdout.strip()
    assert out == "False"


def test_the_root_cli_has_it():
    from selfdev.engine.cli import cli

    if "tui" not in cli.commands:
        pytest.skip("the root CLI does not add tui_cmd yet")
    assert cli.commands["tui"] is tui_cmd
