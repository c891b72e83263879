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


def summary(state: RunState) -> dict[str, Any]:
    """Everything ``selfdev show RUN`` reports, with no timestamps outside ``timing``."""
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
        "failed": state.failed,
        "config": started.config if started else {},
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
        "timing": {"candidate_ms_total": round(sum(durations), 1), "domain": machine},
    }


def render(data: dict[str, Any], console: Any) -> None:
    """Print a summary as rich tables."""
    from rich.table import Table

    cfg = data["config"]
    console.print(f"[bold]{data['run_id']}[/] ({data['status']})  domain {cfg.get('domain', {}).get('name')}"
                  f"  generator {cfg.get('generator', {}).get('name')}"
                  f"  optimizer {cfg.get('optimizer', {}).get('name')}"
                  f"  seed {cfg.get('run', {}).get('seed')}")
    if data.get("failed"):
        console.print(f"[red]failed:[/] {data['failed']}")
    if data["iterations"]:
        t = Table(title="iterations")
        for col in ("iter", "T", "generated", "accepted", "executable", "best dev", "mean dev", "pairs"):
            t.add_column(col, justify="right")
        for s in data["iterations"]:
            rate = s.get("executable_rate")
            t.add_row(str(s["iteration"]), format_score(s["temperature"]), str(s["generated"]),
                      str(s["accepted"]), "-" if rate is None else f"{rate:.0%}",
                      format_score(s["best"]), format_score(s["mean"]), format_score(s.get("pairs")))
        console.print(t)
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
