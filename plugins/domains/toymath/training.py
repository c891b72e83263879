"""Training toymath's models: the seed from scratch, an expert by fine-tuning the seed.

One *job* (a JSON-able dict: ``kind`` "seed" or "expert", the family ``root``, the ``recipe``, a
``seed`` and the ``out`` directory) trains one model and saves it as an ordinary HF directory;
``jobs.run_jobs`` runs jobs here or in worker processes.
"""
from __future__ import annotations

import math
import random
import shutil
import time
from pathlib import Path
from typing import Any

from selfdev.plugins.domains.toymath.problems import read_jsonl, training_text
from selfdev.plugins.domains.toymath.tokenizer import build_tokenizer


def _make_model(vocab: int, r: dict[str, Any], seed: int, tok):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=r["hidden"], intermediate_size=r["intermediate"],
                      num_hidden_layers=r["layers"], num_attention_heads=r["heads"],
                      num_key_value_heads=r["heads"], max_position_embeddings=r["max_positions"],
                      tie_word_embeddings=True, rms_norm_eps=1e-6, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                      attn_implementation="sdpa")
    return LlamaForCausalLM(cfg)


def _encode(tok, rows: list[dict[str, Any]]) -> list[list[int]]:
    enc = tok([training_text(r) for r in rows], add_special_tokens=False)["input_ids"]
    return [[tok.bos_token_id] + ids + [tok.eos_token_id] for ids in enc]


def train_lm(model, seqs: list[list[int]], steps: int, lr: float, batch: int, warmup: int, seed: int,
             pad_id: int, params: list | None = None, progress=None) -> dict[str, Any]:
    """AdamW (β 0.9/0.98), linear warmup then cosine to 10 %, grad-clip 1, loss on every token
    after ``<bos>`` (tiny-domains.md Appendix C)."""
    import torch
    import torch.nn.functional as F

    g = random.Random(seed)
    params = list(params if params is not None else model.parameters())
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.98), weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps)))))
    model.train()
    order: list[int] = []
    t0 = time.perf_counter()
    losses = []
    for _step in range(steps):
        if len(order) < batch:
            idx = list(range(len(seqs)))
            g.shuffle(idx)
            order += idx
        chunk = [seqs[i] for i in order[:batch]]
        order = order[batch:]
        L = max(map(len, chunk))
        ids = torch.full((len(chunk), L), pad_id, dtype=torch.long)
        lab = torch.full((len(chunk), L), -100, dtype=torch.long)
        att = torch.zeros((len(chunk), L), dtype=torch.long)
        for j, s in enumerate(chunk):
            ids[j, :len(s)] = torch.tensor(s)
            lab[j, 1:len(s)] = torch.tensor(s[1:])
            att[j, :len(s)] = 1
        logits = model(input_ids=ids, attention_mask=att).logits[:, :-1]
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), lab[:, 1:].reshape(-1), ignore_index=-100)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if progress is not None:
            progress.advance()
    model.eval()
    return {"seconds": round(time.perf_counter() - t0, 2), "final_loss": round(sum(losses[-10:]) / max(1, len(losses[-10:])), 4)}


def _save(model, tok, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    if path.exists():
        shutil.rmtree(path)
    tmp.rename(path)

def run_job(job: dict[str, Any], progress=None) -> dict[str, Any]:
    """Train one model (the seed or one expert) and save it; runs in a worker process."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    t0 = time.perf_counter()
    root, recipe = Path(job["root"]), job["recipe"]
    if job["kind"] == "seed":
        tok = build_tokenizer()
        rows = read_jsonl(root / "data" / "train.jsonl")
        model = _make_model(len(tok), recipe, job["seed"], tok)
        stats = train_lm(model, _encode(tok, rows), recipe["seed_steps"], recipe["seed_lr"], recipe["batch"],
                         recipe["warmup"], job["seed"] + 1, tok.pad_token_id, progress=progress)
    else:
        rng = random.Random(job["seed"])
        rows = []
        for src, w in job["mix"]:
            pool = read_jsonl(root / "data" / f"pool-{src}.jsonl")
            rows += rng.sample(pool, int(round(w * recipe["expert_examples"])))
        tok = AutoTokenizer.from_pretrained(root / "seed")
        model = AutoModelForCausalLM.from_pretrained(root / "seed", dtype=torch.float32)
        params = None
        if job["scope"] == "mlp":
            params = []
            for n, p in model.named_parameters():
                p.requires_grad_(".mlp." in n)
                if ".mlp." in n:
                    params.append(p)
        stats = train_lm(model, _encode(tok, rows), recipe["expert_steps"], recipe["expert_lr"],
                         recipe["batch"], recipe["warmup"], job["seed"], tok.pad_token_id, params, progress)
        for p in model.parameters():
            p.requires_grad_(True)
    _save(model, tok, Path(job["out"]))
    stats.update(n_examples=len(rows), params=sum(p.numel() for p in model.parameters()),
                 vocab=len(tok), job_seconds=round(time.perf_counter() - t0, 2))
    return stats
