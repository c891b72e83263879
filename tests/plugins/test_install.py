"""``selfdev install`` / ``selfdev uninstall``: pip run by selfdev's own interpreter.

The installs run in a fresh environment (``plugin_venv.py``), where ``selfdev`` is that
environment's Python running ``-m selfdev.engine``, so its ``sys.executable`` is the venv's and
nothing lands in the test run's environment. ``PIP_NO_INDEX`` keeps pip off the network.
"""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from plugin_venv import make_plugin_venv
from selfdev.engine.cli import cli
from selfdev.plugins.commands.install import install_args
from selfdev.plugins.commands.scaffold import scaffold


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    return make_plugin_venv(tmp_path_factory.mktemp("install") / "venv")


def plugin_names(venv, cwd) -> set[str]:
    done = venv.selfdev("plugins", "--json", cwd=cwd)
    assert done.returncode == 0, done.stderr
    return {row["name"] for row in json.loads(done.stdout)}


def one_line_error(done, starts: str) -> None:
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(starts), done.stderr


@pytest.mark.slow
def test_install_then_uninstall_local_folders(venv, tmp_path):
    tally = scaffold("listener", "tally", tmp_path)
    shout = scaffold("command", "shout", tmp_path)
    try:
        done = venv.selfdev("install", "--no-build-isolation", str(tally), "-e", str(shout),
                            cwd=tmp_path, PIP_NO_INDEX="1")
        assert done.returncode == 0, done.stderr[-3000:]
        assert "Successfully installed" in done.stdout
        site = {p.name for p in venv.purelib.iterdir()}
        assert "selfdev_tally.py" in site  # a regular install, into the venv's own site-packages
        assert any(n.startswith("__editable__") and "shout" in n for n in site)  # the -e one
        assert {"tally", "shout"} <= plugin_names(venv, tmp_path)
        assert venv.selfdev("shout", "--help", cwd=tmp_path).returncode == 0  # its command

        done = venv.selfdev("uninstall", "-y", "selfdev-tally", "selfdev_shout", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert not {"tally", "shout"} & plugin_names(venv, tmp_path)
    finally:
        venv.run("-m", "pip", "uninstall", "-y", "-q", "selfdev-tally", "selfdev-shout",
                 cwd=tmp_path)


def test_pip_failures_are_one_line(venv, tmp_path):
    (tmp_path / "empty").mkdir()
    one_line_error(venv.selfdev("install", str(tmp_path / "empty"), cwd=tmp_path, PIP_NO_INDEX="1"),
                   f"error: pip could not install {tmp_path / 'empty'}: Directory ")
    one_line_error(venv.selfdev("install", "selfdev-no-such-plugin", cwd=tmp_path, PIP_NO_INDEX="1"),
                   "error: pip could not install selfdev-no-such-plugin: Could not find a version")


@pytest.mark.parametrize("args, message", [
    (["install"], "error: install: name a package"),
    (["install", "./no/such/folder"], "error: install: no such file or folder: no/such/folder"),
    (["install", "-e", "missing[test]"], "error: install: no such file or folder: missing"),
    (["uninstall", "selfdev-not-installed"],
     "error: uninstall: selfdev-not-installed is not installed in selfdev's environment"),
    (["uninstall", "-y", "Selfdev"], "error: uninstall: refusing to uninstall selfdev itself"),
])
def test_refusals_before_pip_runs(args, message):
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    assert len(result.output.splitlines()) == 1 and result.output.startswith(message), result.output


def test_options_map_to_pip_arguments(tmp_path, monkeypatch):
    (tmp_path / "y").mkdir()
    monkeypatch.chdir(tmp_path / "y")
    assert install_args(("selfdev-x", "./"), ("../y[test]",), True, True, True, True, True) == [
        "install", "--upgrade", "--force-reinstall", "--no-deps", "--no-build-isolation", "--pre",
        "--editable", "../y[test]", "selfdev-x", "./"]
    assert install_args(("git+https://example.org/x.git",), (), False, False, False, False,
                        False) == ["install", "git+https://example.org/x.git"]
