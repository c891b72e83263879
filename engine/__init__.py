"""selfdev's engine: hookspecs, plugin manager, event types, configuration, the run loop, CLI."""
from selfdev.engine.hookspecs import hookimpl

__all__ = ["hookimpl"]
