"""docs/writing-plugins.md, followed to the letter: its files are written from the page's code
blocks (a block whose first line is ``# <path>`` is that file; ``# <path>, continued`` is
appended to it), the package is installed the way pip leaves it (the module plus a
``.dist-info`` holding the page's own entry point), and the page's ``selfdev`` commands are run
in subprocesses, as a reader would; the page's test runs with selfdev's pytest fixtures."""
import json
import os
import re
import subprocess
import sys
import tomllib
import types
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "writing-plugins.md"


def files_of(text: str) -> dict[str, str]:
    files: dict[str, str] = {}
    for body in re.findall(r"```(?:python|toml)\n(.*?)```", text, re.S):
        first, _, rest = body.partition("\n")
        m = re.fullmatch(r"# ([\w./-]+)(, continued)?", first.strip())
        if m is None:
            continue
        path, continued = m.groups()
        files[path] = (files[path] + "\n\n" + rest) if continued else body
    return files


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """The tutorial's package, installed: its module and a dist-info built from its pyproject."""
    root = tmp_path_factory.mktemp("selfdev-balanced")
    files = files_of(DOC.read_text())
    assert set(files) == {"pyproject.toml", "selfdev_balanced.py", "balanced.toml",
                          "tests/test_balanced.py"}
    for path, text in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    meta = tomllib.loads(files["pyproject.toml"])["project"]
    info = root / f"{meta['name'].replace('-', '_')}-{meta['version']}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {meta['name']}\n"
                                   f"Version: {meta['version']}\n")
    points = "".join(f"{k} = {v}\n" for k, v in meta["entry-points"]["selfdev"].items())
    (info / "entry_points.txt").write_text("[selfdev]\n" + points)
    return root


def run(project, *args, module="selfdev.engine"):
    env = dict(os.environ, PYTHONPATH=str(project))
    env.pop("SELFDEV_LOAD_PLUGINS", None)
    return subprocess.run([sys.executable, "-m", module, *args], cwd=project, env=env,
                          capture_output=True, text=True, timeout=300)


def shown_output(after: str) -> str:
    """The first plain code block after the sentence ``after`` in the tutorial."""
    rest = DOC.read_text().split(after, 1)[1]
    return re.search(r"```\n(.*?)```", rest, re.S).group(1)


def test_selfdev_plugins_lists_it_as_shown(project):
    out = run(project, "plugins")
    assert out.returncode == 0, out.stderr
    shown = shown_output("now lists the plugin and what it registered:").strip()
    assert shown in out.stdout.splitlines()
    assert "warning" not in out.stderr


def test_a_run_with_it_records_the_extra_metrics_and_the_listener_speaks(project):
    db = project / "runs.db"
    out = run(project, "run", "balanced.toml", "--db", str(db), "--quiet")
    assert out.returncode == 0, out.stderr
    started = re.findall(r"^(run-[\w-]+): scored by balanced$", out.stderr, re.M)
    assert len(started) == 1, out.stderr  # run.started reaches an installed plugin's listener
    best = re.findall(r"^new best: (i1-c\d{4}) balanced accuracy (\d+\.\d)$", out.stderr, re.M)
    assert best, out.stderr
    scores = [float(s) for _, s in best]
    assert scores == sorted(scores) and len(set(scores)) == len(scores)
    listed = run(project, "events", "latest", "--db", str(db), "--type", "candidate.evaluated",
                 "--json")
    assert listed.returncode == 0, listed.stderr
    events = json.loads(listed.stdout)
    assert len(events) >= 3 and {e["source"] for e in events} == {"balanced"}
    dev = [e["payload"] for e in events if e["payload"]["split"] == "dev"]
    for payload in dev:
        metrics = payload["metrics"]
        assert set(metrics) == {"score", "worst", "recall"}
        assert set(metrics["recall"]) == {str(d) for d in range(10)}
        assert metrics["worst"] <= metrics["score"] == payload["score"]
    assert best[0][0] == dev[0]["candidate_id"]


@pytest.fixture
def selfdev_plugins(project):
    """The tutorial's test registers its plugin through this fixture, as its page shows."""
    sys.path.insert(0, str(project))
    try:
        import selfdev_balanced

        yield [selfdev_balanced]
    finally:
        sys.path.remove(str(project))
        sys.modules.pop("selfdev_balanced", None)


def test_its_test_passes(project, selfdev_plugins, selfdev_engine, selfdev_digits):
    """The page's test, run with selfdev's pytest fixtures (in this process: a second pytest
    would only add its start-up time)."""
    path = project / "tests" / "test_balanced.py"
    module = types.ModuleType("tutorial_test_balanced")
    exec(compile(path.read_text(), str(path), "exec"), module.__dict__)
    assert "selfdev_plugins" in vars(module)  # it overrides the fixture, as this file does
    tests = [name for name in vars(module) if name.startswith("test_")]
    assert tests == ["test_balanced_accuracy_of_the_seed"]
    module.test_balanced_accuracy_of_the_seed(selfdev_engine, selfdev_digits)
