"""Same-budget controls on `digits`: does the LLM factory beat random programs and an
evolutionary coefficient search given exactly as many evaluations?

    python bench/same_budget.py [--seeds 0 1 2 3 4] [--iterations 3] [--candidates 80]
                                [--cmaes-population 20] [--db PATH]

Every arm gets ``iterations x candidates`` candidate slots (a slot the factory fills with a
broken or repeated program is spent all the same) and runs through the same engine, sandbox,
evaluator and log as the factory:

* ``factory + DPO``: the demo's tiny factory refined by DPO (``selfdev demo``'s settings but
  the candidate count);
* ``grammar``: random programs from the grammar of merge primitives (optimizer ``none``);
* ``cmaes``: CMA-ES over per-layer TIES coefficients (a λ and a density per layer: 6 numbers
  on digits), one generation per iteration (population = candidates), the factory's schedule;
* ``cmaes per expert``: a weight per expert and layer plus a density per layer (12 numbers,
  mergekit-evolve's parameterisation);
* ``…, pop P``: the same budget spent as ``budget / P`` generations of ``P``, the way a CMA-ES
  user would spend it (CMA-ES's default population for 6-12 numbers is 9-11);
* ``best swept TA / TIES``: the best of each run's swept baselines by dev (the same models in
  every run: the digits seed and experts do not depend on the run seed).

Per arm, over the seeds: the best program by dev (its test score) and the best dev, as
mean ± sd and a 95 % t-interval of the mean, plus the evaluations actually scored and the wall
time per run. Runs are named ``same-budget/<arm>/seed<k>``; with ``--db`` an interrupted grid
resumes, finished runs are read back instead of redone. Prints a markdown table.
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
from pathlib import Path

#: two-sided 95 % Student t quantiles by degrees of freedom (1..10), else the normal one
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
       9: 2.262, 10: 2.228}


def arms(args: argparse.Namespace) -> dict[str, dict]:
    """arm label -> the configuration tables that differ between arms."""
    budget = args.iterations * args.candidates
    pop = args.cmaes_population
    shape = {"iterations": args.iterations, "candidates": args.candidates}
    out = {
        "factory + DPO": {"run": dict(shape), "generator": {"name": "tiny"},
                          "optimizer": {"name": "dpo"}},
        "grammar": {"run": dict(shape), "generator": {"name": "grammar"},
                    "optimizer": {"name": "none"}},
    }
    many = pop and budget % pop == 0 and budget // pop != args.iterations
    for label, per_expert in (("cmaes", False), ("cmaes per expert", True)):
        gen = {"name": "cmaes", "method": "ties", "groups": "layer", "per_expert": per_expert}
        out[label] = {"run": dict(shape), "generator": dict(gen), "optimizer": {"name": "none"}}
        if many:
            out[f"{label}, pop {pop}"] = {"run": {"iterations": budget // pop, "candidates": pop},
                                          "generator": dict(gen), "optimizer": {"name": "none"}}
    return out


def same_setup(state, data: dict) -> bool:
    """Whether a recorded run was made from the arm's tables (a reused name is not enough)."""
    config = state.started.config
    return all(config.get(section, {}).get(key) == value
               for section, table in data.items() for key, value in table.items())


def interval(values: list[float]) -> str:
    """``mean ± sd [low, high]`` (95 % t-interval of the mean)."""
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    mean = statistics.mean(values)
    if len(values) == 1:
        return f"{mean:.1f}"
    sd = statistics.stdev(values)
    half = T95.get(len(values) - 1, 1.96) * sd / math.sqrt(len(values))
    return f"{mean:.1f} ± {sd:.1f} [{mean - half:.1f}, {mean + half:.1f}]"


def wall_seconds(store, run_id: str) -> float:
    """Seconds from ``run.started`` to the last event of a run, from the log's timestamps (so a
    run read back from ``--db`` reports its time too)."""
    from datetime import datetime

    stamps = [e.occurred_at for e in store.iter_events(run_id=run_id)]
    first, last = (datetime.fromisoformat(t.replace("Z", "+00:00")) for t in (stamps[0], stamps[-1]))
    return (last - first).total_seconds()


def finished_runs(store) -> dict[str, object]:
    """run name -> folded state, for the finished runs of the database."""
    from selfdev.engine.runs import load_state

    out = {}
    for run_id in store.run_ids():
        state = load_state(store, run_id)
        if state.finished is not None and state.started is not None:
            out[state.started.config.get("run", {}).get("name", "")] = state
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--candidates", type=int, default=80)
    parser.add_argument("--cmaes-population", type=int, default=20,
                        help="population of the many-generations CMA-ES arm (0: leave it out)")
    parser.add_argument("--db", default=None, help="database (reused: finished runs are kept)")
    args = parser.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

    from selfdev.engine.config import from_dict
    from selfdev.engine.loop import run_config
    from selfdev.store import EventStore

    db = Path(args.db or Path(tempfile.mkdtemp()) / "same_budget.db")
    grid = arms(args)
    states: dict[str, list] = {label: [] for label in grid}
    seconds: dict[str, list[float]] = {label: [] for label in grid}
    with EventStore(db) as store:
        done = finished_runs(store)
        for seed in args.seeds:
            for label, tables in grid.items():
                name = f"same-budget/{label}/seed{seed}"
                data = {"domain": {"name": "digits"}, **tables}
                data["run"] = {**tables["run"], "seed": seed, "name": name}
                if name in done and same_setup(done[name], data):
                    states[label].append(done[name])
                    print(f"{name}: {done[name].run_id} (already in the database)", file=sys.stderr)
                    continue
                state = run_config(store, from_dict(data))
                states[label].append(state)
                print(f"{name}: {state.run_id} {wall_seconds(store, state.run_id):.0f} s",
                      file=sys.stderr)
        for label in grid:
            seconds[label] = [wall_seconds(store, s.run_id) for s in states[label]]

    def best(state):
        ranked = state.ranked()
        return ranked[0] if ranked else None

    def swept(state, method):
        group = [b for b in state.baselines.values() if b.method == method and b.dev is not None]
        return max(group, key=lambda b: b.dev) if group else None

    print(f"digits; seeds {args.seeds}; budget {args.iterations * args.candidates} candidate "
          f"evaluations per run; database {db}\n")
    print("| arm | iterations x candidates | best-by-dev program: test | best dev | "
          "scored evaluations | s / run |")
    print("|---|---|---|---|---|---|")
    for label, tables in grid.items():
        runs = states[label]
        shape = f"{tables['run']['iterations']} x {tables['run']['candidates']}"
        top = [best(s) for s in runs]
        scored = [sum(1 for c in s.candidates.values() if c.dev is not None) for s in runs]
        secs = f"{statistics.mean(seconds[label]):.0f}" if seconds[label] else "-"
        print(f"| {label} | {shape} | {interval([c.test for c in top if c])} | "
              f"{interval([c.dev for c in top if c])} | {statistics.mean(scored):.0f} | {secs} |")
    any_runs = next(iter(states.values()))
    for method, title in (("task_arithmetic", "best swept TA"), ("ties", "best swept TIES")):
        rows = [swept(s, method) for s in any_runs]
        rows = [r for r in rows if r is not None]
        if rows:
            params = " ".join(f"{k} {v}" for k, v in rows[0].params.items())
            print(f"| {title} ({params}) | swept grid (18 baselines) | "
                  f"{interval([r.test for r in rows])} | {interval([r.dev for r in rows])} | "
                  f"- | - |")
    total = sum(sum(v) for v in seconds.values())
    print(f"\n{sum(len(v) for v in states.values())} runs, {total / 60:.1f} min of run wall time "
          f"in all (from the log's timestamps).")


if __name__ == "__main__":
    main()
