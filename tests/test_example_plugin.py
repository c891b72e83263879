"""The example plugin package (``examples/selfdev-breadcrumbs``) as a user meets it: installed
with pip from its own folder as a separate distribution (into a fresh environment, see
``plugin_venv.py``), found through its entry point (never imported by path), listed by
``selfdev plugins --json``, used by name in a run, and tested by its own suite with the fixtures
selfdev ships."""
from __future__ import annotations

import json
import shutil
import tomllib
from pathlib import Path

import pytest

from plugin_venv import PluginVenv, make_plugin_venv

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "selfdev-breadcrumbs"


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> PluginVenv:
    """A fresh environment with the example installed from a copy of its folder (pip builds
    in the source folder, and the checkout stays clean)."""
    base = tmp_path_factory.mktemp("example")
    source = base / "selfdev-breadcrumbs"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns(
        "build", "*.egg-info", "__pycache__", ".pytest_cache"))
    venv = make_plugin_venv(base / "venv")
    venv.pip_install(str(source), cwd=base)
    return venv


def test_plugins_json_lists_its_version_hooks_and_components(installed, tmp_path):
    done = installed.selfdev("plugins", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    rows = {row["name"]: row for row in json.loads(done.stdout)}
    version = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]["version"]
    assert rows["breadcrumbs"] == {
        "name": "breadcrumbs", "distribution": "selfdev-breadcrumbs", "version": version,
        "hooks": ["on_event", "register_generators"],
        "components": {"generator": ["breadcrumbs"]},
    }
    # the module came from the installed distribution, not from the repository's folder
    where = installed.run("-c", "import selfdev_breadcrumbs; print(selfdev_breadcrumbs.__file__)",
                          cwd=tmp_path)
    assert Path(where.stdout.strip()).parent == installed.purelib


@pytest.mark.slow
def test_a_run_uses_its_components_by_name(installed, tmp_path):
    config = tmp_path / "breadcrumbs.toml"
    config.write_text('[run]\nseed = 0\niterations = 1\ncandidates = 3\ntop_k = 2\ntimeout = 30.0\n'
                      '[domain]\nname = "digits"\n[optimizer]\nname = "none"\n'
                      '[generator]\nname = "breadcrumbs"\ndensities = [0.9]\ngammas = [0.01]\n'
                      'lams = [0.3, 0.5, 1.0]\n')
    db = tmp_path / "runs.db"
    jsonl = tmp_path / "jsonl"
    done = installed.selfdev("run", str(config), "--quiet", "--json", "--db", str(db),
                             cwd=tmp_path, SELFDEV_JSONL_DIR=str(jsonl))
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert summary["config"]["generator"]["name"] == "breadcrumbs"

    events = json.loads(installed.selfdev("events", "latest", "--json", "--db", str(db),
                                          cwd=tmp_path).stdout)
    generated = [e for e in events if e["type"] == "candidate.generated"]
    assert len(generated) == 3 and {e["source"] for e in generated} == {"breadcrumbs"}
    scored = [e for e in events if e["type"] == "candidate.evaluated"
              and e["payload"]["split"] == "dev" and e["payload"]["score"] is not None]
    assert len(scored) == 3
    # its listener wrote the run's events, in log order, as the log holds them
    (log,) = jsonl.glob("*.jsonl")
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    by_position = {e["position"]: e for e in events}
    assert lines[-1]["type"] == "run.finished" and len(lines) >= len(events) - 1
    assert all(by_position[r["position"]]["hash"] == r["hash"] for r in lines)


@pytest.mark.slow
def test_its_own_tests_pass_with_the_shipped_fixtures(installed, tmp_path):
    done = installed.run("-m", "pytest", "-q", "-p", "no:cacheprovider", str(EXAMPLE / "tests"),
                         cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and "failed" not in done.stdout
