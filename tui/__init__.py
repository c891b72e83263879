"""selfdev's terminal UI (``selfdev tui``): runs list, run replay with a playhead, live follow.

Reads only: it opens the event store read-only and imports ``store`` and the engine's
read-side API (``engine.state``, ``engine.events``, ``engine.report``), never plugins.
Textual is imported by the modules that need it, not here, so ``selfdev --help`` stays fast.
"""
