"""Messages the TUI's workers and widgets post (dataclasses, as in toolong's messages.py)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from textual.message import Message


@dataclass
class EventsLoaded(Message, bubble=False):
    """The loader indexed more events (posted from its thread; floods coalesce)."""

    total: int
    done: bool

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
