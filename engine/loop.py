"""The run loop: ``state = fold(events)`` + ``next_step(state)``, then perform that step.

Every step appends its events atomically, and every random choice is seeded from
(run seed, iteration, candidate index), so after a crash ``selfdev resume RUN`` rebuilds the state
from the log alone and redoes only what has no completion event, with the same results.
"""
from __future__ import annotations

import hashlib
import math
import os
import random
import secrets
import shutil
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from selfdev.engine import events as ev
from selfdev.engine import plugins as plugin_mod
from selfdev.engine.api import (CandidateResult, CandidateWork, Completion, Context, NullProgress,
                                Pair, Progress, SelfdevError, WorkSpec, derive_seed,
                                execute_candidate, reserve_cores, selfdev_home, selfdev_version)
from selfdev.engine.api import Component, ConfigError, validate_options
from selfdev.engine.config import RunConfig, check_options, from_dict, legacy_parameters
from selfdev.engine.options import declared_options
from selfdev.engine.primitives import primitives_of
from selfdev.engine.state import CandidateState, RunState, apply, fold



@dataclass
class Step:
    """What to do next: ``kind`` plus the iteration and candidate ids it concerns."""

    kind: str
    iteration: int = 0
    ids: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)


#: step kind -> the phase its ``phase.timed`` event names (the steps that cost compute)
TIMED_STEPS = {"baselines": "baselines", "generate": "sampling", "screen": "screening",
               "execute": "execution", "refine": "refinement", "test": "test"}


def top_k(state: RunState, k: int) -> list[CandidateState]:
    """The final selection: the k best candidates by dev score, pooled over iterations."""
    return state.ranked()[:k]


def next_step(state: RunState, cfg: RunConfig, baseline_labels: list[str]) -> Step:
    """The first thing the log says has not been done yet."""
    if state.finished is not None:
        return Step("done")
    if state.prepared is None:
        return Step("prepare")
    missing = [label for label in baseline_labels if label not in state.baselines]
    if missing:
        return Step("baselines", labels=missing)
    total = cfg.run.iterations
    for t in range(1, total + 1):
        it = state.iterations.get(t)
        if it is None:
            return Step("start_iteration", t)
        if not it.generated:
            return Step("generate", t)
        cands = state.in_iteration(t)
        unscreened = [c.candidate_id for c in cands if c.screen is None]
        if unscreened:
            return Step("screen", t, unscreened)
        pending = [c.candidate_id for c in cands if c.screen == "accepted" and c.execution is None]
        if pending:
            return Step("execute", t, pending)
        if it.pairs is None:
            return Step("pairs", t)
        if t < total and it.refined is None:
            return Step("refine", t)
        if not it.finished:
            return Step("finish_iteration", t)
    best = top_k(state, cfg.run.top_k)
    untested = [c.candidate_id for c in best if not c.test_done]
    if untested:
        return Step("test", ids=untested)
    if state.selection is None:
        return Step("selection", ids=[c.candidate_id for c in best])
    return Step("finish")


def candidate_id(iteration: int, index: int) -> str:
    """The id of completion ``index`` of ``iteration``."""
    return f"i{iteration}-c{index:04d}"


@dataclass(frozen=True)
class Screening:
    """What screening found for one completion (``Runner.screen_completion``)."""

    status: str                    # accepted, rejected or duplicate
    reason: str | None = None
    code: str | None = None        # the extracted program
    ast_hash: str | None = None
    primitives: Any = None
    duplicate_of: str | None = None

    def event(self, cid: str, code_ref: str | None) -> ev.CandidateScreened:
        return ev.CandidateScreened(candidate_id=cid, status=self.status, reason=self.reason,
                                    code=code_ref, ast_hash=self.ast_hash,
                                    duplicate_of=self.duplicate_of, primitives=self.primitives)


def build_pairs(state: RunState, cfg: RunConfig, iteration: int) -> ev.PairsBuilt:
    """Chosen = top ``p_w`` of this iteration's scored candidates, rejected = bottom ``p_l``;
    from iteration 2 on, the top ``elites`` of each earlier iteration join the chosen side.
    Pairs are chosen x rejected where the chosen scored strictly higher (seeded subsample
    to ``max_pairs``)."""
    p = cfg.pairs
    ranked = state.ranked(iteration)
    n = len(ranked)
    if n < 2:
        return ev.PairsBuilt(iteration=iteration)
    n_w = max(1, math.ceil(p.p_w * n))
    n_l = max(1, math.ceil(p.p_l * n))
    chosen = ranked[:n_w]
    rejected = [c for c in ranked[-n_l:] if c not in chosen]
    elites: list[CandidateState] = []
    for s in range(1, iteration):
        elites += [c for c in state.ranked(s)[: p.elites] if c not in chosen]
    pairs = [[c.candidate_id, r.candidate_id] for c in chosen + elites for r in rejected
             if c.dev > r.dev]
    if len(pairs) > p.max_pairs:
        rng = random.Random(derive_seed(cfg.run.seed, "pairs", iteration))
        pairs = sorted(rng.sample(pairs, p.max_pairs))
    return ev.PairsBuilt(iteration=iteration,
                         chosen=[c.candidate_id for c in chosen],
                         rejected=[c.candidate_id for c in rejected],
                         elites=[c.candidate_id for c in elites], pairs=pairs)


def hash_directory(path: Path) -> str:
    """Content hash of a directory tree (relative names + bytes), algorithm-prefixed."""
    h = hashlib.blake2b(digest_size=16)
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(str(file.relative_to(path)).encode() + b"\0")
        with open(file, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        h.update(b"\0")
    return "b2:" + h.hexdigest()


def new_run_id() -> str:
    return time.strftime("run-%Y%m%d-%H%M%S-", time.gmtime()) + secrets.token_hex(2)


def db_path(store: Any) -> Path | None:
    """The store's database file, or None when it lives in memory."""
    db = getattr(store, "path", None)
    if db and str(db) != ":memory:":
        return Path(db).resolve()
    return None


def artifacts_root(store: Any) -> Path:
    """Artifacts (factory checkpoints) live next to the database they belong to."""
    db = db_path(store)
    return db.parent / "artifacts" if db else selfdev_home() / "artifacts"


def trainable(generator_cls: type) -> bool:
    """Whether a generator has a checkpoint an optimizer can train: it overrides
    ``initial_checkpoint`` (the base class returns None). Read from the class, so nothing is
    built to find out."""
    from selfdev.engine.api import Generator

    return getattr(generator_cls, "initial_checkpoint", None) is not Generator.initial_checkpoint


def preflight(cfg: RunConfig, classes: dict[str, type]) -> None:
    """Refuse, before ``run.started`` is written, what would otherwise fail the run later.

    Option tables are already validated (``check_options``). Here: an optimizer that trains a
    checkpoint (``needs_checkpoint = True``) with a generator that has none, when the run
    refines at all (more than one iteration), which would otherwise fail after iteration 1 was
    generated and scored, and fail the same way on every ``resume``; then each component
    class's optional ``preflight(options)`` classmethod, which checks what it can without
    being built (model directories that do not open, data files that do not exist), and its
    optional ``preflight_run(options, classes, run_options)``, which also sees the classes of
    the run's other components and their validated options (kind -> class, kind -> options: a
    generator that writes programs for some domains only, an evaluator whose data a domain may
    supply); last,
    each phase's accelerator memory against the device (``engine/device.py``: a phase that
    cannot fit is named with its numbers). A problem raises ``ConfigError`` (one line, exit 2)
    and the log stays empty.
    """
    gen, opt = classes["generator"], classes["optimizer"]
    if getattr(opt, "needs_checkpoint", False) and cfg.run.iterations > 1 and not trainable(gen):
        registry = plugin_mod.get_registry()
        allowed = [name for name in registry.names("generator")
                   if trainable(registry.get("generator", name))]
        raise ConfigError(
            f"config: optimizer {opt.name!r} trains the factory's checkpoint and generator "
            f"{gen.name!r} has none; use a generator with one ({', '.join(allowed)}) or "
            f"optimizer 'none'")
    validated: dict[str, Any] = {}
    for kind, cls in classes.items():
        if legacy_parameters(cls) is not None:
            continue
        section = getattr(cfg, kind)
        validated[kind] = validate_options(kind, cls.name, declared_options(cls), section.options)
    for kind, options in validated.items():
        cls = classes[kind]
        check = getattr(cls, "preflight", None)
        if check is not None:
            check(options)
        run_check = getattr(cls, "preflight_run", None)  # checks that need the other components
        if run_check is not None:
            run_check(options, dict(classes), dict(validated))
    # one accelerator, three phases: refuse a phase that cannot fit the device
    from selfdev.engine.device import preflight_device

    preflight_device(classes, validated)


def check_config(cfg: RunConfig) -> dict[str, str]:
    """Refuse what :func:`start_run` would refuse, appending nothing (``selfdev sweep`` checks
    every point of its grid before the first run starts): each component exists, its options
    validate, the preflight passes. Fills in the domain's default evaluator; returns the
    component names by kind."""
    registry = plugin_mod.get_registry()
    names = {}
    for kind in ("domain", "generator", "optimizer", "executor"):
        section = getattr(cfg, kind)
        cls = registry.get(kind, section.name)
        check_options(kind, cls, section.options)
        names[kind] = section.name
    domain_cls = registry.get("domain", cfg.domain.name)
    if not cfg.evaluator.name:
        cfg.evaluator.name = domain_cls.default_evaluator
    eval_cls = registry.get("evaluator", cfg.evaluator.name)
    check_options("evaluator", eval_cls, cfg.evaluator.options)
    preflight(cfg, {kind: registry.get(kind, getattr(cfg, kind).name)
                    for kind in ("domain", "generator", "optimizer", "executor", "evaluator")})
    return names


def start_run(store: Any, cfg: RunConfig, *, run_id: str | None = None) -> str:
    """Validate the components named by ``cfg`` and append ``run.started``; return the run id."""
    names = check_config(cfg)
    run_id = run_id or new_run_id()
    started = ev.RunStarted(config=cfg.to_dict(), seed=cfg.run.seed, domain=names["domain"],
                            generator=names["generator"], evaluator=cfg.evaluator.name,
                            optimizer=names["optimizer"], executor=names["executor"],
                            iterations=cfg.run.iterations, candidates=cfg.run.candidates,
                            selfdev_version=selfdev_version())
    from selfdev.store import NewEvent

    stored = store.append(run_id, [NewEvent(started.TYPE, started.payload(), started.VERSION)],
                          expected_version=0)
    deliver(store, stored)
    return run_id


#: events after which nothing is appended to a run's log (readers stop following there)
CLOSING = ("run.finished", "run.failed")

#: (run id, listener) pairs already reported in this process: a listener is reported once
_listener_reported: set[tuple[str, str]] = set()


def emit_listeners(stored: Any) -> list[ev.ListenerFailed]:
    """Call every ``on_event`` listener with one committed event; return the failures to record.

    A failing listener never breaks the run, but its failure is not silent either: the first
    time a listener raises in a run (in this process) its traceback goes to stderr and a
    ``listener.failed`` event is returned for the log, so an auditor knows that listener's view
    may be incomplete from there on. Later failures of the same listener are passed over (one
    that fails on every event would otherwise flood stderr and double the log); it is still
    called with every event.
    """
    failures: list[ev.ListenerFailed] = []
    for impl in plugin_mod.pm.hook.on_event.get_hookimpls():
        try:
            plugin_mod.call_impl(impl, event=stored)
        except Exception as exc:  # noqa: BLE001 - listeners must not break the run
            key = (stored.run_id, impl.plugin_name)
            if key in _listener_reported:
                continue
            _listener_reported.add(key)
            recorded = stored.type not in CLOSING
            tail = ("recorded as listener.failed" if recorded
                    else f"not recorded: nothing follows {stored.type} in the log")
            text = ev.format_traceback(exc)
            print(f"warning: listener {impl.plugin_name!r} raised on {stored.type} (position "
                  f"{stored.position}) and the run goes on; {tail}; later failures of this "
                  f"listener in this run are not reported\n{text}", end="", file=sys.stderr)
            if recorded:
                failures.append(ev.ListenerFailed(
                    listener=impl.plugin_name, event_type=stored.type,
                    event_position=stored.position, exception=ev.exception_name(exc),
                    error=str(exc)[:2000], traceback=text))
    return failures


def deliver(store: Any, stored: list[Any]) -> list[Any]:
    """Deliver committed events to the listeners in log order; record the listeners' failures
    (which are delivered in turn). Returns the ``listener.failed`` events it appended."""
    from selfdev.store import NewEvent

    appended: list[Any] = []
    batch = list(stored)
    while batch:
        failures = [f for s in batch for f in emit_listeners(s)]
        if not failures:
            break
        head = batch[-1]
        batch = store.append(head.run_id, [NewEvent(f.TYPE, f.payload(), f.VERSION)
                                           for f in failures],
                             expected_version=head.stream_version)
        appended += batch
    return appended


class Runner:
    """Drives one run to completion from whatever its log already holds."""

    def __init__(self, store: Any, run_id: str, *, progress: Progress | None = None) -> None:
        self.store = store
        self.run_id = run_id
        self.progress = progress or NullProgress()
        events = list(store.iter_events(run_id=run_id))
        if not events:
            raise SelfdevError(f"no run {run_id!r} in {getattr(store, 'path', 'the database')}")
        self.state = fold(events)
        # a run that did more than start (listener failures on run.started aside) is resumed
        self.resuming = any(e.type not in (ev.RunStarted.TYPE, ev.ListenerFailed.TYPE)
                            for e in events)
        if self.state.started is None:
            raise SelfdevError(f"run {run_id!r} has no run.started event")
        self.cfg = from_dict(self.state.started.config)
        self.registry = plugin_mod.get_registry()
        self.artifacts = artifacts_root(store) / run_id
        self.artifacts.mkdir(parents=True, exist_ok=True)
        self.ctx = Context(run_id=run_id, seed=self.cfg.run.seed, home=selfdev_home(),
                           artifacts=self.artifacts, progress=self.progress,
                           options=self.cfg.to_dict(), db=db_path(store))
        self._components: dict[str, Any] = {}
        #: the phase holding the accelerator (``engine/device.py``), None before the first
        self.phase: str | None = None
        #: the iteration's screening and dev runs done while it samples (``engine/lookahead.py``)
        self.lookahead: Any = None

    # ---- components (built lazily: a finished run needs none) ------------------------------

    def component(self, kind: str) -> Any:
        if kind not in self._components:
            section = getattr(self.cfg, kind)
            name = section.name or (self.component("domain").default_evaluator
                                    if kind == "evaluator" else "")
            cls = self.registry.get(kind, name)
            check_options(kind, cls, section.options)
            self._components[kind] = cls(self.ctx, **section.options)
        return self._components[kind]

    @property
    def domain(self) -> Any:
        return self.component("domain")

    def close(self) -> None:
        self.end_lookahead()
        for comp in self._components.values():
            close = getattr(comp, "close", None)
            if close:
                try:
                    close()
                except Exception:  # noqa: BLE001
                    pass
        self._components.clear()

    # ---- appending -------------------------------------------------------------------------

    def emit(self, *typed: ev.Event, source: str = "engine") -> None:
        """Append events from one source atomically, fold them, then notify listeners."""
        self.append([(e, source) for e in typed])

    def append(self, items: list[tuple[ev.Event, str]]) -> None:
        """Append (event, source) pairs as one atomic batch."""
        from selfdev.store import NewEvent

        batch = [NewEvent(e.TYPE, e.payload(), e.VERSION, source=src) for e, src in items]
        stored = self.store.append(self.run_id, batch, expected_version=self.state.version)
        for s in stored:
            apply(self.state, s)
        for s in deliver(self.store, stored):
            apply(self.state, s)

    # ---- the loop --------------------------------------------------------------------------

    def run(self) -> RunState:
        if self.state.finished is not None:
            return self.state
        if self.resuming:
            self.emit(ev.RunResumed(at_version=self.state.version))
        try:
            if self.state.prepared is None:
                self.do_prepare(Step("prepare"))
            else:
                self.domain.prepare()  # loads the cached seed and experts after a resume
            labels = self.baseline_labels()
            while True:
                step = next_step(self.state, self.cfg, labels)
                if step.kind == "done":
                    break
                self.enter_phase(step.kind)
                self.timed(step)
        except SelfdevError as exc:
            self.fail(exc, str(exc))
            raise
        except KeyboardInterrupt:
            raise
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
            plugin = self.fail(exc, reason)
            where = f" in plugin {plugin!r}" if plugin else ""
            raise SelfdevError(f"run {self.run_id} failed{where}: {reason}; fix it and "
                               f"`selfdev resume {self.run_id}` (--debug shows the traceback)"
                               ) from exc
        finally:
            self.close()
        return self.state

    def enter_phase(self, step_kind: str) -> None:
        """Hand the accelerator to the phase of ``step_kind`` (``engine/device.py``): every
        built component of another phase releases its device memory first, then the phase's
        own components acquire. Steps that use no accelerator (screening, pairs) keep the
        current holder; components not built yet take the device when they are built."""
        from selfdev.engine.device import KIND_PHASE, STEP_PHASE

        phase = STEP_PHASE.get(step_kind)
        if phase is None or phase == self.phase:
            return
        for kind, comp in list(self._components.items()):
            if KIND_PHASE.get(kind) not in (None, phase) and hasattr(comp, "release"):
                comp.release()
        for kind, comp in list(self._components.items()):
            if KIND_PHASE.get(kind) == phase and hasattr(comp, "acquire"):
                comp.acquire()
        self.phase = phase

    def timed(self, step: Step) -> None:
        """Do ``step``; then, for the steps that cost compute (:data:`TIMED_STEPS`), record
        its wall and CPU seconds as ``phase.timed`` (a machine fact, kept out of everything
        ``show --json`` compares; see the event's docstring)."""
        phase = TIMED_STEPS.get(step.kind)
        wall, cpu = time.perf_counter(), time.process_time()
        getattr(self, f"do_{step.kind}")(step)
        if phase is not None:
            self.emit(ev.PhaseTimed(iteration=step.iteration, phase=phase,
                                    seconds=round(time.perf_counter() - wall, 4),
                                    cpu_seconds=round(time.process_time() - cpu, 4),
                                    items=len(step.ids or step.labels)))

    def fail(self, exc: BaseException, reason: str) -> str | None:
        """Record ``run.failed`` with what raised (exception class, plugin, traceback), so the
        log alone tells an author where to look; return the plugin (None: the engine)."""
        plugin = plugin_mod.plugin_of(exc)
        self.emit(ev.RunFailed(reason=reason, exception=ev.exception_name(exc), plugin=plugin,
                               traceback=ev.format_traceback(exc)))
        return plugin

    def baseline_labels(self) -> list[str]:
        self.baseline_table = {"seed": ("seed", {}, None)}
        for name in self.domain.expert_names():
            self.baseline_table[f"expert:{name}"] = ("expert", {"expert": name}, None)
        for b in self.domain.baselines():
            self.baseline_table[b.label] = (b.method, b.params, b.fn)
        return list(self.baseline_table)

    # ---- steps -----------------------------------------------------------------------------

    def do_prepare(self, step: Step) -> None:
        summary = dict(self.domain.prepare())
        split_info = getattr(self.component("evaluator"), "split_info", None)
        if split_info is not None:  # which problems make up dev and test, recorded in the run
            summary["evaluation"] = split_info(self.domain)
        self.emit(ev.DomainPrepared(summary=summary), source=self.domain.plugin)

    def evaluate(self, model: Any, split: str) -> dict[str, Any]:
        return dict(self.component("evaluator").evaluate(self.domain, model, split))

    def do_baselines(self, step: Step) -> None:
        task = self.progress.task("baselines", total=len(step.labels))
        for label in step.labels:
            method, params, fn = self.baseline_table[label]
            if method == "seed":
                model, status, reason = self.domain.seed_model(), "ok", None
            elif method == "expert":
                model, status, reason = self.domain.expert_model(params["expert"]), "ok", None
            else:
                outcome = self.domain.apply_function(fn)
                model, status, reason = outcome.model, outcome.status, outcome.reason
            dev = test = None
            metrics: dict[str, Any] = {}
            if status == "ok":
                m_dev = self.evaluate(model, "dev")
                m_test = self.evaluate(model, "test")
                dev, test = m_dev.get("score"), m_test.get("score")
                metrics = {"dev": m_dev, "test": m_test}
            self.emit(ev.BaselineEvaluated(label=label, method=method, params=params,
                                           status=status, reason=reason, dev=dev, test=test,
                                           metrics=metrics), source=self.domain.plugin)
            task.advance()
        task.close()

    def do_start_iteration(self, step: Step) -> None:
        self.emit(ev.IterationStarted(iteration=step.iteration,
                                      temperature=round(self.cfg.temperature.at(step.iteration), 6),
                                      checkpoint=self.state.checkpoint))

    def factory_checkpoint(self) -> Path | None:
        if self.state.checkpoint_path:
            return self.artifacts / self.state.checkpoint_path
        return self.component("generator").initial_checkpoint()

    def do_generate(self, step: Step) -> None:
        t = step.iteration
        generator = self.component("generator")
        prompt = self.domain.prompt()
        prompt_ref = self.store.put_blob(prompt)
        temperature = self.state.iterations[t].temperature
        lookahead = self.start_lookahead()
        during = lookahead.while_sampling if lookahead else 0  # runs beside the factory
        completions: list[Completion] = []
        fed = 0  # completions handed to the lookahead

        def feed() -> None:
            lookahead.feed([(candidate_id(t, k), c.text)
                            for k, c in enumerate(completions[fed:], start=fed)])

        with reserve_cores(during):
            for part in generator.generate_batches(
                    [prompt], self.cfg.run.candidates, temperature,
                    derive_seed(self.cfg.run.seed, "generate", t),
                    checkpoint=self.factory_checkpoint(), iteration=t):
                completions += part
                if during:
                    feed()
                    fed = len(completions)
        if lookahead:
            feed()
            lookahead.sampled()
        if not completions:
            raise SelfdevError(f"generator {generator.name!r} produced no completions for iteration {t}")
        batch = []
        for index, completion in enumerate(completions):
            ref = self.store.put_blob(completion.text)
            batch.append(ev.CandidateGenerated(candidate_id=candidate_id(t, index), iteration=t,
                                               index=index, completion=ref, prompt=prompt_ref,
                                               meta=completion.meta))
        self.emit(*batch, source=generator.plugin)

    def start_lookahead(self) -> Any:
        """A :class:`~selfdev.engine.lookahead.Lookahead` for this iteration, or None where
        the executor does not offer one or a component hands an accelerator between phases."""
        self.end_lookahead()
        executor = self.component("executor")
        workers = getattr(executor, "lookahead_workers", lambda: 0)()
        if not workers or any(type(c).release is not Component.release
                              or type(c).acquire is not Component.acquire
                              for c in (self.component("generator"), self.domain,
                                        self.component("evaluator"))):
            return None  # a component hands an accelerator over between phases
        from selfdev.engine.lookahead import Lookahead, beside_factory

        evaluator = self.component("evaluator")

        def run(cid: str, code: str) -> CandidateResult:
            return execute_candidate(self.domain, evaluator,
                                     CandidateWork(cid, code, "dev", self.cfg.run.timeout))

        self.lookahead = Lookahead(self.screen_completion, run, dict(self.state.by_hash),
                                   workers, while_sampling=beside_factory(workers),
                                   threads=executor.torch_threads())
        return self.lookahead

    def end_lookahead(self) -> None:
        if self.lookahead is not None:
            self.lookahead.close()
            self.lookahead = None

    def do_screen(self, step: Step) -> None:
        ahead = self.lookahead.screenings if self.lookahead else {}
        if not all(cid in ahead for cid in step.ids):
            ahead, seen = {}, dict(self.state.by_hash)
        batch = []
        for cid in step.ids:
            screening = (ahead[cid].result() if ahead else self.screen_completion(
                cid, self.store.get_text(self.state.candidates[cid].completion), seen))
            batch.append(screening.event(cid, self.store.put_blob(screening.code)
                                         if screening.code is not None else None))
        self.emit(*batch)

    @staticmethod
    def screen_completion(cid: str, text: str, seen: dict[str, str]) -> Screening:
        """Parse one completion, apply the static policy, de-duplicate by normalised AST
        (``seen``: hash -> first candidate, updated here). Pure: the lookahead calls it off the
        main thread."""
        from selfdev.sandbox.policy import extract_candidate_tree, screen

        with warnings.catch_warnings():  # a completion's bad literals are not our warnings
            warnings.simplefilter("ignore", SyntaxWarning)
            # extraction parses the source; that one tree is read for the primitives, then
            # consumed by the screen (which transforms it), so each candidate is parsed once
            code, tree = extract_candidate_tree(text)
            if code is None:
                return Screening("rejected", "no merge_models function found in the completion")
            used = primitives_of(code, tree)  # what the program is built from (primitives.py)
            verdict = screen(code, tree)
        if not verdict.ok:
            return Screening("rejected", verdict.reason, code, verdict.ast_hash, used)
        if verdict.ast_hash in seen:
            first = seen[verdict.ast_hash]
            return Screening("duplicate", f"same program as {first}", code, verdict.ast_hash,
                             used, duplicate_of=first)
        seen[verdict.ast_hash] = cid
        return Screening("accepted", None, code, verdict.ast_hash, used)

    def candidate_work(self, cid: str, split: str) -> CandidateWork:
        """One candidate's work by value (what any executor, local or remote, is handed)."""
        return CandidateWork(cid, self.store.get_text(self.state.candidates[cid].code), split,
                             self.cfg.run.timeout)

    def work_spec(self) -> WorkSpec:
        """How a worker on another machine rebuilds the domain and the evaluator."""
        evaluator = self.component("evaluator")
        return WorkSpec(run_id=self.run_id, seed=self.cfg.run.seed,
                        domain={"name": self.cfg.domain.name, **self.cfg.domain.options},
                        evaluator={"name": evaluator.name, **self.cfg.evaluator.options},
                        config=self.cfg.to_dict())

    @staticmethod
    def result_events(result: CandidateResult, split: str) -> list[ev.Event]:
        """The events one candidate's result is recorded as (retries first)."""
        cid = result.candidate_id
        out: list[ev.Event] = [ev.CandidateRetried(candidate_id=cid, attempt=i + 1, reason=why)
                               for i, why in enumerate(result.retries)]
        executed = ev.CandidateExecuted(candidate_id=cid, status=result.status,
                                        reason=result.reason, duration_ms=result.duration_ms,
                                        stdout=result.stdout)
        if split == "dev":
            out.append(executed)
            if result.evaluated:
                out.append(ev.CandidateEvaluated(candidate_id=cid, split=split,
                                                 score=result.score, metrics=result.metrics))
        else:
            out.append(ev.CandidateEvaluated(candidate_id=cid, split=split,
                                             score=result.score if result.evaluated else None,
                                             metrics=result.metrics))
        return out

    def run_candidate(self, cid: str, split: str) -> list[ev.Event]:
        """Apply one candidate through the sandbox and score it, in this process."""
        work = self.candidate_work(cid, split)
        result = execute_candidate(self.domain, self.component("evaluator"), work)
        return self.result_events(result, split)

    def run_many(self, ids: list[str], split: str, description: str) -> None:
        """Hand the candidates to the executor and record each result as it comes back.

        The driver alone appends: an executor (local threads or remote workers) only returns
        values, and each candidate's events go to the log in one atomic batch."""
        executor = self.component("executor")
        evaluator = self.component("evaluator")
        task = self.progress.task(description, total=len(ids))

        def record(result: CandidateResult) -> None:
            self.append([(e, self.domain.plugin if isinstance(
                e, (ev.CandidateExecuted, ev.CandidateRetried)) else evaluator.plugin)
                for e in self.result_events(result, split)])
            task.advance()

        ahead = self.lookahead.results if self.lookahead and split == "dev" else {}
        rest = [cid for cid in ids if cid not in ahead]
        for cid in [cid for cid in ids if cid in ahead]:  # under way: recorded in log order
            record(ahead.pop(cid).result())
        works = [self.candidate_work(cid, split) for cid in rest]
        results = executor.run_candidates(self.work_spec(), self.domain, works,
                                          lambda w: execute_candidate(self.domain, evaluator, w))
        try:
            for _, result in results:
                record(result)
        finally:
            close = getattr(results, "close", None)
            if close:  # a generator's cleanup cancels the executor's in-flight work
                close()
        task.close()

    def do_execute(self, step: Step) -> None:
        self.run_many(step.ids, "dev", f"iteration {step.iteration}: candidates")
        self.end_lookahead()

    def do_test(self, step: Step) -> None:
        self.run_many(step.ids, "test", f"top {len(step.ids)} on test")

    def do_pairs(self, step: Step) -> None:
        self.emit(build_pairs(self.state, self.cfg, step.iteration))

    def do_refine(self, step: Step) -> None:
        t = step.iteration
        optimizer = self.component("optimizer")
        built = self.state.iterations[t].pairs
        if not built.pairs:
            self.emit(ev.FactoryRefined(iteration=t, optimizer=optimizer.name,
                                        checkpoint=self.state.checkpoint,
                                        path=self.state.checkpoint_path,
                                        metrics={"skipped": "no preference pairs"}),
                      source=optimizer.plugin)
            return
        prompt_text = self.store.get_text(self.state.candidates[built.pairs[0][0]].prompt)
        pairs = []
        for chosen, rejected in built.pairs:
            c, r = self.state.candidates[chosen], self.state.candidates[rejected]
            pairs.append(Pair(prompt=prompt_text, chosen=self.store.get_text(c.completion),
                              rejected=self.store.get_text(r.completion),
                              chosen_score=c.dev, rejected_score=r.dev))
        result = optimizer.refine(self.factory_checkpoint(), pairs, t)
        checkpoint, path = self.state.checkpoint, self.state.checkpoint_path
        if result.checkpoint is not None:
            src = Path(result.checkpoint)
            checkpoint = hash_directory(src)
            rel = Path("factory") / checkpoint.split(":", 1)[1]
            dest = self.artifacts / rel
            if not dest.exists():
                dest.parent.mkdir(parents=True, exist_ok=True)
                if src.resolve().is_relative_to(self.artifacts.resolve()):
                    os.replace(src, dest)
                else:
                    shutil.copytree(src, dest)
            path = str(rel)
        self.emit(ev.FactoryRefined(iteration=t, optimizer=optimizer.name, checkpoint=checkpoint,
                                    path=path, metrics=result.metrics), source=optimizer.plugin)

    def do_finish_iteration(self, step: Step) -> None:
        self.emit(ev.IterationFinished(iteration=step.iteration,
                                       stats=self.state.iteration_stats(step.iteration)))

    def do_selection(self, step: Step) -> None:
        self.emit(ev.SelectionTested(k=self.cfg.run.top_k, candidates=step.ids,
                                     best_dev=step.ids[0] if step.ids else None))

    def do_finish(self, step: Step) -> None:
        from selfdev.engine.report import summary

        self.emit(ev.RunFinished(summary=summary(self.state)["table"]))


def run_config(store: Any, cfg: RunConfig, *, progress: Progress | None = None,
               run_id: str | None = None, on_start: Callable[[str], None] | None = None) -> RunState:
    """Start a run from a configuration and drive it to the end."""
    run_id = start_run(store, cfg, run_id=run_id)
    if on_start:
        on_start(run_id)
    return Runner(store, run_id, progress=progress).run()
