"""Command palette entries (ctrl+p) for the main actions, depending on the screen."""
from __future__ import annotations

from functools import partial
from typing import Any, Callable

from textual.command import DiscoveryHit, Hit, Hits, Provider

from selfdev.tui.screens.candidate import CandidateScreen
from selfdev.tui.screens.run import PANES, RunScreen
from selfdev.tui.screens.runs import RunsScreen


class SelfdevCommands(Provider):
    """``run: …`` commands on a run screen, ``runs: …`` on the runs list, ``app: …`` always."""

    def commands(self) -> list[tuple[str, Callable[[], Any], str]]:
        screen = self.screen
        app: Any = self.app
        out: list[tuple[str, Callable[[], Any], str]] = []
        if isinstance(screen, RunScreen):
            run = screen
            out += [
                ("run: verify hash chain (audit)", run.action_verify,
                 "re-derive every hash of this run in the background"),
                ("run: play / pause", run.action_play, "replay the log at the chosen speed"),
                ("run: jump to start", run.action_jump_start, "the playhead on run.started"),
                ("run: jump to end", run.action_jump_end, "the playhead on the last event"),
                ("run: next iteration", partial(run.action_iteration, 1), ""),
                ("run: previous iteration", partial(run.action_iteration, -1), ""),
                ("run: toggle follow", run.action_follow, "keep the playhead on new events"),
                ("run: open best candidate", run.action_open_best, "as of the playhead"),
                ("run: filter event types", run.action_type_filter, ""),
                ("run: search events", run.action_search, ""),
                ("run: back to the runs list", run.action_back, ""),
            ]
            out += [(f"view: {label.lower()}", partial(run.action_pane, name), "")
                    for name, label in PANES]
        elif isinstance(screen, CandidateScreen):
            cand = screen
            out += [
                ("candidate: diff against the best", cand.action_diff_best, ""),
                ("candidate: diff against another…", cand.action_diff_other, ""),
                ("candidate: show code", partial(cand.action_view, "code"), ""),
                ("candidate: show raw completion", partial(cand.action_view, "completion"), ""),
                ("candidate: back", cand.action_back, ""),
            ]
        elif isinstance(screen, RunsScreen):
            runs = screen
            out += [
                ("runs: open the selected run", runs.action_open, ""),
                ("runs: filter", runs.action_filter, ""),
                ("runs: sort by next column", runs.action_sort, ""),
                ("runs: reload", runs.action_reload, ""),
            ]
        out += [("app: help (all keys)", app.action_help, "every binding of every screen"),
                ("app: quit", app.action_quit, "")]
        return out

    async def discover(self) -> Hits:
        for name, callback, help_text in self.commands():
            yield DiscoveryHit(name, callback, help=help_text or None)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, callback, help_text in self.commands():
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), callback, help=help_text or None)
