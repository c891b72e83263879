"""The leaderboard pane: the scored candidates, best first, as of the playhead."""
from __future__ import annotations

import heapq
from bisect import bisect_left, insort
from collections import OrderedDict
from typing import Iterable

from textual import on
from textual.app import ComposeResult
from textual.widgets import DataTable

from selfdev.engine.api import format_score
from selfdev.engine.state import CandidateState, RunState
from selfdev.tui.messages import OpenCandidate
from selfdev.tui.widgets.pane import Frame, Pane

#: rows the leaderboard shows (the header says how many are scored in all)
LEADERBOARD_ROWS = 50


def top_candidates(state: RunState, n: int = LEADERBOARD_ROWS) -> list[CandidateState]:
    """``state.ranked()[:n]`` without sorting every candidate (same order, same ties)."""
    pool = [c for c in state.candidates.values() if c.dev is not None]
    if len(pool) <= 4 * n:
        return state.ranked()[:n]
    return heapq.nsmallest(n, pool, key=lambda c: (-c.dev, c.iteration, c.index))


class Ranking:
    """The scored candidates in ``RunState.ranked()`` order, kept up to date by the
    candidates that changed instead of re-sorting all of them at every playhead step."""

    def __init__(self) -> None:
        self.keys: list[tuple] = []  # (-dev, iteration, index, candidate_id), ascending
        self.by_id: dict[str, tuple] = {}

    def rebuild(self, state: RunState) -> None:
        self.by_id = {c.candidate_id: (-c.dev, c.iteration, c.index, c.candidate_id)
                      for c in state.candidates.values() if c.dev is not None}
        self.keys = sorted(self.by_id.values())

    def update(self, state: RunState, candidate_ids: Iterable[str]) -> None:
        for cid in set(candidate_ids):
            old = self.by_id.pop(cid, None)
            if old is not None:
                del self.keys[bisect_left(self.keys, old)]
            c = state.candidates.get(cid)
            if c is not None and c.dev is not None:
                key = (-c.dev, c.iteration, c.index, cid)
                insort(self.keys, key)
                self.by_id[cid] = key

    def top(self, n: int) -> list[str]:
        return [k[3] for k in self.keys[:n]]

    def __len__(self) -> int:
        return len(self.keys)


class Leaderboard(DataTable):
    """rank, candidate, iteration, status, dev, test, novelty (AST) hash; Enter opens one.

    Rows are keyed by rank, so a playhead step changes a few cells in place instead of
    rebuilding the table (which measures every cell again)."""

    COLUMNS = (("rank", "#"), ("candidate", "candidate"), ("iteration", "it"),
               ("status", "status"), ("dev", "dev"), ("test", "test"), ("hash", "novelty hash"))

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self._rows: list[tuple] = []
        self.ranking = Ranking()
        self._cache: OrderedDict[int, tuple[int, list, dict]] = OrderedDict()

    def on_mount(self) -> None:
        for key, label in self.COLUMNS:
            self.add_column(label, key=key)

    def show_state(self, state: RunState, changed: Iterable[str] | None = None) -> int:
        """Show the top candidates; ``changed``: the candidates whose scores may have changed
        since the last call (None: any). Returns how many are scored in all."""
        if changed is None:
            # the ranking after k events never changes (the log only grows): jumping back and
            # forth between the same places (start / end) reuses the last few rankings
            cached = self._cache.get(state.events)
            if cached is not None and cached[0] == state.position:
                self.ranking.keys, self.ranking.by_id = list(cached[1]), dict(cached[2])
                self._cache.move_to_end(state.events)
            else:
                self.ranking.rebuild(state)
                self._cache[state.events] = (state.position, list(self.ranking.keys),
                                             dict(self.ranking.by_id))
                while len(self._cache) > 4:
                    self._cache.popitem(last=False)
        else:
            self.ranking.update(state, changed)
        rows = []
        cands = state.candidates
        for rank, cid in enumerate(self.ranking.top(LEADERBOARD_ROWS), 1):
            c = cands[cid]
            rows.append((str(rank), c.candidate_id, str(c.iteration), c.status,
                         format_score(c.dev), format_score(c.test), (c.ast_hash or "-")[:14]))
        self.set_rows(rows)
        return len(self.ranking)

    def set_rows(self, rows: list[tuple]) -> None:
        """Show ``rows`` (one per rank). Rows are never removed: ranks beyond the scored
        candidates are blanked, because removing and re-adding rows makes the table measure
        every cell again (a jump to the start and back would cost ~100 ms)."""
        old = self._rows
        if rows == old:
            return
        blank = ("",) * len(self.COLUMNS)
        keys = [k for k, _ in self.COLUMNS]
        widths = {c.key.value: c.content_width for c in self.columns.values()}
        for i in range(max(len(rows), len(old))):
            before = old[i] if i < len(old) else (blank if i < self.row_count else None)
            after = rows[i] if i < len(rows) else blank
            if before is None:
                self.add_row(*after, key=str(i + 1))
            elif before != after:
                for key, b, a in zip(keys, before, after):
                    if b != a:
                        grow = len(a) > widths.get(key, 0)
                        self.update_cell(str(i + 1), key, a, update_width=grow)
        self._rows = rows

    @property
    def shown(self) -> int:
        """How many ranks hold a candidate (the table may have blank rows after them)."""
        return len(self._rows)

    @property
    def selected_candidate(self) -> str | None:
        if not self._rows or not (0 <= self.cursor_row < len(self._rows)):
            return None
        return self._rows[self.cursor_row][1]

    def candidate_at(self, row_key: str) -> str | None:
        i = int(row_key) - 1
        return self._rows[i][1] if 0 <= i < len(self._rows) else None


class LeaderboardPane(Pane):
    """The leaderboard under a label saying how many candidates are scored; ``enter`` on a row
    posts :class:`OpenCandidate`."""

    def __init__(self, *, active: bool = False) -> None:
        super().__init__("leaderboard", active=active)
        self.board = Leaderboard(id="leaderboard")

    def compose(self) -> ComposeResult:
        yield self.label
        yield self.board

    def focus_body(self) -> None:
        self.board.focus()

    def show(self, frame: Frame) -> None:
        board, index, k = self.board, frame.index, frame.cursor
        span = self.span(frame)
        if span is None:
            scored = board.show_state(frame.state)
        else:
            # only a candidate.evaluated event between the two playheads moves the ranking
            cids = [index.cids[i] for i in range(*span)
                    if index.types[i] == "candidate.evaluated" and index.cids[i]]
            scored = board.show_state(frame.state, cids) if cids else len(board.ranking)
        more = f" (top {board.shown} shown)" if board.shown < scored else ""
        self.label.text = (f"leaderboard as of event {k:,} · {scored:,} scored{more} · "
                           "enter: open candidate")
        self.drawn = k

    @on(DataTable.RowSelected, "#leaderboard")
    def _row_selected(self, message: DataTable.RowSelected) -> None:
        message.stop()
        cid = self.board.candidate_at(str(message.row_key.value))
        if cid:
            self.post_message(OpenCandidate(cid))
