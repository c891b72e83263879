"""Automatic torch threads follow how many cores are idle now, not the load average (which
also counts this process's own last phase)."""
from __future__ import annotations

import os

from selfdev.plugins.factory import threads


def test_idle_cores_is_a_share_of_the_cores():
    idle = threads.idle_cores(0.05)
    assert idle is not None and 0.0 <= idle <= (os.cpu_count() or 1)


def test_automatic_threads_follow_idle_cores(monkeypatch):
    want = max(1, min(2, os.cpu_count() or 1))
    monkeypatch.setattr(threads, "idle_cores", lambda window=0.1: float(want))
    monkeypatch.setattr(os, "getloadavg", lambda: (9.0, 9.0, 9.0))  # ignored: idleness is known
    assert threads.resolve_threads(0) == want
    monkeypatch.setattr(threads, "idle_cores", lambda window=0.1: 0.2)
    assert threads.resolve_threads(0) == 1
    assert threads.resolve_threads(3) == 3  # an explicit count is kept
    monkeypatch.setattr(threads, "idle_cores", lambda window=0.1: None)  # no /proc/stat
    assert threads.resolve_threads(0) == 1  # the load average decides
