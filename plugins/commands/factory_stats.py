"""``selfdev factory stats``: measure the embedded tiny factory (novelty, static screen pass
rate, sampling speed and, with ``--domain``, the executable rate and dev scores in a domain's
sandbox)."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from selfdev import Context, NullProgress, get_registry, hookimpl, selfdev_home
from selfdev.plugins.factory.programs import candidate_code, program_keys, screen_code
from selfdev.plugins.generators.tiny import SIZES, TinyGenerator, corpus_programs, spec_for


def run_candidates(codes: list[str | None], domain: Any, evaluator: Any = None,
                   timeout: float = 10.0) -> list[tuple[str, float | None]]:
    """``(status, dev score)`` of each program, run through ``domain.apply`` (the sandbox) and
    scored by ``evaluator`` on the dev split; ``("unparsed", None)`` where there is no program."""
    out: list[tuple[str, float | None]] = []
    for code in codes:
        if code is None:
            out.append(("unparsed", None))
            continue
        outcome = domain.apply(code, timeout)
        score = None
        if outcome.ok and evaluator is not None:
            score = evaluator.evaluate(domain, outcome.model, "dev").get("score")
        out.append((outcome.status, score))
    return out


def measure(generator: TinyGenerator | Any, *, samples: int = 100, temperature: float = 1.2,
            seed: int = 0, checkpoint: Path | None = None, corpus: list[str] | None = None,
            domain: Any = None, evaluator: Any = None) -> dict:
    """Sample ``samples`` completions and report what they are (used by the CLI and the tests).

    With a ``domain`` (and ``evaluator``), every program also runs in the sandbox: the
    executable rate and the mean dev score of the executable ones.
    """
    prompt = "(the tiny factory does not read the prompt)"
    completions = generator.generate([prompt], samples, temperature, seed, checkpoint=checkpoint)
    stats = dict(getattr(generator, "last_stats", {}))
    if corpus is None:
        loaded = generator.load(checkpoint)
        spec = (generator.build_spec() if isinstance(generator, TinyGenerator)
                else spec_for("default"))
        corpus = corpus_programs(spec) if loaded.manifest.get("factory") == "tiny" else []
    corpus_exact, corpus_shape = set(), set()
    for program in corpus:
        keys = program_keys(program)
        if keys:
            corpus_exact.add(keys[0])
            corpus_shape.add(keys[1])
    parsed = screened = novel_exact = novel_shape = 0
    distinct: set[str] = set()
    for c in completions:
        code = candidate_code(c.text)
        if code is None:
            continue
        parsed += 1
        if screen_code(code)[0]:
            screened += 1
        keys = program_keys(code)
        if keys:
            distinct.add(keys[0])
            novel_exact += keys[0] not in corpus_exact
            novel_shape += keys[1] not in corpus_shape
    n = max(1, len(completions))
    extra: dict[str, Any] = {}
    if domain is not None:
        runs = run_candidates([candidate_code(c.text) for c in completions], domain, evaluator)
        scores = [s for status, s in runs if status == "ok" and s is not None]
        extra["executable_rate"] = round(sum(status == "ok" for status, _ in runs) / n, 4)
        if evaluator is not None:
            extra["mean_dev_score"] = round(sum(scores) / len(scores), 4) if scores else None
            extra["best_dev_score"] = round(max(scores), 4) if scores else None
            # every sample counts, a failed one as 0: "how good is a draw from the factory"
            extra["mean_dev_score_all"] = round(sum(scores) / n, 4)
    return {
        **extra,
        "samples": len(completions), "temperature": temperature, "seed": seed,
        "parsed_rate": round(parsed / n, 4),
        "screen_pass_rate": round(screened / n, 4),
        "novel_rate": round(novel_exact / n, 4),
        "novel_of_parsed": round(novel_exact / max(1, parsed), 4),
        "novel_structure_rate": round(novel_shape / n, 4),
        "distinct_programs": len(distinct),
        "mean_tokens": round(sum(c.meta.get("tokens", 0) for c in completions) / n, 1),
        "truncated_rate": round(sum(c.meta.get("finish") == "length" for c in completions) / n, 4),
        **{f"gen_{k}": v for k, v in stats.items()},
    }


def _stats_command() -> Any:
    import click

    @click.group(name="factory")
    def factory() -> None:
        """The embedded tiny factory: build it, measure it."""

    @factory.command(name="stats")
    @click.option("--size", default="default", show_default=True, type=click.Choice(sorted(SIZES)))
    @click.option("--samples", default=100, show_default=True, type=click.IntRange(1))
    @click.option("--temperature", default=1.2, show_default=True, type=float)
    @click.option("--seed", default=0, show_default=True, type=int)
    @click.option("--checkpoint", default=None, type=click.Path(file_okay=False, path_type=Path),
                  help="A refined factory directory (default: the pretrained one).")
    @click.option("--threads", default=0, show_default=True, type=int,
                  help="0 = automatic (2 on an idle machine, 1 under load).")
    @click.option("--top-p", "top_p", default=1.0, show_default=True, type=float)
    @click.option("--domain", default=None,
                  help="Also run every program in this domain's sandbox and score it on dev "
                       "(executable rate, mean dev score).")
    @click.option("--json", "as_json", is_flag=True, help="Print JSON.")
    def stats(size: str, samples: int, temperature: float, seed: int, checkpoint: Path | None,
              threads: int, top_p: float, domain: str | None, as_json: bool) -> None:
        """Build (if needed) and sample the tiny factory; report novelty, screen pass rate,
        speed and the build report."""
        home = selfdev_home()
        ctx = Context(run_id="factory-stats", seed=seed, home=home,
                      artifacts=home / "artifacts" / "factory-stats", progress=NullProgress())
        gen = TinyGenerator(ctx, size=size, threads=threads, top_p=top_p)
        t0 = time.perf_counter()
        path = gen.initial_checkpoint()
        ready = time.perf_counter() - t0
        dom = evaluator = None
        if domain:
            registry = get_registry()
            dom = registry.get("domain", domain)(ctx)
            dom.prepare()
            evaluator = registry.get("evaluator", dom.default_evaluator)(ctx)
        try:
            report = measure(gen, samples=samples, temperature=temperature, seed=seed,
                             checkpoint=checkpoint, domain=dom, evaluator=evaluator)
        finally:
            if dom is not None:
                dom.close()
        report["factory"] = str(checkpoint or path)
        report["ready_seconds"] = round(ready, 2)
        build_file = path / "build.json"
        if build_file.is_file():
            report["build"] = json.loads(build_file.read_text())
        if as_json:
            click.echo(json.dumps(report, indent=2, sort_keys=True))
            return
        for key in sorted(report):
            if key != "build":
                click.echo(f"{key:<28} {report[key]}")
        if "build" in report:
            b = report["build"]
            click.echo(f"{'build':<28} {b['seconds']} s ({b['parameters']} parameters, "
                        f"{b['steps']} steps, loss {b['loss_first']} -> {b['loss_last']}, "
                        f"{b['epochs']} epochs over {b['corpus_used']} programs)")

    return factory


@hookimpl
def register_commands(cli):
    cli.add_command(_stats_command())
