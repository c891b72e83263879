"""Runs side by side, and over groups of runs: what ``selfdev compare`` (and, at its end,
``selfdev sweep``) prints and ``--json`` returns; ``selfdev plot --sweep`` draws from it.

A researcher's questions cross runs: which settings differ, how each iteration went, how the
discovered algorithm stands against the baselines, and, over seeds, how large a difference is
against the noise. Everything here is read from the log through the one read model
(:func:`selfdev.engine.report.summary` over :func:`selfdev.engine.state.fold`), so a number in
``compare`` is the number ``selfdev show`` prints for that run; nothing is re-derived.

The public, JSON-able API (stable: other commands import it):

* :func:`compare_runs` ``(store, run_ids, group_by=None) -> dict``: everything ``compare``
  reports;
* :func:`run_record` ``(store, run_id) -> dict``: one run's part of it;
* :func:`group_records` ``(records, group_by) -> list[dict]``: runs grouped by seed or by
  configuration keys, with :func:`interval` statistics per metric and per iteration;
* :func:`interval` ``(values) -> dict``: mean, sd, n and a 95 % Student-t interval;
* :func:`tagged_runs` ``(store, tags) -> [ids]``: the runs carrying every tag (a sweep's runs
  carry ``sweep:NAME``);
* :func:`render_comparison` ``(data, console)``: the text tables.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

from selfdev.engine.api import SelfdevError, format_score

#: ``[run]`` keys that label a run rather than configure it: never listed as differences
LABEL_KEYS = ("run.name", "run.tags")
#: the per-iteration numbers compared (from :meth:`RunState.iteration_stats`, unchanged):
#: validity of the factory's new programs, repeats, distinct programs, mean and best dev
ITERATION_METRICS = ("executable_rate", "repeats", "unique", "mean", "best")
#: the per-run numbers compared: best dev score, and the test score of the candidate chosen
#: by dev (the "best discovered" row of the final table: never the best test score, which
#: would be chosen on the test split)
RUN_METRICS = ("best_dev", "best_test")
#: ``--group-by`` names that are not dotted config keys
GROUP_ALIASES = {"seed": "run.seed"}
#: the confidence level of :func:`interval`
LEVEL = 0.95


# ---- statistics ----------------------------------------------------------------------------

def t_quantile(df: int, level: float = LEVEL) -> float:
    """The two-sided Student-t quantile for ``df`` degrees of freedom (2.776 for df=4).

    ``scipy.special.stdtrit`` is imported here, not at module load: ``selfdev --help`` and
    ``compare`` without groups never pay for scipy."""
    from scipy.special import stdtrit

    return float(stdtrit(df, 0.5 + level / 2))


def interval(values: Iterable[float | None], level: float = LEVEL) -> dict[str, Any]:
    """Mean, sample sd, n and the ``level`` Student-t interval of the mean of ``values``.

    Missing values (None: a run with no scored candidate, a failed baseline) are left out and
    ``n`` counts what is left, so the interval is honest about how many runs it rests on.
    With one value the sd and the interval are None (one seed says nothing about the spread);
    with none, everything but ``n`` is None. Returns
    ``{"n", "mean", "sd", "lo", "hi", "half_width"}``, rounded to 6 decimals.
    """
    xs = [float(v) for v in values if v is not None]
    n = len(xs)
    out: dict[str, Any] = {"n": n, "mean": None, "sd": None, "lo": None, "hi": None,
                           "half_width": None}
    if not n:
        return out
    mean = sum(xs) / n
    out["mean"] = round(mean, 6)
    if n > 1:
        sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
        half = t_quantile(n - 1, level) * sd / math.sqrt(n)
        out.update(sd=round(sd, 6), lo=round(mean - half, 6), hi=round(mean + half, 6),
                   half_width=round(half, 6))
    return out


# ---- one run -------------------------------------------------------------------------------

def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"temperature": {"beta": 0.2}}`` -> ``{"temperature.beta": 0.2}`` (lists stay whole)."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def run_record(store: Any, run_id: str) -> dict[str, Any]:
    """One run as ``compare`` sees it: labels, status, flattened configuration, the
    per-iteration stats of ``selfdev show`` (:data:`ITERATION_METRICS` and the rest of
    :meth:`~selfdev.engine.state.RunState.iteration_stats`), the final table's baselines and
    best discovered (chosen by dev)."""
    from selfdev.engine.report import summary
    from selfdev.engine.runs import load_state, writer_status

    data = summary(load_state(store, run_id))
    config = data["config"] or {}
    run_section = config.get("run") or {}
    baselines = {r["method"]: {"dev": r["dev"], "test": r["test"]}
                 for r in data["table"] if r["method"] != "best discovered"}
    best = next((r for r in data["table"] if r["method"] == "best discovered"), None)
    return {
        "run_id": run_id,
        "name": run_section.get("name") or None,
        "tags": list(run_section.get("tags") or []),
        "status": writer_status(store, run_id, data["status"]),
        "seed": run_section.get("seed"),
        "config": flatten(config),
        "iterations": data["iterations"],
        "baselines": baselines,
        "best_dev": best["dev"] if best else None,
        "best_test": best["test"] if best else None,
    }


def differences(records: Sequence[dict[str, Any]]) -> list[str]:
    """The flattened configuration keys whose value is not the same in every run (a key one
    run lacks differs), sorted; names and tags are labels, not configuration."""
    keys = sorted({k for r in records for k in r["config"]} - set(LABEL_KEYS))
    missing = object()
    return [k for k in keys
            if len({repr(r["config"].get(k, missing)) for r in records}) > 1]


# ---- groups --------------------------------------------------------------------------------

def group_key(name: str) -> str:
    """The flattened config key a ``--group-by`` name stands for (``seed`` -> ``run.seed``)."""
    return GROUP_ALIASES.get(name, name)


def check_group_by(records: Sequence[dict[str, Any]], group_by: Sequence[str]) -> None:
    """Refuse a ``--group-by`` key no compared run has, naming the keys that can be used."""
    known = {k for r in records for k in r["config"]}
    for name in group_by:
        if group_key(name) not in known:
            usable = ", ".join(["seed", *(k for k in differences(records) if k != "run.seed")])
            raise SelfdevError(f"--group-by {name!r}: no compared run has this configuration "
                               f"key; use seed or a dotted key such as temperature.beta "
                               f"(keys that differ here: {usable})")


def _sort_key(value: Any) -> tuple:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return (1, repr(value))
    return (0, float(value))


def group_records(records: Sequence[dict[str, Any]],
                  group_by: Sequence[str]) -> list[dict[str, Any]]:
    """``records`` (from :func:`run_record`) grouped by the values of ``group_by`` (``seed``
    or dotted config keys such as ``temperature.beta``; several keys group by their
    combination), groups in ascending order of their values.

    Each group is ``{"values": {key: value}, "label": "temperature.beta=0.1", "runs": [ids],
    "n": runs, "metrics": {name: interval}, "iterations": [{"iteration": t,
    name: interval, ...}], "baselines": {method: {"dev": interval, "test": interval}}}``
    where every interval is :func:`interval` over the group's runs: ``metrics`` has
    :data:`RUN_METRICS` and ``final_mean`` (the mean dev of each run's last iteration),
    ``iterations`` has :data:`ITERATION_METRICS` per iteration number. A run that stopped
    early simply contributes to fewer iterations (each interval's ``n`` says how many).
    This signature and shape are what ``selfdev plot --sweep`` reads: keep them stable.
    """
    keys = [group_key(k) for k in group_by]
    buckets: dict[tuple, list[dict[str, Any]]] = {}
    for r in records:
        values = tuple(r["config"].get(k) for k in keys)
        buckets.setdefault(tuple(repr(v) for v in values), []).append(r)
    groups = []
    for members in buckets.values():
        values = {k: members[0]["config"].get(k) for k in keys}
        iterations = sorted({s["iteration"] for r in members for s in r["iterations"]})
        per_iter = []
        for t in iterations:
            rows = [s for r in members for s in r["iterations"] if s["iteration"] == t]
            per_iter.append({"iteration": t,
                             **{m: interval(s.get(m) for s in rows) for m in ITERATION_METRICS}})
        methods = list(dict.fromkeys(m for r in members for m in r["baselines"]))
        groups.append({
            "values": values,
            "label": " ".join(f"{_short(k)}={_value_text(v)}" for k, v in values.items()),
            "runs": [r["run_id"] for r in members],
            "n": len(members),
            "metrics": {
                **{m: interval(r[m] for r in members) for m in RUN_METRICS},
                "final_mean": interval(r["iterations"][-1].get("mean") if r["iterations"]
                                       else None for r in members),
            },
            "iterations": per_iter,
            "baselines": {m: {split: interval((r["baselines"].get(m) or {}).get(split)
                                              for r in members) for split in ("dev", "test")}
                          for m in methods},
        })
    groups.sort(key=lambda g: tuple(_sort_key(v) for v in g["values"].values()))
    return groups


def _short(key: str) -> str:
    """``run.seed`` -> ``seed`` for labels (the other keys keep their section)."""
    return "seed" if key == "run.seed" else key


def _value_text(value: Any) -> str:
    return "-" if value is None else str(value)


def tagged_runs(store: Any, tags: Sequence[str]) -> list[str]:
    """The ids of the runs whose ``[run] tags`` hold every one of ``tags``, in log order."""
    from selfdev.engine.runs import run_summaries

    return [r["run_id"] for r in run_summaries(store)
            if set(tags) <= set(r.get("tags") or ())]


# ---- the whole comparison --------------------------------------------------------------------

def compare_runs(store: Any, run_ids: Sequence[str],
                 group_by: Sequence[str] | str | None = None) -> dict[str, Any]:
    """Everything ``selfdev compare`` reports, as JSON-able data.

    ``{"runs": [run_record ...], "differences": [keys], "group_by": [keys] | None,
    "groups": [group_records ...] | None, "level": 0.95}``; ``group_by`` is a key or a list
    of keys (``seed``, ``temperature.beta``, ...); an empty list makes one group of all the
    runs (a sweep over seeds only: the interval over seeds). ``run_ids`` are resolved ids (see
    :func:`selfdev.engine.runs.resolve_run`), in the order they are reported.
    """
    if isinstance(group_by, str):
        group_by = [group_by]
    ids = list(dict.fromkeys(run_ids))
    records = [run_record(store, run_id) for run_id in ids]
    keys = [group_key(k) for k in group_by] if group_by is not None else None
    if group_by:
        check_group_by(records, group_by)
    return {
        "runs": records,
        "differences": differences(records),
        "group_by": keys,
        "groups": group_records(records, group_by) if group_by is not None else None,
        "level": LEVEL,
    }


# ---- text ----------------------------------------------------------------------------------

def _rate(value: Any) -> str:
    return "-" if value is None else f"{value:.0%}"


def _cell(iv: dict[str, Any], fmt: Any = format_score) -> str:
    """``mean ± sd`` over ``[lo, hi]`` (two lines, so a table stays within 80 columns)."""
    if iv["mean"] is None:
        return "-"
    if iv["sd"] is None:
        return f"{fmt(iv['mean'])} (n=1)"
    return f"{fmt(iv['mean'])} ± {fmt(iv['sd'])}\n[{fmt(iv['lo'])}, {fmt(iv['hi'])}]"


def _config_text(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(map(str, value)) or "-"
    return _value_text(value)


def render_comparison(data: dict[str, Any], console: Any) -> None:
    """Print a comparison as rich tables that fit 80 columns: the runs with the keys in which
    their configurations differ and their best scores; then either every run's iterations
    side by side, or (grouped) each group's mean ± sd and 95 % interval, overall and per
    iteration; then the baselines."""
    from rich import box
    from rich.table import Table

    runs, diffs = data["runs"], data["differences"]
    simple = dict(box=box.SIMPLE_HEAD, pad_edge=False)
    # the status column only when some run did not finish: at 80 columns, room goes to the
    # keys that differ
    statuses = {r["status"] for r in runs}
    t = Table(title=f"{len(runs)} runs: configuration differences and best scores",
              **simple)
    t.add_column("run", no_wrap=True)
    if statuses != {"finished"}:
        t.add_column("status")
    # up to two differing keys get a column each; more share one column, a "key value" line
    # each (columns of their own were folded a few letters a line at 80 columns)
    stacked = len(diffs) > 2
    if stacked:
        t.add_column("configuration (keys that differ)", overflow="fold")
    else:
        for key in diffs:
            t.add_column(_short(key), justify="right", overflow="fold")
    t.add_column("best dev", justify="right")
    t.add_column("test", justify="right")
    for r in runs:
        status = [str(r["status"])] if statuses != {"finished"} else []
        values = [_config_text(r["config"].get(k)) for k in diffs]
        cells = (["\n".join(f"{_short(k)} {v}" for k, v in zip(diffs, values))] if stacked
                 else values)
        t.add_row(r["run_id"], *status, *cells, format_score(r["best_dev"]),
                  format_score(r["best_test"]), end_section=stacked)
    console.print(t)
    if statuses == {"finished"}:
        console.print("every run finished", highlight=False, style="dim")
    if not diffs:
        console.print("(the configurations are the same: the runs differ only by chance)",
                      highlight=False)
    console.print("test: the test score of the best discovered by dev (the final table's row)",
                  highlight=False, style="dim")
    groups = data.get("groups")
    if groups:
        _render_groups(groups, data["level"], console, simple)
    else:
        _render_iterations(runs, console, simple)
    _render_baselines(data, console, simple)


def _render_iterations(runs: list[dict[str, Any]], console: Any, simple: dict) -> None:
    from rich.table import Table

    t = Table(title="iterations side by side", caption="valid: executable share of new "
              "programs; mean, best: dev scores", **simple)
    for col in ("run", "iter", "valid", "repeats", "unique", "mean", "best"):
        t.add_column(col, justify="left" if col == "run" else "right", no_wrap=col == "run")
    for r in runs:
        for i, s in enumerate(r["iterations"]):
            last = i == len(r["iterations"]) - 1
            t.add_row(r["run_id"] if i == 0 else "", str(s["iteration"]),
                      _rate(s.get("executable_rate")), str(s.get("repeats", "-")),
                      str(s.get("unique", "-")), format_score(s.get("mean")),
                      format_score(s.get("best")), end_section=last)
    console.print(t)


def _render_groups(groups: list[dict[str, Any]], level: float, console: Any,
                   simple: dict) -> None:
    from rich.table import Table

    pct = f"{level:.0%}"
    # the group column is headed by the keys and holds their values, so a long key
    # (temperature.beta) is written once rather than cut in every row
    head = " ".join(_short(k) for k in groups[0]["values"]) or "group"
    label = {id(g): " ".join(_value_text(v) for v in g["values"].values()) or "all runs"
             for g in groups}
    t = Table(title=f"groups: mean ± sd [{pct} t-interval] over runs",
              caption="test: of the best by dev; last mean dev: of the last iteration",
              **simple)
    t.add_column(head, overflow="fold")
    for col in ("n", "best dev", "test", "last mean dev"):
        t.add_column(col, justify="right")
    for g in groups:
        m = g["metrics"]
        t.add_row(label[id(g)], str(g["n"]), _cell(m["best_dev"]), _cell(m["best_test"]),
                  _cell(m["final_mean"]), end_section=True)
    console.print(t)
    t = Table(title=f"iterations by group: mean ± sd [{pct} t-interval]", **simple)
    t.add_column("iter", justify="right")
    t.add_column(head, overflow="fold")
    for col in ("valid", "mean dev", "best dev"):
        t.add_column(col, justify="right")
    iterations = sorted({s["iteration"] for g in groups for s in g["iterations"]})
    for t_ in iterations:
        for g in groups:
            s = next((s for s in g["iterations"] if s["iteration"] == t_), None)
            if s is None:
                continue
            t.add_row(str(t_), label[id(g)], _cell(s["executable_rate"], _rate),
                      _cell(s["mean"]), _cell(s["best"]), end_section=True)
    console.print(t)


def _render_baselines(data: dict[str, Any], console: Any, simple: dict) -> None:
    """Baselines per run when there are few runs (side by side), else mean ± sd over runs."""
    from rich.table import Table

    runs = data["runs"]
    methods = list(dict.fromkeys(m for r in runs for m in r["baselines"]))
    if not methods:
        return
    if len(runs) <= 3:
        t = Table(title="baselines and best discovered (dev / test)", **simple)
        t.add_column("method")
        for r in runs:
            t.add_column(r["run_id"][-12:], justify="right")
        for m in [*methods, "best discovered"]:
            cells = []
            for r in runs:
                b = r["baselines"].get(m) or {}
                if m == "best discovered":
                    b = {"dev": r["best_dev"], "test": r["best_test"]}
                cells.append(f"{format_score(b.get('dev'))} / {format_score(b.get('test'))}")
            t.add_row(m, *cells)
        console.print(t)
        return
    t = Table(title=f"baselines over {len(runs)} runs: mean ± sd", **simple)
    for col in ("method", "n", "dev", "test"):
        t.add_column(col, justify="left" if col == "method" else "right")
    for m in [*methods, "best discovered"]:
        if m == "best discovered":
            dev = interval(r["best_dev"] for r in runs)
            test = interval(r["best_test"] for r in runs)
        else:
            dev = interval((r["baselines"].get(m) or {}).get("dev") for r in runs)
            test = interval((r["baselines"].get(m) or {}).get("test") for r in runs)
        t.add_row(m, str(max(dev["n"], test["n"])), _mean_sd(dev), _mean_sd(test))
    console.print(t)


def _mean_sd(iv: dict[str, Any]) -> str:
    if iv["mean"] is None:
        return "-"
    if iv["sd"] is None:
        return format_score(iv["mean"])
    return f"{format_score(iv['mean'])} ± {format_score(iv['sd'])}"
