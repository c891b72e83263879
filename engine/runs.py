"""The read side the CLI and the TUI share: open the log, name a run, fold its state.

``selfdev tui`` and every read command of ``selfdev`` go through these three functions, so a run
reference (an id, a unique prefix, or ``latest``) means the same everywhere.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from selfdev.engine.api import SelfdevError, selfdev_home


def default_db() -> Path:
    """``$SELFDEV_HOME/runs.db``."""
    return selfdev_home() / "runs.db"


def open_store(db: Path | None, *, readonly: bool) -> Any:
    """The event store at ``db`` (default :func:`default_db`); read-only opens never create it."""
    from selfdev.store import EventStore

    path = db or default_db()
    if readonly and not path.exists():
        raise SelfdevError(f"no database at {path} (run `selfdev demo` or pass --db)")
    if not readonly:
        path.parent.mkdir(parents=True, exist_ok=True)
    return EventStore(path, readonly=readonly, writer=" ".join(sys.argv))


def resolve_run(store: Any, ref: str) -> str:
    """A run id, a unique prefix of one, or ``latest``."""
    ids = store.run_ids()
    if ref == "latest":
        if not ids:
            raise SelfdevError("the database holds no runs")
        return ids[-1]
    if ref in ids:
        return ref
    matches = [i for i in ids if i.startswith(ref)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise SelfdevError(f"no run {ref!r}; `selfdev runs` lists them")
    raise SelfdevError(f"run {ref!r} is ambiguous: {', '.join(matches[:5])}")


def load_state(store: Any, run_id: str) -> Any:
    """The folded :class:`~selfdev.engine.state.RunState` of one run."""
    from selfdev.engine.state import fold

    return fold(store.iter_events(run_id=run_id))
