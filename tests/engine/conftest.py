"""Fixtures shared by the engine's tests."""
from __future__ import annotations

import pytest
from click.testing import CliRunner


@pytest.fixture(scope="session")
def grammar_run_db(tmp_path_factory):
    """One finished run of the real engine (digits + grammar, no optimizer, 2 iterations x 6
    candidates), made once per session for the tests that read a real log (show's compute
    and primitives, the datasette queries): about 10-20 s here."""
    from selfdev.engine.cli import cli

    db = tmp_path_factory.mktemp("grammar-run") / "runs.db"
    result = CliRunner().invoke(cli, ["demo", "--db", str(db), "--generator", "grammar",
                                      "--optimizer", "none", "--iterations", "2",
                                      "--candidates", "6", "--quiet"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return db
