"""The hook specifications of selfdev (pluggy project name ``selfdev``).

Every ``register_*`` hook is registration-shaped: the engine passes a ``register`` callback and
the plugin calls it once per component class, as in simonw/llm.
"""
import pluggy

hookspec = pluggy.HookspecMarker("selfdev")
hookimpl = pluggy.HookimplMarker("selfdev")


@hookspec
def register_generators(register):
    """Register algorithm factories (subclasses of selfdev.Generator)."""


@hookspec
def register_domains(register):
    """Register merge domains (subclasses of selfdev.Domain)."""


@hookspec
def register_evaluators(register):
    """Register scorers (subclasses of selfdev.Evaluator)."""


@hookspec
def register_optimizers(register):
    """Register factory refiners (subclasses of selfdev.Optimizer)."""


@hookspec
def register_executors(register):
    """Register places where candidate work runs (subclasses of selfdev.Executor)."""


@hookspec
def on_event(event):
    """Called after each event is committed, in log order; must not break the run."""


@hookspec
def register_commands(cli):
    """Add subcommands to the ``selfdev`` click group."""


@hookspec(firstresult=True)
def console_display():
    """Return the display a CLI run draws on (the first non-None answer wins).

    It is a context manager (entered for the whole command), a ``Progress`` (components draw
    their bars through it) and a listener (its ``on_event`` sees every committed event). The
    built-in one, ``selfdev.plugins.listeners.console``, draws rich progress bars on stderr;
    ``--quiet`` skips the hook."""
