"""Canonical JSON and the hashes built on it. Both are part of the store's contract.

Changing anything here changes every hash already written, so it must never change silently:
a new algorithm gets a new prefix (``b2:`` is BLAKE2b with a 32-byte digest).
"""
from __future__ import annotations

import json
from hashlib import blake2b
from typing import Any

HASH_PREFIX = "b2:"
DIGEST_SIZE = 32
GENESIS_HASH = ""
"""``prev_hash`` of the first event of every run."""

ENVELOPE_FIELDS = (
    "event_id",
    "run_id",
    "stream_version",
    "type",
    "type_version",
    "occurred_at",
    "source",
)

_encode = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
).encode


def canonical_json(value: Any) -> str:
    """Serialize ``value`` the one way the store hashes and stores it.

    Equivalent to ``json.dumps(value, sort_keys=True, separators=(",", ":"),
    ensure_ascii=False, allow_nan=False)``: keys sorted at every level, no whitespace, non-ASCII
    characters kept as they are (hashed as UTF-8), and NaN/Infinity rejected with
    ``ValueError``. Non-JSON types raise ``TypeError``. Tuples become lists and non-string keys
    become strings, as :func:`json.dumps` does. Unicode is not normalized.
    """
    return _encode(value)


def content_hash(data: bytes | str) -> str:
    """``"b2:" + blake2b(data, digest_size=32).hexdigest()``; text is hashed as UTF-8."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    return HASH_PREFIX + blake2b(data, digest_size=DIGEST_SIZE).hexdigest()


def event_hash(prev_hash: str, envelope: dict[str, Any], payload_json: str) -> str:
    """Hash of one event, chained to the previous event of its run.

    Equal to ``content_hash(canonical_json({"prev": prev_hash, "envelope": envelope,
    "payload": payload}))`` where ``payload_json == canonical_json(payload)``. The stored
    payload text is spliced in as it is, so :meth:`EventStore.verify` hashes exactly the bytes
    that read back (no re-parsing) and any edit of them, even a semantically neutral one,
    breaks the hash.
    """
    text = (
        '{"envelope":'
        + _encode(envelope)
        + ',"payload":'
        + payload_json
        + ',"prev":'
        + _encode(prev_hash)
        + "}"
    )
    return HASH_PREFIX + blake2b(text.encode("utf-8"), digest_size=DIGEST_SIZE).hexdigest()
