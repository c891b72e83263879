"""``selfdev apply``: apply discovered merge algorithms to other experts (the paper's Table 3).

    selfdev apply ALGO.py [ALGO2.py ...] --base DIR --expert NAME=DIR ... [--out DIR] [--eval gsm8k]
    selfdev apply ALGO.py --toymath alt          # the toymath "unseen experts" set

Each algorithm (a file with ``merge_models``, or a whole completion holding one) is applied
through the sandbox, per tensor, with no re-optimisation; the seed, every expert and the human
baselines (the shared sweep + Model Stock + SLERP) are scored on the same dev/test split, and a
table is printed (best baseline chosen by dev, as the paper re-tunes TA for the new experts).
``--out`` writes the merged model(s) as normal HF directories; ``--db`` records the table as
events (``transfer.started``, ``transfer.row_evaluated``, ``transfer.finished``).
"""
from __future__ import annotations

import ast
import json
import re
import textwrap
import time
import uuid
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import click

import selfdev
from selfdev import Context, NullProgress, SelfdevError, hookimpl, parse_kv, selfdev_home
from selfdev.plugins.domains.lm.domain import LMDomain
from selfdev.plugins.domains.toymath.domain import ToyMathDomain
from selfdev.plugins.evaluators.gsm8k import GSM8kEvaluator
from selfdev.plugins.evaluators.toymath import ToyMathEvaluator
from selfdev.plugins.listeners.console import ConsoleListener


def read_algorithm(path: str | Path) -> str:
    """The ``merge_models`` code of a file (a plain .py file or a completion with a code block).

    A file whose code does not parse is refused naming the line, since "no merge_models
    function found" would send its author looking for the wrong mistake.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise SelfdevError(f"{path}: not UTF-8 text (byte {exc.object[exc.start]:#04x}); "
                           "save the algorithm as UTF-8") from None
    code = selfdev.extract_candidate(text)
    if not code or "merge_models" not in code:
        problem = syntax_problem(text)
        if problem:
            raise SelfdevError(f"{path}: {problem}")
        raise SelfdevError(f"{path}: no merge_models function found")
    return code


def syntax_problem(text: str) -> str | None:
    """Where the code of ``text`` fails to parse (``line N: why: the line``), or None.

    A plain Python file is parsed whole; in a completion (markdown with fenced blocks) each
    block that mentions ``merge_models`` is parsed, and line numbers count from the file's
    first line either way.
    """
    lines = text.split("\n")
    fence = re.compile(r"^[ \t]{0,3}(`{3,}|~{3,})")
    blocks: list[tuple[int, str]] = []  # (line offset, source)
    opened: tuple[int, str] | None = None
    for i, line in enumerate(lines):
        m = fence.match(line)
        if m and opened is None:
            opened = (i + 1, m.group(1)[0])
        elif opened is not None and line.strip() and set(line.strip()) == {opened[1]}:
            blocks.append((opened[0], "\n".join(lines[opened[0]:i])))
            opened = None
    if opened is not None:
        blocks.append((opened[0], "\n".join(lines[opened[0]:])))
    if not blocks:
        blocks = [(0, text)]
    for offset, source in blocks:
        if "merge_models" not in source:
            continue
        try:
            ast.parse(textwrap.dedent(source))
        except SyntaxError as exc:
            number = offset + (exc.lineno or 1)
            shown = lines[number - 1].strip() if 0 < number <= len(lines) else ""
            return f"line {number}: {exc.msg}" + (f": {shown[:80]}" if shown else "")
    return None


def check_model_dir(path: str, option: str) -> None:
    """A model directory must be a Hugging Face one (``config.json`` beside the weights):
    the merged model is loaded back with transformers to be scored, which needs it."""
    if not (Path(path) / "config.json").is_file():
        raise SelfdevError(f"{option}: {path} has no config.json, so it is not a Hugging Face "
                           "model directory (config.json and model.safetensors, as "
                           "save_pretrained writes them)")


class _Recorder:
    def __init__(self, db: str | None, run_id: str) -> None:
        self.store = None
        self.run_id = run_id
        if db:
            Path(db).parent.mkdir(parents=True, exist_ok=True)
            self.store = selfdev.EventStore(db, writer="selfdev apply")

    def emit(self, type_: str, payload: dict[str, Any]) -> None:
        if self.store is None:
            return
        event = selfdev.NewEvent(type_, _jsonable(payload), source=__name__)
        self.store.append(self.run_id, [event])

    def close(self) -> None:
        if self.store is not None:
            self.store.close()


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


def _evaluator_class(name: str):
    if name == "gsm8k":
        return GSM8kEvaluator
    if name == "toymath":
        return ToyMathEvaluator
    return selfdev.get_registry().get("evaluator", name)  # third-party evaluators


def _parse_opts(items: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise SelfdevError(f"--eval-option: expected KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def run_transfer(algorithms: list[str], *, base: str | None = None, experts: dict[str, str] | None = None,
                 out: str | None = None, evaluator: str = "gsm8k", eval_data: str | None = None,
                 eval_options: dict[str, Any] | None = None, mergeable: str = "all",
                 splits: tuple[str, ...] = ("dev", "test"), baselines: bool = True, timeout: float = 120.0,
                 seed: int = 0, toymath: str | None = None, toymath_size: str = "full",
                 progress=None, db: str | None = None) -> dict[str, Any]:
    """Apply ``algorithms`` to the experts and score everything; returns the table as data."""
    progress = progress or NullProgress()
    run_id = f"transfer-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    codes = {Path(a).stem: read_algorithm(a) for a in algorithms}
    artifacts = selfdev_home() / "transfer" / run_id
    ctx = Context(run_id=run_id, seed=seed, home=selfdev_home(), artifacts=artifacts, progress=progress)
    if toymath:
        domain = ToyMathDomain(ctx, size=toymath_size, seed=seed, expert_set=toymath, mergeable=mergeable)
        if evaluator == "gsm8k":
            evaluator = "toymath"
    else:
        if not base or not experts:
            raise SelfdevError("selfdev apply needs --base and at least one --expert NAME=DIR (or --toymath SET)")
        check_model_dir(base, "--base")
        for name, path in experts.items():
            check_model_dir(path, f"--expert {name}")
        domain = LMDomain(ctx, seed_model=base, experts=experts, mergeable=mergeable, eval_data=eval_data, seed=seed)
    rec = _Recorder(db, run_id)
    ev = None
    rows: list[dict[str, Any]] = []
    try:
        summary = domain.prepare()
        if evaluator != "none":
            ev = _evaluator_class(evaluator)(ctx, **(eval_options or {}))
        split_info = ev.split_info(domain) if ev is not None and hasattr(ev, "split_info") else {}
        split_info.pop("dev_indices", None)
        rec.emit("transfer.started", {"algorithms": {k: v for k, v in codes.items()}, "domain": summary,
                                      "evaluator": evaluator, "split": split_info})

        def score(model) -> dict[str, Any]:
            if ev is None:
                return {}
            return {s: ev.evaluate(domain, model, s) for s in splits}

        entries: list[tuple[str, str, Any]] = [("seed", "reference", None)]
        entries += [(f"expert {e}", "reference", e) for e in domain.expert_names()]
        if baselines and ev is not None:
            entries += [(b.label, "baseline", b) for b in domain.baselines()]
        entries += [(name, "algorithm", code) for name, code in codes.items()]
        task = progress.task("transfer: merging and scoring", total=len(entries))
        outs = {}
        for label, kind, obj in entries:
            t0 = time.perf_counter()
            if kind == "reference":
                model = domain.seed_model() if obj is None else domain.expert_model(obj)
                status, reason = "ok", None
            elif kind == "baseline":
                res = domain.apply_function(obj.fn)
                model, status, reason = res.model, res.status, res.reason
            else:
                target = None
                if out:
                    target = Path(out) if len(codes) == 1 else Path(out) / label
                    outs[label] = str(target)
                res = domain.apply(obj, timeout, out_dir=target)
                model, status, reason = res.model, res.status, res.reason
            metrics = score(model) if status == "ok" else {}
            row = {"label": label, "kind": kind, "status": status, "reason": reason,
                   "scores": {s: m.get("score") for s, m in metrics.items()}, "metrics": metrics,
                   "seconds": round(time.perf_counter() - t0, 2)}
            rows.append(row)
            rec.emit("transfer.row_evaluated", row)
            task.advance()
        task.close()
    finally:
        domain.close()
        if ev is not None and hasattr(ev, "close"):
            ev.close()
    sel = "dev" if "dev" in splits else splits[0]
    base_rows = [r for r in rows if r["kind"] == "baseline" and r["status"] == "ok"]
    best = max(base_rows, key=lambda r: r["scores"].get(sel) or -1, default=None)
    result = {"run_id": run_id, "rows": rows, "splits": list(splits), "best_baseline": best["label"] if best else None,
              "outputs": outs, "split_info": split_info, "domain": summary}
    rec.emit("transfer.finished", {"best_baseline": result["best_baseline"], "outputs": outs})
    rec.close()
    return result


def render_table(result: dict[str, Any], console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    splits = result["splits"]
    seed_row = next((r for r in result["rows"] if r["label"] == "seed"), None)
    ref = "test" if "test" in splits else splits[0]
    table = Table(title="selfdev apply: algorithms vs baselines on these experts")
    table.add_column("method")
    table.add_column("kind")
    for s in splits:
        table.add_column(s, justify="right")
    table.add_column(f"{ref} Δ seed", justify="right")
    table.add_column("status")
    best = result.get("best_baseline")
    for r in result["rows"]:
        label = r["label"] + (" *" if r["label"] == best else "")
        cells = []
        for s in splits:
            v = r["scores"].get(s)
            cells.append("-" if v is None else f"{v:.1f}")
        v, s0 = r["scores"].get(ref), (seed_row or {}).get("scores", {}).get(ref)
        delta = "-" if v is None or s0 is None else f"{v - s0:+.1f}"
        style = "bold" if r["kind"] == "algorithm" else None
        table.add_row(label, r["kind"], *cells, delta, r["status"] if r["status"] == "ok" else
                      f"{r['status']}: {(r['reason'] or '')[:60]}", style=style)
    console.print(table)
    if best:
        console.print(f"* best baseline by {'dev' if 'dev' in splits else splits[0]} (re-tuned on these experts)")
    for name, path in result.get("outputs", {}).items():
        console.print(f"merged model of {name}: {path}")


@click.command("apply")
@click.argument("algorithms", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--base", "base", type=click.Path(exists=True, file_okay=False), help="Seed model directory.")
@click.option("--expert", "experts", multiple=True, metavar="NAME=DIR", help="An expert model (repeat).")
@click.option("--out", "out", type=click.Path(file_okay=False), help="Write the merged model(s) here.")
@click.option("--eval", "evaluator", default="gsm8k", show_default=True,
              help="Evaluator name (gsm8k, toymath, ...) or 'none'.")
@click.option("--eval-data", help="GSM8k-format jsonl, or a directory with test.jsonl [dev.jsonl train.jsonl].")
@click.option("--eval-option", "eval_options", multiple=True, metavar="KEY=VALUE",
              help="Evaluator option (repeat), e.g. shots=0 or test_limit=200.")
@click.option("--mergeable", default="all", show_default=True, help="all | mlp | re:<regex>")
@click.option("--split", "splits", default="dev,test", show_default=True, help="Comma-separated splits to score.")
@click.option("--baselines/--no-baselines", default=True, show_default=True)
@click.option("--timeout", default=120.0, show_default=True, help="Seconds per algorithm (all tensors).")
@click.option("--seed", default=0, show_default=True, help="Seed for randomised baselines (DARE).")
@click.option("--toymath", type=click.Choice(["main", "alt"]), default=None,
              help="Use the built-in toymath family with this expert set instead of --base/--expert.")
@click.option("--toymath-size", type=click.Choice(["full", "test"]), default="full", show_default=True)
@click.option("--db", "db", type=click.Path(dir_okay=False), default=None, help="Record events in this database.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def apply_cmd(algorithms, base, experts, out, evaluator, eval_data, eval_options, mergeable, splits, baselines,
              timeout, seed, toymath, toymath_size, db, as_json, quiet):
    """Apply discovered ALGORITHMS to other experts (no re-optimisation) and compare with baselines."""
    exp = parse_kv(experts)
    split_t = tuple(s.strip() for s in splits.split(",") if s.strip())
    # the run's console display draws the bars (on stderr); --quiet and --json draw none
    display = nullcontext(NullProgress()) if quiet or as_json else ConsoleListener()
    with display as progress:
        result = run_transfer(list(algorithms), base=base, experts=exp, out=out, evaluator=evaluator,
                              eval_data=eval_data, eval_options=_parse_opts(eval_options), mergeable=mergeable,
                              splits=split_t, baselines=baselines, timeout=timeout, seed=seed, toymath=toymath,
                              toymath_size=toymath_size, progress=progress, db=db)
    if as_json:
        slim = dict(result, rows=[{k: v for k, v in r.items() if k != "metrics"} | {"metrics": {
            s: {k: v for k, v in m.items()} for s, m in r["metrics"].items()}} for r in result["rows"]])
        click.echo(json.dumps(slim, indent=2, default=str))
    else:
        render_table(result)


@hookimpl
def register_commands(cli):
    cli.add_command(apply_cmd)
