"""Canonical JSON and the hashes built on it. Both are part of the store's contract.

Changing anything here changes every hash already written, so it must never change silently:
a new algorithm gets a new prefix (``b2:`` is BLAKE2b with a 32-byte digest).
"""

from __future__ import annotations

import json
from hashlib import blake2b
from json.encoder import encode_basestring as _string  # the ensure_ascii=False escaper
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
"""The hashed envelope, in the order of the ``events`` columns that hold it."""

_encode = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
).encode


def _not_serializable(o: Any) -> Any:
    raise TypeError(f"Object of type {type(o).__name__} is not JSON serializable")


try:  # the C encoder, built once: JSONEncoder.encode builds a new one (and a closure) per call
    from json.encoder import c_make_encoder as _c_make_encoder
except ImportError:  # pragma: no cover - CPython always has it
    _c_make_encoder = None

if _c_make_encoder is not None:
    # markers=None: no circular-reference bookkeeping (a cycle hits RecursionError instead)
    _c_encode = _c_make_encoder(
        None, _not_serializable, _string, None, ":", ",", True, False, False
    )

    def _canonical(value: Any) -> str:
        if type(value) is str:
            return _string(value)
        return "".join(_c_encode(value, 0))

else:  # pragma: no cover
    _canonical = _encode

_scan = json.JSONDecoder().scan_once


def parse_json(text: str) -> Any:
    """``json.loads(text)``, faster for well-formed compact JSON (what the store writes)."""
    try:
        value, end = _scan(text, 0)
    except StopIteration:
        return json.loads(text)  # raises the usual JSONDecodeError
    if end != len(text):
        return json.loads(text)
    return value


def canonical_json(value: Any) -> str:
    """Serialize ``value`` the one way the store hashes and stores it.

    Equivalent to ``json.dumps(value, sort_keys=True, separators=(",", ":"),
    ensure_ascii=False, allow_nan=False)``: keys sorted at every level, no whitespace, non-ASCII
    characters kept as they are (hashed as UTF-8), and NaN/Infinity rejected with
    ``ValueError``. Non-JSON types raise ``TypeError``. Tuples become lists and non-string keys
    become strings, as :func:`json.dumps` does. Unicode is not normalized.
    """
    return _canonical(value)


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
        + _canonical(envelope)
        + ',"payload":'
        + payload_json
        + ',"prev":'
        + _canonical(prev_hash)
        + "}"
    )
    return HASH_PREFIX + blake2b(text.encode("utf-8"), digest_size=DIGEST_SIZE).hexdigest()


# The same text as event_hash() builds, written out field by field (keys in sorted order):
# about twice as fast as encoding an envelope dict, which matters for verify() and append().
_EVENT_TEMPLATE = (
    '{"envelope":{"event_id":%s,"occurred_at":%s,"run_id":%s,"source":%s,'
    '"stream_version":%d,"type":%s,"type_version":%d},"payload":%s,"prev":%s}'
)


def event_hash_fields(
    prev_hash: str,
    event_id: str,
    run_id: str,
    stream_version: int,
    type_: str,
    type_version: int,
    occurred_at: str,
    source: str,
    payload_json: str,
) -> str:
    """:func:`event_hash` taking the envelope as arguments (what the store calls).

    Fills :data:`_EVENT_TEMPLATE` when every field has its documented type (``str``, and
    exactly ``int`` for the two versions, never ``bool``); otherwise builds the envelope and
    calls :func:`event_hash`, so a tampered value of another type still hashes the canonical
    way (and differently).
    """
    if (
        type(event_id) is str
        and type(run_id) is str
        and type(stream_version) is int
        and type(type_) is str
        and type(type_version) is int
        and type(occurred_at) is str
        and type(source) is str
        and type(prev_hash) is str
        and type(payload_json) is str
    ):
        text = _EVENT_TEMPLATE % (
            _string(event_id), _string(occurred_at), _string(run_id), _string(source),
            stream_version, _string(type_), type_version, payload_json, _string(prev_hash),
        )  # fmt: skip
        return HASH_PREFIX + blake2b(text.encode("utf-8"), digest_size=DIGEST_SIZE).hexdigest()
    envelope = dict(
        zip(
            ENVELOPE_FIELDS,
            (event_id, run_id, stream_version, type_, type_version, occurred_at, source),
        )
    )
    return event_hash(prev_hash, envelope, payload_json)
