"""Seconds per candidate evaluation: a model built per candidate (fresh) vs the warm engine.

    python bench/eval_engine.py [--hidden 32 --layers 2] [--candidates 6] [--mode stream|memory]

Builds a random Llama (toymath tokenizer) as seed and two perturbed experts in a temp dir, merges
``--candidates`` task-arithmetic candidates with the ``lm`` domain and scores each with the
``gsm8k`` evaluator (4 dev problems, 0-shot, 8 new tokens, CPU), once with ``warm_engine =
false`` and once with the warm engine. Prints seconds per candidate for both and the ratio.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def make_llama(path: Path, hidden: int, layers: int, seed: int, base: Path | None = None) -> Path:
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    from selfdev.plugins.domains.toymath.tokenizer import build_tokenizer

    tok = build_tokenizer()
    torch.manual_seed(seed)
    if base is None:
        model = LlamaForCausalLM(LlamaConfig(
            vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden,
            num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=4,
            max_position_embeddings=256, bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id))
    else:
        model = AutoModelForCausalLM.from_pretrained(base)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.02 * torch.randn_like(p))
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--candidates", type=int, default=6)
    ap.add_argument("--mode", choices=["stream", "memory"], default="stream")
    a = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    from selfdev.engine.api import Context, NullProgress
    from selfdev.plugins.domains.baselines import task_arithmetic
    from selfdev.plugins.domains.lm.domain import LMDomain
    from selfdev.plugins.evaluators.gsm8k import GSM8kEvaluator

    with tempfile.TemporaryDirectory(prefix="selfdev-bench-") as tmp:
        t = Path(tmp)
        seed = make_llama(t / "seed", a.hidden, a.layers, 0)
        experts = {n: str(make_llama(t / n, a.hidden, a.layers, i + 1, seed))
                   for i, n in enumerate("xy")}
        data = t / "data"
        data.mkdir()
        rows = [{"question": f"Tom has {i} apples and buys 2 more. How many?",
                 "answer": f"#### {i + 2}"} for i in range(6)]
        for name, part in (("dev.jsonl", rows[:4]), ("test.jsonl", rows[4:])):
            (data / name).write_text("".join(json.dumps(r) + "\n" for r in part))
        ctx = Context(run_id="bench", seed=0, home=t, artifacts=t / "art", progress=NullProgress())
        dom = LMDomain(ctx, seed_model=str(seed), experts=experts,
                       in_memory_mb=0 if a.mode == "stream" else 1024, keep_merged=0)
        info = dom.prepare()
        cands = [dom.apply_function(lambda tv, b, n, lam=lam: task_arithmetic(tv, b, n, lam=lam))
                 .model for lam in [0.1 * (i + 1) for i in range(a.candidates)]]
        results = {}
        for label, warm in (("fresh", False), ("in place", True)):
            ev = GSM8kEvaluator(ctx, test_file=str(data / "test.jsonl"),
                                dev_file=str(data / "dev.jsonl"), shots=0, max_new_tokens=8,
                                device="cpu", warm_engine=warm)
            ev.evaluate(None, cands[0], "dev")  # warm-up (imports, the engine's one build)
            t0 = time.perf_counter()
            for h in cands:
                ev.evaluate(None, h, "dev")
            results[label] = (time.perf_counter() - t0) / len(cands)
            ev.close()
        dom.close()
    print(f"model: Llama hidden {a.hidden}, {a.layers} layers, {info['num_params']:,} params, "
          f"mode {a.mode}; {a.candidates} candidates, 4 dev problems x 8 tokens, 1 thread")
    for label, sec in results.items():
        print(f"{label:>9}: {sec:.3f} s per candidate evaluation")
    print(f"    ratio: fresh / in place = {results['fresh'] / results['in place']:.2f}x")


if __name__ == "__main__":
    main()
