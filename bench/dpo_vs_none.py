"""Does refining the factory help at the paper's scale? Five arms on ``digits``, same seeds.

    python bench/dpo_vs_none.py --seeds 0 1 2 3 4 --candidates 3000 [--iterations 3]
                                [--arms dpo dpo+nll sft none grammar] [--db PATH] [--json FILE]

Arms (every one samples ``--candidates`` programs an iteration from the same seeds):

==========  ============================================================================
``dpo``      the tiny factory refined by trl's DPOTrainer with the pure DPO loss (``sigmoid``)
``dpo+nll``  the same plus the NLL of the chosen completion (``sigmoid`` + ``sft``, i.e. RPO:
             the ``tiny`` preset's default, what the README's earlier tables called "DPO")
``sft``      supervised fine-tuning on the chosen programs (trl's SFTTrainer)
``none``     the same tiny factory, never refined (the control)
``grammar``  random search: programs from the grammar the tiny factory was trained on
==========  ============================================================================

Per iteration and arm: the valid rate among new programs (repeats excluded), repeats, unique
programs, mean, sd and best dev (repeats carry the score of the program they repeat), over
seeds as mean ± sd and a 95 % t-interval; at the end, the test score of the best-by-dev
program. Runs have fixed ids in ``--db`` (``dvn-ARM-sSEED-nN-iK``), so the bench can be stopped
and started again: finished runs are read back, interrupted ones resumed. Prints markdown (the
README's results section is this output).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

ARMS = {
    "dpo": ({"name": "tiny"}, {"name": "dpo", "loss_type": "sigmoid"}),
    "dpo+nll": ({"name": "tiny"}, {"name": "dpo", "loss_type": ["sigmoid", "sft"],
                                   "loss_weights": [1.0, 1.0]}),
    "sft": ({"name": "tiny"}, {"name": "sft"}),
    "none": ({"name": "tiny"}, {"name": "none"}),
    "grammar": ({"name": "grammar"}, {"name": "none"}),
}
PER_ITERATION = [("executable_rate", "valid % of new", 100.0), ("repeats", "repeats", 1.0),
                 ("unique", "unique", 1.0), ("mean", "mean dev", 1.0), ("sd", "sd dev", 1.0),
                 ("best", "best dev", 1.0)]


def interval(values: list[float]) -> tuple[float, float | None, float | None]:
    """(mean, sd, half-width of the 95 % t-interval) of ``values``."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, None, None
    from scipy.stats import t

    sd = statistics.stdev(values)
    return mean, sd, float(t.ppf(0.975, len(values) - 1)) * sd / math.sqrt(len(values))


def cell(values: list[float | None], scale: float = 1.0) -> str:
    values = [v * scale for v in values if v is not None]
    if not values:
        return "-"
    mean, sd, half = interval(values)
    if sd is None:
        return f"{mean:.1f}"
    return f"{mean:.1f} ± {sd:.1f} [{mean - half:.1f}, {mean + half:.1f}]"


def one(store, arm: str, seed: int, args) -> dict:  # noqa: ANN001
    from selfdev.engine.config import from_dict
    from selfdev.engine.loop import Runner, start_run
    from selfdev.engine.report import summary

    run_id = f"dvn-{arm}-s{seed}-n{args.candidates}-i{args.iterations}"
    generator, optimizer = ARMS[arm]
    if not list(store.iter_events(run_id=run_id)):
        cfg = from_dict({"run": {"seed": seed, "iterations": args.iterations,
                                 "candidates": args.candidates, "name": f"dpo_vs_none {arm}",
                                 "tags": ["bench:dpo_vs_none", f"arm:{arm}"]},
                         "domain": {"name": "digits"}, "generator": generator,
                         "optimizer": optimizer,
                         "executor": {"name": "local", "workers": args.workers}})
        start_run(store, cfg, run_id=run_id)
    started = time.perf_counter()
    state = Runner(store, run_id).run()
    data = summary(state)
    print(f"{run_id}: {data['status']} ({time.perf_counter() - started:.0f} s this time)",
          file=sys.stderr, flush=True)
    return data


def best_test(data: dict) -> float | None:
    return next((r["test"] for r in data["table"] if r["method"] == "best discovered"), None)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--candidates", type=int, default=3000)
    ap.add_argument("--iterations", type=int, default=3)
    ap.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--db", default=None, help="event database (default: "
                                               "$SELFDEV_HOME/bench-dpo-vs-none.db)")
    ap.add_argument("--json", default=None, help="also write the per-run summaries here")
    args = ap.parse_args()

    import selfdev
    from selfdev.store import EventStore

    db = Path(args.db) if args.db else selfdev.selfdev_home() / "bench-dpo-vs-none.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    runs: dict[str, list[dict]] = {arm: [] for arm in args.arms}
    with EventStore(db) as store:
        for seed in args.seeds:            # seed-major: a stopped bench has whole seeds
            for arm in args.arms:
                runs[arm].append(one(store, arm, seed, args))
    if args.json:
        Path(args.json).write_text(json.dumps(runs, indent=1, default=str))

    print(f"digits; {args.candidates} candidates x {args.iterations} iterations; seeds "
          f"{' '.join(map(str, args.seeds))}; database {db}; cells: mean ± sd [95 % interval] "
          f"over seeds\n")
    for key, label, scale in PER_ITERATION:
        print(f"**{label}**\n")
        print("| iteration | " + " | ".join(args.arms) + " |")
        print("|---" * (len(args.arms) + 1) + "|")
        for t in range(1, args.iterations + 1):
            cells = []
            for arm in args.arms:
                vals = [next((s.get(key) for s in r["iterations"] if s["iteration"] == t), None)
                        for r in runs[arm]]
                cells.append(cell(vals, scale))
            print(f"| {t} | " + " | ".join(cells) + " |")
        print()
    print("**best-by-dev program (all iterations)**\n")
    print("| | " + " | ".join(args.arms) + " |")
    print("|---" * (len(args.arms) + 1) + "|")
    print("| dev | " + " | ".join(cell([next((r2["dev"] for r2 in r["table"]
                                              if r2["method"] == "best discovered"), None)
                                         for r in runs[arm]]) for arm in args.arms) + " |")
    print("| test | " + " | ".join(cell([best_test(r) for r in runs[arm]])
                                     for arm in args.arms) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
