"""Time-sortable event ids and UTC timestamps (no extra dependency)."""
from __future__ import annotations

import os
import threading
import time
from datetime import datetime, timezone

_lock = threading.Lock()
_last_ms = -1
_last_rand = 0
_RAND_BITS = 74  # UUIDv7: 12 bits rand_a + 62 bits rand_b
_RAND_MAX = (1 << _RAND_BITS) - 1


def new_event_ids(n: int) -> list[str]:
    """``n`` UUIDv7 strings, strictly increasing within this process.

    48 bits of Unix milliseconds, then 74 random bits. Within one millisecond (or if the clock
    goes back) the previous value is incremented instead, like a monotonic ULID, so ids sort by
    creation order as text and as integers.
    """
    global _last_ms, _last_rand
    out = []
    with _lock:
        for _ in range(n):
            ms = time.time_ns() // 1_000_000
            if ms > _last_ms:
                # leave the top bit clear so increments have room before they overflow
                rand = int.from_bytes(os.urandom(10), "big") >> 7
            else:
                ms = _last_ms
                rand = _last_rand + 1
                if rand > _RAND_MAX:
                    ms += 1
                    rand = int.from_bytes(os.urandom(10), "big") >> 7
            _last_ms, _last_rand = ms, rand
            value = (
                (ms << 80)
                | (0x7 << 76)
                | ((rand >> 62) << 64)
                | (0b10 << 62)
                | (rand & ((1 << 62) - 1))
            )
            h = f"{value:032x}"
            out.append(f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}")
    return out


def new_event_id() -> str:
    """One id from :func:`new_event_ids`."""
    return new_event_ids(1)[0]


def utc_now() -> str:
    """ISO-8601 UTC with microseconds, e.g. ``2026-05-09T07:35:25.123456Z``."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
