"""Exceptions raised by the event store. Every one is a :class:`StoreError`."""

from __future__ import annotations

from typing import Any


class StoreError(Exception):
    """Base class of every error the store raises on purpose."""


class ReadOnlyError(StoreError):
    """A write was attempted on a store opened with ``readonly=True``."""


class InvalidEventError(StoreError, ValueError):
    """An event (or run id) given to :meth:`EventStore.append` is malformed."""


class ConcurrencyError(StoreError):
    """``expected_version`` did not match the run's current stream version."""

    def __init__(self, run_id: str, expected: int, actual: int) -> None:
        self.run_id = run_id
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"run {run_id!r} is at stream version {actual}, expected {expected}: "
            "another writer appended to it"
        )


class BlobNotFoundError(StoreError, KeyError):
    """No blob is stored under that ref."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return Exception.__str__(self)


class WriterLockedError(StoreError):
    """Another store (this process or another) holds the file's single-writer lock.

    ``holder`` is what the holder wrote into the lock file (pid, host, command, since,
    writer), or ``{}`` when it could not be read.
    """

    def __init__(self, path: str, holder: dict[str, Any]) -> None:
        self.path = path
        self.holder = holder
        if holder.get("pid"):
            who = f"pid {holder['pid']}"
            host = holder.get("host")
            if host:
                import socket

                if host != socket.gethostname():
                    who += f" on host {host}"
            what = holder.get("command") or "?"
            if holder.get("writer"):
                what = f"{holder['writer']}: {what}"
            message = (
                f"database {path} is being written by {who} ({what}) "
                f"since {holder.get('since', '?')}; open it read-only or wait"
            )
        else:
            message = (
                f"database {path} is being written by another process; open it read-only or wait"
            )
        super().__init__(message)
