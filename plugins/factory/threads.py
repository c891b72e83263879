"""How many torch threads factory work (sampling, training, the tiny build) runs on."""
from __future__ import annotations

import os


def resolve_threads(threads: int | None) -> int:
    """torch's CPU threads: ``threads`` if positive, else automatic.

    Automatic is min(2, cores) on an idle machine and 1 when the 1-minute load average says
    the cores are busy: on a shared 2-core machine two OpenMP threads that keep waiting for each
    other at barriers ran 3-5x *slower* than one thread (measured: a tiny-factory build took
    56 s with 1 thread and 172 s with 2 at load 5). Results do not depend on the thread count
    (same weights, bit for bit, for a build with 1 and 2 threads).
    """
    if threads is not None and int(threads) > 0:
        return int(threads)
    cores = os.cpu_count() or 1
    want = max(1, min(2, cores))
    try:
        load = os.getloadavg()[0]
    except OSError:
        return want
    return want if load < cores / 2 else 1

