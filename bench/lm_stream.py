"""Per-candidate overhead of the lm domain's stream mode: one sandbox child per candidate
(now) against one fresh sandbox per tensor group (what stream mode did before), on the same
many-group model, in the same run.

The model: a random Llama (bf16, sharded) whose ``mergeable = "mlp"`` tensors make ``G``
groups (14 layers x gate/up/down = 42). The candidate is trivial (``base * 0``), so what is
timed is the overhead: reading, converting and writing tensors, and the sandbox itself.

* ``in-process``: the same merge by a trusted function (``apply_function``): I/O only, the floor;
* ``one child``: ``LMDomain.apply`` in stream mode (a warm StreamSandbox, started once per run;
  its start-up is printed apart), the default now;
* ``per group``: the old path, rebuilt here: for each group, a new ``Sandbox`` over that
  group's tensors (a fresh warm parent: ~3 s), one run, close; the same reads and writes.

    python bench/lm_stream.py [--layers 14] [--hidden 64] [--candidates 3] [--old-groups 8]

(the old path runs ``--old-groups`` groups, and its time is scaled up to all ``G``: each group
is one sandbox start-up, so the time is linear in ``G``; it ran all 42 once: 215 s.)

Numbers are from a shared, noisy machine; compare the ratios, measured in the same run.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

TRIVIAL = "import torch\n\ndef merge_models(task_vectors, base, name):\n    return base * 0\n"


def trivial(task_vectors, base, name):
    return base * 0


def build(root: str, layers: int, hidden: int) -> tuple[str, dict[str, str]]:
    """A seed and two experts (bf16, sharded), cached under ``root``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from selfdev.plugins.domains.toymath.tokenizer import build_tokenizer

    dirs = {name: os.path.join(root, f"{name}-{layers}x{hidden}") for name in ("seed", "x", "y")}
    if all(os.path.isfile(os.path.join(d, "config.json")) for d in dirs.values()):
        return dirs["seed"], {"x": dirs["x"], "y": dirs["y"]}
    tok = build_tokenizer()
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden,
                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=4,
                      max_position_embeddings=128, tie_word_embeddings=True)
    for i, (name, d) in enumerate(dirs.items()):
        torch.manual_seed(i)
        model = LlamaForCausalLM(cfg).to(torch.bfloat16)
        model.save_pretrained(d, max_shard_size="200KB")
        tok.save_pretrained(d)
    return dirs["seed"], {"x": dirs["x"], "y": dirs["y"]}


def old_per_group(dom, code: str, out_dir: str, limit: int) -> float:
    """Stream mode as it was: a fresh Sandbox per group (one tensor per group here). Only the
    first ``limit`` groups are run (each costs a sandbox start-up, seconds); the caller scales
    the time up to every group."""
    import torch

    from selfdev.plugins.domains.lm.io import ShardWriter, copy_model_files, torch_dtype
    from selfdev.sandbox import Sandbox

    t0 = time.perf_counter()
    seed, experts = dom._seed, dom._experts
    copy_model_files(dom.seed_dir, out_dir)
    writer = ShardWriter(out_dir, dom.out_shard_bytes)
    for n in dom.mergeable[:limit]:
        base = {n: seed.get(n).to(torch.float32)}
        tvs = {e: {n: exp.get(n).to(torch.float32) - base[n]} for e, exp in experts.items()}
        with Sandbox(base, tvs, names=[n], memory_mb=4096) as sb:
            res = sb.run(code, timeout=60)
        assert res.ok, res.reason
        writer.add(n, (base[n] + res.tensors[n]).to(torch_dtype(seed.tensors[n].dtype)))
    writer.close()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=14)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--candidates", type=int, default=3)
    ap.add_argument("--old-groups", type=int, default=8, help="groups the old path runs (scaled up "
                                                               "to all; each is a sandbox start-up)")
    ap.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "selfdev-bench-lm-stream"))
    a = ap.parse_args()

    from selfdev.engine.api import Context, NullProgress
    from selfdev.plugins.domains.lm.domain import LMDomain

    seed, experts = build(a.cache, a.layers, a.hidden)
    work = tempfile.mkdtemp(prefix="selfdev-bench-")
    try:
        ctx = Context(run_id="bench", seed=0, home=work, artifacts=os.path.join(work, "art"), progress=NullProgress())
        dom = LMDomain(ctx, seed_model=seed, experts=experts, mergeable="mlp", in_memory_mb=0, keep_merged=1)
        info = dom.prepare()
        groups = info["num_mergeable_tensors"]
        print(f"model: {info['num_params']:,} parameters, bf16, {groups} mergeable tensors "
              f"(= {groups} groups for the old path), 2 experts")
        t = time.perf_counter()
        dom.stream_sandbox()
        start = time.perf_counter() - t
        floor, new, old = [], [], []
        for i in range(a.candidates):
            t = time.perf_counter()
            assert dom.apply_function(trivial).ok
            floor.append(time.perf_counter() - t)
            t = time.perf_counter()
            out = dom.apply(TRIVIAL, timeout=60)
            new.append(time.perf_counter() - t)
            assert out.ok, out.reason
        children = len(dom.stream_sandbox().children)
        k = max(1, min(a.old_groups, groups))
        old.append(old_per_group(dom, TRIVIAL, os.path.join(work, "old"), k) * groups / k)
        dom.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    f, n, o = statistics.median(floor), statistics.median(new), statistics.median(old)
    print(f"StreamSandbox start-up (once per run, not per candidate): {start:.2f} s")
    print(f"{'path':<34}{'s/candidate':>12}{'overhead s':>12}{'per group ms':>14}")
    for label, v in (("in-process (I/O floor)", f), ("one child per candidate (now)", n),
                     ("one sandbox per group (before)*", o)):
        print(f"{label:<34}{v:>12.3f}{v - f:>12.3f}{(v - f) / groups * 1e3:>14.1f}")
    print(f"* timed over {k} of {groups} groups, scaled to {groups}")
    print(f"children forked for {a.candidates} candidates: {children}")
    print(f"overhead ratio before/now: {(o - f) / max(n - f, 1e-9):.0f}x; "
          f"wall ratio before/now: {o / n:.1f}x")


if __name__ == "__main__":
    main()
