"""selfdev's pytest plugin: fixtures for testing selfdev plugins.

selfdev ships this module under the ``pytest11`` entry point, as datasette ships
``datasette/_pytest_plugin.py``, so a plugin's own test suite gets these fixtures by installing
selfdev, with no conftest and no import:

``selfdev_home`` (session)
    a private ``$SELFDEV_HOME`` for the session. Runs and artifacts stay in a temporary folder;
    its ``cache/`` is the cache of the ``$SELFDEV_HOME`` in effect when the session began
    (default ``~/.selfdev``), so the tiny models are built once and then reused, by every
    session and by ``selfdev demo`` alike (cache entries are keyed by their recipe and written
    atomically, so sharing them is safe).
``selfdev_plugins``
    the plugins every ``selfdev_engine`` registers: ``[]`` here; override it in a
    ``conftest.py`` to return your plugin module(s).
``selfdev_store``
    a fresh event store (``runs.db`` in the test's ``tmp_path``), closed afterwards.
``selfdev_engine``
    an :class:`Engine` over that store, with ``$SELFDEV_HOME`` pointing at ``selfdev_home``
    for the test: ``register(plugin)`` adds a plugin for this test only, ``build(kind, name,
    **options)`` makes one component, ``run(config)`` drives a whole run and ``iteration(...)``
    one short discovery iteration; every plugin it registered is unregistered afterwards.
``selfdev_scripted``
    a scripted generator (llm's ``enqueue`` mock model): ``enqueue("...", "...")`` queues
    completions, which the generator named ``selfdev_scripted.name`` returns in order;
    ``calls`` records what the engine asked for.
``selfdev_digits`` (session)
    the tiny ``digits`` domain (a seed MLP and three class-group experts on scikit-learn's
    digits), prepared once per session from the shared cache; score its models with the
    ``accuracy`` evaluator.
``selfdev_iteration``
    ``selfdev_engine.iteration``: run one short discovery iteration (digits, the ``grammar``
    generator, the ``none`` optimizer unless you name yours) and return the state folded from
    its log.

Only fixtures: the module defines no pytest hooks, so it changes nothing in a test run that
does not ask for them, and it imports nothing heavy (the engine loads inside the fixtures).
"""
from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import pytest

#: the component kinds a run's configuration names, in the order ``iteration`` takes them
KINDS = ("domain", "generator", "evaluator", "optimizer", "executor")


# --------------------------------------------------------------------------------------------
# the scripted generator


@dataclass
class GenerateCall:
    """One call the engine made to the scripted generator."""

    prompts: list[str]
    n: int
    temperature: float
    seed: int
    checkpoint: Path | None
    iteration: int


class Scripted:
    """A generator whose completions a test writes in advance, as llm's ``enqueue``.

    The engine builds components from their class (``cls(ctx, **options)``), so the queue lives
    here, shared with the ``Generator`` subclass :meth:`component_class` makes: every instance
    the engine builds during the test pops from the same queue, in order.
    """

    def __init__(self, name: str = "scripted") -> None:
        self.name = name
        self.queue: deque[Any] = deque()
        self.calls: list[GenerateCall] = []
        self._cls: type | None = None

    def enqueue(self, *completions: Any) -> "Scripted":
        """Queue completions: strings (the raw text a model would answer) or ``selfdev.Completion``
        objects; a list or tuple is taken item by item. Returns the handle, for chaining."""
        for item in completions:
            if isinstance(item, (list, tuple)):
                self.enqueue(*item)
            else:
                self.queue.append(item)
        return self

    def __len__(self) -> int:
        return len(self.queue)

    def component_class(self) -> type:
        """The ``selfdev.Generator`` subclass, named :attr:`name`, that pops this queue."""
        if self._cls is not None:
            return self._cls
        from selfdev.engine.api import Completion, Generator, SelfdevError

        script = self

        class ScriptedGenerator(Generator):
            """Returns the completions a test queued with ``enqueue``, in order."""

            name = script.name

            def generate(self, prompts, n, temperature, seed, checkpoint=None, iteration=1):
                script.calls.append(GenerateCall(list(prompts), n, temperature, seed,
                                                 checkpoint, iteration))
                wanted = n * len(prompts)
                if len(script.queue) < wanted:
                    raise SelfdevError(
                        f"scripted generator {script.name!r}: asked for {wanted} completions, "
                        f"{len(script.queue)} queued; enqueue more (or ask for fewer candidates)")
                out = []
                for index in range(len(prompts)):
                    for _ in range(n):
                        item = script.queue.popleft()
                        if isinstance(item, Completion):
                            out.append(Completion(item.text, index, dict(item.meta)))
                        else:
                            out.append(Completion(str(item), index))
                return out

        self._cls = ScriptedGenerator
        return ScriptedGenerator

    def plugin(self) -> Any:
        """A plugin object whose ``register_generators`` registers :meth:`component_class`."""
        from selfdev.engine.hookspecs import hookimpl

        cls = self.component_class()

        class ScriptedPlugin:
            __name__ = f"selfdev-testing-{cls.name}"

            @hookimpl
            def register_generators(self, register):
                register(cls)

        return ScriptedPlugin()


# --------------------------------------------------------------------------------------------
# the engine harness


class Engine:
    """A selfdev engine for one test: a temporary store, plugins registered for the test only.

    Everything it registers or builds is undone by :meth:`close` (the fixture calls it), so no
    test leaks a plugin, a component or an open sandbox into the next one.
    """

    def __init__(self, store: Any, workdir: Path) -> None:
        from selfdev.engine.plugins import load_plugins

        load_plugins()  # entry points first, so a plugin already loaded is not registered twice
        self.store = store
        self.workdir = Path(workdir)
        self._registered: list[str] = []
        self._built: list[Any] = []
        self._scripted: dict[str, Scripted] = {}
        self.last_run_id: str | None = None

    # -- plugins -------------------------------------------------------------------------------

    def register(self, plugin: Any, name: str | None = None) -> str:
        """Register ``plugin`` (a module, or an object with ``@selfdev.hookimpl`` methods) for
        this test and return its plugin name. A plugin already registered (an installed one,
        loaded through its entry point) is left as it is, and stays after the test."""
        from selfdev.engine.plugins import plugin_name, pm

        if pm.is_registered(plugin):
            return plugin_name(plugin)
        registered = pm.register(plugin, name=name)
        if registered is None:  # pluggy refuses a blocked name silently
            raise RuntimeError(f"plugin {name or plugin!r} is blocked and cannot be registered")
        self._registered.append(registered)
        return registered

    def unregister(self, name: str) -> None:
        from selfdev.engine.plugins import pm

        if name in self._registered:
            self._registered.remove(name)
        if pm.get_plugin(name) is not None:
            pm.unregister(name=name)

    def scripted(self, name: str = "scripted") -> Scripted:
        """A :class:`Scripted` generator registered under ``name`` for this test."""
        if name not in self._scripted:
            script = Scripted(name)
            self.register(script.plugin(), name=f"selfdev-testing-{name}")
            self._scripted[name] = script
        return self._scripted[name]

    @property
    def registry(self) -> Any:
        """Every registered component, by kind and name (``selfdev.Registry``)."""
        from selfdev.engine.plugins import get_registry

        return get_registry()

    # -- components ----------------------------------------------------------------------------

    def context(self, seed: int = 0, run_id: str = "test") -> Any:
        """The ``selfdev.Context`` a component gets, with its artifacts under the test's folder."""
        from selfdev.engine.api import Context, NullProgress, selfdev_home

        artifacts = self.workdir / "artifacts" / run_id
        artifacts.mkdir(parents=True, exist_ok=True)
        return Context(run_id=run_id, seed=seed, home=selfdev_home(), artifacts=artifacts,
                       progress=NullProgress(), db=getattr(self.store, "path", None))

    def build(self, kind: str, name: str, /, **options: Any) -> Any:
        """One component, built as the engine builds it (options checked first); closed after
        the test."""
        from selfdev.engine.config import check_options

        cls = self.registry.get(kind, name)
        check_options(kind, cls, options)
        component = cls(self.context(), **options)
        self._built.append(component)
        return component

    # -- runs ----------------------------------------------------------------------------------

    def run(self, config: Any) -> Any:
        """Start a run from ``config`` (a ``RunConfig`` or the dict a TOML file parses to), drive
        it to the end and return its state, folded again from the log."""
        from selfdev.engine.config import RunConfig, from_dict
        from selfdev.engine.loop import run_config
        from selfdev.engine.runs import load_state

        cfg = config if isinstance(config, RunConfig) else from_dict(config)
        started: list[str] = []
        run_config(self.store, cfg, on_start=started.append)
        self.last_run_id = started[0]
        return load_state(self.store, started[0])

    def iteration(self, *, domain: Any = "digits", generator: Any = "grammar",
                  evaluator: Any = None, optimizer: Any = "none", executor: Any = "local",
                  candidates: int | None = None, iterations: int = 1, seed: int = 0,
                  timeout: float = 20.0, top_k: int | None = None) -> Any:
        """Run one short discovery iteration with your component and return the folded state.

        Each component is a name or a table (``{"name": "mine", "epochs": 2}``). By default:
        the tiny ``digits`` domain, the ``grammar`` generator (random programs, seeded), the
        domain's evaluator, the ``none`` optimizer and the ``local`` executor, 4 candidates
        (or, for a scripted generator, as many as are queued). The optimizer refines the
        factory between iterations, so pass ``iterations=2`` to have yours called once.
        """
        tables = {}
        for kind, spec in zip(KINDS, (domain, generator, evaluator, optimizer, executor)):
            if spec is None:
                continue
            tables[kind] = {"name": spec} if isinstance(spec, str) else dict(spec)
        if candidates is None:
            script = self._scripted.get(tables["generator"].get("name", ""))
            candidates = max(1, len(script) // iterations) if script is not None else 4
        run = {"seed": seed, "iterations": iterations, "candidates": candidates,
               "timeout": timeout, "top_k": top_k or min(3, candidates)}
        return self.run({"run": run, **tables})

    def events(self, run_id: str | None = None, types: Iterable[str] | None = None) -> list[Any]:
        """The events of ``run_id`` (default: the last run), in log order."""
        run_id = run_id or self.last_run_id
        return list(self.store.iter_events(run_id=run_id, types=list(types) if types else None))

    def close(self) -> None:
        for component in reversed(self._built):
            close = getattr(component, "close", None)
            if callable(close):
                close()
        self._built.clear()
        for name in reversed(list(self._registered)):
            self.unregister(name)


# --------------------------------------------------------------------------------------------
# fixtures


def _shared_cache(home: Path) -> None:
    """Make ``home/cache`` the cache of the ``$SELFDEV_HOME`` in effect now (or, when that
    cannot be created, a private folder)."""
    outer = Path(os.environ.get("SELFDEV_HOME") or Path.home() / ".selfdev") / "cache"
    try:
        outer.mkdir(parents=True, exist_ok=True)
        (home / "cache").symlink_to(outer.resolve(), target_is_directory=True)
    except OSError:
        (home / "cache").mkdir(exist_ok=True)


@pytest.fixture(scope="session")
def selfdev_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private ``$SELFDEV_HOME`` for the session, sharing the outer home's model cache."""
    home = tmp_path_factory.mktemp("selfdev-home")
    _shared_cache(home)
    return home


@pytest.fixture
def selfdev_plugins() -> list[Any]:
    """The plugins every ``selfdev_engine`` registers: override it in your ``conftest.py``::

        @pytest.fixture
        def selfdev_plugins():
            import selfdev_mine
            return [selfdev_mine]
    """
    return []


@pytest.fixture
def selfdev_store(tmp_path: Path) -> Iterator[Any]:
    """A fresh event store in the test's ``tmp_path`` (``runs.db``)."""
    from selfdev.store import EventStore

    store = EventStore(tmp_path / "runs.db")
    try:
        yield store
    finally:
        store.close()


@pytest.fixture
def selfdev_engine(selfdev_store: Any, selfdev_home: Path, selfdev_plugins: list[Any],
                   tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Engine]:
    """An :class:`Engine` over ``selfdev_store`` with ``selfdev_plugins`` registered."""
    monkeypatch.setenv("SELFDEV_HOME", str(selfdev_home))
    engine = Engine(selfdev_store, tmp_path)
    try:
        for plugin in selfdev_plugins:
            engine.register(plugin)
        yield engine
    finally:
        engine.close()


@pytest.fixture
def selfdev_scripted(selfdev_engine: Engine) -> Scripted:
    """A scripted generator registered as ``scripted`` for the test: ``enqueue`` completions."""
    return selfdev_engine.scripted()


@pytest.fixture
def selfdev_iteration(selfdev_engine: Engine) -> Any:
    """``selfdev_iteration(generator="mine", ...)``: one short discovery iteration; returns the
    state folded from its log (see :meth:`Engine.iteration`)."""
    return selfdev_engine.iteration


@pytest.fixture(scope="session")
def selfdev_digits(selfdev_home: Path) -> Iterator[Any]:
    """The tiny ``digits`` domain, prepared once per session from the shared cache."""
    from selfdev.engine.api import Context, NullProgress
    from selfdev.engine.plugins import get_registry

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SELFDEV_HOME", str(selfdev_home))
        cls = get_registry().get("domain", "digits")
        domain = cls(Context(run_id="selfdev-digits", seed=0, home=selfdev_home,
                             artifacts=selfdev_home / "artifacts", progress=NullProgress()))
        domain.prepare()
    try:
        yield domain
    finally:
        domain.close()
