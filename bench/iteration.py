"""One paper-scale iteration on ``digits``: the seconds of each phase, one worker vs. all cores.

    python bench/iteration.py [--candidates 3000] [--workers 2] [--iterations 1] [--seed 0]
                              [--optimizer dpo] [--no-baseline]

The run is the demo's (``tiny`` factory, ``digits`` domain, ``accuracy`` evaluator, ``dpo``
optimizer with its ``tiny`` preset) with ``--candidates`` completions an iteration. A timed
iteration is everything from ``iteration.started`` to the refined factory: sampling, screening,
sandboxed execution with dev scoring, pairs and the refinement (the run is given one more
iteration than timed, so the last timed one refines, and is stopped when that one starts).
Preparation and the baseline sweep happen once per run and are printed apart.

The same iterations run three times, in this order, in this one process: with ``--workers``
sandbox children in flight (the default configuration, with the lookahead of
``engine/lookahead.py``: screening overlapped with the runs, and candidates run beside the
factory where it leaves cores free; the rows then hold what their step waited for), then the
baselines (``--no-baseline`` skips them): one worker, and ``--workers`` with the phases one
after another (``lookahead = false``); all after an untimed 64-candidate iteration that pays the
one-off costs (imports, first sandbox start). The screening memo is emptied before each run. The
factory and the digits data come from ``$SELFDEV_HOME``'s cache (built first, untimed, if
missing: "warm cache").
Goal (issue 10): a whole 3,000-candidate iteration in <= 60 s on a 2-core machine.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

PHASES = [("generate", "sampling"), ("screen", "screening"),
          ("execute", "execution + dev scoring"), ("pairs", "pairs"),
          ("refine", "refinement"), ("other", "other steps")]


class _Stop(KeyboardInterrupt):
    """Raised when the first untimed iteration starts: the loop lets it through as it does a
    Ctrl-C (the run is left interrupted, as after a kill)."""


def one_run(workers: int, args: argparse.Namespace, db: Path, lookahead: bool = True) -> dict:
    from selfdev.engine.config import from_dict
    from selfdev.engine.loop import Runner, start_run
    from selfdev.sandbox.policy import forget_screens
    from selfdev.store import EventStore

    timed = args.iterations
    seconds: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = {}

    class TimedRunner(Runner):
        """Times every step of the timed iterations by kind."""

        def timed(self, step):  # noqa: ANN001  (the loop's one call per step)
            if step.kind == "start_iteration" and step.iteration > timed:
                raise _Stop
            started = time.perf_counter()
            try:
                return super().timed(step)
            finally:
                kind = step.kind if step.kind in dict(PHASES) else "other"
                if step.kind in ("prepare", "baselines"):
                    kind = "setup"
                seconds[kind] += time.perf_counter() - started
                if step.kind == "execute":
                    counts["executed"] = counts.get("executed", 0) + len(step.ids)

    cfg = from_dict({"run": {"seed": args.seed, "iterations": timed + 1,
                             "candidates": args.candidates},
                     "domain": {"name": "digits"}, "generator": {"name": "tiny"},
                     "optimizer": {"name": args.optimizer},
                     "executor": {"name": "local", "workers": workers,
                                  "lookahead": lookahead}})
    forget_screens()  # the same seed samples the same programs: no run screens for the next
    store = EventStore(str(db))
    try:
        runner = TimedRunner(store, start_run(store, cfg))
        try:
            runner.run()
        except _Stop:
            pass
        counts["generated"] = len(runner.state.candidates)
    finally:
        store.close()
    return {"seconds": dict(seconds), **counts}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--candidates", type=int, default=3000)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--iterations", type=int, default=1, help="iterations timed")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--optimizer", default="dpo")
    ap.add_argument("--no-baseline", action="store_true",
                    help="skip the baselines (one worker; no lookahead)")
    ap.add_argument("--no-warmup", action="store_true",
                    help="skip the untimed 64-candidate iteration first (imports, first starts)")
    args = ap.parse_args()

    import selfdev
    from selfdev.plugins.generators.tiny import ensure_factory

    home = selfdev.selfdev_home()
    t0 = time.perf_counter()
    ensure_factory(home)
    warm = time.perf_counter() - t0
    tmp = Path(tempfile.mkdtemp(prefix="selfdev-bench-iteration-"))
    if not args.no_warmup:  # imports (trl, datasets, ...), first sandbox start, torch kernels
        t0 = time.perf_counter()
        small = argparse.Namespace(**{**vars(args), "candidates": 64})
        one_run(args.workers, small, tmp / "warmup.db")
        warm += time.perf_counter() - t0
    load = os.getloadavg()[0]
    main_label = f"{args.workers} worker(s)"
    runs = {main_label: one_run(args.workers, args, tmp / "main.db")}
    if not args.no_baseline:
        if args.workers != 1:
            runs["1 worker"] = one_run(1, args, tmp / "w1.db")
        runs["no lookahead"] = one_run(args.workers, args, tmp / "off.db", lookahead=False)

    its = args.iterations
    print(f"digits, tiny factory, {args.optimizer} optimizer, {args.candidates} candidates an "
          f"iteration, {its} iteration(s) timed, seed {args.seed}; {os.cpu_count()} CPUs, load "
          f"{load:.1f} at start (cache and warm-up iteration: {warm:.1f} s, untimed)")
    print(f"columns: {main_label} (the default: with the lookahead, engine/lookahead.py); "
          f"1 worker; {args.workers} worker(s) with the phases one after another. Ratios: each "
          f"baseline's seconds / the first column's")
    cols = list(runs)
    print(f"{'phase (s per iteration)':26s}" + "".join(f"{c:>14s}" for c in cols)
          + "".join(f"{'ratio':>8s}" for _ in cols[1:]))
    totals = {c: sum(v for k, v in r["seconds"].items() if k != "setup") / its
              for c, r in runs.items()}
    for key, label in PHASES + [("total", "whole iteration"), ("setup", "setup (once a run)")]:
        vals = {c: (totals[c] if key == "total" else
                    r["seconds"].get(key, 0.0) / (1 if key == "setup" else its))
                for c, r in runs.items()}
        line = f"{label:26s}" + "".join(f"{vals[c]:14.1f}" for c in cols)
        for c in cols[1:]:
            line += f"{vals[c] / vals[cols[0]]:7.2f}x" if vals[cols[0]] else f"{'-':>8s}"
        print(line)
    for c, r in runs.items():
        gen = r.get("generated", 0)
        print(f"{c}: {gen} generated, {r.get('executed', 0)} executed; "
              f"{gen / max(totals[c] * its, 1e-9):.1f} candidates/s over whole iterations")
    best = totals[main_label]
    print(f"whole iteration with {main_label}: {best:.1f} s (goal <= 60 s: "
          f"{'met' if best <= 60 else 'MISSED'})"
          + "".join(f"; {c} takes {totals[c] / best:.2f}x as long" for c in cols[1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
