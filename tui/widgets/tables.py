"""The leaderboard and the per-iteration table, both as of the playhead."""
from __future__ import annotations

import heapq
from collections import OrderedDict
from bisect import bisect_left, insort
from typing import Any, Iterable

from textual.coordinate import Coordinate
from textual.widgets import DataTable

from selfdev.engine.state import CandidateState, RunState
from selfdev.tui.data import fmt_score

#: rows the leaderboard shows (the header says how many are scored in all)
LEADERBOARD_ROWS = 50


def top_candidates(state: RunState, n: int = LEADERBOARD_ROWS) -> list[CandidateState]:
    """``state.ranked()[:n]`` without sorting every candidate (same order, same ties)."""
    pool = [c for c in state.candidates.values() if c.dev is not None]
    if len(pool) <= 4 * n:
        return state.ranked()[:n]
    return heapq.nsmallest(n, pool, key=lambda c: (-c.dev, c.iteration, c.index))


def scored_count(state: RunState) -> int:
    return sum(1 for c in state.candidates.values() if c.dev is not None)


def _rate(x: Any) -> str:
    return "-" if x is None else f"{x:.0%}"


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
                         fmt_score(c.dev), fmt_score(c.test), (c.ast_hash or "-")[:14]))
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


def loss_and_margin(stats: dict[str, Any]) -> tuple[Any, Any]:
    loss = stats.get("loss", stats.get("train_loss"))
    margin = stats.get("margin", stats.get("reward_margin"))
    return loss, margin


class IterationTable(DataTable):
    """One row per iteration: T, generated / screened / executed / scored, executable rate,
    best and mean dev score, preference pairs, DPO loss and margin."""

    COLUMNS = ("it", "T", "gen", "screened", "executed", "scored", "exec %", "best", "mean",
               "pairs", "DPO loss", "margin")

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self._rows: list[tuple] = []

    def on_mount(self) -> None:
        self.add_columns(*self.COLUMNS)

    def show_stats(self, stats: list[dict[str, Any]]) -> None:
        rows = []
        for s in stats:
            loss, margin = loss_and_margin(s)
            rows.append((str(s["iteration"]), fmt_score(s.get("temperature")),
                         str(s["generated"]), str(s["screened"]), str(s["executed"]),
                         str(s["scored"]), _rate(s.get("executable_rate")),
                         fmt_score(s.get("best")), fmt_score(s.get("mean")),
                         fmt_score(s.get("pairs")), fmt_score(loss), fmt_score(margin)))
        old = self._rows
        if rows == old:
            return
        for i in range(min(len(old), len(rows))):
            for j, (before, after) in enumerate(zip(old[i], rows[i])):
                if before != after:
                    self.update_cell_at(Coordinate(i, j), after, update_width=True)
        for i in range(len(rows), len(old)):
            self.remove_row(str(i))
        for i in range(len(old), len(rows)):
            self.add_row(*rows[i], key=str(i))
        self._rows = rows


def iteration_detail(s: dict[str, Any]) -> str:
    """The playhead's iteration in words (fits a narrow terminal better than the table)."""
    loss, margin = loss_and_margin(s)
    parts = [
        f"iteration {s['iteration']}",
        f"T {fmt_score(s.get('temperature'))}",
        f"generated {s['generated']}",
        f"screened {s['screened']} (accepted {s.get('accepted', 0)}, "
        f"duplicates {s.get('duplicates', 0)})",
        f"executed {s['executed']} (ok {s.get('executed_ok', 0)})",
        f"scored {s['scored']}",
        f"executable {_rate(s.get('executable_rate'))}",
        f"best {fmt_score(s.get('best'))}",
        f"mean {fmt_score(s.get('mean'))}",
    ]
    if "pairs" in s:
        parts.append(f"pairs {s['pairs']}")
    if loss is not None or margin is not None:
        parts.append(f"DPO loss {fmt_score(loss)} margin {fmt_score(margin)}")
    return " · ".join(parts)
