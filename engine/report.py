"""Read-side views of a run: what ``selfdev show`` prints and ``--json`` returns.

Everything here is derived from the folded state, so a resumed run and an uninterrupted run with
the same seed give the same summary; wall-clock facts are kept apart under ``timing``.
"""
from __future__ import annotations

from typing import Any

from selfdev.engine.api import format_score
from selfdev.engine.state import RunState

#: baseline methods that get a "best of the sweep" row in the final table
SWEPT = {"task_arithmetic": "best TA", "ties": "best TIES", "dare": "best DARE",
         "dare_ties": "best DARE-TIES", "model_stock": "best Model Stock", "slerp": "best SLERP"}


#: facts of the machine or the moment, not of the run: reported under ``timing`` only
MACHINE_FACTS = ("cache", "cached", "seconds", "build_seconds")


def status(state: RunState) -> str:
    if state.finished is not None:
        return "finished"
    if state.failed is not None:
        return "failed"
    return "running"


def leaderboard(state: RunState, limit: int | None = 20) -> list[dict[str, Any]]:
    rows = []
    for rank, c in enumerate(state.ranked(), 1):
        rows.append({"rank": rank, "candidate_id": c.candidate_id, "iteration": c.iteration,
                     "status": c.status, "dev": c.dev, "test": c.test,
                     "ast_hash": (c.ast_hash or "")[:16]})
        if limit and rank >= limit:
            break
    return rows


def final_table(state: RunState) -> list[dict[str, Any]]:
    """Seed, each expert, average, best of each swept method, best discovered (dev and test).

    "best" rows are chosen by dev score, and their test score is reported as is.
    """
    rows: list[dict[str, Any]] = []
    base = state.baselines
    for label, b in base.items():
        if b.method in ("seed", "expert", "average"):
            rows.append({"method": label, "dev": b.dev, "test": b.test, "params": b.params})
    for method, title in SWEPT.items():
        group = [b for b in base.values() if b.method == method and b.dev is not None]
        if group:
            best = max(group, key=lambda b: b.dev)
            rows.append({"method": title, "dev": best.dev, "test": best.test,
                         "params": best.params})
    ranked = state.ranked()
    if ranked:
        top = ranked[0]
        rows.append({"method": "best discovered", "dev": top.dev, "test": top.test,
                     "params": {"candidate_id": top.candidate_id}})
    return rows


#: trl loss lists under the names the literature gives them (the README and ``show`` name the
#: loss beside every result: "DPO" alone is ambiguous once an NLL term can be added)
LOSS_NAMES = {("sigmoid",): "DPO", ("sigmoid", "sft"): "DPO+NLL", ("sft",): "SFT"}


def loss_name(loss_type: Any) -> str:
    types = tuple([loss_type] if isinstance(loss_type, str) else loss_type)
    return LOSS_NAMES.get(types, "+".join(types))


def optimizer_loss(state: RunState) -> str | None:
    """The loss the factory was refined with, as the first refinement recorded it (else as the
    configuration sets it; None when neither says, e.g. ``none`` or a run not refined yet)."""
    for t in sorted(state.iterations):
        refined = state.iterations[t].refined
        if refined is not None and refined.metrics.get("loss_type"):
            return loss_name(refined.metrics["loss_type"])
    configured = (state.started.config if state.started else {}).get("optimizer", {})
    if configured.get("loss_type"):
        return loss_name(configured["loss_type"])
    if configured.get("name") == "sft":
        return "SFT"
    return None


def summary(state: RunState, head: str | None = None) -> dict[str, Any]:
    """Everything ``selfdev show RUN`` reports, with no timestamps outside ``timing``.

    ``head`` is the hash of the run's last event as the store has it (the fold never sees
    hashes); it is the anchor ``selfdev verify RUN --head HASH`` checks the log against later,
    so it is printed and exported with every run.
    """
    started = state.started
    iterations = []
    for t in sorted(state.iterations):
        stats = state.iteration_stats(t)
        it = state.iterations[t]
        if it.refined is not None:
            stats["refined"] = {k: v for k, v in it.refined.metrics.items()
                                if not isinstance(v, (list, dict))}
        iterations.append(stats)
    durations = [c.duration_ms for c in state.candidates.values() if c.duration_ms]
    domain = dict(state.prepared or {})
    machine = {k: domain.pop(k) for k in MACHINE_FACTS if k in domain}
    return {
        "run_id": state.run_id,
        "status": status(state),
        "head": head,
        "failed": state.failed,
        "config": started.config if started else {},
        "optimizer_loss": optimizer_loss(state),
        "domain": domain,
        "iterations": iterations,
        "leaderboard": leaderboard(state),
        "baselines": [{"label": b.label, "method": b.method, "params": b.params,
                       "status": b.status, "dev": b.dev, "test": b.test}
                      for b in state.baselines.values()],
        "table": final_table(state),
        "selection": state.selection.candidates if state.selection else [],
        "candidates": len(state.candidates),
        "events": state.events,
        "timing": {"candidate_ms_total": round(sum(durations), 1), "domain": machine,
                   **compute(state)},
    }


#: the phases of an iteration, in the order they run (``phase.timed``'s names)
ITERATION_PHASES = ("sampling", "screening", "execution", "refinement")


def compute(state: RunState) -> dict[str, Any]:
    """What the run cost, from its ``phase.timed`` events (machine facts, so they live under
    ``timing``): per iteration the wall and CPU seconds of each phase and the sandbox's own
    compute (the candidates' ``duration_ms``, summed over parallel workers); the baselines'
    sweep and the final test; the total. A phase with no event (a log that predates them, or
    a step a crash cut short) is None."""
    iterations = []
    for t in sorted(state.iterations):
        spent = state.phases.get(t, {})
        sandbox = [c.duration_ms for c in state.in_iteration(t) if c.duration_ms]
        iterations.append({"iteration": t, **{p: spent.get(p) for p in ITERATION_PHASES},
                           "sandbox_seconds": round(sum(sandbox) / 1000, 4) if sandbox else None})
    outside = state.phases.get(0, {})
    baselines = outside.get("baselines")
    if baselines is not None:
        baselines = {**baselines, "evaluated": len(state.baselines)}
    every = [v for phases in state.phases.values() for v in phases.values()]
    return {"phases": iterations, "baselines": baselines, "test": outside.get("test"),
            "seconds_total": round(sum(v["seconds"] for v in every), 4) if every else None,
            "cpu_seconds_total": (round(sum(v["cpu_seconds"] for v in every), 4)
                                  if every else None)}


def render(data: dict[str, Any], console: Any) -> None:
    """Print a summary as rich tables."""
    from rich.table import Table

    cfg = data["config"]
    loss = f" ({data['optimizer_loss']})" if data.get("optimizer_loss") else ""
    console.print(f"[bold]{data['run_id']}[/] ({data['status']})  domain {cfg.get('domain', {}).get('name')}"
                  f"  generator {cfg.get('generator', {}).get('name')}"
                  f"  optimizer {cfg.get('optimizer', {}).get('name')}{loss}"
                  f"  seed {cfg.get('run', {}).get('seed')}")
    if data.get("head"):
        # soft_wrap: the hash stays on one line, whole, whatever the width (it is copied)
        console.print(f"head {data['head']} after {data['events']} events "
                      f"(check later: selfdev verify {data['run_id']} --head HASH)",
                      soft_wrap=True, highlight=False)
    if data.get("failed"):
        console.print(f"[red]failed:[/] {data['failed']}")
    if data["iterations"]:
        # "best"/"mean" (of dev scores, as the title says) keep all eight headers whole at 80
        # columns, the width of a default terminal and of rich's output when piped.
        t = Table(title="iterations (dev scores)")
        # "executable" is over new programs; "repeats" were never run, and best/mean count
        # each with the score of the program it repeats (see RunState.iteration_stats). The
        # temperature is left to the console line and --json: nine columns do not fit 80
        for col in ("iter", "generated", "repeats", "accepted", "executable", "best", "mean",
                    "pairs"):
            t.add_column(col, justify="right")
        for s in data["iterations"]:
            rate = s.get("executable_rate")
            t.add_row(str(s["iteration"]), str(s["generated"]),
                      str(s.get("repeats", s.get("duplicates", "-"))),
                      str(s["accepted"]), "-" if rate is None else f"{rate:.0%}",
                      format_score(s["best"]), format_score(s["mean"]), format_score(s.get("pairs")))
        console.print(t)
    render_programs(data, console)
    render_compute(data, console)
    if data["leaderboard"]:
        t = Table(title="leaderboard (by dev score)")
        for col in ("rank", "candidate", "iter", "dev", "test", "ast hash"):
            t.add_column(col, justify="right" if col in ("rank", "iter", "dev", "test") else "left")
        for r in data["leaderboard"][:10]:
            t.add_row(str(r["rank"]), r["candidate_id"], str(r["iteration"]), format_score(r["dev"]),
                      format_score(r["test"]), r["ast_hash"])
        console.print(t)
    if data["table"]:
        t = Table(title="best discovered vs baselines (chosen by dev)")
        t.add_column("method")
        t.add_column("params")
        t.add_column("dev", justify="right")
        t.add_column("test", justify="right")
        for r in data["table"]:
            params = " ".join(f"{k}={v}" for k, v in r["params"].items() if k != "expert")
            t.add_row(r["method"], params, format_score(r["dev"]), format_score(r["test"]))
        console.print(t)


def _share_cells(shares: dict[str, float] | None, width: int) -> str:
    """``mean 91% trim 40% ...``: the most used first, as many as fit ``width``."""
    if not shares:
        return "-" if shares is None else ""
    out = ""
    for name, share in shares.items():
        item = f"{name} {share:.0%}"
        if out and len(out) + 2 + len(item) > width:
            break
        out = f"{out}  {item}" if out else item
    return out


def render_programs(data: dict[str, Any], console: Any) -> None:
    """Per iteration: distinct programs and the families of merge primitives they call (the
    share of written programs calling each; ``--json`` has every primitive)."""
    from rich.table import Table

    rows = [s for s in data["iterations"] if s.get("families") is not None]
    if not rows:
        return
    t = Table(title="programs written: unique, and share calling each primitive family")
    t.add_column("iter", justify="right")
    t.add_column("unique", justify="right")
    t.add_column("families (share of programs)", no_wrap=True, overflow="ellipsis")
    for s in rows:
        t.add_row(str(s["iteration"]), str(s.get("unique", "-")),
                  _share_cells(s["families"], 58))
    console.print(t)


def _seconds(spent: dict[str, Any] | None) -> str:
    if spent is None:
        return "-"
    value = spent["seconds"]
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


def render_compute(data: dict[str, Any], console: Any) -> None:
    """Wall seconds per phase and iteration, the baselines' sweep and the final test: the
    compute discovery cost, next to what applying the human methods cost."""
    from rich.table import Table

    timing = data.get("timing") or {}
    phases = timing.get("phases") or []
    if timing.get("seconds_total") is None:
        return  # a log from before phase.timed: nothing was measured
    t = Table(title="compute (wall seconds per phase)")
    for col in ("iter", "sampling", "screening", "exec+eval", "refinement", "sandbox"):
        t.add_column(col, justify="right")
    for p in phases:
        sandbox = p.get("sandbox_seconds")
        t.add_row(str(p["iteration"]), *(_seconds(p.get(k)) for k in ITERATION_PHASES),
                  "-" if sandbox is None else f"{sandbox:.1f}")
    base, test = timing.get("baselines"), timing.get("test")
    if base is not None:
        t.add_row(f"baselines ({base['evaluated']})", "", "", _seconds(base), "", "")
    if test is not None:
        t.add_row(f"test ({test['items']})", "", "", _seconds(test), "", "")
    console.print(t)
    console.print(f"total {timing['seconds_total']:.1f} s wall, "
                  f"{timing['cpu_seconds_total']:.1f} s CPU of the engine process; sandbox = "
                  "the candidates' own compute, summed over workers", highlight=False)


#: the columns of ``selfdev runs``, and which to leave out first when the terminal is narrow
RUNS_COLUMNS = ("run", "status", "domain", "generator", "optimizer", "iters", "best dev",
                "best test", "started")
RUNS_DROP_ORDER = ("started", "optimizer", "generator", "domain", "iters")


def runs_cells(r: dict[str, Any]) -> list[str]:
    """One ``selfdev runs`` row as text, in :data:`RUNS_COLUMNS` order."""
    iters = "-" if r.get("iterations") is None else \
        f"{r.get('current_iteration') or 0}/{r['iterations']}"
    return [r["run_id"], str(r["status"] or "-"), str(r.get("domain") or "-"),
            str(r.get("generator") or "-"), str(r.get("optimizer") or "-"), iters,
            format_score(r.get("best_dev")), format_score(r.get("best_test")),
            str(r.get("started_at") or "")[:16].replace("T", " ")]


def runs_table(rows: list[dict[str, Any]], width: int | None) -> tuple[Any, list[str]]:
    """The ``selfdev runs`` table for ``width`` columns (None: unlimited, as when piped) and the
    columns it had to leave out.

    Run ids are what a user copies into the next command, so they are never cut: columns are
    left out whole (:data:`RUNS_DROP_ORDER`) until the rest fits, rather than every column
    being shortened to ``run-2…``.
    """
    from rich import box
    from rich.table import Table

    cells = [runs_cells(r) for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(RUNS_COLUMNS)]
    keep = list(range(len(RUNS_COLUMNS)))
    dropped: list[str] = []
    for name in RUNS_DROP_ORDER:
        # columns are apart by their padding (1 + 1) and the box's blank divider (1)
        if width is None or sum(widths[i] for i in keep) + 3 * (len(keep) - 1) <= width:
            break
        keep.remove(RUNS_COLUMNS.index(name))
        dropped.append(name)
    t = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for i in keep:
        right = RUNS_COLUMNS[i] in ("iters", "best dev", "best test")
        t.add_column(RUNS_COLUMNS[i], no_wrap=True, justify="right" if right else "left",
                     min_width=widths[i] if i == 0 else None, overflow="fold")
    for row in cells:
        t.add_row(*(row[i] for i in keep))
    return t, dropped
