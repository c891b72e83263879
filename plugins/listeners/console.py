"""The console listener: rich progress bars while a run goes, one line per iteration.

The module answers the ``console_display`` hook with a new ``ConsoleListener``; the CLI registers
that one for the duration of a command (nothing is drawn on import, so library use and tests stay
quiet). It is also the ``Progress`` handed to components,
so model building, baselines and candidate execution all draw bars in the same display.
"""
from __future__ import annotations

from typing import Any

from selfdev import format_score, hookimpl


class _Task:
    def __init__(self, progress: Any, task_id: Any) -> None:
        self.progress, self.task_id = progress, task_id

    def advance(self, n: int = 1) -> None:
        self.progress.advance(self.task_id, n)

    def close(self) -> None:
        self.progress.update(self.task_id, visible=False)
        self.progress.remove_task(self.task_id)


class ConsoleListener:
    """Rich progress bars and a line per finished iteration, on stderr."""

    def __init__(self, console: Any = None) -> None:
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn,
                                   TextColumn, TimeElapsedColumn)

        self.console = console or Console(stderr=True)
        if not self.console.is_terminal:
            # a log file gets each line whole, not broken at rich's assumed 80 columns
            self.console.soft_wrap = True
        # bars only on a terminal: redirected to a file or a pipe they draw nothing yet still
        # end in a stray blank line, ahead of whatever the command prints last
        self.bars = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                             MofNCompleteColumn(), TimeElapsedColumn(), console=self.console,
                             transient=True, disable=not self.console.is_terminal)

    def __enter__(self) -> "ConsoleListener":
        self.bars.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.bars.stop()

    # Progress protocol
    def task(self, description: str, total: int | None = None) -> _Task:
        return _Task(self.bars, self.bars.add_task(description, total=total))

    @hookimpl
    def on_event(self, event: Any) -> None:
        p = event.payload
        if event.type == "run.started":
            self.console.print(f"[bold]run {event.run_id}[/] (resume with `selfdev resume "
                               f"{event.run_id}`): domain {p['domain']}, generator "
                               f"{p['generator']}, optimizer {p['optimizer']}, {p['iterations']} "
                               f"iterations x {p['candidates']} candidates, seed {p['seed']}")
        elif event.type == "run.resumed":
            self.console.print(f"resuming {event.run_id} after event {p['at_version']}")
        elif event.type == "iteration.finished":
            s = p["stats"]
            best, mean = format_score(s.get("best")), format_score(s.get("mean"))
            rate = s.get("executable_rate") or 0.0
            self.console.print(f"iteration {s['iteration']}: T={s['temperature']:.3f} "
                               f"generated {s['generated']}, repeats "
                               f"{s.get('repeats', s.get('duplicates', 0))}, "
                               f"executable {rate:.0%} of new, "
                               f"best dev {best}, mean dev {mean}")
        elif event.type == "factory.refined" and p.get("metrics"):
            m = p["metrics"]
            parts = [f"{m['pairs']} pairs" if "pairs" in m else ""]
            if "loss_first" in m and "loss_last" in m:
                parts.append(f"loss {m['loss_first']:.3f} -> {m['loss_last']:.3f}")
            if "logp_margin_before" in m and "logp_margin_after" in m:
                parts.append(f"log-prob margin {m['logp_margin_before']:.1f} -> "
                             f"{m['logp_margin_after']:.1f}")
            if "skipped" in m:
                parts.append(f"skipped: {m['skipped']}")
            shown = ", ".join(x for x in parts if x) or "no training"
            self.console.print(f"factory refined by {p['optimizer']}: {shown}")
        elif event.type == "run.failed":
            self.console.print(f"[red]run failed:[/] {p['reason']}")


@hookimpl
def console_display() -> ConsoleListener:
    return ConsoleListener()
