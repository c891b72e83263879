"""``state = fold(events)``: the state of a run rebuilt from its log.

The engine uses it to decide the next step; the TUI uses the same fold to show a run as of any
position (the playhead). The fold is pure: it reads event types and payloads only, never the
clock, the store or plugins.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from selfdev.engine import events as ev
from selfdev.engine.primitives import families_of, shares


#: per-iteration stat -> the optimizer metrics it is read from (first present wins)
REFINE_STATS = {
    "loss": ("loss_last", "loss", "train_loss"),
    "margin": ("reward_margin_last", "margin", "reward_margin"),
    "logp_margin_before": ("logp_margin_before",),
    "logp_margin_after": ("logp_margin_after",),
}


@dataclass
class CandidateState:
    candidate_id: str
    iteration: int
    index: int
    completion: str = ""  # blob ref
    prompt: str = ""  # blob ref
    screen: str | None = None  # accepted | rejected | duplicate
    code: str | None = None  # blob ref
    ast_hash: str | None = None
    duplicate_of: str | None = None
    execution: str | None = None  # ok | rejected | error | timeout | killed
    reason: str | None = None
    stdout: str = ""
    duration_ms: float | None = None
    dev: float | None = None
    test: float | None = None
    test_done: bool = False
    metrics: dict[str, Any] = field(default_factory=dict)
    position: int = 0  # log position of its last event
    meta: dict[str, Any] = field(default_factory=dict)  # candidate.generated's meta (generator's)
    primitives: list[str] | None = None  # the merge primitives its program calls (None: unknown)

    @property
    def status(self) -> str:
        """One word for tables: generated, rejected, duplicate, error, timeout, scored ..."""
        if self.dev is not None:
            return "scored"
        if self.execution and self.execution != "ok":
            return self.execution
        if self.screen and self.screen != "accepted":
            return self.screen
        if self.execution == "ok":
            return "executed"
        return "screened" if self.screen else "generated"


@dataclass
class IterationState:
    iteration: int
    temperature: float
    checkpoint: str | None = None
    generated: bool = False
    pairs: ev.PairsBuilt | None = None
    refined: ev.FactoryRefined | None = None
    finished: bool = False
    stats: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunState:
    run_id: str = ""
    started: ev.RunStarted | None = None
    prepared: dict[str, Any] | None = None
    baselines: dict[str, ev.BaselineEvaluated] = field(default_factory=dict)
    iterations: dict[int, IterationState] = field(default_factory=dict)
    candidates: dict[str, CandidateState] = field(default_factory=dict)
    by_hash: dict[str, str] = field(default_factory=dict)  # ast hash -> first candidate id
    selection: ev.SelectionTested | None = None
    finished: ev.RunFinished | None = None
    failed: str | None = None
    checkpoint: str | None = None  # current factory (hash) after the latest refinement
    #: iteration (0: outside iterations) -> phase -> seconds, cpu_seconds, items, summed over
    #: the processes that worked on it (``phase.timed``; machine facts, not run results)
    phases: dict[int, dict[str, dict[str, float]]] = field(default_factory=dict)
    checkpoint_path: str | None = None
    version: int = 0  # stream version of the last folded event
    position: int = 0  # global position of the last folded event
    events: int = 0

    # ---- derived views -------------------------------------------------------------------

    def in_iteration(self, iteration: int) -> list[CandidateState]:
        return sorted((c for c in self.candidates.values() if c.iteration == iteration),
                      key=lambda c: c.index)

    def ranked(self, iteration: int | None = None) -> list[CandidateState]:
        """Scored candidates, best dev score first (ties: earlier iteration, lower index)."""
        pool = [c for c in self.candidates.values() if c.dev is not None
                and (iteration is None or c.iteration == iteration)]
        return sorted(pool, key=lambda c: (-c.dev, c.iteration, c.index))

    def iteration_stats(self, iteration: int) -> dict[str, Any]:
        """The numbers of one iteration (``iteration.finished``'s ``stats``).

        A *repeat* is a program the factory wrote again (screen status ``duplicate``: the same
        normalised AST as an earlier candidate, of this or an earlier iteration); it is never
        executed. Two questions, two denominators:

        * how valid are the factory's *new* programs: ``executable_rate`` is ``executed_ok``
          over ``new`` (generated minus repeats), so a repeat is neither a success nor a
          failure; ``scored`` counts new programs only;
        * how good is what the factory *wrote*: ``best``, ``mean`` and ``sd`` of dev scores
          include each repeat with the score of the program it repeats (when that one was
          scored), so a factory that concentrates on a good program is credited for it.

        ``repeats`` (and its older name ``duplicates``) counts them; ``unique`` is the number
        of distinct programs among the accepted and repeated ones. ``primitives`` and
        ``families`` give, per merge primitive and family (``engine/primitives.py``), the
        share of those programs that call it: whether the factory converges on one family.
        """
        cands = self.in_iteration(iteration)
        scored = [c.dev for c in cands if c.dev is not None]
        repeats = [c for c in cands if c.screen == "duplicate"]
        carried = [self.candidates[c.duplicate_of].dev for c in repeats
                   if c.duplicate_of in self.candidates
                   and self.candidates[c.duplicate_of].dev is not None]
        written = scored + carried
        n = len(cands)
        new = n - len(repeats)
        accepted = sum(1 for c in cands if c.screen == "accepted")
        executed_ok = sum(1 for c in cands if c.execution == "ok")
        it = self.iterations.get(iteration)
        mean = sum(written) / len(written) if written else None
        stats = {
            "iteration": iteration,
            "temperature": it.temperature if it else None,
            "generated": n,
            "screened": sum(1 for c in cands if c.screen is not None),
            "accepted": accepted,
            "repeats": len(repeats),
            "duplicates": len(repeats),
            "new": new,
            "unique": len({c.ast_hash for c in cands
                           if c.screen in ("accepted", "duplicate") and c.ast_hash}),
            "executed": sum(1 for c in cands if c.execution is not None),
            "executed_ok": executed_ok,
            "scored": len(scored),
            "executable_rate": round(executed_ok / new, 4) if new else None,
            "best": max(written) if written else None,
            "mean": round(mean, 4) if written else None,
            "sd": (round((sum((x - mean) ** 2 for x in written) / (len(written) - 1)) ** 0.5, 4)
                   if len(written) > 1 else None),
        }
        # what the programs are built from: per merge primitive (and family), the share of the
        # programs written (accepted and repeats) that call it; None where the log predates it
        written_programs = [c.primitives for c in cands
                            if c.screen in ("accepted", "duplicate") and c.primitives is not None]
        known = any(c.primitives is not None for c in cands)
        stats["primitives"] = shares(written_programs) if known else None
        stats["families"] = (shares([families_of(p) for p in written_programs])
                             if known else None)
        if it and it.pairs is not None:
            stats["pairs"] = len(it.pairs.pairs)
        if it and it.refined is not None:
            m = it.refined.metrics
            # optimizers report richer metrics; the per-iteration view keeps the last loss and
            # reward margin of training and the policy's log-prob margin before/after
            for key, sources in REFINE_STATS.items():
                value = next((m[k] for k in sources if k in m), None)
                if value is not None:
                    stats[key] = value
        return stats


def apply(state: RunState, event: Any) -> RunState:
    """Fold one stored event (anything with type, payload, stream_version, position) into state."""
    typed = ev.parse(event.type, event.payload)
    state.version = event.stream_version
    state.position = event.position
    state.events += 1
    if not state.run_id:
        state.run_id = event.run_id
    if typed is None:
        return state
    if isinstance(typed, ev.RunStarted):
        state.started = typed
    elif isinstance(typed, ev.DomainPrepared):
        state.prepared = typed.summary
    elif isinstance(typed, ev.BaselineEvaluated):
        state.baselines[typed.label] = typed
    elif isinstance(typed, ev.IterationStarted):
        state.iterations[typed.iteration] = IterationState(typed.iteration, typed.temperature,
                                                           typed.checkpoint)
    elif isinstance(typed, ev.CandidateGenerated):
        state.candidates[typed.candidate_id] = CandidateState(
            typed.candidate_id, typed.iteration, typed.index, typed.completion,
            prompt=typed.prompt, position=event.position, meta=dict(typed.meta))
        it = state.iterations.get(typed.iteration)
        if it is not None:
            it.generated = True
    elif isinstance(typed, ev.CandidateScreened):
        c = state.candidates[typed.candidate_id]
        c.screen, c.reason, c.code, c.ast_hash = typed.status, typed.reason, typed.code, typed.ast_hash
        c.duplicate_of = typed.duplicate_of
        c.primitives = typed.primitives
        c.position = event.position
        if typed.status == "accepted" and typed.ast_hash:
            state.by_hash.setdefault(typed.ast_hash, typed.candidate_id)
    elif isinstance(typed, ev.CandidateExecuted):
        c = state.candidates[typed.candidate_id]
        c.execution, c.duration_ms, c.stdout = typed.status, typed.duration_ms, typed.stdout
        if typed.status != "ok":
            c.reason = typed.reason
        c.position = event.position
    elif isinstance(typed, ev.CandidateEvaluated):
        c = state.candidates[typed.candidate_id]
        if typed.split == "dev":
            c.dev = typed.score
            c.metrics = dict(typed.metrics)
        elif typed.split == "test":
            c.test = typed.score
            c.test_done = True
        c.position = event.position
    elif isinstance(typed, ev.PairsBuilt):
        state.iterations[typed.iteration].pairs = typed
    elif isinstance(typed, ev.FactoryRefined):
        state.iterations[typed.iteration].refined = typed
        state.checkpoint = typed.checkpoint
        state.checkpoint_path = typed.path
    elif isinstance(typed, ev.PhaseTimed):
        # nested values are replaced, never changed in place: the TUI's snapshots share them
        phases = state.phases.get(typed.iteration, {})
        spent = phases.get(typed.phase) or {"seconds": 0.0, "cpu_seconds": 0.0, "items": 0}
        state.phases[typed.iteration] = {**phases, typed.phase: {
            "seconds": round(spent["seconds"] + typed.seconds, 4),
            "cpu_seconds": round(spent["cpu_seconds"] + typed.cpu_seconds, 4),
            "items": spent["items"] + typed.items}}
    elif isinstance(typed, ev.IterationFinished):
        it = state.iterations[typed.iteration]
        it.finished, it.stats = True, typed.stats
    elif isinstance(typed, ev.SelectionTested):
        state.selection = typed
    elif isinstance(typed, ev.RunFinished):
        state.finished = typed
        state.failed = None
    elif isinstance(typed, ev.RunFailed):
        state.failed = typed.reason
    elif isinstance(typed, ev.RunResumed):
        state.failed = None
    return state


def fold(events: Iterable[Any], state: RunState | None = None) -> RunState:
    """Fold events (in log order) into a fresh or given state."""
    state = state or RunState()
    for event in events:
        apply(state, event)
    return state
