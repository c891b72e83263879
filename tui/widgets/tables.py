"""The leaderboard and the per-iteration table, both as of the playhead."""
from __future__ import annotations

import heapq
from typing import Any

from textual.widgets import DataTable

from engine.state import CandidateState, RunState
from tui.data import fmt_score

#: rows the leaderboard shows (the header says how many are scored in all)
LEADERBOARD_ROWS = 200


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


class Leaderboard(DataTable):
    """rank, candidate, iteration, status, dev, test, novelty (AST) hash; Enter opens one."""

    COLUMNS = (("rank", "#"), ("candidate", "candidate"), ("iteration", "it"),
               ("status", "status"), ("dev", "dev"), ("test", "test"), ("hash", "novelty hash"))

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self._rows: list[tuple] = []

    def on_mount(self) -> None:
        for key, label in self.COLUMNS:
            self.add_column(label, key=key)

    def show_state(self, state: RunState) -> int:
        """Show the top candidates; returns how many are scored in all."""
        rows = []
        for rank, c in enumerate(top_candidates(state), 1):
            rows.append((str(rank), c.candidate_id, str(c.iteration), c.status,
                         fmt_score(c.dev), fmt_score(c.test), (c.ast_hash or "-")[:14]))
        if rows != self._rows:
            selected = self.selected_candidate
            self._rows = rows
            self.clear()
            for row in rows:
                self.add_row(*row, key=row[1])
            if selected is not None:
                for i, row in enumerate(rows):
                    if row[1] == selected:
                        self.move_cursor(row=i, animate=False, scroll=False)
                        break
        return len(rows) if len(rows) < LEADERBOARD_ROWS else scored_count(state)

    @property
    def selected_candidate(self) -> str | None:
        if not self._rows or not (0 <= self.cursor_row < len(self._rows)):
            return None
        return self._rows[self.cursor_row][1]


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
        if rows != self._rows:
            self._rows = rows
            cursor = self.cursor_row
            self.clear()
            self.add_rows(rows)
            if rows:
                self.move_cursor(row=min(cursor, len(rows) - 1), animate=False)


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
