"""How many torch threads factory work (sampling, training, the tiny build) runs on."""
from __future__ import annotations

import os
import time

import selfdev


def idle_cores(window: float = 0.1) -> float | None:
    """Cores idle right now: the idle share of all CPU time over ``window`` seconds
    (``/proc/stat``), times the core count; None where ``/proc/stat`` cannot be read.

    Measured now, between two phases, when this process is idle itself: the 1-minute load
    average also counts this process's own last phase (two sandbox workers make it ~2 on a
    2-core machine), so a choice made from it kept the next phase on one thread with the
    machine otherwise free.
    """
    def sample() -> tuple[int, int]:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return idle, sum(fields[:8])

    try:
        idle0, total0 = sample()
        time.sleep(window)
        idle1, total1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    if total1 <= total0:
        return None
    return (os.cpu_count() or 1) * (idle1 - idle0) / (total1 - total0)


def resolve_threads(threads: int | None) -> int:
    """torch's CPU threads: ``threads`` if positive, else automatic.

    Automatic is min(2, cores) when that many cores are idle now, else 1 (cores: those not
    reserved with ``selfdev.reserve_cores``): on a shared 2-core
    machine two OpenMP threads that keep waiting for each other at barriers ran 3-5x *slower*
    than one thread (measured: a tiny-factory build took 56 s with 1 thread and 172 s with 2 at
    load 5). Where idleness cannot be measured, the 1-minute load average decides. Results do
    not depend on the thread count: the same weights, bit for bit, with 1 and 2 threads for a
    build and for ``dpo`` (tiny preset, 256 pairs, 64 steps) and ``sft`` refinements
    (tests/plugins/test_optimizers_dpo.py checks it). The matmuls and per-row sums split their
    outputs, not their sums, between threads; torch does split a sum of >= 32768 elements into
    one scalar, but in these losses such a sum only gives the logged loss, never a gradient.
    """
    if threads is not None and int(threads) > 0:
        return int(threads)
    cores = max(1, (os.cpu_count() or 1) - selfdev.reserved_cores())
    want = max(1, min(2, cores))
    idle = idle_cores()
    if idle is not None:
        return want if idle >= want - 0.5 else 1
    try:
        load = os.getloadavg()[0]
    except OSError:
        return want
    return want if load < cores / 2 else 1
