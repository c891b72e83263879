"""``selfdev plugins new KIND NAME``: scaffold an installable plugin package.

The package is what datasette's cookiecutter template and llm's plugin tutorial give an author:
a distribution ``selfdev-NAME`` holding one module ``selfdev_NAME`` registered under
``[project.entry-points.selfdev]``, a component of the chosen kind that already works (so the
first ``selfdev install -e`` gives something to run and change), and one test that uses the
fixtures selfdev ships to plugin test suites (``docs/testing-plugins.md``) and passes as
generated. The templates are plain text with ``__NAME__``-style markers, not a templating
engine: what the author gets is exactly what is written here.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from selfdev import SelfdevError, hookimpl

KINDS = ("generator", "domain", "evaluator", "optimizer", "executor", "listener", "command")
NAME_RE = re.compile(r"[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*")
NAME_MUST_BE = "lowercase letters and digits, words joined by '-' or '_', starting with a letter"

#: a completion that holds a working merge program, for the generated tests
TA_COMPLETION = '''TA = """Task arithmetic with a coefficient:
```python
import torch


def merge_models(task_vectors, base, name):
    return {lam} * sum(task_vectors.values())
```
"""
'''

# --------------------------------------------------------------------------------- modules

MODULES: dict[str, str] = {}
TESTS: dict[str, str] = {}

MODULES["generator"] = '''\
"""__DIST__: an algorithm factory for selfdev (a generator named "__NAME__").

Replace ``generate`` with a call to your model; keep completion ``i`` a function of
(seed, i, checkpoint, temperature) only, so a resumed run redoes it identically.
"""
import random

import selfdev

PROGRAM = \'\'\'```python
import torch


def merge_models(task_vectors, base, name):
    """Task arithmetic: the experts' task vectors, summed and scaled."""
    return {lam} * sum(task_vectors.values())
```\'\'\'


class __CLASS__(selfdev.Generator):
    """Writes task-arithmetic programs with random coefficients (a template to replace)."""

    name = "__NAME__"

    class Options(selfdev.Options):
        max_lam: float = selfdev.Field(1.0, gt=0, le=4, description="the largest coefficient")

    def generate(self, prompts, n, temperature, seed, checkpoint=None, iteration=1):
        completions = []
        for p, _prompt in enumerate(prompts):
            for i in range(n):
                rng = random.Random(selfdev.derive_seed(seed, p, i))
                lam = round(rng.uniform(0.1, self.options.max_lam), 3)
                completions.append(selfdev.Completion(PROGRAM.format(lam=lam), prompt_index=p))
        return completions


@selfdev.hookimpl
def register_generators(register):
    register(__CLASS__)
'''

TESTS["generator"] = '''\
import __MODULE__


def test_its_programs_run_and_are_scored(selfdev_engine, selfdev_iteration):
    selfdev_engine.register(__MODULE__)  # a no-op once the package is installed
    state = selfdev_iteration(generator="__NAME__", candidates=3)
    assert state.finished is not None, state.failed
    scored = [c for c in state.candidates.values() if c.dev is not None]
    assert len(scored) == 3, [c.reason for c in state.candidates.values()]
'''

MODULES["domain"] = '''\
"""__DIST__: a merge domain for selfdev (a domain named "__NAME__").

A template with everything a domain does, on a linear classifier over synthetic data: build a
seed model and experts (one per class), write the factory prompt, apply a candidate through
the sandbox (never in this process), apply trusted baselines, hand models to the evaluator.
Replace the data and the models with yours.
"""
import time

import selfdev

FEATURES = 8

PROMPT = """Write a Python function that merges expert models into a seed model.

Setting: a linear classifier (weight [classes, {features}], bias [classes]) was fine-tuned into
one expert per class. For every parameter, an expert's task vector is (expert - seed). Your
function combines the task vectors of one parameter into one merged task vector; the merged
model is seed + merged task vector, scored by its accuracy on all classes.

```python
import torch


def merge_models(task_vectors: dict[str, torch.Tensor], base: torch.Tensor, name: str) -> torch.Tensor:
    return 0.5 * sum(task_vectors.values())
```
Only torch and math may be imported. Answer with one ```python block."""


class Linear:
    """A model handle: maps inputs [n, features] to logits [n, classes]."""

    def __init__(self, weight, bias):
        self.weight, self.bias = weight, bias

    def __call__(self, X):
        return X @ self.weight.T + self.bias


class __CLASS__(selfdev.Domain):
    """Merges per-class experts of a linear classifier on synthetic data (a template)."""

    name = "__NAME__"
    default_evaluator = "accuracy"  # reads labelled_split(split) and calls the model on X

    class Options(selfdev.Options):
        seed: int = selfdev.Field(0, description="seed of the data and of the training")
        classes: int = selfdev.Field(3, ge=2, le=10, description="classes, one expert each")

    def __init__(self, ctx, **options):
        super().__init__(ctx, **options)
        self.base = {}
        self.task_vectors = {}
        self.splits = {}
        self._sandbox = None

    def prepare(self):
        if self.base:
            return self.summary
        import torch

        start = time.perf_counter()
        g = torch.Generator().manual_seed(self.options.seed)
        k = self.options.classes
        centers = 2.0 * torch.randn(k, FEATURES, generator=g)

        def draw(n):
            y = torch.randint(0, k, (n,), generator=g)
            return centers[y] + torch.randn(n, FEATURES, generator=g), y

        self.splits = {"train": draw(600), "dev": draw(200), "test": draw(200)}
        X, y = self.splits["train"]
        zero = {"weight": torch.zeros(k, FEATURES), "bias": torch.zeros(k)}
        self.base = self._train(zero, X, y, steps=3)
        experts = {f"class{c}": self._train(self.base, X[y == c], y[y == c], steps=30)
                   for c in range(k)}
        self.task_vectors = {e: {p: t[p] - self.base[p] for p in self.base}
                             for e, t in experts.items()}
        self.summary = {"domain": self.name, "experts": list(experts),
                        "splits": {s: len(v[1]) for s, v in self.splits.items()},
                        "seconds": round(time.perf_counter() - start, 3)}
        return self.summary

    @staticmethod
    def _train(start, X, y, steps):
        import torch

        params = {p: v.clone().requires_grad_(True) for p, v in start.items()}
        opt = torch.optim.SGD(list(params.values()), lr=0.5)
        for _ in range(steps):
            loss = torch.nn.functional.cross_entropy(X @ params["weight"].T + params["bias"], y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        return {p: v.detach() for p, v in params.items()}

    def model(self, merged):
        return Linear(self.base["weight"] + merged["weight"], self.base["bias"] + merged["bias"])

    def expert_names(self):
        self.prepare()
        return list(self.task_vectors)

    def labelled_split(self, split):
        self.prepare()
        return self.splits[split]

    def prompt(self):
        return PROMPT.format(features=FEATURES)

    def apply(self, code, timeout):
        """Run candidate ``code`` in the sandbox (a jailed child process), once per parameter."""
        self.prepare()
        if self._sandbox is None:
            self._sandbox = selfdev.Sandbox(self.base, self.task_vectors)
        res = self._sandbox.run(code, timeout=timeout)
        if res.status != "ok":
            return selfdev.MergeOutcome(res.status, res.reason, stdout=res.stdout or "",
                                        duration_ms=res.duration_ms)
        return selfdev.MergeOutcome("ok", model=self.model(dict(res.tensors)),
                                    stdout=res.stdout or "", duration_ms=res.duration_ms)

    def apply_function(self, fn):
        """Apply a trusted merge function (a baseline) in this process, on copies."""
        self.prepare()
        try:
            merged = {p: fn({e: tv[p].clone() for e, tv in self.task_vectors.items()},
                            self.base[p].clone(), p) for p in self.base}
        except Exception as exc:
            return selfdev.MergeOutcome("error", f"{type(exc).__name__}: {exc}")
        return selfdev.MergeOutcome("ok", model=self.model(merged))

    def seed_model(self):
        self.prepare()
        return self.model({p: 0 * v for p, v in self.base.items()})

    def expert_model(self, name):
        self.prepare()
        return self.model(self.task_vectors[name])

    def baselines(self):
        return [selfdev.Baseline("task_arithmetic", {"lam": lam},
                                 lambda tvs, base, name, lam=lam: lam * sum(tvs.values()))
                for lam in (0.5, 1.0)]

    def close(self):
        if self._sandbox is not None:
            self._sandbox.close()
            self._sandbox = None


@selfdev.hookimpl
def register_domains(register):
    register(__CLASS__)
'''

TESTS["domain"] = TA_COMPLETION + '''

import __MODULE__


def test_candidates_are_merged_in_the_sandbox_and_scored(selfdev_engine, selfdev_scripted,
                                                         selfdev_iteration):
    selfdev_engine.register(__MODULE__)  # a no-op once the package is installed
    selfdev_scripted.enqueue(TA.format(lam=0.5), TA.format(lam=1.0), "no program here")
    state = selfdev_iteration(domain="__NAME__", generator=selfdev_scripted.name)
    assert state.finished is not None, state.failed
    by_index = {c.index: c for c in state.candidates.values()}
    assert by_index[0].dev is not None and by_index[1].dev is not None
    assert by_index[2].screen == "rejected"
    assert state.baselines["seed"].dev is not None
    assert "task_arithmetic lam=0.5" in state.baselines
'''

MODULES["evaluator"] = '''\
"""__DIST__: a scorer for selfdev (an evaluator named "__NAME__").

Balanced accuracy: the mean over classes of the share of each class classified correctly, so
a merge that sacrifices one expert's classes cannot hide behind the others.
"""
import selfdev


class __CLASS__(selfdev.Evaluator):
    """Balanced accuracy (percent) on the domain's labelled split (a template)."""

    name = "__NAME__"

    def evaluate(self, domain, model, split):
        import torch

        labelled = getattr(domain, "labelled_split", None)
        if labelled is None:
            raise selfdev.ConfigError(f"evaluator '__NAME__' needs a domain with labelled_split(split); "
                                      f"{domain.name!r} has none")
        X, y = labelled(split)
        with torch.no_grad():
            pred = model(X).argmax(-1)
        recalls = [float((pred[y == c] == c).float().mean()) for c in torch.unique(y).tolist()]
        return {"score": 100.0 * sum(recalls) / len(recalls), "classes": len(recalls)}


@selfdev.hookimpl
def register_evaluators(register):
    register(__CLASS__)
'''

TESTS["evaluator"] = '''\
import __MODULE__


def test_it_scores_the_digits_models(selfdev_engine, selfdev_digits):
    selfdev_engine.register(__MODULE__)  # a no-op once the package is installed
    evaluator = selfdev_engine.build("evaluator", "__NAME__")
    seed = evaluator.evaluate(selfdev_digits, selfdev_digits.seed_model(), "dev")
    assert 0 <= seed["score"] <= 100 and seed["classes"] == 10
    expert = selfdev_digits.expert_model(selfdev_digits.expert_names()[0])
    assert evaluator.evaluate(selfdev_digits, expert, "dev")["score"] != seed["score"]


def test_a_run_records_its_scores(selfdev_engine, selfdev_iteration):
    selfdev_engine.register(__MODULE__)
    state = selfdev_iteration(evaluator="__NAME__", candidates=2)
    assert state.started.evaluator == "__NAME__"
    assert state.baselines["seed"].dev is not None
'''

MODULES["optimizer"] = '''\
"""__DIST__: a factory refiner for selfdev (an optimizer named "__NAME__").

A template: it writes the preference pairs it is given into a new factory checkpoint (a
directory), where a real optimizer would train the factory on them (DPO, SFT, ...).
"""
import json

import selfdev


class __CLASS__(selfdev.Optimizer):
    """Writes the pairs it would train on into the next checkpoint (a template)."""

    name = "__NAME__"

    class Options(selfdev.Options):
        max_pairs: int = selfdev.Field(64, ge=1, description="pairs kept per refinement")

    def refine(self, checkpoint, pairs, iteration):
        out = self.ctx.artifacts / f"__NAME__-{iteration}"
        out.mkdir(parents=True, exist_ok=True)
        kept = pairs[: self.options.max_pairs]
        with open(out / "pairs.jsonl", "w") as fh:
            for pair in kept:
                fh.write(json.dumps({"chosen": pair.chosen, "rejected": pair.rejected,
                                     "margin": pair.chosen_score - pair.rejected_score}) + "\\n")
        return selfdev.Refinement(checkpoint=out, metrics={"pairs": len(kept)})


@selfdev.hookimpl
def register_optimizers(register):
    register(__CLASS__)
'''

TESTS["optimizer"] = TA_COMPLETION + '''

import __MODULE__


def test_it_refines_between_iterations(selfdev_engine, selfdev_scripted, selfdev_iteration):
    selfdev_engine.register(__MODULE__)  # a no-op once the package is installed
    selfdev_scripted.enqueue([TA.format(lam=lam) for lam in (0.2, 0.5, 1.0)] * 2)
    state = selfdev_iteration(generator=selfdev_scripted.name, optimizer="__NAME__",
                              iterations=2)
    refined = state.iterations[1].refined
    assert refined.optimizer == "__NAME__" and refined.metrics["pairs"] >= 1
    # the next iteration's generator was handed the new checkpoint
    checkpoint = selfdev_scripted.calls[1].checkpoint
    assert (checkpoint / "pairs.jsonl").read_text().count("\\n") == refined.metrics["pairs"]
'''

MODULES["executor"] = '''\
"""__DIST__: where selfdev runs candidate work (an executor named "__NAME__").

A template: items run one after another in this thread, in order, and each result is yielded
as soon as it is ready; a real executor would send them to other workers or machines.
"""
import selfdev


class __CLASS__(selfdev.Executor):
    """Runs candidate work in this thread, in order (a template)."""

    name = "__NAME__"

    def map(self, fn, items):
        for index, item in enumerate(items):
            yield index, fn(item)


@selfdev.hookimpl
def register_executors(register):
    register(__CLASS__)
'''

TESTS["executor"] = '''\
import __MODULE__


def test_a_run_goes_through_it(selfdev_engine, selfdev_iteration):
    selfdev_engine.register(__MODULE__)  # a no-op once the package is installed
    state = selfdev_iteration(executor="__NAME__", candidates=3)
    assert state.started.executor == "__NAME__"
    assert state.finished is not None, state.failed
    assert all(c.screen is not None for c in state.candidates.values())
'''

MODULES["listener"] = '''\
"""__DIST__: a selfdev listener ("__NAME__"): counts each run's events by type.

``on_event`` is called after each event is committed, in log order. A listener never breaks a
run, so keep it quick and let it fail quietly; it sees what happened, it cannot change it.
"""
from collections import Counter, defaultdict

import selfdev

#: run id -> event type -> how many were committed
COUNTS: dict[str, Counter] = defaultdict(Counter)


@selfdev.hookimpl
def on_event(event):
    COUNTS[event.run_id][event.type] += 1
'''

TESTS["listener"] = '''\
from collections import Counter

import __MODULE__


def test_it_counts_every_committed_event(selfdev_engine, selfdev_iteration):
    selfdev_engine.register(__MODULE__)  # a no-op once the package is installed
    state = selfdev_iteration(candidates=2)
    counts = __MODULE__.COUNTS[state.run_id]
    logged = Counter(e.type for e in selfdev_engine.events(state.run_id))
    assert counts["candidate.generated"] == 2 == logged["candidate.generated"]
    assert counts["run.finished"] == 1
'''

MODULES["command"] = '''\
"""__DIST__: a selfdev command: ``selfdev __NAME__ RUN`` counts a run's events by type."""
from collections import Counter
from pathlib import Path

import click

import selfdev


@click.command(name="__NAME__")
@click.argument("run_ref", metavar="RUN", default="latest")
@click.option("--db", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Event database (default: $SELFDEV_HOME/runs.db).")
def command(run_ref, db):
    """Count the events of RUN (an id, a unique prefix or 'latest') by type."""
    with selfdev.open_store(db, readonly=True) as store:
        run_id = selfdev.resolve_run(store, run_ref)
        counts = Counter(e.type for e in store.iter_events(run_id=run_id))
    for event_type, n in sorted(counts.items()):
        click.echo(f"{n:>6}  {event_type}")


@selfdev.hookimpl
def register_commands(cli):
    cli.add_command(command)
'''

TESTS["command"] = '''\
from click.testing import CliRunner

import __MODULE__


def test_it_counts_the_events_of_a_run(selfdev_engine, selfdev_scripted, selfdev_iteration):
    selfdev_scripted.enqueue("no program in this answer")
    state = selfdev_iteration(generator=selfdev_scripted.name)
    result = CliRunner().invoke(__MODULE__.command, ["latest", "--db", str(selfdev_engine.store.path)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "     1  candidate.generated" in lines and "     1  run.finished" in lines
    assert len(lines) == len({e.type for e in selfdev_engine.events(state.run_id)})
'''

PYPROJECT = '''\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "__DIST__"
version = "0.1.0"
description = __DESCRIPTION_TOML__
readme = "README.md"
requires-python = ">=3.11"
dependencies = [__DEPENDENCIES__]

[project.optional-dependencies]
test = ["pytest>=8"]

# selfdev finds the plugin through this entry point (group "selfdev")
[project.entry-points.selfdev]
__NAME__ = "__MODULE__"

[tool.setuptools]
py-modules = ["__MODULE__"]

[tool.pytest.ini_options]
testpaths = ["tests"]
'''

README = '''\
# __DIST__

__DESCRIPTION__

## Use

```bash
selfdev install __DIST__      # or, from this folder: selfdev install -e .
selfdev plugins               # lists __NAME__ with its hooks and components
```

## Develop

```bash
selfdev install -e '.[test]'
python -m pytest
```

The tests use the fixtures selfdev ships to plugin test suites (`selfdev_engine`,
`selfdev_iteration`, `selfdev_scripted`, `selfdev_digits`, ...): see selfdev's
`docs/testing-plugins.md`.
'''

DESCRIPTIONS = {
    "generator": "An algorithm factory (generator) for selfdev.",
    "domain": "A merge domain for selfdev.",
    "evaluator": "A scorer (evaluator) for selfdev.",
    "optimizer": "A factory refiner (optimizer) for selfdev.",
    "executor": "An executor for selfdev.",
    "listener": "A listener for selfdev's events.",
    "command": "A command for the selfdev CLI.",
}


def normalise_name(name: str) -> str:
    """The plugin's name without a ``selfdev-`` prefix; refuses names pip or Python cannot use."""
    bare = re.sub(r"^selfdev[-_]", "", name.strip())
    if not NAME_RE.fullmatch(bare):
        raise SelfdevError(f"plugin name {name!r} is not allowed; use {NAME_MUST_BE} (e.g. 'shuffle')")
    return bare


def render(kind: str, name: str, description: str | None = None) -> dict[str, str]:
    """The files of a ``selfdev-NAME`` package of ``kind``: relative path -> text."""
    if kind not in KINDS:
        raise SelfdevError(f"unknown plugin kind {kind!r}; allowed: {', '.join(KINDS)}")
    name = normalise_name(name)
    module = "selfdev_" + name.replace("-", "_")
    cls = "".join(part.capitalize() for part in re.split(r"[-_]", name)) + kind.capitalize()
    from selfdev import __version__

    summary = " ".join((description or DESCRIPTIONS[kind]).split())  # one line
    deps = [f'"selfdev>={__version__}"'] + (['"click>=8.1"'] if kind == "command" else [])
    values = {
        "__DIST__": f"selfdev-{name}",
        "__MODULE__": module,
        "__CLASS__": cls,
        "__NAME__": name,
        "__DESCRIPTION_TOML__": json.dumps(summary, ensure_ascii=False),  # a valid TOML string
        "__DESCRIPTION__": summary,
        "__DEPENDENCIES__": ", ".join(deps),
    }

    def fill(text: str) -> str:
        for marker, value in values.items():
            text = text.replace(marker, value)
        return text

    return {
        "pyproject.toml": fill(PYPROJECT),
        "README.md": fill(README),
        f"{module}.py": fill(MODULES[kind]),
        f"tests/test_{module}.py": fill(TESTS[kind]),
    }


def scaffold(kind: str, name: str, parent: Path, description: str | None = None) -> Path:
    """Write the package into ``parent/selfdev-NAME`` (which must not exist or be empty)."""
    files = render(kind, name, description)
    target = parent / f"selfdev-{normalise_name(name)}"
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise SelfdevError(f"{target} already exists and is not empty; choose another --dir or name")
    for rel, text in files.items():
        path = target / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return target


def _command() -> Any:
    import click

    @click.command(name="new")
    @click.argument("kind")
    @click.argument("name")
    @click.option("--dir", "parent", type=click.Path(file_okay=False, path_type=Path),
                  default=Path("."), show_default=True,
                  help="Where to create the package folder selfdev-NAME.")
    @click.option("--description", default=None, help="One line for the package metadata.")
    def new(kind: str, name: str, parent: Path, description: str | None) -> None:
        """Scaffold an installable plugin package: selfdev-NAME with module selfdev_NAME, a
        working KIND component, its entry point and a passing test.

        KIND is one of generator, domain, evaluator, optimizer, executor, listener, command."""
        target = scaffold(kind, name, parent, description)
        click.echo(f"created {target}/ ({kind} {normalise_name(name)!r}):")
        for path in sorted(p for p in target.rglob("*") if p.is_file()):
            click.echo(f"  {path.relative_to(target)}")
        click.echo(f"next: cd {target} && selfdev install -e '.[test]' && python -m pytest")

    return new


@hookimpl
def register_commands(cli):
    import click

    group = cli.commands.get("plugins")
    if isinstance(group, click.Group):
        group.add_command(_command())
