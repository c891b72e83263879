"""selfdev's terminal UI (``selfdev tui``): runs list, run replay with a playhead, live follow.

Reads only: it opens the event store read-only and imports ``selfdev.store``, the public door
(``selfdev.hookimpl``) and the engine's read side (``engine.runs``, ``engine.state``,
``engine.api``, ``engine.report``), never the engine's CLI or loop, never plugins.
Textual is imported by the modules that need it, not here, so ``selfdev --help`` stays fast.

Layout: ``app.py`` (the app, and the key groups it hands the help screen), ``screens/`` (one
module per screen), ``widgets/`` (one module per pane of the run screen, each drawing itself
from a ``Frame``; ``playhead.py`` owns playback), ``loader.py`` (the run screen's reading and
following thread), ``replay.py`` (the checkpointed fold behind the playhead).
"""
