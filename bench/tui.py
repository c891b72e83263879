"""Benchmark of the TUI on a large run: ``python bench/tui.py [--events 100000] [--db PATH]``.

Builds (or reuses, with ``--db``) a database holding one engine-shaped run of about
``--events`` events (tests/tui/synth.py: the engine's event types, payloads and blobs), then
measures, headless at ``--size``:

(a) baseline: ``engine.state.fold(store.iter_events(run_id=...))``, what ``selfdev show`` does
    to get the final state, and what a playhead without checkpoints would pay per jump back;
(b) opening the run in the app: time until the run screen first draws a state, and until the
    whole run is folded and its final state drawn (the goal: <= 2 s);
(c) playhead latency, key press to redrawn frame through Textual's pilot, for one event back
    and forth, one candidate, one iteration, start/end, and random jumps (goal: "without
    visible lag", i.e. well under 100 ms), next to the same measurement for a key that is
    bound to nothing (what the pilot itself costs), and the fold alone (``Replay.seek``);

and prints each against the baseline. The numbers depend on the machine's load: run it a few
times on a shared machine.
"""
from __future__ import annotations

import argparse
import asyncio
import random
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "tui"))

GOALS = {"open_s": 2.0, "step_ms": 100.0}


def build(path: Path, events: int) -> str:
    import synth
    from selfdev.store import EventStore

    # about 10.8 events per candidate (generated, screened, executed, evaluated) x 3 iterations
    candidates = max(10, round(events / 10.75))
    with EventStore(path, writer="bench/tui.py") as store:
        return synth.write_run(store, "run-bench", iterations=3, candidates=candidates,
                               top_k=15, exec_batch=50)


def baseline(path: Path, run_id: str) -> tuple[float, int]:
    from selfdev.engine.state import fold
    from selfdev.store import EventStore

    with EventStore(path, readonly=True) as store:
        t0 = time.perf_counter()
        state = fold(store.iter_events(run_id=run_id, page_size=5000))
        return time.perf_counter() - t0, state.events


def stats(samples: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples)
    p95 = ms[min(len(ms) - 1, int(0.95 * len(ms)))]
    return f"median {statistics.median(ms):6.1f} ms  p95 {p95:6.1f} ms  max {ms[-1]:6.1f} ms"


async def measure(path: Path, run_id: str, size: tuple[int, int], steps: int) -> dict:
    from selfdev.tui.app import SelfdevApp
    from selfdev.tui.screens.run import RunScreen

    out: dict = {}
    t0 = time.perf_counter()
    app = SelfdevApp(str(path), run_id, runs_refresh=0)
    async with app.run_test(size=size) as pilot:
        while not (isinstance(app.screen, RunScreen) and app.screen.first_paint is not None):
            await asyncio.sleep(0.005)
        await pilot.pause()
        out["first_paint_s"] = time.perf_counter() - t0
        screen = app.screen
        while not screen.loaded:
            await asyncio.sleep(0.01)
        n = len(screen.replay)
        while screen.leaderboard.drawn != n:
            await asyncio.sleep(0.005)
        await pilot.pause()
        out["loaded_s"] = time.perf_counter() - t0
        out["events"] = n
        out["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

        async def timed(keys: list[str]) -> list[float]:
            samples = []
            for key in keys:
                s = time.perf_counter()
                await pilot.press(key)
                await pilot.pause()
                samples.append(time.perf_counter() - s)
            return samples

        out["noop"] = await timed(["x"] * (steps // 2))  # unbound: the pilot's own overhead
        out["pause"] = []
        for _ in range(steps // 2):  # what a bare pilot.pause() costs (random jumps use it)
            s = time.perf_counter()
            await pilot.pause()
            out["pause"].append(time.perf_counter() - s)
        out["left"] = await timed(["left"] * steps)
        out["right"] = await timed(["right"] * steps)
        await pilot.press("right_curly_bracket")  # into an iteration's candidates
        out["candidate"] = await timed(["right_square_bracket", "left_square_bracket"] * (steps // 4))
        out["iteration"] = await timed(["left_curly_bracket", "right_curly_bracket"] * 4)
        out["home_end"] = await timed(["home", "end"] * 4)
        rng = random.Random(0)
        jumps = []
        for _ in range(max(10, steps // 5)):
            k = rng.randrange(n)
            s = time.perf_counter()
            screen.move_to(k)
            await pilot.pause()
            jumps.append(time.perf_counter() - s)
        out["random"] = jumps
        for pane in "234":  # the other panes at the last position, then step there
            await pilot.press(pane)
        out["events_pane_left"] = await timed(["left"] * (steps // 2))
        out["seek_only"] = []
        with screen.replay.lock:
            for _ in range(steps):
                k = rng.randrange(n)
                s = time.perf_counter()
                screen.replay.seek(k)
                out["seek_only"].append(time.perf_counter() - s)
            out["seek_back_one"] = []
            screen.replay.seek(n)
            for k in range(n - 1, n - 1 - steps, -1):
                s = time.perf_counter()
                screen.replay.seek(k)
                out["seek_back_one"].append(time.perf_counter() - s)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--db", type=Path, help="reuse (or create and keep) this database")
    ap.add_argument("--size", default="100x30", help="terminal size, WxH")
    ap.add_argument("--steps", type=int, default=100, help="key presses per measurement")
    args = ap.parse_args()
    size = tuple(int(x) for x in args.size.split("x"))

    tmp = None
    if args.db is None:
        tmp = tempfile.TemporaryDirectory(prefix="selfdev-bench-tui-")
        path = Path(tmp.name) / "runs.db"
    else:
        path = args.db
    from selfdev.store import EventStore

    if path.exists():
        with EventStore(path, readonly=True) as store:
            run_id = store.run_ids()[-1]
        print(f"reusing {path} (run {run_id})")
    else:
        t0 = time.perf_counter()
        run_id = build(path, args.events)
        print(f"built {path} in {time.perf_counter() - t0:.1f} s")

    base_s, n = baseline(path, run_id)
    print(f"run {run_id}: {n:,} events")
    print(f"(a) baseline fold of the whole run:          {base_s:6.2f} s")
    m = asyncio.run(measure(path, run_id, size, args.steps))
    ok_open = m["loaded_s"] <= GOALS["open_s"]
    print(f"(b) open, first run screen drawn:           {m['first_paint_s']:6.2f} s")
    print(f"    open, whole run folded and drawn:       {m['loaded_s']:6.2f} s  "
          f"({m['loaded_s'] / base_s:.2f}x baseline; goal <= {GOALS['open_s']} s: "
          f"{'met' if ok_open else 'NOT met'})")
    print(f"    max RSS after load:                     {m['rss_mb']:6.0f} MB")
    print(f"(c) playhead, key press to redrawn frame ({size[0]}x{size[1]}):")
    print(f"    baseline: an unbound key (pilot only) {stats(m['noop'])}")
    worst = 0.0
    pilot = statistics.median(m["noop"])
    for key, label in (("left", "one event back (left)"), ("right", "one event on (right)"),
                       ("candidate", "one candidate ([ ])"), ("iteration", "one iteration ({ })"),
                       ("home_end", "start / end"), ("random", "random jumps (no key)"),
                       ("events_pane_left", "left, event log pane")):
        med = statistics.median(m[key])
        net = max(0.0, med - (statistics.median(m["pause"]) if key == "random" else pilot))
        worst = max(worst, net)
        print(f"    {label:<28} {stats(m[key])}  net of pilot {net * 1000:5.1f} ms "
              f"({net / base_s * 100:.1f}% of a re-fold)")
    print(f"    fold only (Replay.seek), random:        {stats(m['seek_only'])}")
    print(f"    fold only (Replay.seek), one back:      {stats(m['seek_back_one'])}")
    print(f"goal: median work per key (net of the pilot) <= {GOALS['step_ms']:.0f} ms: "
          f"{'met' if worst * 1000 <= GOALS['step_ms'] else 'NOT met'} "
          f"(worst {worst * 1000:.1f} ms)")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
