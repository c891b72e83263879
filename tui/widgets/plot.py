"""The score plot: dev score of every scored candidate, iteration by iteration, the best so
far, and the baselines as horizontal reference lines (textual-plotext)."""
from __future__ import annotations

import time
from typing import Any

from textual.app import ComposeResult
from textual_plotext import PlotextPlot

from selfdev.engine.report import SWEPT
from selfdev.engine.state import RunState
from selfdev.tui.widgets.pane import Frame, Line, Pane

#: one marker per iteration (cycled), so iterations differ by shape, not only by colour
ITER_MARKERS = ("•", "+", "x", "o", "*", "^")
#: reference lines: (label, marker)
BASELINE_MARKERS = {"seed": "-", "best expert": "~", "best TA": "=", "best TIES": ":"}
#: reference lines drawn (the paper's baselines); other swept methods are named in the legend
DRAWN = set(BASELINE_MARKERS)
#: the events that move a point or a line of the plot
SCORED = {"candidate.evaluated", "baseline.evaluated"}
#: while playing, the plot is redrawn at most this often (seconds): plotext is slow
THROTTLE = 0.3


def baseline_lines(state: RunState) -> list[tuple[str, float]]:
    """Seed, the best expert and the best of each swept method, by dev score."""
    groups: dict[str, float] = {}
    for b in state.baselines.values():
        if b.dev is None:
            continue
        if b.method == "seed":
            name = "seed"
        elif b.method == "expert":
            name = "best expert"
        elif b.method in SWEPT:
            name = SWEPT[b.method]
        else:
            continue
        groups[name] = max(groups.get(name, b.dev), b.dev)
    order = list(BASELINE_MARKERS) + list(SWEPT.values())
    return sorted(groups.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else 99)


def plot_points(state: RunState) -> dict[int, tuple[list[float], list[float]]]:
    """Per iteration: x (iteration + index / candidates) and dev score of scored candidates."""
    sizes: dict[int, int] = {}
    for c in state.candidates.values():
        sizes[c.iteration] = max(sizes.get(c.iteration, 0), c.index + 1)
    out: dict[int, tuple[list[float], list[float]]] = {}
    for c in state.candidates.values():
        if c.dev is None:
            continue
        xs, ys = out.setdefault(c.iteration, ([], []))
        xs.append(c.iteration + c.index / max(1, sizes[c.iteration]))
        ys.append(c.dev)
    return out


def thin(xs: list[float], ys: list[float], bins_x: int, bins_y: int,
         x0: float, x1: float, y0: float, y1: float) -> tuple[list[float], list[float]]:
    """Keep one point per cell of a bins_x × bins_y grid (what a terminal can show anyway)."""
    if len(xs) <= bins_x * 2:
        return xs, ys
    sx = bins_x / max(1e-9, x1 - x0)
    sy = bins_y / max(1e-9, y1 - y0)
    seen: set[tuple[int, int]] = set()
    ox, oy = [], []
    for x, y in zip(xs, ys):
        cell = (int((x - x0) * sx), int((y - y0) * sy))
        if cell not in seen:
            seen.add(cell)
            ox.append(x)
            oy.append(y)
    return ox, oy


class ScorePlot(PlotextPlot):
    """Call :meth:`show_state` with the state as of the playhead."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.legend = ""
        self._key: Any = None

    def show_state(self, state: RunState) -> str:
        """Redraw from ``state``; returns the legend line (shapes and labels)."""
        points = plot_points(state)
        lines = baseline_lines(state)
        key = (state.position, len(points), tuple(lines), self.size)
        if key == self._key:
            return self.legend
        self._key = key
        plt = self.plt
        plt.clf()
        plt.xlabel("iteration (candidates in order)")
        plt.ylabel("dev score")
        its = sorted(points)
        all_y = [y for t in its for y in points[t][1]] + [v for _, v in lines]
        x0 = min(its) if its else 1.0
        x1 = (max(its) + 1) if its else 2.0
        y0, y1 = (min(all_y), max(all_y)) if all_y else (0.0, 1.0)
        w, h = max(10, self.size.width), max(5, self.size.height)
        legend = []
        for t in its:
            xs, ys = points[t]
            marker = ITER_MARKERS[(t - 1) % len(ITER_MARKERS)]
            xs, ys = thin(xs, ys, w * 2, h * 2, x0, x1, y0, y1)
            plt.scatter(xs, ys, marker=marker)
            legend.append(f"{marker} it{t}")
        if its:
            merged = sorted((x, y) for t in its for x, y in zip(*points[t]))
            bx, by, best = [], [], float("-inf")
            for x, y in merged:
                if y > best:
                    best = y
                    bx.append(x)
                    by.append(y)
            bx.append(x1)
            by.append(best)
            plt.plot(bx, by, marker="braille")
            legend.append(f"⠒ best so far {best:.2f}")
        also = []
        for name, value in lines:
            if name not in DRAWN:
                also.append(f"{name} {value:.2f}")
                continue
            marker = BASELINE_MARKERS[name]
            plt.plot([x0, x1], [value, value], marker=marker)
            legend.append(f"{marker} {name} {value:.2f}")
        if also:
            legend.append("(not drawn: " + ", ".join(also) + ")")
        if not its and not lines:
            plt.title("no scores yet")
        self.legend = "  ".join(legend)
        self.refresh()
        return self.legend


class PlotPane(Pane):
    """The score plot and its legend (``#plot-legend``). Redrawn only when a score arrived
    between two playheads, and while playing at most every :data:`THROTTLE` seconds."""

    def __init__(self, *, active: bool = False) -> None:
        super().__init__("plot", active=active)
        self.plot = ScorePlot(id="plot")
        self.legend = Line(fixed=False, id="plot-legend")
        self._last = 0.0  # monotonic time of the last redraw
        self._later: Any = None  # the timer of a redraw put off

    def compose(self) -> ComposeResult:
        yield self.label
        yield self.plot
        yield self.legend

    def show(self, frame: Frame) -> None:
        k, span = frame.cursor, self.span(frame)
        if span is not None and not set(frame.index.types[span[0]:span[1]]) & SCORED:
            self.drawn = k
            return
        now = time.monotonic()
        if frame.playing and now - self._last < THROTTLE:
            if self._later is None:
                self._later = self.set_timer(THROTTLE, self._due)
            return
        self._last = now
        self.legend.text = self.plot.show_state(frame.state)
        self.label.text = f"dev scores as of event {k:,} (x: iteration, candidates in order)"
        self.drawn = k

    def _due(self) -> None:
        self._later = None
        self.request_redraw()
