"""Two identical refinements give the same checkpoint, byte for byte: the engine names a
checkpoint by its content hash (``factory.refined``), so a run resumed during refinement and
an uninterrupted one must agree on it. Wall-clock timings stay in the event's metrics."""
from __future__ import annotations

import json

from selfdev.engine.api import Context, NullProgress, Pair
from selfdev.engine.loop import hash_directory

TA = "```python\ndef merge_models(task_vectors, base, name):\n    return 0.5 * sum(task_vectors.values())\n```"
BAD = "```python\ndef merge_models(task_vectors, base, name):\n    return base\n```"


def test_two_identical_refinements_have_the_same_hash(selfdev_home, tmp_path):
    from selfdev.plugins.generators.tiny import ensure_factory
    from selfdev.plugins.optimizers.dpo import DPOOptimizer

    factory = ensure_factory(selfdev_home, "test", threads=1)
    pairs = [Pair("Write merge_models.", TA, BAD, 80.0, 10.0)] * 4
    results = []
    for attempt in ("a", "b"):
        ctx = Context(run_id=f"same-{attempt}", seed=0, home=selfdev_home,
                      artifacts=tmp_path / attempt, progress=NullProgress())
        opt = DPOOptimizer(ctx, threads=1, epochs=1, batch_size=4, measure_margin=False)
        results.append(opt.refine(factory, pairs, iteration=1))
    first, second = (r.checkpoint for r in results)
    assert "train_seconds" in results[0].metrics  # the timing is reported, in the event
    manifest = json.loads((first / "selfdev_factory.json").read_text())
    assert "train_seconds" not in json.dumps(manifest)
    assert hash_directory(first) == hash_directory(second)
