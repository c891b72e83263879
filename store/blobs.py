"""Content-addressed blobs: the ``blobs`` table (``hash``, ``size``, ``content``).

A blob's ref is :func:`content_hash` of its bytes, so storing the same bytes twice stores them
once, and a blob is checked by hashing what reads back (:func:`problem`). Text is stored as its
UTF-8 bytes. These functions work inside the caller's connection or transaction;
:class:`~.eventstore.EventStore` supplies both (and its locks).
"""

from __future__ import annotations

import sqlite3

from .canonical import content_hash
from .errors import BlobNotFoundError


def as_bytes(data: bytes | str) -> bytes:
    """What :func:`put` stores for ``data``: text as UTF-8, any bytes-like object as bytes."""
    if isinstance(data, str):
        return data.encode("utf-8")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"blob data must be bytes or str, not {type(data).__name__}")
    return bytes(data)


def _read_back(content: object) -> object:
    """A stored ``content`` value as bytes (text if someone stored text behind our back)."""
    return content.encode("utf-8") if isinstance(content, str) else content


def put(conn: sqlite3.Connection, data: bytes) -> str:
    """Insert ``data`` unless its ref is already stored; returns the ref."""
    ref = content_hash(data)
    conn.execute(
        "INSERT OR IGNORE INTO blobs (hash, size, content) VALUES (?, ?, ?)",
        (ref, len(data), data),
    )
    return ref


def get(conn: sqlite3.Connection, ref: str) -> bytes:
    row = conn.execute("SELECT content FROM blobs WHERE hash = ?", (ref,)).fetchone()
    if row is None:
        raise BlobNotFoundError(f"no blob {ref}")
    return bytes(_read_back(row[0]))  # type: ignore[arg-type]


def has(conn: sqlite3.Connection, ref: str) -> bool:
    return conn.execute("SELECT 1 FROM blobs WHERE hash = ?", (ref,)).fetchone() is not None


def problem(ref: str, size: object, content: object) -> str | None:
    """What is wrong with a stored blob row, or None when its content matches ref and size."""
    data = _read_back(content)
    if not isinstance(data, bytes) or content_hash(data) != ref:
        return f"blob {ref}: content does not match its ref"
    if size != len(data):
        return f"blob {ref}: size {size} does not match its content ({len(data)})"
    return None
