"""DPO against the `none` control on the digits demo, same seeds: executable rate and mean dev
score per iteration, and the best discovered against the best swept Task Arithmetic on test.

    python bench/dpo_vs_none.py [--seeds 0 1 2] [--candidates 60] [--db PATH]

Prints a markdown table (the README's results section is this output).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--candidates", type=int, default=60)
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--domain", default="digits")
    parser.add_argument("--db", default=None)
    args = parser.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

    from selfdev.engine.config import from_dict
    from selfdev.engine.loop import run_config
    from selfdev.engine.report import summary
    from selfdev.store import EventStore

    db = Path(args.db or Path(tempfile.mkdtemp()) / "dpo_vs_none.db")
    rows: dict[str, list[dict]] = {"dpo": [], "none": []}
    with EventStore(db) as store:
        for seed in args.seeds:
            for optimizer in ("none", "dpo"):
                cfg = from_dict({"run": {"seed": seed, "iterations": args.iterations,
                                         "candidates": args.candidates},
                                 "domain": {"name": args.domain},
                                 "generator": {"name": "tiny"},
                                 "optimizer": {"name": optimizer}})
                start = time.perf_counter()
                state = run_config(store, cfg)
                data = summary(state)
                data["seconds"] = round(time.perf_counter() - start, 1)
                rows[optimizer].append(data)
                print(f"seed {seed} {optimizer}: {data['run_id']} {data['seconds']} s", file=sys.stderr)

    def cell(values):
        values = [v for v in values if v is not None]
        if not values:
            return "-"
        if len(values) == 1:
            return f"{values[0]:.1f}"
        return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"

    print(f"database: {db}; seeds {args.seeds}; {args.candidates} candidates x {args.iterations} iterations; domain {args.domain}\n")
    print("| iteration | executable % (none) | executable % (dpo) | mean dev (none) | mean dev (dpo) | best dev (none) | best dev (dpo) |")
    print("|---|---|---|---|---|---|---|")
    for t in range(args.iterations):
        get = lambda opt, key: [r["iterations"][t][key] for r in rows[opt]]
        pct = lambda opt: [None if v is None else 100 * v for v in get(opt, "executable_rate")]
        print(f"| {t + 1} | {cell(pct('none'))} | {cell(pct('dpo'))} | {cell(get('none', 'mean'))} | "
              f"{cell(get('dpo', 'mean'))} | {cell(get('none', 'best'))} | {cell(get('dpo', 'best'))} |")
    print("\n| on test | none | dpo |\n|---|---|---|")
    for method in ("best TA", "best TIES", "best discovered"):
        vals = {opt: [next((r["test"] for r in d["table"] if r["method"] == method), None)
                      for d in rows[opt]] for opt in rows}
        print(f"| {method} | {cell(vals['none'])} | {cell(vals['dpo'])} |")
    losses = [d["iterations"][0].get("refined", {}) for d in rows["dpo"]]
    print("\nDPO metrics after iteration 1:", losses)


if __name__ == "__main__":
    main()
