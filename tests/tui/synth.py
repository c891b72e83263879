"""Synthetic but engine-shaped run logs for the TUI's tests and benchmark.

The events have the types, payloads, sources and batch boundaries the engine's run loop
(``engine/loop.py``) writes: run.started with a full configuration, domain.prepared, the
baselines, then per iteration the generated / screened / executed / evaluated candidates,
pairs.built, factory.refined and iteration.finished, and at the end the top-k test scores,
selection.tested and run.finished. Blobs (prompt, completions, code) are real text.

Nothing here is imported by ``tui``; the TUI only ever reads. Use :func:`deterministic_ids`
when the hashes must be the same on every run (snapshot tests).
"""
from __future__ import annotations

import contextlib
import itertools
import math
import random
from datetime import datetime, timedelta, timezone
from typing import Iterator

from selfdev.store import EventStore, NewEvent

T0 = datetime(2025, 3, 14, 9, 26, 53, tzinfo=timezone.utc)

PROMPT = (
    "You are an expert in machine learning and model merging. Write a new algorithm that "
    "merges several expert models into one better model.\n\ndef merge_models(task_vectors, "
    "base, name) -> torch.Tensor\n"
)

_BODIES = [
    ("Task arithmetic with lambda {a}.", "    return {a} * sum(task_vectors.values())\n"),
    ("Mean of the task vectors, scaled by {a}.",
     "    stacked = torch.stack(list(task_vectors.values()))\n"
     "    return {a} * stacked.mean(dim=0)\n"),
    ("Keep the top {b} fraction by magnitude, then add.",
     "    merged = torch.zeros_like(base)\n"
     "    for tau in task_vectors.values():\n"
     "        k = max(1, int({b} * tau.numel()))\n"
     "        cut = tau.abs().flatten().kthvalue(tau.numel() - k + 1).values\n"
     "        merged = merged + torch.where(tau.abs() >= cut, tau, torch.zeros_like(tau))\n"
     "    return {a} * merged\n"),
    ("Sign election (TIES-like) with scale {a}.",
     "    stacked = torch.stack(list(task_vectors.values()))\n"
     "    sign = torch.sign(stacked.sum(dim=0))\n"
     "    agree = torch.where(torch.sign(stacked) == sign, stacked, torch.zeros_like(stacked))\n"
     "    return {a} * agree.sum(dim=0)\n"),
    ("Largest magnitude per entry, scaled by {a}.",
     "    stacked = torch.stack(list(task_vectors.values()))\n"
     "    idx = stacked.abs().argmax(dim=0, keepdim=True)\n"
     "    return {a} * stacked.gather(0, idx).squeeze(0)\n"),
]


def program(rng: random.Random) -> str:
    doc, body = rng.choice(_BODIES)
    a = round(rng.uniform(0.2, 1.2), 3)
    b = round(rng.uniform(0.05, 0.5), 3)
    return ("import torch\n\n\ndef merge_models(task_vectors, base, name):\n"
            f'    """{doc.format(a=a, b=b)} Variant {rng.randrange(10**6)}."""\n'
            + body.format(a=a, b=b))


def config(iterations: int, candidates: int, top_k: int, seed: int) -> dict:
    return {"run": {"seed": seed, "iterations": iterations, "candidates": candidates,
                    "timeout": 10.0, "top_k": top_k, "name": ""},
            "temperature": {"t1": 1.2, "beta": 0.2},
            "pairs": {"p_w": 0.03, "p_l": 0.1, "elites": 3, "max_pairs": 256},
            "domain": {"name": "digits"}, "generator": {"name": "grammar"},
            "evaluator": {"name": "accuracy"}, "optimizer": {"name": "dpo"},
            "executor": {"name": "local"}}


class _Clock:
    def __init__(self, t0: datetime, step: timedelta) -> None:
        self.t, self.step = t0, step

    def __call__(self) -> str:
        self.t += self.step
        return self.t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def write_run(
    store: EventStore,
    run_id: str = "run-20250314-092653-a1b2",
    *,
    iterations: int = 3,
    candidates: int = 12,
    top_k: int = 3,
    seed: int = 0,
    stop_after: str | None = None,
    fail: str | None = None,
    t0: datetime = T0,
    step: timedelta = timedelta(milliseconds=250),
    batch: int = 500,
    exec_batch: int = 1,
    on_batch=None,
) -> str:
    """Append a whole run to ``store``; returns ``run_id``.

    ``stop_after``: ``"iteration:N"`` stops after iteration N was finished (a crashed run);
    ``fail`` appends a run.failed with that reason instead of finishing. ``on_batch`` is
    called after every append (the follow test slows the writer down with it).
    ``exec_batch``: candidates whose sandbox and score events go in one append (the engine
    appends one candidate at a time; the benchmark batches to write 100k events faster).
    """
    rng = random.Random(seed)
    clock = _Clock(t0, step)
    version = 0

    def emit(events: list[NewEvent]) -> None:
        nonlocal version
        for i in range(0, len(events), batch):
            chunk = events[i:i + batch]
            for e in chunk:
                e.occurred_at = clock()
            store.append(run_id, chunk, expected_version=version)
            version += len(chunk)
            if on_batch is not None:
                on_batch(version)

    def e(type_: str, source: str = "engine", **payload) -> NewEvent:
        return NewEvent(type_, payload, source=source)

    emit([e("run.started", config=config(iterations, candidates, top_k, seed), seed=seed,
            domain="digits", generator="grammar", evaluator="accuracy", optimizer="dpo",
            executor="local", iterations=iterations, candidates=candidates,
            selfdev_version="0.1.0")])
    emit([e("domain.prepared", "plugins.domains.digits",
            summary={"seed": "mlp-64-128-128-10", "experts": ["g012", "g345", "g6789"],
                     "params": 26122})])
    baselines = [("seed", "seed", {}, 31.75, 32.5)]
    for name, dev in (("g012", 38.16), ("g345", 39.55), ("g6789", 44.29)):
        baselines.append((f"expert:{name}", "expert", {"expert": name}, dev, dev - 0.8))
    for lam in (0.3, 0.5, 0.7, 1.0):
        dev = round(58.0 + 14 * math.sin(lam * 2.2), 2)
        baselines.append((f"task_arithmetic lambda={lam}", "task_arithmetic", {"lambda": lam},
                          dev, round(dev - 1.1, 2)))
    for density in (0.2, 0.5):
        dev = round(62.0 + 10 * density, 2)
        baselines.append((f"ties density={density} lambda=1.0", "ties",
                          {"density": density, "lambda": 1.0}, dev, round(dev - 0.7, 2)))
    emit([e("baseline.evaluated", "plugins.domains.digits", label=label, method=method,
            params=params, status="ok", reason=None, dev=dev, test=test,
            metrics={"dev": {"score": dev}, "test": {"score": test}})
          for label, method, params, dev, test in baselines])

    prompt_ref = store.put_blob(PROMPT)
    seen: dict[str, str] = {}
    scores: dict[str, float] = {}
    checkpoint = None
    for t in range(1, iterations + 1):
        temperature = round(1.2 / (1 + 0.2 * (t - 1)), 6)
        emit([e("iteration.started", iteration=t, temperature=temperature,
                checkpoint=checkpoint)])
        gen, screened, ran, codes, programs = [], [], [], {}, []
        for index in range(candidates):
            cid = f"i{t}-c{index:04d}"
            roll = rng.random()
            if roll < 0.08:
                text = "I am not sure how to merge these models. Maybe average them?"
                codes[cid] = None
            else:
                code = rng.choice(programs) if programs and roll > 0.96 else program(rng)
                programs.append(code)
                if roll < 0.13:
                    code = code.replace("import torch", "import os\nimport torch")
                codes[cid] = code
                text = f"Here is a merge that should generalise:\n```python\n{code}```\n"
            ref = store.put_blob(text)
            gen.append(e("candidate.generated", "plugins.generators.grammar", candidate_id=cid,
                         iteration=t, index=index, completion=ref, prompt=prompt_ref,
                         meta={"tokens": len(text.split())}))
        emit(gen)
        for index in range(candidates):
            cid = f"i{t}-c{index:04d}"
            code = codes[cid]
            if code is None:
                screened.append(e("candidate.screened", candidate_id=cid, status="rejected",
                                  reason="no merge_models function found in the completion"))
                continue
            code_ref = store.put_blob(code)
            ast_hash = "b2:" + code_ref[3:35]
            if "import os" in code:
                screened.append(e("candidate.screened", candidate_id=cid, status="rejected",
                                  reason="import of 'os' is not allowed (only torch and math)",
                                  code=code_ref, ast_hash=ast_hash))
            elif ast_hash in seen:
                screened.append(e("candidate.screened", candidate_id=cid, status="duplicate",
                                  reason=f"same program as {seen[ast_hash]}", code=code_ref,
                                  ast_hash=ast_hash, duplicate_of=seen[ast_hash]))
            else:
                seen[ast_hash] = cid
                screened.append(e("candidate.screened", candidate_id=cid, status="accepted",
                                  code=code_ref, ast_hash=ast_hash))
                ran.append(cid)
        emit(screened)
        pending: list[NewEvent] = []
        for n_done, cid in enumerate(ran, 1):
            roll = rng.random()
            ms = round(rng.uniform(4, 40), 3)
            if roll < 0.06:
                pending += [e("candidate.executed", "plugins.domains.digits", candidate_id=cid,
                              status="error", reason="ValueError: shapes cannot be broadcast",
                              duration_ms=ms, stdout="")]
            elif roll < 0.09:
                pending += [e("candidate.executed", "plugins.domains.digits", candidate_id=cid,
                              status="timeout", reason="exceeded the 10.0 s wall-clock limit",
                              duration_ms=10000.0, stdout="")]
            else:
                score = round(min(95.0, max(5.0, rng.gauss(52 + 6 * t, 14))), 2)
                scores[cid] = score
                stdout = f"merged {cid}: 6 parameters\n" if rng.random() < 0.3 else ""
                pending += [e("candidate.executed", "plugins.domains.digits", candidate_id=cid,
                              status="ok", reason=None, duration_ms=ms, stdout=stdout),
                            e("candidate.evaluated", "plugins.evaluators.accuracy",
                              candidate_id=cid, split="dev", score=score,
                              metrics={"score": score, "n": 359})]
            if n_done % exec_batch == 0 or n_done == len(ran):
                emit(pending)  # the engine appends each candidate's results as they finish
                pending = []
        ranked = sorted((c for c in scores if c.startswith(f"i{t}-")), key=lambda c: -scores[c])
        n = len(ranked)
        chosen = ranked[:max(1, math.ceil(0.03 * n))] if n >= 2 else []
        rejected = [c for c in ranked[-max(1, math.ceil(0.1 * n)):] if c not in chosen] if n >= 2 else []
        pairs = [[c, r] for c in chosen for r in rejected if scores[c] > scores[r]][:256]
        emit([e("pairs.built", iteration=t, chosen=chosen, rejected=rejected, elites=[],
                pairs=pairs)])
        if t < iterations:
            checkpoint = f"b2:{rng.getrandbits(128):032x}"
            emit([e("factory.refined", "plugins.optimizers.dpo", iteration=t, optimizer="dpo",
                    checkpoint=checkpoint, path=f"factory/{checkpoint[3:]}",
                    metrics={"loss": round(0.69 - 0.08 * t, 4),
                             "margin": round(0.05 + 0.11 * t, 4), "steps": 8})])
        cands = [c for c in codes]
        accepted = sum(1 for c in ran)
        ok = [c for c in ran if c in scores]
        dev = [scores[c] for c in ok]
        emit([e("iteration.finished", iteration=t,
                stats={"iteration": t, "temperature": temperature, "generated": len(cands),
                       "accepted": accepted, "scored": len(dev),
                       "best": max(dev) if dev else None,
                       "mean": round(sum(dev) / len(dev), 4) if dev else None})])
        if stop_after == f"iteration:{t}":
            return run_id
    if fail:
        emit([e("run.failed", reason=fail)])
        return run_id
    best = sorted(scores, key=lambda c: (-scores[c], c))[:top_k]
    emit([e("candidate.evaluated", "plugins.evaluators.accuracy", candidate_id=cid, split="test",
            score=round(scores[cid] - rng.uniform(0, 3), 2), metrics={"n": 360})
          for cid in best])
    emit([e("selection.tested", k=top_k, candidates=best, best_dev=best[0] if best else None)])
    emit([e("run.finished", summary=[{"method": "seed", "dev": 31.75, "test": 32.5}])])
    return run_id


@contextlib.contextmanager
def deterministic_ids() -> Iterator[None]:
    """Event ids from a counter instead of the clock, so hashes repeat run after run."""
    import selfdev.store.eventstore as es_mod

    counter = itertools.count(1)
    original = es_mod.new_event_ids

    def ids(n: int) -> list[str]:
        out = []
        for _ in range(n):
            i = next(counter)
            h = f"{i:032x}"
            out.append(f"{h[:8]}-{h[8:12]}-7{h[13:16]}-{h[16:20]}-{h[20:]}")
        return out

    es_mod.new_event_ids = ids
    try:
        yield
    finally:
        es_mod.new_event_ids = original


def write_demo_db(path, **kw) -> list[str]:
    """A database with three runs: finished, crashed after iteration 1, and failed."""
    with deterministic_ids(), EventStore(path, writer="synth") as store:
        a = write_run(store, "run-20250314-092653-a1b2", **kw)
        b = write_run(store, "run-20250314-101500-c3d4", seed=1, stop_after="iteration:1",
                      t0=T0 + timedelta(hours=1))
        c = write_run(store, "run-20250315-080000-e5f6", seed=2, iterations=2,
                      fail="ValueError: the evaluator crashed", t0=T0 + timedelta(days=1))
    return [a, b, c]
