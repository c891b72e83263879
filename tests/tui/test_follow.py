"""Follow mode: the app follows a database that a concurrently running engine is writing."""
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from tui_helpers import engine_can_run, frozen_clock, wait_until

from selfdev.engine.state import fold
from selfdev.store import EventStore
from selfdev.tui.app import SelfdevApp
from selfdev.tui.screens.run import RunScreen

REPO = Path(__file__).resolve().parents[2]

ENGINE = textwrap.dedent("""
    import sys
    from selfdev.engine.config import from_dict
    from selfdev.engine.loop import run_config
    from selfdev.store import EventStore

    cfg = from_dict({"run": {"iterations": 2, "candidates": 6, "top_k": 2},
                     "domain": {"name": "digits"}, "generator": {"name": "grammar"}})
    with EventStore(sys.argv[1], writer="tests/tui follow") as store:
        run_config(store, cfg, on_start=lambda run_id: print(run_id, flush=True))
""")

SYNTHETIC = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, sys.argv[2])
    import synth
    from selfdev.store import EventStore

    with EventStore(sys.argv[1], writer="tests/tui follow") as store:
        def slow(version):
            if version == 1:
                print("run-follow", flush=True)
            time.sleep(0.05)
        synth.write_run(store, "run-follow", iterations=2, candidates=6, batch=4, on_batch=slow)
""")


def start_writer(path: Path) -> tuple[subprocess.Popen, str, str]:
    why = engine_can_run()
    script = ENGINE if why is None else SYNTHETIC
    err = open(path.with_suffix(".stderr"), "w+")  # a file, so a chatty writer never blocks
    proc = subprocess.Popen([sys.executable, "-c", script, str(path), str(Path(__file__).parent)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=err, text=True)
    proc.err = err
    run_id = proc.stdout.readline().strip()
    if not run_id:
        proc.wait(30)
        raise AssertionError(f"the writer did not start: {errors(proc)}")
    return proc, run_id, "real" if why is None else "synthetic"


def errors(proc) -> str:
    proc.err.seek(0)
    return proc.err.read()[-2000:]


async def test_follows_a_growing_database(tmp_path, run_db):
    """``run_db`` first: the session's real run builds the cached tiny models, so the writer
    here only runs the loop."""
    path = tmp_path / "live.db"
    proc, run_id, kind = start_writer(path)
    try:
        app = SelfdevApp(str(path), run_id, clock=frozen_clock, poll_interval=0.1,
                         runs_refresh=0.5)
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_until(pilot, lambda: isinstance(app.screen, RunScreen), what="run screen")
            screen = app.screen
            await wait_until(pilot, lambda: screen.loaded, what="first load")
            first = len(screen.replay)
            saw_live = False
            sizes = []
            deadline = time.monotonic() + 120
            while True:
                await pilot.pause(0.1)
                saw_live = saw_live or screen.live
                sizes.append(len(screen.replay))
                index = screen.replay.index
                if len(index) and index.types[-1] in ("run.finished", "run.failed"):
                    break
                assert time.monotonic() < deadline, f"the run did not finish ({kind})"
                assert proc.poll() is None or proc.returncode == 0, errors(proc)
            await pilot.pause(0.3)
            # following kept the playhead on the newest event, folded exactly like the engine
            with EventStore(path, readonly=True) as store:
                events = list(store.iter_events(run_id=run_id))
            assert index.types[-1] == "run.finished"
            assert len(screen.replay) == len(events) > first
            assert screen.cursor == len(events)
            assert screen.replay.state == fold(events)
            assert saw_live, "a held writer lock shows the run as running"
            assert len(set(sizes)) > 2, "new events arrived while following"
            assert "finished" in str(screen.query_one("#run-title").render())
            # back on the runs list, the run is finished too
            await pilot.press("escape")
            await wait_until(pilot, lambda: app.screen.rows
                             and app.screen.rows[0].status == "finished", what="runs list")
    finally:
        proc.wait(120)
    assert proc.returncode == 0, errors(proc)
