"""The public plugin API of selfdev: the shapes plugins implement and the values they exchange.

Plugins import from here (``from selfdev.engine.api import ...``) and nothing deeper in ``engine``.
Every component class has a ``name`` class attribute (unique within its kind) and is built by
the engine as ``cls(ctx, **options)`` where ``options`` come from the run configuration's table
for that component. A component declares its options once, as a nested ``Options`` model
(``selfdev.Options``: type, bounds, default, description; see ``engine/options.py``); the
engine refuses unknown keys and bad values with one line before anything is built, and the
component reads the validated values from ``self.options``.

Heavy libraries (torch, transformers, trl, ...) must be imported lazily inside methods.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable, Iterator, Protocol

from pydantic import ValidationError

from selfdev.engine import options as _options


# --------------------------------------------------------------------------------------------
# helpers shared by every plugin


def selfdev_version() -> str:
    """selfdev's version: the installed distribution's metadata is the one place it lives."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("selfdev")
    except PackageNotFoundError:  # pragma: no cover - running from an uninstalled tree
        return "0+unknown"


def selfdev_home() -> Path:
    """``$SELFDEV_HOME`` (default ``~/.selfdev``): the default database, caches and artifacts."""
    home = Path(os.environ.get("SELFDEV_HOME") or Path.home() / ".selfdev")
    try:
        home.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a user's setting, so one line (SelfdevError), not a traceback
        raise SelfdevError(f"SELFDEV_HOME {home} cannot be created ({exc.strerror}); set "
                           "SELFDEV_HOME to a folder you can write, or pass --db") from None
    return home


def cache_dir(*parts: str) -> Path:
    """A cache folder under ``$SELFDEV_HOME/cache`` (created)."""
    path = selfdev_home().joinpath("cache", *parts)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SelfdevError(f"cannot create the cache folder {path} ({exc.strerror}); set "
                           "SELFDEV_HOME to a folder you can write") from None
    return path


@contextlib.contextmanager
def cache_lock(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` while a cache entry is built, so two processes
    building the same cached model wait for each other instead of racing."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Use exactly ``n`` torch threads inside the block, then restore the previous setting.

    Model builds pin it so a build stays reproducible even if a future kernel splits a sum by
    thread; today builds and refinements are bit-identical with 1 and 2 threads
    (``tests/plugins/test_optimizers_dpo.py``). torch is imported here, not before.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(max(1, int(n)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


_reserved_cores = 0


@contextlib.contextmanager
def reserve_cores(n: int) -> Iterator[None]:
    """Inside the block, automatic torch threads (``plugins/factory/threads.py``) leave ``n``
    cores to other work of this process: the engine's lookahead runs sandbox children beside
    the factory, and OpenMP threads that share their cores with them wait at every barrier."""
    global _reserved_cores
    _reserved_cores += n
    try:
        yield
    finally:
        _reserved_cores -= n


def reserved_cores() -> int:
    """Cores held back by :func:`reserve_cores` right now."""
    return _reserved_cores


def format_score(value: Any) -> str:
    """A score for tables and logs: two decimals, ``-`` for none (one formatter everywhere)."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed derived from any parts, e.g. ``derive_seed(run_seed, iteration, index)``.

    Every random choice in selfdev is seeded this way, so redone work gives the same result.
    """
    text = ":".join(str(p) for p in parts)
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big") >> 1


class SelfdevError(Exception):
    """An error the user can fix; the CLI prints it as one line (no traceback)."""


class ConfigError(SelfdevError):
    """Bad configuration: names the offending key and the allowed values."""


# --------------------------------------------------------------------------------------------
# values


@dataclass
class Completion:
    """One sample from an algorithm factory: the raw text plus optional metadata.

    ``text`` is the factory's answer as it came out: the engine stores it whole (a blob of
    ``candidate.generated``) and takes from it the first fenced code block that defines
    ``merge_models`` (or, with no such block, bare code that does); everything else in the
    text is ignored. ``prompt_index`` says which of the prompts it answers. ``meta`` is recorded as
    ``candidate.generated``'s ``meta``: a JSON object (str keys; finite numbers, strings, lists,
    dicts), e.g. token counts or the sampling parameters actually used.
    """

    text: str
    prompt_index: int = 0
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Pair:
    """A DPO preference pair built from dev scores (chosen scored higher than rejected)."""

    prompt: str
    chosen: str
    rejected: str
    chosen_score: float | None = None
    rejected_score: float | None = None


@dataclass
class Refinement:
    """What an optimizer returns: the new factory checkpoint (a directory) and its metrics."""

    checkpoint: Path | None
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass
class MergeOutcome:
    """Result of applying one candidate: ``status`` is ok|rejected|error|timeout|killed."""

    status: str
    reason: str | None = None
    model: Any = None  # domain-specific merged model handle (only when status == "ok")
    stdout: str = ""
    duration_ms: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass
class Baseline:
    """A human merge method with fixed hyper-parameters, e.g. ``ties`` with density 0.2, λ 0.5.

    ``fn(task_vectors: dict[str, Tensor], base: Tensor, name: str) -> Tensor`` has exactly the
    candidate contract, so baselines and candidates go through the same code path.
    """

    method: str
    params: dict[str, Any]
    fn: Callable[..., Any]

    @property
    def label(self) -> str:
        if not self.params:
            return self.method
        inner = " ".join(f"{k}={v}" for k, v in self.params.items())
        return f"{self.method} {inner}"


# --------------------------------------------------------------------------------------------
# the run context handed to every component


@dataclass
class Context:
    """What the engine gives components: where to put things, the run seed, progress reporting."""

    run_id: str
    seed: int
    home: Path
    artifacts: Path  # this run's artifact folder (checkpoints named by hash)
    progress: "Progress"
    options: dict[str, Any] = field(default_factory=dict)  # the whole validated config, read-only
    db: Path | None = None  # the run's database file (None for in-memory stores)


class Progress(Protocol):
    """Progress reporting (the console listener draws rich progress bars from it)."""

    def task(self, description: str, total: int | None = None) -> "ProgressTask": ...


class ProgressTask(Protocol):
    def advance(self, n: int = 1) -> None: ...
    def close(self) -> None: ...


class NullProgress:
    """Progress that draws nothing (tests, library use)."""

    class _Task:
        def advance(self, n: int = 1) -> None:
            pass

        def close(self) -> None:
            pass

    def task(self, description: str, total: int | None = None) -> "NullProgress._Task":
        return NullProgress._Task()


# --------------------------------------------------------------------------------------------
# component kinds (plugins subclass these; the engine only relies on the methods shown)


class Component:
    """The base of every component kind: a ``name``, the registering ``plugin``, and options.

    A component declares its options once, as a nested ``Options`` model (type, bounds, default,
    description); the engine validates the run's table for the component against it before
    anything is built, and ``__init__`` stores the validated model as ``self.options``::

        class Shuffle(Optimizer):
            class Options(selfdev.Options):
                epochs: int = selfdev.Field(1, ge=1, description="passes over the pairs")

            def refine(self, checkpoint, pairs, iteration):
                for _ in range(self.options.epochs): ...

    A subclass that overrides ``__init__`` takes ``**options`` and passes them to
    ``super().__init__(ctx, **options)``. A component written before options were declared
    (keyword arguments of ``__init__``, no ``Options``) still works: its parameters are its
    options (see :func:`selfdev.engine.config.legacy_parameters`).
    """

    name: ClassVar[str] = ""
    #: set by the registry: the plugin (distribution or module) that registered the component
    plugin: ClassVar[str] = ""

    class Options(_options.Options):
        """No options."""

    options: "_options.Options"

    def __init__(self, ctx: Context, **options: Any) -> None:
        self.ctx = ctx
        cls = type(self)
        self.options = validate_options(kind_of(cls), cls.name, cls.Options, options)

    # one accelerator, three phases (engine/device.py has the contract); CPU components keep
    # these no-op defaults

    def release(self) -> None:
        """Give back all accelerator memory this component holds: the loop calls it before
        another phase (generation, evaluation, refinement) takes the device."""

    def acquire(self) -> None:
        """Take the device again before this component's phase (a component used while
        released must also acquire by itself)."""


def validate_options(kind: str, name: str, model: type[_options.Options],
                     raw: dict[str, Any]) -> _options.Options:
    """Validate a component's config table against its ``Options``; a bad one raises
    ``ConfigError`` with one line (see :func:`selfdev.engine.options.explain`)."""
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_options.explain(kind, name, model, raw, exc)) from None


class Generator(Component):
    """An algorithm factory: samples completions that should contain ``merge_models``.

    The contract: ``generate`` returns ``n`` :class:`Completion` objects per prompt (the engine
    passes one prompt, the domain's, and records completion ``i`` as candidate ``i`` of the
    iteration); an empty list fails the run. A completion whose text holds no ``merge_models``
    is recorded and rejected at screening, not an error.
    """

    def generate(
        self,
        prompts: list[str],
        n: int,
        temperature: float,
        seed: int,
        checkpoint: Path | None = None,
        iteration: int = 1,
    ) -> list[Completion]:
        """Return ``n`` completions for each prompt (``prompt_index`` says which).

        ``checkpoint`` is the factory state produced by the last refinement (None = initial);
        ``iteration`` is the loop iteration (1-based) the completions are for.
        Completion ``i`` must depend only on (seed, i, checkpoint, temperature), so that a redo
        after a crash gives the same text; a generator that searches on the run's own scores
        (``cmaes``) may also read what the log holds of the earlier iterations
        (``selfdev.load_state`` on ``ctx.db``), which a redo finds unchanged.
        """
        raise NotImplementedError

    def generate_batches(self, prompts: list[str], n: int, temperature: float, seed: int,
                         checkpoint: Path | None = None, iteration: int = 1
                         ) -> Iterator[list[Completion]]:
        """``generate``'s completions, in the same order, in batches as they are ready (what
        the engine calls). The default is one batch; a generator that samples in batches
        yields each when it is done, so the engine screens and runs those candidates while the
        rest are sampled (``engine/lookahead.py``)."""
        yield self.generate(prompts, n, temperature, seed, checkpoint, iteration)

    def initial_checkpoint(self) -> Path | None:
        """The factory's starting checkpoint directory, if it is a trainable model."""
        return None


class Domain(Component):
    """What is merged: seed + experts, the factory prompt, applying a candidate, baselines."""

    #: the evaluator used when the config names none
    default_evaluator: ClassVar[str] = "accuracy"

    def prepare(self) -> dict[str, Any]:
        """Build or load seed and experts (cached under SELFDEV_HOME); return a JSON summary."""
        raise NotImplementedError

    def expert_names(self) -> list[str]:
        raise NotImplementedError

    def prompt(self) -> str:
        """The paper-style factory prompt (task text, signature, one worked example)."""
        raise NotImplementedError

    def apply(self, code: str, timeout: float) -> MergeOutcome:
        """Run candidate ``code`` through the sandbox for every mergeable parameter and return
        the merged model (status ok) or the failure (rejected/error/timeout/killed)."""
        raise NotImplementedError

    def apply_function(self, fn: Callable[..., Any]) -> MergeOutcome:
        """Apply a trusted in-process merge function (a baseline) with the same contract."""
        raise NotImplementedError

    def seed_model(self) -> Any:
        """The seed model handle (scored as a reference row)."""
        raise NotImplementedError

    def expert_model(self, name: str) -> Any:
        raise NotImplementedError

    def baselines(self) -> list[Baseline]:
        """Human baselines swept over their coefficients, scored on the same splits."""
        raise NotImplementedError

    def close(self) -> None:
        """Release sandboxes and other resources."""

    def export_state(self) -> Any:
        """What a worker on another machine needs to use this prepared domain without calling
        ``prepare()`` (seed, experts, data): executors put it in their object store once per
        iteration. The default is the instance's picklable attributes without ``ctx`` and
        ``options`` (the worker builds its own from the same config); a domain whose state is
        too large or not picklable returns None, and the worker calls ``prepare()`` itself."""
        state = dict(self.__getstate__() or {})
        for key in ("ctx", "options"):
            state.pop(key, None)
        return state

    def import_state(self, state: Any) -> None:
        """Take over ``export_state()``'s value from the engine's domain (or ``prepare()`` when
        it is None). Releases what was built from earlier state (``close()``) first."""
        self.close()
        if state is None:
            self.prepare()
        else:
            self.__dict__.update(state)


class Evaluator(Component):
    """Scores a model on a split (``dev`` or ``test``); ``score`` is the main metric.

    Trusted code: it runs in the engine's process, never in the candidate's sandbox.
    """

    def evaluate(self, domain: Domain, model: Any, split: str) -> dict[str, Any]:
        """Score ``model`` on ``split`` and return its metrics.

        ``domain`` is the run's prepared :class:`Domain`: the methods every domain has
        (``expert_names()``, ``seed_model()``, ...) plus what that domain offers evaluators,
        e.g. ``labelled_split(split) -> (X, y)`` tensors on ``digits``, ``eval_spec()`` on ``lm``
        and ``toymath``; check with ``getattr`` and raise ``ConfigError`` naming what is missing.
        ``model`` is the domain's model handle, whatever its ``seed_model()``,
        ``expert_model(name)`` and a successful ``apply(...).model`` return (a
        ``torch.nn.Module`` of logits on ``digits``, an ``LMModel`` handle on ``lm``): the same
        call scores the seed, each expert, every baseline and every candidate.

        The returned dict must hold ``"score"`` (a finite float, higher is better, or None when
        the model cannot be scored): ranking, preference pairs and the final selection read
        it. Every other key is an extra metric, recorded as it is with the score in the
        ``metrics`` of ``candidate.evaluated`` (and of ``baseline.evaluated``, per split): give
        JSON values (str keys; finite numbers, strings, lists, dicts). An exception fails the
        run, naming the evaluator (it is trusted code: out of memory, a CUDA error, missing
        data), and ``selfdev resume`` retries that work; a merged model that cannot be scored
        returns ``score`` None instead.
        """
        raise NotImplementedError


class Optimizer(Component):
    """Refines the factory from preference pairs; returns the new checkpoint."""

    def refine(self, checkpoint: Path | None, pairs: list[Pair], iteration: int) -> Refinement:
        raise NotImplementedError


@dataclass(frozen=True)
class WorkSpec:
    """What a worker on another machine needs to rebuild the engine's side of candidate work.

    An executor that runs candidates in this process uses the engine's own domain; one that
    runs them elsewhere (``ray``) cannot ship that domain (it owns a live sandbox: processes
    and sockets), so it ships this description instead and the worker builds the domain and
    the evaluator from the same registry with the same options (``{"name": ..., **options}``).
    """

    run_id: str
    seed: int
    domain: dict[str, Any]
    evaluator: dict[str, Any]
    config: dict[str, Any] = field(default_factory=dict)  # the whole validated run config


@dataclass(frozen=True)
class CandidateWork:
    """One candidate's work, described by value (picklable, no closure over engine state)."""

    candidate_id: str
    code: str
    split: str  # "dev" during the loop, "test" for the final top k
    timeout: float


@dataclass
class CandidateResult:
    """What one candidate's work produced; the driver turns it into events.

    ``status`` is the sandbox's (ok|rejected|error|timeout|killed: the candidate's own code;
    an exception of the evaluator or the domain fails the run instead). ``evaluated`` says whether ``score``/``metrics`` come
    from the evaluator; otherwise ``metrics`` holds ``{"error": ...}`` for the test split's
    record. ``retries`` lists why earlier attempts were lost (a worker or node that died): the
    driver records one ``candidate.retried`` event per entry, so a retry is never silent.
    """

    candidate_id: str
    status: str
    reason: str | None = None
    duration_ms: float = 0.0
    stdout: str = ""
    evaluated: bool = False
    score: float | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    retries: list[str] = field(default_factory=list)


def execute_candidate(domain: "Domain", evaluator: "Evaluator",
                      work: CandidateWork) -> CandidateResult:
    """Apply one candidate through the domain's sandbox and score it: the one code path every
    executor runs (in the engine's process or on a remote worker), so they give equal results.

    Only the candidate's own code can fail the candidate: what its sandboxed run reports
    (rejected, error, timeout, killed) is its ``status``. An exception from the domain, the
    evaluator or anything else trusted (out of memory, a CUDA error, a full disk, a model that
    fails to load) is not the candidate's fault: it propagates, the run stops as failed naming
    it, and ``selfdev resume`` redoes this candidate, which has no result in the log. Caught here
    instead, a transient failure would shrink the pool of scored candidates for good."""
    outcome = domain.apply(work.code, work.timeout)
    result = CandidateResult(work.candidate_id, outcome.status, outcome.reason,
                             round(outcome.duration_ms, 3), outcome.stdout)
    if not outcome.ok:
        result.metrics = {"error": f"{outcome.status}: {outcome.reason}"}
        return result
    metrics = dict(evaluator.evaluate(domain, outcome.model, work.split))
    result.evaluated, result.score, result.metrics = True, metrics.get("score"), metrics
    return result


class Executor(Component):
    """Where candidate work runs. ``map`` yields ``(index, result)`` as items finish.

    The engine calls :meth:`run_candidates`; an executor that runs work in this process only
    implements ``map`` (the default ``run_candidates`` maps the engine's in-process function).
    One that runs work on other machines overrides ``run_candidates`` and uses the
    :class:`WorkSpec` and the :class:`CandidateWork` values, which describe the work by value.
    """

    def map(self, fn: Callable[[Any], Any], items: list[Any]) -> Iterator[tuple[int, Any]]:
        raise NotImplementedError

    def run_candidates(self, spec: WorkSpec, domain: "Domain", works: list[CandidateWork],
                       run: Callable[[CandidateWork], CandidateResult]
                       ) -> Iterator[tuple[int, CandidateResult]]:
        """Yield ``(index into works, result)`` for every work item, each exactly once.

        ``run`` does one item in this process with the engine's prepared ``domain``;
        ``domain.export_state()`` is what a remote worker needs to skip ``prepare()``.
        """
        return self.map(run, works)

    def close(self) -> None:
        pass


KINDS: dict[str, type[Component]] = {
    "generator": Generator,
    "domain": Domain,
    "evaluator": Evaluator,
    "optimizer": Optimizer,
    "executor": Executor,
}


def kind_of(cls: type) -> str:
    """The kind (config section) a component class belongs to, e.g. ``"optimizer"``."""
    for kind, base in KINDS.items():
        if issubclass(cls, base):
            return kind
    return "component"


def parse_kv(items: Iterable[str]) -> dict[str, str]:
    """Parse ``NAME=VALUE`` command-line items into a dict (for ``--expert`` style options)."""
    out: dict[str, str] = {}
    for item in items:
        if "=" not in item:
            raise SelfdevError(f"expected NAME=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        out[key] = value
    return out
