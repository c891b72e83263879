"""One ``test_hook_<name>`` per hook (``test_hooks_meta.py`` fails for a hook without one).

The plugins exercised are the examples of docs/plugin-hooks.md, taken from the page and
registered as they are, so the documented examples are known to work: a real run of the
digits domain uses the documented generator, evaluator, optimizer, executor and listener.
"""
import contextlib
import io
import re
import types
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

import selfdev
from selfdev.engine.config import from_dict
from selfdev.engine.loop import emit_listeners, run_config
from selfdev.engine.plugins import call_commands, get_registry, pm
from selfdev.store import EventStore

DOC = Path(__file__).resolve().parents[2] / "docs" / "plugin-hooks.md"


def doc_example(hook: str) -> types.ModuleType:
    """The python example of a hook's section, as a module."""
    section = DOC.read_text().split(f"## `{hook}(", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert blocks, f"docs/plugin-hooks.md: no python example for {hook}"
    module = types.ModuleType(f"docs_{hook}")
    exec(compile(blocks[-1], f"docs/plugin-hooks.md ({hook})", "exec"), module.__dict__)
    return module


@contextlib.contextmanager
def examples(*hooks):
    names = []
    try:
        for hook in hooks:
            names.append(pm.register(doc_example(hook), name=f"docs-{hook}"))
        yield
    finally:
        for name in names:
            pm.unregister(name=name)


RUN_HOOKS = ("register_generators", "register_evaluators", "register_optimizers",
             "register_executors", "on_event")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A real run whose generator, evaluator, optimizer, executor and listener are the
    documented examples."""
    db = tmp_path_factory.mktemp("hooks") / "runs.db"
    cfg = from_dict({"run": {"seed": 2, "iterations": 2, "candidates": 4, "top_k": 2},
                     "domain": {"name": "digits"}, "generator": {"name": "scaled-sum"},
                     "evaluator": {"name": "top2"}, "optimizer": {"name": "count-pairs"},
                     "executor": {"name": "in-order"}})
    out = io.StringIO()
    with examples(*RUN_HOOKS), EventStore(db) as store, contextlib.redirect_stdout(out):
        state = run_config(store, cfg)
        log = list(store.iter_events(run_id=state.run_id))
        texts = {e.payload["candidate_id"]: store.get_text(e.payload["completion"])
                 for e in log if e.type == "candidate.generated"}
    return {"db": db, "state": state, "log": log, "stdout": out.getvalue(), "texts": texts}


def of_type(run, type_):
    return [e for e in run["log"] if e.type == type_]


def test_the_documented_run_finished(run):
    assert run["state"].finished is not None
    assert run["log"][0].payload["generator"] == "scaled-sum"


def test_hook_register_generators(run):
    generated = of_type(run, "candidate.generated")
    assert len(generated) == 8
    assert {e.source for e in generated} == {"docs-register_generators"}
    for e in generated:
        scale = e.payload["meta"]["scale"]
        assert 0.1 <= scale <= 1.0
        assert f"return {scale} * sum(task_vectors.values())" in run["texts"][e.payload["candidate_id"]]
    screened = of_type(run, "candidate.screened")
    assert {e.payload["status"] for e in screened} <= {"accepted", "duplicate"}


def test_hook_register_evaluators(run):
    dev = [e for e in of_type(run, "candidate.evaluated") if e.payload["split"] == "dev"]
    assert dev and {e.source for e in dev} == {"docs-register_evaluators"}
    for e in dev:  # extra metrics are recorded with the score
        m = e.payload["metrics"]
        assert set(m) == {"score", "top1", "n"} and m["score"] == e.payload["score"]
        assert m["top1"] <= m["score"]
    seed = next(e for e in of_type(run, "baseline.evaluated") if e.payload["label"] == "seed")
    assert set(seed.payload["metrics"]["test"]) == {"score", "top1", "n"}


def test_hook_register_optimizers(run):
    (refined,) = of_type(run, "factory.refined")  # after iteration 1 of 2
    assert refined.source == "docs-register_optimizers"
    assert refined.payload["optimizer"] == "count-pairs"
    assert refined.payload["metrics"]["pairs"] >= 1 and refined.payload["metrics"]["mean_margin"] > 0


def test_hook_register_executors(run):
    assert run["log"][0].payload["executor"] == "in-order"
    executed = [e.payload["candidate_id"] for e in of_type(run, "candidate.executed")]
    accepted = [e.payload["candidate_id"] for e in of_type(run, "candidate.screened")
                if e.payload["status"] == "accepted"]
    assert executed[:len(accepted)] == sorted(executed[:len(accepted)])  # one after another
    assert get_registry().get("executor", "local").plugin == "selfdev.plugins.executors.local"


def test_hook_register_domains():
    with examples("register_domains"):
        cls = get_registry().get("domain", "shapes")
        assert cls.plugin == "docs-register_domains"
        domain = cls(None)
        assert domain.prepare() == {"experts": ["circles", "squares"]}
        assert domain.apply("...", 1.0).status == "error"


def test_hook_on_event(run):
    lines = run["stdout"].splitlines()
    dev = [e for e in of_type(run, "candidate.evaluated") if e.payload["split"] == "dev"]
    assert lines == [f"{e.payload['candidate_id']}: dev {selfdev.format_score(e.payload['score'])}"
                     for e in dev]


def test_hook_register_commands(run):
    group = click.Group("selfdev")
    with examples("register_commands"):
        call_commands(group)
    assert "best" in group.commands
    result = CliRunner().invoke(group, ["best", "latest", "--db", str(run["db"])])
    assert result.exit_code == 0, result.output
    best = max(c.dev for c in run["state"].candidates.values() if c.dev is not None)
    assert result.output == f"{selfdev.format_score(best)}\n"


def test_hook_console_display(run, capsys):
    from selfdev.engine.cli import console_listener

    finished = of_type(run, "iteration.finished")[0]
    with examples("console_display"):
        with console_listener(quiet=False) as display:
            assert type(display).__name__ == "PlainLines"
            assert pm.get_plugin("console") is display
            display.task("baselines", total=3).advance()
            emit_listeners(finished)
        assert pm.get_plugin("console") is None
        with console_listener(quiet=True) as quiet:
            assert type(quiet).__name__ == "NullProgress"
    best = selfdev.format_score(finished.payload["stats"]["best"])
    assert capsys.readouterr().err == f"iteration 1: best dev {best}\n"
