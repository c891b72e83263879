"""Time-sortable event ids and UTC timestamps (no extra dependency)."""

from __future__ import annotations

import os
import threading
import time
from datetime import UTC, datetime

_lock = threading.Lock()
_last_ms = -1
_last_rand = 0
_RAND_BITS = 74  # UUIDv7: 12 bits rand_a + 62 bits rand_b
_RAND_MAX = (1 << _RAND_BITS) - 1
_B_BITS = 62
_B_MASK = (1 << _B_BITS) - 1
_VARIANT = 0b10 << 62


def _fresh_random() -> int:
    # leave the top bit clear so increments have room before they overflow
    return int.from_bytes(os.urandom(10), "big") >> (80 - _RAND_BITS + 1)


def new_event_ids(n: int) -> list[str]:
    """``n`` UUIDv7 strings, strictly increasing within this process.

    48 bits of Unix milliseconds, then 74 random bits. Within one millisecond (or if the clock
    goes back) the previous value is incremented instead, like a monotonic ULID, so ids sort by
    creation order as text and as integers. The clock is read once per call.
    """
    global _last_ms, _last_rand
    out: list[str] = []
    with _lock:
        ms = time.time_ns() // 1_000_000
        if ms > _last_ms:
            rand = _fresh_random()
        else:
            ms = _last_ms
            rand = _last_rand + 1
        while n > 0:
            if rand > _RAND_MAX:
                ms += 1
                rand = _fresh_random()
            # ms, version and rand_a are shared by ids until rand_b wraps: format them once
            high = f"{(ms << 16) | (0x7 << 12) | (rand >> _B_BITS):016x}"
            prefix = f"{high[:8]}-{high[8:12]}-{high[12:16]}-"
            b = rand & _B_MASK
            take = min(n, _B_MASK - b + 1, _RAND_MAX - rand + 1)
            for low in range(_VARIANT | b, (_VARIANT | b) + take):
                h = f"{low:016x}"
                out.append(f"{prefix}{h[:4]}-{h[4:]}")
            rand += take
            n -= take
        _last_ms, _last_rand = ms, rand - 1
    return out


def new_event_id() -> str:
    """One id from :func:`new_event_ids`."""
    return new_event_ids(1)[0]


def utc_now() -> str:
    """ISO-8601 UTC with microseconds, e.g. ``2026-05-09T07:35:25.123456Z``."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
