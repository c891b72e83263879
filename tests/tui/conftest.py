"""Fixtures of the TUI tests: event databases made by the real engine when it can run here,
else by ``synth.py`` (engine-shaped events), plus helpers to drive the app."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # synth and tui_helpers, for every test here

import synth  # noqa: E402
from tui_helpers import engine_can_run, real_run  # noqa: E402


@pytest.fixture(scope="session")
def run_db(tmp_path_factory) -> tuple[Path, str, str]:
    """(database, run id, "real" | "synthetic"): one finished run of the real engine (digits +
    grammar, 2 iterations × 12 candidates), made once for all TUI tests (a real run takes
    15-25 s here). Falls back to a synthetic run when the engine cannot run."""
    path = tmp_path_factory.mktemp("tui-run") / "runs.db"
    why = engine_can_run()
    if why is None:
        try:
            return path, real_run(path), "real"
        except Exception as exc:  # noqa: BLE001
            why = f"{type(exc).__name__}: {exc}"
            for suffix in ("", "-wal", "-shm"):
                Path(str(path) + suffix).unlink(missing_ok=True)
    from selfdev.store import EventStore

    with EventStore(path, writer="tests/tui") as store:
        run_id = synth.write_run(store, iterations=2, candidates=12, top_k=3)
    return path, run_id, "synthetic"


@pytest.fixture(scope="session")
def demo_db(tmp_path_factory) -> tuple[Path, list[str]]:
    """A deterministic database (fixed ids and times) with a finished, a crashed and a failed
    run: what the snapshot tests draw."""
    path = tmp_path_factory.mktemp("tui-demo") / "runs.db"
    return path, synth.write_demo_db(path)


