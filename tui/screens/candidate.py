"""The candidate view: code, verdicts, output, scores, a diff, and the raw completion."""
from __future__ import annotations

import difflib
import json
from typing import Any

from rich.syntax import Syntax
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Static

from selfdev.engine.api import format_score
from selfdev.tui.screens.pickers import CandidatePicker
from selfdev.tui.widgets.leaderboard import top_candidates
from selfdev.tui.widgets.tabstrip import TabStrip

VIEWS = [("code", "Code"), ("diff", "Diff"), ("completion", "Completion"),
         ("output", "Output & metrics")]


def unified_diff(a: str, b: str, a_name: str, b_name: str) -> str:
    lines = difflib.unified_diff(a.splitlines(keepends=True), b.splitlines(keepends=True),
                                 fromfile=a_name, tofile=b_name, n=3)
    text = "".join(line if line.endswith("\n") else line + "\n" for line in lines)
    return text or f"(no difference between {a_name} and {b_name})\n"


class CandidateScreen(Screen):
    """A candidate as of the run screen's playhead. ``d`` diffs it against the best one (or
    the runner-up when it is the best), ``o`` against any other."""

    BINDINGS = [
        Binding("1", "view('code')", "Code"),
        Binding("2", "view('diff')", "Diff"),
        Binding("3", "view('completion')", "Completion"),
        Binding("4", "view('output')", "Output"),
        Binding("d", "diff_best", "Diff vs best"),
        Binding("o", "diff_other", "Diff vs…"),
        Binding("left_square_bracket", "neighbour(-1)", "◀ rank", key_display="["),
        Binding("right_square_bracket", "neighbour(1)", "rank ▶", key_display="]"),
        Binding("escape", "back", "Back"),
    ]

    def __init__(self, run_screen: Any, candidate_id: str) -> None:
        super().__init__()
        self.run_screen = run_screen
        self.store = run_screen.store
        self.candidate_id = candidate_id
        self.active = "code"
        self.other: str | None = None  # diff target; None = the best
        self.diff_against: str | None = None
        self._texts: dict[str, str] = {}
        self.shown: dict[str, str] = {}  # view -> the plain text it shows (tests read it)

    def compose(self) -> ComposeResult:
        yield Static(id="cand-title")
        yield Static(id="cand-info")
        yield TabStrip(VIEWS, id="cand-tabs")
        with Vertical(id="cand-views"):
            with VerticalScroll(id="view-code", classes="view -active"):
                yield Static(id="cand-code")
            with VerticalScroll(id="view-diff", classes="view"):
                yield Static(id="cand-diff")
            with VerticalScroll(id="view-completion", classes="view"):
                yield Static(id="cand-completion")
            with VerticalScroll(id="view-output", classes="view"):
                yield Static(id="cand-output")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.show()
        self.query_one("#view-code").focus()

    # -- data ------------------------------------------------------------------------------

    def _text(self, ref: str | None) -> str | None:
        if not ref:
            return None
        if ref not in self._texts:
            try:
                self._texts[ref] = self.store.get_text(ref)
            except Exception as exc:  # noqa: BLE001 - a missing blob is shown, not raised
                self._texts[ref] = f"(blob {ref} unreadable: {exc})"
        return self._texts[ref]

    def _state(self) -> tuple[Any, Any, list[Any]]:
        replay = self.run_screen.replay
        with replay.lock:
            state = replay.state
            c = state.candidates.get(self.candidate_id)
            ranked = top_candidates(state, 200)
            return state, c, ranked

    def diff_target(self, ranked: list[Any]) -> str | None:
        if self.other:
            return self.other
        for c in ranked:
            if c.candidate_id != self.candidate_id and c.code:
                return c.candidate_id
        return None

    def show(self) -> None:
        state, c, ranked = self._state()
        if c is None:
            self.query_one("#cand-title", Static).update(
                f"{self.candidate_id} · not generated yet at event {self.run_screen.cursor:,}")
            return
        rank = next((i for i, r in enumerate(ranked, 1) if r.candidate_id == c.candidate_id),
                    None)
        rank_text = f"rank {rank}" if rank else "unranked"
        self.query_one("#cand-title", Static).update(
            f"candidate {c.candidate_id} · iteration {c.iteration} · #{c.index} · {c.status} · "
            f"{rank_text} · as of event {self.run_screen.cursor:,}")
        info = self._info(c)
        self.query_one("#cand-info", Static).update(info)
        code = self._text(c.code)
        self.query_one("#cand-code", Static).update(
            Syntax(code, "python", line_numbers=True, word_wrap=False, theme="ansi_dark")
            if code is not None else Text("(no code: the completion held no merge_models)"))
        completion = self._text(c.completion) or "(no completion recorded)"
        self.query_one("#cand-completion", Static).update(Text(completion))
        output = self._output(c)
        self.query_one("#cand-output", Static).update(output)
        self.shown.update(info=info.plain, code=code or "", completion=completion,
                          output=output.plain)
        self._show_diff(state, c, ranked)
        self._show_tabs()

    def _info(self, c: Any) -> Text:
        t = Text()
        screen = c.screen or "pending"
        t.append("screening  ", "bold")
        t.append(f"{screen}")
        if c.screen and c.screen != "accepted" and c.reason:
            t.append(f" — {c.reason}")
        if c.duplicate_of:
            t.append(f" (duplicate of {c.duplicate_of})")
        t.append("\nsandbox    ", "bold")
        if c.execution is None:
            t.append("not run" if c.screen not in (None, "accepted") else "pending")
        else:
            t.append(c.execution)
            if c.duration_ms is not None:
                t.append(f" in {c.duration_ms:.1f} ms")
            if c.execution != "ok" and c.reason:
                t.append(f" — {c.reason}")
        t.append("\nscores     ", "bold")
        t.append(f"dev {format_score(c.dev)} · test {format_score(c.test)}")
        t.append("\nhash       ", "bold")
        t.append(c.ast_hash or "-")
        out = (c.stdout or "").strip().splitlines()
        t.append("\noutput     ", "bold")
        t.append(out[0][:200] + (f" (+{len(out) - 1} lines; 4 shows all)" if len(out) > 1 else "")
                 if out else "(none)")
        return t

    def _output(self, c: Any) -> Text:
        t = Text()
        t.append("captured output\n", "bold underline")
        t.append((c.stdout or "(none)") + "\n\n")
        t.append("metrics (dev)\n", "bold underline")
        t.append(json.dumps(c.metrics, indent=2, sort_keys=True, default=str) + "\n")
        return t

    def _show_diff(self, state: Any, c: Any, ranked: list[Any]) -> None:
        target_id = self.diff_target(ranked)
        box = self.query_one("#cand-diff", Static)
        mine = self._text(c.code)
        self.diff_against = target_id
        if target_id is None:
            self.shown["diff"] = "nothing to diff against yet (no other scored candidate with code)"
            box.update(Text(self.shown["diff"]))
            return
        other = state.candidates.get(target_id)
        theirs = self._text(other.code) if other is not None else None
        if mine is None or theirs is None:
            self.shown["diff"] = f"no code to compare ({c.candidate_id} or {target_id} has none)"
            box.update(Text(self.shown["diff"]))
            return
        label = "best" if self.other is None else "chosen"
        diff = unified_diff(theirs, mine, f"{target_id} ({label}, dev {format_score(other.dev)})",
                            f"{c.candidate_id} (dev {format_score(c.dev)})")
        box.update(Syntax(diff, "diff", theme="ansi_dark", word_wrap=False))
        self.shown["diff"] = diff

    def _show_tabs(self) -> None:
        state, c, ranked = self._state()
        target = self.diff_target(ranked) or "-"
        self.query_one(TabStrip).set_suffix(f"diff vs {target}")

    # -- actions ---------------------------------------------------------------------------

    def action_view(self, name: str) -> None:
        self.active = name
        for view, _ in VIEWS:
            self.query_one(f"#view-{view}").set_class(view == name, "-active")
        self.query_one(TabStrip).active = name
        self.query_one(f"#view-{name}").focus()

    @on(TabStrip.Picked)
    def _picked(self, message: TabStrip.Picked) -> None:
        self.action_view(message.name)

    def action_diff_best(self) -> None:
        self.other = None
        self.show()
        self.action_view("diff")

    def action_diff_other(self) -> None:
        _, _, ranked = self._state()
        choices = [(r.candidate_id,
                    f"{r.candidate_id}  it {r.iteration}  dev {format_score(r.dev)}")
                   for r in ranked if r.candidate_id != self.candidate_id]

        def done(chosen: str | None) -> None:
            if chosen:
                self.diff_with(chosen)

        self.app.push_screen(CandidatePicker(choices), done)

    def diff_with(self, candidate_id: str) -> None:
        self.other = candidate_id
        self.show()
        self.action_view("diff")

    def action_neighbour(self, delta: int) -> None:
        _, _, ranked = self._state()
        ids = [r.candidate_id for r in ranked]
        if not ids:
            return
        i = ids.index(self.candidate_id) + delta if self.candidate_id in ids else 0
        self.candidate_id = ids[max(0, min(len(ids) - 1, i))]
        self.show()

    def action_back(self) -> None:
        self.app.pop_screen()
