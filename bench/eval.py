"""Batched against one-prompt-at-a-time GSM8k-format greedy evaluation, in the same run.

    python bench/eval.py [--size full|test] [--problems 200] [--batch 64] [--threads 1]
                         [--backend hf|vllm] [--rounds 2]

The model is the toymath seed (a Llama-shaped Hugging Face directory that the toymath domain
builds and caches under ``$SELFDEV_HOME``: ``--size full`` is the domain's 2.1M-parameter model,
a few minutes to build the first time; ``test`` is the small one of the tests). The problems are
its GSM8k-format test file, scored 0-shot with toymath's stop strings and 40 new tokens by the
``gsm8k`` evaluator's own generation path:

* sequential: one ``generate`` call per problem (batch of one; what an evaluator without
  batching does);
* batched: one call for all problems, ``--batch`` rows at a time, left padded, KV cache
  (``--backend vllm``: one vLLM call; on a GPU only).

Rounds alternate (batched, sequential, batched, ...) so that load on this shared machine hits
both. It prints generated tokens per second for each, the ratio (goal: >= 5x), and whether the
two gave the same answers (they must: greedy decoding does not depend on the batch).
"""
from __future__ import annotations

import argparse
import os
import statistics
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="full", choices=["full", "test"])
    ap.add_argument("--problems", type=int, default=200)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--max-new-tokens", type=int, default=40)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--backend", default="hf", choices=["hf", "vllm"])
    a = ap.parse_args()

    import torch

    torch.set_num_threads(a.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from selfdev.engine.api import Context, NullProgress, selfdev_home
    from selfdev.plugins.domains.lm.model import LMModel
    from selfdev.plugins.domains.toymath.family import build_family
    from selfdev.plugins.evaluators.gsm8k import GSM8kEvaluator, score_outputs, gold_answer

    t0 = time.perf_counter()
    fam = build_family(a.size, 0, ["A", "B"], "main", threads=max(1, a.threads))
    print(f"toymath {a.size} family ready in {time.perf_counter() - t0:.1f} s: {fam['seed']}")
    ctx = Context(run_id="bench", seed=0, home=selfdev_home(), artifacts=selfdev_home() / "bench",
                  progress=NullProgress())
    data = fam["data"]
    ev = GSM8kEvaluator(ctx, test_file=str(data / "test.jsonl"), dev_file=str(data / "dev.jsonl"),
                        shots=0, max_new_tokens=a.max_new_tokens, batch_size=a.batch,
                        test_limit=a.problems, backend=a.backend, device="cpu"
                        if a.backend == "hf" else "auto")
    rows = ev.items("test")
    prompts = ev._prompts["test"]
    model = LMModel(fam["seed"], label="seed")
    tok = model.tokenizer()
    n_params = sum(p.numel() for p in model.load("cpu")[0].parameters())
    print(f"model: {n_params / 1e6:.2f}M parameters; {len(prompts)} problems; "
          f"{a.max_new_tokens} new tokens at most; torch threads {a.threads}; backend {a.backend}")
    ev.generate(model, prompts[:2])  # warm the engine (model build, first kernels)

    def run(batched: bool) -> tuple[float, int, list[str]]:
        start = time.perf_counter()
        if batched:
            outs = ev.generate(model, prompts)
        else:
            outs = [ev.generate(model, [p])[0] for p in prompts]
        seconds = time.perf_counter() - start
        tokens = sum(len(tok(o, add_special_tokens=False)["input_ids"]) for o in outs)
        return seconds, tokens, outs

    times: dict[bool, list[float]] = {True: [], False: []}
    outputs: dict[bool, list[str]] = {}
    tokens: dict[bool, int] = {}
    for r in range(a.rounds):
        for batched in (True, False):
            s, n, outs = run(batched)
            times[batched].append(s)
            tokens[batched], outputs[batched] = n, outs
            print(f"  round {r + 1} {'batched   ' if batched else 'sequential'}: {s:7.2f} s, "
                  f"{n} tokens, {n / s:8.1f} tokens/s")
    golds = [gold_answer(r["answer"]) for r in rows]
    acc = {b: 100 * score_outputs(outputs[b], golds)["strict"] for b in (True, False)}
    same = outputs[True] == outputs[False]
    seq = tokens[False] / statistics.median(times[False])
    bat = tokens[True] / statistics.median(times[True])
    load = os.getloadavg()[0]
    print(f"sequential (one prompt at a time): {seq:8.1f} tokens/s   strict accuracy {acc[False]:.1f} %")
    print(f"batched (batch {a.batch}):{' ' * (15 - len(str(a.batch)))}{bat:8.1f} tokens/s   "
          f"strict accuracy {acc[True]:.1f} %")
    print(f"ratio batched / sequential: {bat / seq:.2f}x (goal >= 5x); same answers: {same}; "
          f"load average {load:.1f} (a shared, noisy machine)")


if __name__ == "__main__":
    main()
