"""``selfdev plot RUN --out FIG.png|svg|pdf`` and ``selfdev plot --sweep NAME --out FIG``:
figures of a run or of a sweep without the TUI (for a paper, a README, a notebook).

* a run: the dev scores of each iteration's scored programs (a box per iteration and every
  score as a point), the mean and the best dev per iteration as lines, the baselines of the
  run's final table as horizontal lines (seed, experts, best of each swept method), and under
  it the executable rate of the factory's new programs per iteration;
* a sweep (the runs tagged ``sweep:NAME``): per swept value, the best dev, the mean dev of the
  last iteration and the best discovered's test score, each as the mean over seeds with its
  95 % Student-t interval (``selfdev.compare_runs``' groups, the numbers ``selfdev compare
  --group-by`` prints).

The numbers come from the one read model (``selfdev.load_state`` and ``selfdev.compare_runs``);
this module only draws them. matplotlib is imported when a figure is drawn, never when the CLI
loads, and through its object API (``matplotlib.figure.Figure``), so no global backend or
pyplot state is touched: the Agg renderer writes PNG, and SVG/PDF use their own.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from selfdev import SelfdevError, hookimpl

#: the figure formats ``--out``'s suffix may name
FORMATS = ("png", "svg", "pdf")
#: the sweep metrics that can be drawn (``--metric``): group metric -> legend label
SWEEP_METRICS = {"best_dev": "best dev", "final_mean": "mean dev (last iteration)",
                 "best_test": "test of the best by dev"}


def figure_format(out: Path) -> str:
    """The format ``out``'s suffix names; a user-fixable error for any other."""
    fmt = out.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise SelfdevError(f"--out {out}: the file name must end in "
                           f"{', '.join('.' + f for f in FORMATS)} (the figure's format)")
    return fmt


def _figure(*args: Any, **kwargs: Any) -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise SelfdevError("selfdev plot needs matplotlib: pip install 'selfdev[plot]' "
                           "(or pip install matplotlib)") from None
    return Figure(*args, **kwargs)


def save(fig: Any, out: Path, fmt: str) -> None:
    """Write ``fig``; an SVG or PDF carries no date, so the same run draws the same file."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        metadata = {"Date": None} if fmt in ("svg", "pdf") else None
        fig.savefig(out, format=fmt, dpi=150, bbox_inches="tight", metadata=metadata)
    except OSError as exc:
        raise SelfdevError(f"cannot write --out {out}: {exc.strerror}") from None


# ---- one run -------------------------------------------------------------------------------

def run_plot_data(store: Any, run_id: str) -> dict[str, Any]:
    """What the run figure shows, as JSON-able data: per iteration the dev scores of its
    scored programs, their mean and best (repeats counted as ``selfdev show`` counts them),
    the executable rate of new programs; the baselines of the final table."""
    from selfdev import compare_runs, load_state

    state = load_state(store, run_id)
    record = compare_runs(store, [run_id])["runs"][0]
    stats = {s["iteration"]: s for s in record["iterations"]}
    iterations = []
    for t in sorted(state.iterations):
        s = stats.get(t) or state.iteration_stats(t)
        iterations.append({
            "iteration": t,
            "temperature": s.get("temperature"),
            "scores": [c.dev for c in state.in_iteration(t) if c.dev is not None],
            "mean": s.get("mean"), "best": s.get("best"),
            "executable_rate": s.get("executable_rate"),
            "generated": s.get("generated"), "new": s.get("new"),
            "unique": s.get("unique"), "families": s.get("families"),
        })
    baselines = [{"method": method, "dev": v["dev"]} for method, v in record["baselines"].items()
                 if v.get("dev") is not None]
    return {"run_id": run_id, "status": record["status"], "name": record["name"],
            "domain": record["config"].get("domain.name"),
            "generator": record["config"].get("generator.name"),
            "optimizer": record["config"].get("optimizer.name"),
            "iterations": iterations, "baselines": baselines,
            "best_dev": record["best_dev"], "best_test": record["best_test"]}


def draw_run(data: dict[str, Any]) -> Any:
    """The run figure: scores per iteration over the baselines, and the executable rate."""
    iters = data["iterations"]
    if not iters:
        raise SelfdevError(f"run {data['run_id']} has no iteration yet: nothing to plot")
    families = family_lines(iters)
    fig = _figure(figsize=(7.5, 7.6 if families else 6.0))
    grid = fig.add_gridspec(3 if families else 2, 1, hspace=0.08,
                            height_ratios=(3, 1, 1.4) if families else (3, 1))
    ax = fig.add_subplot(grid[0])
    rate_ax = fig.add_subplot(grid[1], sharex=ax)
    xs = [it["iteration"] for it in iters]
    boxed = [(it["iteration"], it["scores"]) for it in iters if it["scores"]]
    if boxed:
        ax.boxplot([s for _, s in boxed], positions=[t for t, _ in boxed], widths=0.45,
                   showfliers=False, manage_ticks=False,
                   medianprops={"color": "0.25"}, boxprops={"color": "0.45"},
                   whiskerprops={"color": "0.45"}, capprops={"color": "0.45"})
        for t, scores in boxed:  # every score, spread sideways by a fixed pattern
            n = len(scores)
            offsets = [((i * 0.618034) % 1.0 - 0.5) * 0.3 for i in range(n)]
            ax.scatter([t + o for o in offsets], scores, s=9, alpha=0.45, color="tab:blue",
                       linewidths=0, zorder=3)
    means = [(it["iteration"], it["mean"]) for it in iters if it["mean"] is not None]
    bests = [(it["iteration"], it["best"]) for it in iters if it["best"] is not None]
    if means:
        ax.plot(*zip(*means), marker="o", color="tab:blue", label="mean dev", zorder=4)
    if bests:
        ax.plot(*zip(*bests), marker="^", color="tab:green", label="best dev", zorder=4)
    # blue and green are the factory's; each baseline its own colour and dash (30 distinct)
    colors = ["0.3", "tab:red", "tab:purple", "tab:orange", "tab:brown", "tab:pink",
              "tab:olive", "tab:cyan", "black", "tab:gray"]
    dashes = [":", "--", "-."]
    for i, b in enumerate(data["baselines"]):
        ax.axhline(b["dev"], color=colors[i % len(colors)],
                   linestyle=dashes[(i + i // len(colors)) % len(dashes)], linewidth=1.1,
                   label=f"{b['method']} ({b['dev']:.2f})", zorder=2)
    ax.set_ylabel("dev score")
    title = f"{data['run_id']}" + (f" ({data['name']})" if data.get("name") else "")
    parts = [f"{k} {data[k]}" for k in ("domain", "generator", "optimizer") if data.get(k)]
    ax.set_title(title + ("\n" + ", ".join(parts) if parts else ""), fontsize=10)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    ax.grid(axis="y", alpha=0.3)
    ax.tick_params(labelbottom=False)
    rates = [(it["iteration"], 100 * it["executable_rate"]) for it in iters
             if it["executable_rate"] is not None]
    if rates:
        rate_ax.bar(*zip(*rates), width=0.45, color="tab:gray", alpha=0.7)
    rate_ax.set_ylim(0, 100)
    rate_ax.set_ylabel("executable\n(% of new)", fontsize=8)
    rate_ax.set_xticks(xs)
    rate_ax.set_xlim(min(xs) - 0.6, max(xs) + 0.6)
    rate_ax.grid(axis="y", alpha=0.3)
    bottom = rate_ax
    if families:
        fam_ax = fig.add_subplot(grid[2], sharex=ax)
        rate_ax.tick_params(labelbottom=False)
        for name, points in families.items():
            fam_ax.plot(*zip(*points), marker=".", label=name)
        fam_ax.set_ylim(0, 105)
        fam_ax.set_ylabel("programs\ncalling (%)", fontsize=8)
        fam_ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5),
                      frameon=False, title="primitive family", title_fontsize=7)
        fam_ax.grid(axis="y", alpha=0.3)
        bottom = fam_ax
    bottom.set_xlabel("iteration")
    return fig


def family_lines(iters: list[dict[str, Any]], most: int = 6) -> dict[str, list[tuple]]:
    """The ``most`` primitive families with the largest share in any iteration: per family,
    (iteration, % of written programs calling it); empty when no iteration knows them."""
    known = [it for it in iters if it.get("families") is not None]
    peak: dict[str, float] = {}
    for it in known:
        for name, share in it["families"].items():
            peak[name] = max(peak.get(name, 0.0), share)
    chosen = sorted(peak, key=lambda n: (-peak[n], n))[:most]
    return {name: [(it["iteration"], 100 * it["families"].get(name, 0.0)) for it in known]
            for name in chosen}


# ---- a sweep -------------------------------------------------------------------------------

def sweep_plot_data(store: Any, name: str, x: str | None = None,
                    metrics: tuple[str, ...] = tuple(SWEEP_METRICS)) -> dict[str, Any]:
    """The runs of sweep ``name`` grouped by the swept key ``x`` (by default the one
    configuration key, seeds aside, whose value differs between them) and by any other key
    that differs (one line each), each metric an interval over the seeds."""
    from selfdev import compare_runs, tagged_runs

    ids = tagged_runs(store, [f"sweep:{name}"])
    if not ids:
        raise SelfdevError(f"no run has tag sweep:{name}; `selfdev runs --tag sweep:{name}` "
                           "lists a sweep's runs (`selfdev sweep` tags them)")
    first = compare_runs(store, ids)
    swept = [k for k in first["differences"] if k != "run.seed"]
    if x is None:
        if not swept:
            raise SelfdevError(f"the runs of sweep {name!r} differ in no setting but the seed: "
                               "nothing to put on the x axis")
        if len(swept) > 1:
            raise SelfdevError(f"sweep {name!r} varies {', '.join(swept)}: name the x axis "
                               f"with --x (one of them); the others become one line each")
        x = swept[0]
    elif x not in swept:
        raise SelfdevError(f"--x {x!r}: the runs of sweep {name!r} do not vary it; they vary "
                           f"{', '.join(swept) or 'nothing but the seed'}")
    others = [k for k in swept if k != x]
    data = compare_runs(store, ids, [*others, x])
    lines: dict[str, list[dict[str, Any]]] = {}
    for g in data["groups"]:
        label = " ".join(f"{k}={g['values'][k]}" for k in others)
        lines.setdefault(label, []).append({
            "x": g["values"][x], "runs": g["runs"], "n": g["n"],
            **{m: g["metrics"][m] for m in metrics}})
    return {"sweep": name, "x": x, "lines": [{"label": k, "points": v} for k, v in lines.items()],
            "metrics": list(metrics), "runs": ids, "level": data["level"]}


def draw_sweep(data: dict[str, Any]) -> Any:
    """Sweep curves: per metric a line of group means over the swept value, with the 95 %
    interval as error bars (a point resting on one seed has none)."""
    fig = _figure(figsize=(7.0, 4.5))
    ax = fig.add_subplot()
    markers = {"best_dev": "^", "final_mean": "o", "best_test": "s"}
    numeric = all(isinstance(p["x"], (int, float)) and not isinstance(p["x"], bool)
                  for line in data["lines"] for p in line["points"])
    categories = list(dict.fromkeys(str(p["x"]) for line in data["lines"]
                                    for p in line["points"]))
    values = [p["x"] for line in data["lines"] for p in line["points"]]
    span = (max(values) - min(values) if numeric and values else len(categories)) or 1.0
    curves = [(line, metric) for line in data["lines"] for metric in data["metrics"]]
    for k, (line, metric) in enumerate(curves):
        pts = [p for p in line["points"] if p[metric]["mean"] is not None]
        if pts:  # each curve a little aside, so intervals at the same x stay apart
            dodge = (k - (len(curves) - 1) / 2) * span * 0.012
            xs = [(p["x"] if numeric else categories.index(str(p["x"]))) + dodge for p in pts]
            ys = [p[metric]["mean"] for p in pts]
            err = [[0.0 if p[metric]["half_width"] is None else p[metric]["half_width"]
                    for p in pts]] * 2
            label = SWEEP_METRICS[metric] + (f", {line['label']}" if line["label"] else "")
            ax.errorbar(xs, ys, yerr=err, marker=markers.get(metric, "o"), capsize=3,
                        label=label)
    if not numeric:
        ax.set_xticks(range(len(categories)), categories)
    n = sorted({p["n"] for line in data["lines"] for p in line["points"]})
    seeds = f"{n[0]}" if len(n) == 1 else f"{n[0]}-{n[-1]}"
    ax.set_xlabel(data["x"])
    ax.set_ylabel("score")
    ax.set_title(f"sweep {data['sweep']}: mean over {seeds} seeds, "
                 f"{data['level']:.0%} interval", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, frameon=False)
    return fig


def _plot_command() -> Any:
    import click

    @click.command(name="plot")
    @click.argument("run_ref", metavar="[RUN]", required=False)
    @click.option("--sweep", "sweep", default=None, metavar="NAME",
                  help="Plot the sweep NAME (its runs are tagged sweep:NAME) instead of a run.")
    @click.option("--x", "x", default=None, metavar="SECTION.KEY",
                  help="--sweep: the swept key on the x axis (default: the one key, seeds "
                       "aside, that differs between the sweep's runs).")
    @click.option("--metric", "metrics", multiple=True, type=click.Choice(list(SWEEP_METRICS)),
                  help="--sweep: what to draw (repeatable; default: all three).")
    @click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
                  help="The figure to write: FIG.png, FIG.svg or FIG.pdf.")
    @click.option("--json", "as_json", is_flag=True,
                  help="Also print the plotted numbers as JSON.")
    @click.option("--db", "db", type=click.Path(dir_okay=False, path_type=Path), default=None,
                  help="Event database (default: $SELFDEV_HOME/runs.db).")
    def plot(run_ref: str | None, sweep: str | None, x: str | None, metrics: tuple[str, ...],
             out: Path, as_json: bool, db: Path | None) -> None:
        """Draw a run (dev scores per iteration over the baselines, executable rate) or a
        sweep (best and mean dev, best test per swept value, mean over seeds with a 95 %
        interval) to a PNG, SVG or PDF file.

        RUN is a run id, a unique prefix of one, or `latest`."""
        from selfdev import open_store, resolve_run

        if (run_ref is None) == (sweep is None):
            raise SelfdevError("plot draws one run or one sweep: give RUN or --sweep NAME")
        if sweep is None and (x is not None or metrics):
            raise SelfdevError("--x and --metric shape a sweep's figure: use them with --sweep")
        fmt = figure_format(out)
        with open_store(db, readonly=True) as store:
            if sweep is None:
                data = run_plot_data(store, resolve_run(store, run_ref))
            else:
                data = sweep_plot_data(store, sweep, x, metrics or tuple(SWEEP_METRICS))
        fig = draw_run(data) if sweep is None else draw_sweep(data)
        save(fig, out, fmt)
        if as_json:
            click.echo(json.dumps({"out": str(out), "format": fmt, "data": data}, indent=2,
                                  sort_keys=True, default=str))
        else:
            click.echo(f"wrote {out}")

    return plot


@hookimpl
def register_commands(cli: Any) -> None:
    cli.add_command(_plot_command())
