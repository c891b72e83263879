"""The hook specifications of selfdev (pluggy project name ``selfdev``).

Every ``register_*`` hook is registration-shaped: the engine passes a ``register`` callback and
the plugin calls it once per component class, as in simonw/llm, so the engine owns the registry
and stamps each component with the plugin that registered it.

docs/plugin-hooks.md documents each hook under a heading that is its exact signature;
``tests/engine/test_hooks_meta.py`` fails when a hook here has no section there, when the
documented arguments differ from these, or when no ``test_hook_<name>`` test exists.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, ContextManager, Optional

import pluggy

if TYPE_CHECKING:  # annotations only: importing the door must stay cheap
    import click

    from selfdev.store import StoredEvent

hookspec = pluggy.HookspecMarker("selfdev")
hookimpl = pluggy.HookimplMarker("selfdev")


@hookspec
def register_generators(register: Callable[..., None]) -> None:
    """Register algorithm factories: call ``register(cls, name=None)`` with each subclass of
    ``selfdev.Generator`` (``name`` defaults to ``cls.name``)."""


@hookspec
def register_domains(register: Callable[..., None]) -> None:
    """Register merge domains: call ``register(cls, name=None)`` with each ``selfdev.Domain``
    subclass."""


@hookspec
def register_evaluators(register: Callable[..., None]) -> None:
    """Register scorers: call ``register(cls, name=None)`` with each ``selfdev.Evaluator``
    subclass."""


@hookspec
def register_optimizers(register: Callable[..., None]) -> None:
    """Register factory refiners: call ``register(cls, name=None)`` with each
    ``selfdev.Optimizer`` subclass."""


@hookspec
def register_executors(register: Callable[..., None]) -> None:
    """Register places where candidate work runs: call ``register(cls, name=None)`` with each
    ``selfdev.Executor`` subclass."""


@hookspec
def on_event(event: StoredEvent) -> None:
    """Called with every event of a run after it is committed, in log order (``run.started``
    included), by the process that writes the run.

    ``event`` is a ``selfdev.StoredEvent`` (a dataclass: read attributes, not keys):
    ``event.type`` (``"candidate.evaluated"``), ``event.payload`` (a dict whose keys are the
    fields docs/events.md lists for that type), ``event.run_id``, ``event.position``,
    ``event.stream_version``, ``event.source``, ``event.occurred_at``, ``event.hash``... The
    return value is ignored. A listener that raises does not stop the run: its first failure
    in a run is printed on stderr with the traceback and recorded as ``listener.failed``."""


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add subcommands to the ``selfdev`` click group (``cli.add_command(...)`` or
    ``@cli.command()``)."""


@hookspec(firstresult=True)
def console_display() -> Optional[ContextManager[Any]]:
    """Return the display a CLI run draws on (the first non-None answer wins).

    It is a context manager (entered for the whole command), a ``Progress`` (components draw
    their bars through it) and a listener (its ``on_event`` sees every committed event). The
    built-in one, ``selfdev.plugins.listeners.console``, draws rich progress bars on stderr;
    ``--quiet`` skips the hook."""
