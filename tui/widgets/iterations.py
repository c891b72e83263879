"""The iterations pane: one row per iteration as of the playhead, and the playhead's
iteration in words."""
from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.coordinate import Coordinate
from textual.widgets import DataTable

from selfdev.engine.api import format_score
from selfdev.tui.widgets.pane import Frame, Line, Pane


def _rate(x: Any) -> str:
    return "-" if x is None else f"{x:.0%}"


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
            rows.append((str(s["iteration"]), format_score(s.get("temperature")),
                         str(s["generated"]), str(s["screened"]), str(s["executed"]),
                         str(s["scored"]), _rate(s.get("executable_rate")),
                         format_score(s.get("best")), format_score(s.get("mean")),
                         format_score(s.get("pairs")), format_score(loss), format_score(margin)))
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
        f"T {format_score(s.get('temperature'))}",
        f"generated {s['generated']}",
        f"screened {s['screened']} (accepted {s.get('accepted', 0)}, "
        f"duplicates {s.get('duplicates', 0)})",
        f"executed {s['executed']} (ok {s.get('executed_ok', 0)})",
        f"scored {s['scored']}",
        f"executable {_rate(s.get('executable_rate'))}",
        f"best {format_score(s.get('best'))}",
        f"mean {format_score(s.get('mean'))}",
    ]
    if "pairs" in s:
        parts.append(f"pairs {s['pairs']}")
    if loss is not None or margin is not None:
        parts.append(f"DPO loss {format_score(loss)} margin {format_score(margin)}")
    return " · ".join(parts)


class IterationsPane(Pane):
    """The iteration table and the playhead's iteration in words (``#iteration-detail``).

    The numbers are ``RunState.iteration_stats``; an iteration's are computed again only when
    an event between two playheads touched it."""

    def __init__(self, *, active: bool = False) -> None:
        super().__init__("iterations", active=active)
        self.table = IterationTable(id="iterations")
        self.detail = Line(fixed=False, id="iteration-detail")
        self._stats: dict[int, dict[str, Any]] = {}  # iteration -> stats as of ``drawn``

    def compose(self) -> ComposeResult:
        yield self.label
        yield self.table
        yield self.detail

    def focus_body(self) -> None:
        self.table.focus()

    def show(self, frame: Frame) -> None:
        k = frame.cursor
        if self.drawn == k and not frame.full:
            return
        state, span = frame.state, self.span(frame)
        touched = None if span is None else set(frame.index.iters[span[0]:span[1]])
        cache = {t: s for t, s in self._stats.items() if t in state.iterations}
        for t in state.iterations:
            if touched is None or t in touched or t not in cache:
                cache[t] = state.iteration_stats(t)
        self._stats = cache
        stats = [cache[t] for t in sorted(cache)]
        self.table.show_stats(stats)
        it = frame.iteration
        current = next((s for s in stats if s["iteration"] == it), None)
        self.detail.text = iteration_detail(current) if current else "no iteration has started yet"
        self.label.text = f"iterations as of event {k:,} · {len(stats)} started"
        self.drawn = k
