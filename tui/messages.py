"""Messages the TUI's workers and widgets post (dataclasses, as in toolong's messages.py)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from textual.message import Message


@dataclass
class EventsLoaded(Message, bubble=False):
    """The loader indexed more events, or the writer came or went (posted from its thread;
    floods coalesce, so each one says everything the loader knows)."""

    total: int
    done: bool  # the whole run was read once (from now on it is followed)
    live: bool  # a writer holds the database and the run has not ended
    head: tuple[int, str]  # the run's last (stream_version, hash) read

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, EventsLoaded)


@dataclass
class Verified(Message, bubble=False):
    """The hash-chain check of a run finished."""

    result: Any  # store.VerifyResult
    head: tuple[int, str]


@dataclass
class JumpTo(Message):
    """Move the playhead so that event ``index`` (0-based) is the last one folded."""

    index: int


@dataclass
class OpenCandidate(Message):
    """Open the candidate view for ``candidate_id``."""

    candidate_id: str
