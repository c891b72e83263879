"""Listeners (``on_event``) see every committed event in log order, ``run.started`` included;
one that raises is reported once on stderr with its traceback, recorded as ``listener.failed``,
and the run goes on. A run that fails records the exception's class, the plugin that raised and
the traceback in ``run.failed``. Real runs of the digits domain on a real store."""
import contextlib
import io

import pytest

import selfdev
from selfdev.engine.config import from_dict
from selfdev.engine.loop import run_config
from selfdev.engine.plugins import pm
from selfdev.engine.report import summary
from selfdev.store import EventStore


def tiny(**over):
    data = {"run": {"seed": 5, "iterations": 1, "candidates": 3, "top_k": 1, "timeout": 20.0},
            "domain": {"name": "digits"}, "generator": {"name": "grammar"},
            "optimizer": {"name": "none"}}
    for key, value in over.items():
        data.setdefault(key, {}).update(value)
    return from_dict(data)


class Recorder:
    """Keeps every event it is given."""

    def __init__(self):
        self.seen = []

    @selfdev.hookimpl
    def on_event(self, event):
        self.seen.append(event)


class Subscripting:
    """The author's listener: it treats the event as a mapping, so it raises on every event."""

    @selfdev.hookimpl
    def on_event(self, event):
        if event["type"] == "run.finished":
            print("done")


class FailsAtTheEnd:
    @selfdev.hookimpl
    def on_event(self, event):
        if event.type == "run.finished":
            raise RuntimeError("exporter lost its connection")


@contextlib.contextmanager
def registered(**plugins):
    for name, plugin in plugins.items():
        pm.register(plugin, name=name)
    try:
        yield
    finally:
        for name in plugins:
            pm.unregister(name=name)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same small run twice: once with a recorder only, once with failing listeners too."""
    db = tmp_path_factory.mktemp("listeners") / "runs.db"
    plain, noisy = Recorder(), Recorder()
    err = io.StringIO()
    with EventStore(db) as store:
        with registered(recorder=plain):
            quiet_state = run_config(store, tiny())
        with registered(recorder=noisy, author=Subscripting(), exporter=FailsAtTheEnd()):
            with contextlib.redirect_stderr(err):
                state = run_config(store, tiny())
        quiet_log = list(store.iter_events(run_id=quiet_state.run_id))
        log = list(store.iter_events(run_id=state.run_id))
        assert store.verify().ok
    return {"plain": plain, "noisy": noisy, "quiet_state": quiet_state, "state": state,
            "quiet_log": quiet_log, "log": log, "stderr": err.getvalue()}


def test_every_committed_event_is_delivered_in_log_order(runs):
    for recorder, log in ((runs["plain"], runs["quiet_log"]), (runs["noisy"], runs["log"])):
        assert [e.position for e in recorder.seen] == [e.position for e in log]
        assert recorder.seen[0].type == "run.started"
        assert recorder.seen[-1].type == "run.finished"
        assert recorder.seen[0].payload["domain"] == "digits"


def test_the_event_is_a_stored_event(runs):
    event = runs["plain"].seen[0]
    assert isinstance(event, selfdev.StoredEvent)
    assert (event.run_id, event.stream_version, event.source) == (runs["quiet_state"].run_id, 1, "engine")


def test_a_raising_listener_is_reported_once_with_its_traceback(runs):
    err = runs["stderr"]
    author = [line for line in err.splitlines() if line.startswith("warning: listener 'author'")]
    assert len(author) == 1
    assert "raised on run.started (position" in author[0] and "recorded as listener.failed" in author[0]
    assert "TypeError: 'StoredEvent' object is not subscriptable" in err
    assert 'if event["type"] == "run.finished":' in err  # the traceback shows the author's line
    assert err.count("Traceback (most recent call last)") == 2  # author + exporter, once each


def test_the_failure_is_recorded_and_the_run_goes_on(runs):
    failed = [e for e in runs["log"] if e.type == "listener.failed"]
    assert len(failed) == 1
    p = failed[0].payload
    started = runs["log"][0]
    assert (p["listener"], p["event_type"], p["event_position"]) == ("author", "run.started", started.position)
    assert p["exception"] == "TypeError" and "not subscriptable" in p["error"]
    assert 'event["type"]' in p["traceback"]
    assert failed[0].position == started.position + 1  # recorded right after the event it failed on
    assert runs["state"].finished is not None


def test_nothing_follows_run_finished(runs):
    assert runs["log"][-1].type == "run.finished"
    exporter = [line for line in runs["stderr"].splitlines() if "listener 'exporter'" in line]
    assert len(exporter) == 1 and "not recorded: nothing follows run.finished" in exporter[0]
    assert "RuntimeError: exporter lost its connection" in runs["stderr"]


def test_listener_failures_change_nothing_the_run_reports(runs):
    def comparable(state):
        data = summary(state)
        for key in ("run_id", "timing", "events"):
            data.pop(key)
        return data

    assert comparable(runs["state"]) == comparable(runs["quiet_state"])
    assert runs["state"].events == runs["quiet_state"].events + 1


# ---- run.failed names what raised ------------------------------------------------------------


def _explode(where):
    raise ValueError(f"cannot score {where}")


class ExplodingEvaluator(selfdev.Evaluator):
    """Fails in a helper function of its module, as plugin code often does."""

    name = "exploding"

    def evaluate(self, domain, model, split):
        return _explode(split)


class ExplodingPlugin:
    @selfdev.hookimpl
    def register_evaluators(self, register):
        register(ExplodingEvaluator)


class Silent(selfdev.Generator):
    name = "silent"

    def generate(self, prompts, n, temperature, seed, checkpoint=None, iteration=1):
        return []


class SilentPlugin:
    @selfdev.hookimpl
    def register_generators(self, register):
        register(Silent)


def test_run_failed_names_the_exception_and_the_plugin(db_path):
    with EventStore(db_path) as store, registered(**{"exploding-plugin": ExplodingPlugin()}):
        with pytest.raises(selfdev.SelfdevError) as raised:
            run_config(store, tiny(evaluator={"name": "exploding"}))
        failed = list(store.iter_events(types=["run.failed"]))
    assert "failed in plugin 'exploding-plugin': ValueError: cannot score dev" in str(raised.value)
    assert "--debug shows the traceback" in str(raised.value)
    assert len(failed) == 1 and failed[0].type_version == 2
    p = failed[0].payload
    assert p["reason"] == "ValueError: cannot score dev"
    assert (p["exception"], p["plugin"]) == ("ValueError", "exploding-plugin")
    assert "in _explode" in p["traceback"] and "return _explode(split)" in p["traceback"]


def test_run_failed_names_no_plugin_when_the_engine_refuses(db_path):
    with EventStore(db_path) as store, registered(**{"silent-plugin": SilentPlugin()}):
        with pytest.raises(selfdev.SelfdevError, match="produced no completions"):
            run_config(store, tiny(generator={"name": "silent"}))
        (failed,) = store.iter_events(types=["run.failed"])
    assert failed.payload["exception"] == "selfdev.engine.api.SelfdevError"
    assert failed.payload["plugin"] is None
    assert "produced no completions" in failed.payload["reason"]
