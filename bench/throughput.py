"""Candidate throughput: one ``digits`` iteration with ``local`` and with ``ray``, side by side.

    python bench/throughput.py [--candidates 3000] [--workers 2] [--seed 0]

Both runs use the same config (``grammar`` generator: the random-search control, which writes
candidates without a model, so the numbers are the executor's and the sandbox's, not a
generator's), the same seed and the same number of workers (``local``: sandbox children
driven from threads; ``ray``: actors, each with its own warm sandbox, on a local cluster
started before the clock starts). Only the candidate step is timed (``do_execute``: sandboxed
merge + dev evaluation + the driver appending the events); Ray's actor start-up and the
once-per-iteration ``ray.put`` of the domain state are inside it. It prints candidates/s for
each and Ray's overhead ratio (Ray's time / local's; the goal is <= 1.2), and checks that both
logs hold the same results.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--candidates", type=int, default=3000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    tmp = Path(tempfile.mkdtemp(prefix="selfdev-bench-throughput-"))
    os.environ.setdefault("SELFDEV_HOME", str(tmp / "home"))

    from selfdev.engine.config import from_dict
    from selfdev.engine.loop import Runner, start_run
    from selfdev.store import EventStore

    class TimedRunner(Runner):
        """A Runner that times its candidate step."""

        seconds = 0.0

        def do_execute(self, step):  # noqa: ANN001
            start = time.perf_counter()
            super().do_execute(step)
            self.seconds += time.perf_counter() - start
            self.executed = len(step.ids)

    def one(executor: dict) -> tuple[float, int, dict]:
        cfg = from_dict({"run": {"seed": args.seed, "iterations": 1,
                                 "candidates": args.candidates, "top_k": 1},
                         "domain": {"name": "digits"}, "generator": {"name": "grammar"},
                         "optimizer": {"name": "none"}, "executor": executor})
        store = EventStore(str(tmp / f"{executor['name']}.db"))
        runner = TimedRunner(store, start_run(store, cfg))
        runner.run()
        scores = {e.payload["candidate_id"]: e.payload["score"]
                  for e in store.iter_events(run_id=runner.run_id)
                  if e.type == "candidate.evaluated" and e.payload["split"] == "dev"}
        store.close()
        return runner.seconds, runner.executed, scores

    import ray

    rows = []
    local_s, n, local_scores = one({"name": "local", "workers": args.workers})
    rows.append(("local", local_s, n))
    t0 = time.perf_counter()
    ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False,
             _temp_dir=str(tmp / "ray"))
    init_s = time.perf_counter() - t0
    try:
        ray_s, n_ray, ray_scores = one({"name": "ray", "workers": args.workers})
    finally:
        ray.shutdown()
    rows.append(("ray", ray_s, n_ray))
    print(f"digits, grammar generator, {args.candidates} candidates generated, seed {args.seed}, "
          f"{args.workers} workers, {os.cpu_count()} CPUs; timed: the candidate step")
    print(f"{'executor':10s} {'candidates':>10s} {'seconds':>9s} {'cand/s':>8s}")
    for name, sec, count in rows:
        print(f"{name:10s} {count:10d} {sec:9.2f} {count / sec:8.1f}")
    ratio = ray_s / local_s
    print(f"ray overhead: {ratio:.2f}x local (goal <= 1.2); ray.init (not timed above): "
          f"{init_s:.1f} s")
    same = local_scores == ray_scores
    print(f"same dev scores in both logs: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
