"""Helpers of the TUI tests: a frozen clock, a small real run, and driving the app."""
from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path

FROZEN = datetime(2025, 3, 16, 12, 0, 0, tzinfo=timezone.utc)


def frozen_clock() -> datetime:
    return FROZEN


def small_config(iterations: int = 2, candidates: int = 12):
    from selfdev.engine.config import from_dict

    return from_dict({"run": {"iterations": iterations, "candidates": candidates, "top_k": 3},
                      "domain": {"name": "digits"}, "generator": {"name": "grammar"}})


def real_run(path: Path, **kw) -> str:
    """One small real run (digits + grammar) into ``path``; returns its run id."""
    from selfdev.engine.loop import run_config
    from selfdev.store import EventStore

    with EventStore(path, writer="tests/tui") as store:
        state = run_config(store, small_config(**kw))
    return state.run_id


def engine_can_run() -> str | None:
    """None when the real engine can make a digits + grammar run here, else why not."""
    try:
        from selfdev.engine.plugins import get_registry

        registry = get_registry()
        registry.get("generator", "grammar")
        registry.get("domain", "digits")
        from selfdev import sandbox

        if not hasattr(sandbox, "screen"):
            return "the sandbox package is not finished"
    except Exception as exc:  # noqa: BLE001 - any missing piece means: use synthetic runs
        return f"{type(exc).__name__}: {exc}"
    return None


async def wait_until(pilot, condition, timeout: float = 15.0, what: str = "condition"):
    """Let the app run until ``condition()`` holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.05)


async def open_run(pilot, run_id: str):
    """From the runs screen, open ``run_id`` and wait until it is loaded and drawn."""
    from selfdev.tui.screens.run import RunScreen

    app = pilot.app
    await wait_until(pilot, lambda: getattr(app.screen, "loaded", False), what="runs list")
    app.open_run(run_id)
    await wait_until(pilot, lambda: isinstance(app.screen, RunScreen) and app.screen.loaded
                     and app.screen.first_paint is not None, what="run loaded")
    await pilot.pause()
    return app.screen
