"""Running toymath's training jobs: in this process, or in parallel worker processes.

A worker is ``python -m selfdev.plugins.domains.toymath.jobs``: it reads one job (JSON) on
stdin, trains, and reports on stdout in lines that start with ``@@selfdev-toymath``: one
``advance N`` per training step (the parent moves its progress bar) and one final ``result``
with the training stats.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from typing import Any

import selfdev
from selfdev import SelfdevError
from selfdev.plugins.domains.toymath.training import run_job

_MARK = "@@selfdev-toymath "


class PipedProgress:
    """A worker's progress task: each advance is a line on stdout, read by the parent."""

    def advance(self, n: int = 1) -> None:
        print(f"{_MARK}advance {n}", flush=True)

    def close(self) -> None:
        pass


def _task(progress: Any, desc: str, total: int) -> Any:
    return (progress or selfdev.NullProgress()).task(desc, total=total)


def run_jobs(jobs: list[dict[str, Any]], threads: int, progress=None, isolate: bool = True) -> list[dict[str, Any]]:
    """Run training jobs, in parallel worker processes when ``isolate`` (``threads`` cores in all).

    Workers start with ``OMP_WAIT_POLICY=PASSIVE`` (unless set): on shared, busy cores OpenMP's
    default spin-waiting made 2-thread training up to 5x slower than 1 thread (measured here).
    In this process (``isolate=False``) training uses at most ``threads`` threads, never more than
    torch already has.
    """
    if not jobs:
        return []
    if not isolate:
        import torch

        out = []
        for job in jobs:
            task = _task(progress, job["desc"], job["steps"])
            with selfdev.torch_threads(min(threads, torch.get_num_threads())):
                out.append(run_job(job, task))
            task.close()
        return out
    workers = max(1, min(len(jobs), threads))
    per = max(1, threads // workers)
    env = dict(os.environ)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    env["OMP_NUM_THREADS"] = str(per)
    results: list[dict[str, Any] | None] = [None] * len(jobs)
    errors: list[str] = []

    def one(i: int) -> None:
        job = dict(jobs[i], threads=per)
        task = _task(progress, job["desc"], job["steps"])
        proc = subprocess.Popen([sys.executable, "-m", __name__],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=env)
        err: list[str] = []
        t = threading.Thread(target=lambda: err.extend(proc.stderr), daemon=True)
        t.start()
        proc.stdin.write(json.dumps(job))
        proc.stdin.close()
        for line in proc.stdout:
            if line.startswith(_MARK + "advance"):
                task.advance(int(line.split()[-1]))
            elif line.startswith(_MARK + "result"):
                results[i] = json.loads(line[len(_MARK + "result "):])
        proc.wait()
        t.join(timeout=5)
        task.close()
        if proc.returncode != 0 or results[i] is None:
            errors.append(f"{job['desc']} failed (exit {proc.returncode}): {''.join(err)[-2000:]}")

    pending = list(range(len(jobs)))
    while pending:
        batch, pending = pending[:workers], pending[workers:]
        ths = [threading.Thread(target=one, args=(i,)) for i in batch]
        for th in ths:
            th.start()
        for th in ths:
            th.join()
        if errors:
            raise SelfdevError("toymath build failed: " + errors[0])
    return results  # type: ignore[return-value]


def main() -> None:  # pragma: no cover - runs in a worker process
    job = json.loads(sys.stdin.read())
    with selfdev.torch_threads(int(job.get("threads", 1))):
        stats = run_job(job, PipedProgress())
    print(f"{_MARK}result {json.dumps(stats)}", flush=True)


if __name__ == "__main__":  # pragma: no cover
    main()
