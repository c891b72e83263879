"""The warm evaluation engine (``plugins/domains/lm/engine.py``) on tiny random Llamas.

Scores must equal the fresh-load path's (a model built per candidate), the model must be built
once for many candidates, in memory and stream mode alike and across handles that change
different tensors, and a Ray worker actor must keep the engine warm across its candidates.
"""
from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from selfdev.engine.api import CandidateWork, Context, NullProgress, WorkSpec  # noqa: E402
from selfdev.plugins.domains.baselines import average, task_arithmetic, ties  # noqa: E402
from selfdev.plugins.domains.lm.domain import LMDomain  # noqa: E402
from selfdev.plugins.domains.lm.engine import HFEngine, fresh_load  # noqa: E402
from selfdev.plugins.domains.lm.model import BUILD_COUNT  # noqa: E402
from selfdev.plugins.evaluators.gsm8k import GSM8kEvaluator  # noqa: E402

SCALED = '''
import torch


def merge_models(task_vectors: dict[str, torch.Tensor], base: torch.Tensor, name: str) -> torch.Tensor:
    merged = torch.zeros_like(base)
    for tau in task_vectors.values():
        merged = merged + tau
    return merged * {lam}
'''


def ctx(tmp_path):
    return Context(run_id="t", seed=0, home=tmp_path, artifacts=tmp_path / "art", progress=NullProgress())


def write_data(path):
    """A few GSM8k-format problems (dev and test files), so no shared data is needed."""
    path.mkdir()
    rows = [{"question": f"Tom has {a} apples and buys {b} more. How many apples does he have?",
             "answer": f"Tom has {a} + {b} = {a + b} apples.\n#### {a + b}"} for a, b in
            [(2, 3), (4, 1), (7, 5), (1, 1), (6, 2), (3, 9)]]
    for name, part in (("dev.jsonl", rows[:4]), ("test.jsonl", rows[4:])):
        (path / name).write_text("".join(json.dumps(r) + "\n" for r in part))
    return path


def evaluator(tmp_path, data, **kw):
    return GSM8kEvaluator(ctx(tmp_path), test_file=str(data / "test.jsonl"),
                          dev_file=str(data / "dev.jsonl"), shots=0, max_new_tokens=8,
                          device="cpu", keep_outputs=True, **kw)


def scored(ev, handle, split="dev"):
    m = ev.evaluate(None, handle, split)
    m.pop("seconds")
    return m, [r["output"] for r in ev.last_outputs]


@pytest.fixture
def lm(tmp_path, tiny_llama):
    seed, experts = tiny_llama()
    experts = {k: str(v) for k, v in experts.items()}

    def make(**kw):
        return LMDomain(ctx(tmp_path), seed_model=str(seed), experts=experts, **kw)
    return make, write_data(tmp_path / "data")


def logits(model):
    ids = torch.tensor([[1, 5, 9, 13, 17, 21, 3]])
    with torch.no_grad():
        return model(input_ids=ids).logits.clone()


def handles(dom, n=3):
    fns = [average, lambda tv, b, name: task_arithmetic(tv, b, name, lam=0.7),
           lambda tv, b, name: ties(tv, b, name, density=0.5, lam=1.0)][:n]
    out = [dom.apply_function(fn) for fn in fns]
    assert all(o.ok for o in out), [o.reason for o in out]
    return [o.model for o in out]


def test_warm_engine_scores_equal_fresh_loads_and_builds_once(tmp_path, lm):
    make, data = lm
    memory = make()  # every tensor merged, in memory (overrides)
    stream = make(mergeable="mlp", in_memory_mb=0)  # MLP only, streamed to directories
    memory.prepare(), stream.prepare()
    assert (memory.mode, stream.mode) == ("memory", "stream")
    cands = handles(memory) + handles(stream)
    # interleave: each switch restores the tensors the last handle changed and this one does not
    order = [cands[0], cands[3], cands[1], cands[4], cands[5], cands[2], memory.seed_model()]
    warm, fresh = evaluator(tmp_path, data), evaluator(tmp_path, data, warm_engine=False)
    before = BUILD_COUNT["models"]
    warm_scores, warm_logits = [], []
    for h in order:
        warm_scores.append(scored(warm, h))
        warm_logits.append(logits(warm.engine().model))  # the model the scores came from
    assert BUILD_COUNT["models"] - before == 1 and warm.engine_stats() == {
        "builds": 1, "in_place": len(order)}
    fresh_scores = [scored(fresh, h) for h in order]
    assert BUILD_COUNT["models"] - before == 1 + len(order)  # fresh: one build per candidate
    assert warm_scores == fresh_scores
    for h, got in zip(order, warm_logits):  # tiny random models all answer alike: check logits
        assert torch.equal(got, logits(fresh_load(h, "cpu")[0])), h
    assert len({tuple(t.flatten()[:8].tolist()) for t in warm_logits}) == len(order)
    # dev then test of one handle copies nothing again
    scored(warm, order[-1], "test")
    assert warm.engine_stats()["in_place"] == len(order)
    warm.close(), memory.close(), stream.close()


def test_warm_model_equals_a_fresh_build_tensor_for_tensor(tmp_path, lm):
    make, _ = lm
    memory, stream = make(), make(mergeable="mlp", in_memory_mb=0)
    a, b = handles(memory, 1)[0], handles(stream, 2)[1]
    engine = HFEngine("cpu")
    for h in (a, b, a):  # restore both ways
        warm, _ = engine.load(h)
        ref, _ = fresh_load(h, "cpu")
        ws, rs = warm.state_dict(), ref.state_dict()
        assert ws.keys() == rs.keys() and all(torch.equal(ws[k], rs[k]) for k in ws), h
    assert engine.builds == 1 and engine.in_place == 3
    memory.close(), stream.close()


def test_a_ray_worker_keeps_one_engine_for_its_candidates(tmp_path, tmp_path_factory, lm, monkeypatch):
    """A real Ray actor (num_gpus = 0) runs three sandboxed lm candidates; its evaluator builds
    the model once and the scores equal the in-process path's."""
    pytest.importorskip("ray")
    import ray

    from selfdev.engine.api import execute_candidate
    from selfdev.plugins.executors.ray import CandidateWorker

    make, data = lm
    dom = make()
    opts = {"seed_model": dom.options.seed_model, "experts": dom.options.experts,
            "eval_data": str(data)}
    ev_opts = {"shots": 0, "max_new_tokens": 8, "device": "cpu"}
    spec = WorkSpec(run_id="t-ray", seed=0, domain={"name": "lm", **opts},
                    evaluator={"name": "gsm8k", **ev_opts})
    works = [CandidateWork(f"c{i}", SCALED.format(lam=lam), "dev", 120.0)
             for i, lam in enumerate((0.5, 1.0, 1.5))]
    monkeypatch.setenv("SELFDEV_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False,
                 _temp_dir=str(tmp_path_factory.mktemp("ray")))  # short: socket paths
    try:
        actor = ray.remote(num_cpus=1, num_gpus=0)(CandidateWorker).remote(spec, None)
        box = [ray.put(LMDomain(ctx(tmp_path), **opts).export_state())]
        remote = [ray.get(actor.run.remote(box, "k", w), timeout=120) for w in works]
        stats = ray.get(actor.evaluator_stats.remote())
        ray.get(actor.close.remote())
        ray.kill(actor)
    finally:
        if started:
            ray.shutdown()
    assert stats == {"builds": 1, "in_place": 3}
    local_dom, local_ev = LMDomain(ctx(tmp_path), **opts), GSM8kEvaluator(ctx(tmp_path), **ev_opts)
    local = [execute_candidate(local_dom, local_ev, w) for w in works]
    local_dom.close()
    for r, l in zip(remote, local):
        assert r.status == "ok" and r.evaluated, r.reason
        r.metrics.pop("seconds"), l.metrics.pop("seconds")
        assert (r.score, r.metrics) == (l.score, l.metrics)
