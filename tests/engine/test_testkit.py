"""The fixtures selfdev ships to plugin authors (``selfdev.engine.testing``, entry point
``pytest11``), used here exactly as a plugin's own test suite uses them: by name, no import."""
from __future__ import annotations

from importlib.metadata import entry_points
from pathlib import Path

import pytest

import selfdev
from selfdev.engine.api import SelfdevError
from selfdev.engine.plugins import pm

TA = '''Task arithmetic:
```python
import torch

def merge_models(task_vectors, base, name):
    return 0.5 * sum(task_vectors.values())
```
'''
NO_CODE = "I could not think of anything."


class Recorder:
    """A listener and an optimizer, as a third-party plugin would register them."""

    __name__ = "recorder"

    def __init__(self) -> None:
        self.seen: list = []
        self.refined: list = []
        recorder = self

        class Keep(selfdev.Optimizer):
            """Keeps the pairs it was given and returns a new factory checkpoint."""

            name = "keep"

            def refine(self, checkpoint, pairs, iteration):
                recorder.refined.append((checkpoint, pairs, iteration))
                out = self.ctx.artifacts / f"factory-{iteration}"
                out.mkdir(parents=True, exist_ok=True)
                (out / "weights.txt").write_text(f"refined on {len(pairs)} pairs\n")
                return selfdev.Refinement(checkpoint=out, metrics={"pairs": len(pairs)})

        self.optimizer = Keep

    @selfdev.hookimpl
    def on_event(self, event):
        self.seen.append((event.position, event.type))

    @selfdev.hookimpl
    def register_optimizers(self, register):
        register(self.optimizer)


def test_the_plugin_is_shipped_as_a_pytest11_entry_point(request):
    (ep,) = [e for e in entry_points(group="pytest11") if e.name == "selfdev"]
    assert ep.value == "selfdev.engine.testing"
    assert request.config.pluginmanager.get_plugin("selfdev").__name__ == "selfdev.engine.testing"


def test_a_scripted_iteration_scores_the_queued_programs(selfdev_scripted, selfdev_iteration):
    selfdev_scripted.enqueue(TA, NO_CODE, TA.replace("0.5", "0.7"))
    state = selfdev_iteration(generator=selfdev_scripted.name)
    assert state.finished is not None and state.failed is None
    by_index = {c.index: c for c in state.candidates.values()}
    assert sorted(by_index) == [0, 1, 2]  # as many candidates as completions were queued
    assert by_index[0].dev > 30 and by_index[2].dev > 30
    assert by_index[1].screen == "rejected" and "no merge_models" in by_index[1].reason
    (call,) = selfdev_scripted.calls
    assert (call.n, call.iteration, call.checkpoint) == (3, 1, None)
    assert "merge_models" in call.prompts[0]  # the digits domain's prompt
    assert len(selfdev_scripted) == 0


def test_running_out_of_queued_completions_says_so(selfdev_scripted, selfdev_iteration):
    selfdev_scripted.enqueue(TA)
    with pytest.raises(SelfdevError, match="asked for 3 completions, 1 queued; enqueue more"):
        selfdev_iteration(generator=selfdev_scripted.name, candidates=3)


def test_an_optimizer_and_a_listener_in_two_iterations(selfdev_engine, selfdev_scripted):
    recorder = Recorder()
    selfdev_engine.register(recorder)
    selfdev_scripted.enqueue([TA, NO_CODE, TA.replace("0.5", "0.3")] * 2)
    state = selfdev_engine.iteration(generator="scripted", optimizer="keep", iterations=2)

    assert state.iterations[1].refined.optimizer == "keep"
    ((checkpoint, pairs, iteration),) = recorder.refined  # refined between the two iterations
    assert checkpoint is None and iteration == 1 and pairs
    assert all(p.chosen_score > p.rejected_score for p in pairs)
    # the generator of iteration 2 was handed the refined factory, stored by its hash
    second = selfdev_scripted.calls[1]
    assert second.iteration == 2 and (second.checkpoint / "weights.txt").read_text().startswith("refined")
    # the listener saw the committed events in log order, through run.finished (run.started
    # is appended before the run's listeners are called, so it may be missing)
    logged = [(e.position, e.type) for e in selfdev_engine.events()]
    assert logged[-1][1] == "run.finished" and len(recorder.seen) >= len(logged) - 1
    assert recorder.seen == logged[len(logged) - len(recorder.seen):]
    assert selfdev_engine.registry.get("optimizer", "keep").plugin == "recorder"


def test_the_engine_unregisters_what_it_registered(selfdev_store, tmp_path):
    from selfdev.engine.testing import Engine

    engine = Engine(selfdev_store, tmp_path)
    name = engine.register(Recorder())
    builtin = engine.register(pm.get_plugin("selfdev.plugins.optimizers.none"))
    script = engine.scripted("again")
    assert {name, "selfdev-testing-again"} <= {pm.get_name(p) for p in pm.get_plugins()}
    assert engine.registry.get("generator", "again") is script.component_class()
    assert builtin == "selfdev.plugins.optimizers.none"
    engine.close()
    assert pm.get_plugin(name) is None and pm.get_plugin("selfdev-testing-again") is None
    assert pm.get_plugin(builtin) is not None  # a plugin it did not register stays
    assert "keep" not in engine.registry.names("optimizer")


def test_build_checks_options_like_the_engine(selfdev_engine):
    with pytest.raises(selfdev.ConfigError, match="unknown option 'epoch' for optimizer 'none'"):
        selfdev_engine.build("optimizer", "none", epoch=1)
    assert selfdev_engine.build("optimizer", "none").refine(None, [], 1).metrics["trained"] is False


def test_digits_models_are_prepared_once_from_the_shared_cache(selfdev_digits, selfdev_home,
                                                                 selfdev_engine):
    # runs stay in the session's home; its cache is the outer home's (tests/conftest.py's here)
    cache = selfdev_home / "cache"
    assert cache.is_symlink() and not cache.resolve().is_relative_to(selfdev_home.resolve())
    assert selfdev_digits.expert_names() == ["g012", "g345", "g6789"]
    assert Path(selfdev_digits.prepare()["cache"]).resolve().is_relative_to((selfdev_home / "cache").resolve())
    accuracy = selfdev_engine.build("evaluator", "accuracy")
    seed = accuracy.evaluate(selfdev_digits, selfdev_digits.seed_model(), "dev")["score"]
    assert seed == pytest.approx(24.23, abs=0.01)  # the recipe's measured seed accuracy


class TestOverridingThePluginList:
    """A plugin's ``conftest.py`` overrides ``selfdev_plugins`` to have it registered."""

    @pytest.fixture
    def selfdev_plugins(self):
        return [Recorder()]

    def test_every_engine_has_the_listed_plugins(self, selfdev_engine):
        assert selfdev_engine.registry.get("optimizer", "keep").plugin == "recorder"


def test_the_docs_list_every_fixture_and_their_examples_parse():
    import ast
    import re

    import selfdev.engine.testing as testing

    tree = ast.parse(Path(testing.__file__).read_text())
    defined = {f.name for f in tree.body if isinstance(f, ast.FunctionDef)
               and any("pytest.fixture" in ast.unparse(d) for d in f.decorator_list)}
    docs = (Path(__file__).resolve().parents[2] / "docs" / "testing-plugins.md").read_text()
    table = set(re.findall(r"^\| `(selfdev_\w+)` \|", docs, re.M))
    assert defined == table, (sorted(defined - table), sorted(table - defined))
    assert all(f"``{name}``" in testing.__doc__ for name in defined)  # and the module says so
    blocks = re.findall(r"```python\n(.*?)```\n", docs, re.S)
    assert len(blocks) >= 4
    for block in blocks:
        ast.parse(block)
