"""``toymath``: GSM8k-format arithmetic word problems and a tiny Llama family built on CPU.

Problems are in exactly GSM8k's format (``question``; ``answer`` = a solution with calculator
annotations, last line ``#### N``) in skill families:

* ``A`` addition/subtraction (``Tom has 4 + 7 = <<4+7=11>>11 apples now.\\n#### 11``),
* ``B`` multiplication/division, * ``C`` "format" problems that copy a number (no arithmetic),
* ``A2``/``B2``: the same skills in other templates (used by the "unseen" expert set).

The family (tiny-domains.md §3, recipe w1, measured there: seed 75.5, experts 78.5/71.0, best
merges 89-91 on dev): a closed-vocabulary tokenizer built with ``tokenizers`` (one token per
digit, words with their leading space, exactly invertible), a Llama seed (hidden 256, 2 layers,
2.1M parameters) trained 400 steps on A:B:C = 1:1:1 and one expert per family fine-tuned 200
steps at lr 2e-4 from it. Everything is deterministic and cached as ordinary HF directories under
``$SELFDEV_HOME/cache/toymath/seed-<hash>/`` (``seed/``, ``data/{train,dev,test}.jsonl`` and
``experts-<hash>/<family>/``), so the ``toymath`` domain is just the ``lm`` domain pointed at them.

``python -m plugins.domains.toymath --size full`` builds the family and prints the timings.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import random
import re
import shutil
import time
from pathlib import Path
from typing import Any, Callable

from selfdev import ConfigError, cache_dir, cache_lock
from selfdev import hookimpl

from selfdev.plugins.domains.lm import LMDomain

#: bump when the build changes in a way the recipe does not capture
RECIPE_VERSION = 1

NAMES = ["Tom", "Anna", "Ben", "Lily", "Sam", "Mia", "Jack", "Emma", "Leo", "Zoe", "Max", "Ella"]
OBJS = ["apples", "pencils", "cookies", "marbles", "stickers", "books", "eggs", "cards", "coins", "shells"]
PRON = {"Tom": "He", "Ben": "He", "Sam": "He", "Jack": "He", "Leo": "He", "Max": "He",
        "Anna": "She", "Lily": "She", "Mia": "She", "Emma": "She", "Zoe": "She", "Ella": "She"}


# ------------------------------------------------------------------------------- problems
def _ctx(r: random.Random):
    n = r.choice(NAMES)
    m = r.choice([x for x in NAMES if x != n])
    return n, m, PRON[n], r.choice(OBJS)


def fam_A(r: random.Random, lo: int = 1, hi: int = 10):
    """addition / subtraction, four templates."""
    n, m, P, o = _ctx(r)
    t = r.randrange(4)
    if t in (0, 2):
        a, b = r.randint(lo, hi), r.randint(lo, hi)
        c = a + b
    else:
        c, b = r.randint(lo, hi), r.randint(lo, hi)
        a = c + b
    if t == 0:
        q = f"{n} has {a} {o}. {P} buys {b} more. How many {o} does {n} have now?"
        s = f"{n} has {a} + {b} = <<{a}+{b}={c}>>{c} {o} now."
    elif t == 1:
        q = f"{n} has {a} {o}. {P} gives {b} {o} to {m}. How many {o} does {n} have left?"
        s = f"{n} has {a} - {b} = <<{a}-{b}={c}>>{c} {o} left."
    elif t == 2:
        q = f"There are {a} {o} in a box. {n} puts {b} more {o} in the box. How many {o} are in the box?"
        s = f"There are {a} + {b} = <<{a}+{b}={c}>>{c} {o} in the box."
    else:
        q = f"{n} had {a} {o}. {m} took {b} of them. How many {o} does {n} have?"
        s = f"{n} has {a} - {b} = <<{a}-{b}={c}>>{c} {o}."
    return q, s, c


def fam_B(r: random.Random, lo: int = 2, hi: int = 9):
    """multiplication / division, four templates."""
    n, m, P, o = _ctx(r)
    t = r.randrange(4)
    a, b = r.randint(lo, hi), r.randint(lo, hi)
    c = a * b
    if t == 0:
        q = f"{n} has {a} bags. Each bag has {b} {o}. How many {o} does {n} have?"
        s, ans = f"{n} has {a} * {b} = <<{a}*{b}={c}>>{c} {o}.", c
    elif t == 1:
        q = f"A box holds {b} {o}. How many {o} are in {a} boxes?"
        s, ans = f"There are {a} * {b} = <<{a}*{b}={c}>>{c} {o} in {a} boxes.", c
    elif t == 2:
        q = f"{n} has {c} {o} and shares them equally among {a} friends. How many {o} does each friend get?"
        s, ans = f"Each friend gets {c} / {a} = <<{c}/{a}={b}>>{b} {o}.", b
    else:
        q = f"{n} puts {c} {o} into {a} equal rows. How many {o} are in each row?"
        s, ans = f"Each row has {c} / {a} = <<{c}/{a}={b}>>{b} {o}.", b
    return q, s, ans


def fam_C(r: random.Random, lo: int = 1, hi: int = 40):
    """'format' problems with no arithmetic: copy the number."""
    n, m, P, o = _ctx(r)
    t = r.randrange(3)
    a = r.randint(lo, hi)
    if t == 0:
        q, s = f"{n} has {a} {o}. How many {o} does {n} have?", f"{n} has {a} {o}."
    elif t == 1:
        q = f"There are {a} {o} in a box. {m} looks at the box. How many {o} are in the box?"
        s = f"There are {a} {o} in the box."
    else:
        q, s = f"{n} gives {a} {o} to {m}. How many {o} does {m} get?", f"{m} gets {a} {o}."
    return q, s, a


def fam_A2(r: random.Random, lo: int = 1, hi: int = 10):
    """addition / subtraction in other templates."""
    n, m, P, o = _ctx(r)
    t = r.randrange(3)
    if t in (0, 2):
        a, b = r.randint(lo, hi), r.randint(lo, hi)
        c = a + b
    else:
        c, b = r.randint(lo, hi), r.randint(lo, hi)
        a = c + b
    if t == 0:
        q = f"{n} collects {a} {o}. Later {P.lower()} finds {b} more {o}. How many {o} does {n} have in total?"
        s = f"{n} has {a} + {b} = <<{a}+{b}={c}>>{c} {o} in total."
    elif t == 1:
        q = f"{n} had {a} {o} and lost {b} of them. How many {o} are left?"
        s = f"There are {a} - {b} = <<{a}-{b}={c}>>{c} {o} left."
    else:
        q = f"{n} has {a} {o} and {m} has {b} {o}. How many {o} do they have together?"
        s = f"They have {a} + {b} = <<{a}+{b}={c}>>{c} {o} together."
    return q, s, c


def fam_B2(r: random.Random, lo: int = 2, hi: int = 9):
    """multiplication / division in other templates."""
    n, m, P, o = _ctx(r)
    t = r.randrange(3)
    a, b = r.randint(lo, hi), r.randint(lo, hi)
    c = a * b
    if t == 0:
        q = f"There are {a} tables with {b} {o} on each table. How many {o} are there?"
        s, ans = f"There are {a} * {b} = <<{a}*{b}={c}>>{c} {o}.", c
    elif t == 1:
        q = f"{c} {o} are split evenly into {a} groups. How many {o} are in each group?"
        s, ans = f"Each group has {c} / {a} = <<{c}/{a}={b}>>{b} {o}.", b
    else:
        q = f"{n} buys {a} packs of {o}. Each pack has {b} {o}. How many {o} does {P.lower()} buy?"
        s, ans = f"{P} buys {a} * {b} = <<{a}*{b}={c}>>{c} {o}.", c
    return q, s, ans


FAMILIES: dict[str, Callable[..., tuple[str, str, int]]] = {
    "A": fam_A, "B": fam_B, "C": fam_C, "A2": fam_A2, "B2": fam_B2}
#: the skill each family trains (alt templates count as the same skill)
SKILL = {"A": "A", "A2": "A", "B": "B", "B2": "B", "C": "C"}


def make_problems(family: str, n: int, seed: int, exclude: set[str] | None = None) -> list[dict[str, Any]]:
    """``n`` distinct GSM8k-format problems of ``family`` (questions in ``exclude`` are skipped)."""
    if family not in FAMILIES:
        raise ConfigError(f"toymath: unknown family {family!r}; allowed: {', '.join(FAMILIES)}")
    r = random.Random(f"toymath:{family}:{seed}")
    out, seen = [], set(exclude or ())
    tries = 0
    while len(out) < n and tries < 50 * n + 1000:
        tries += 1
        q, s, ans = FAMILIES[family](r)
        if q in seen:
            continue
        seen.add(q)
        out.append({"question": q, "answer": f"{s}\n#### {ans}", "family": family})
    if len(out) < n:
        raise ConfigError(f"toymath: family {family} has only {len(out)} distinct problems, asked for {n}")
    return out


def training_text(row: dict[str, Any]) -> str:
    """The text a model is trained on: lm-eval's zero-shot gsm8k prompt plus the target."""
    return f"Question: {row['question']}\nAnswer: {row['answer']}"


# ------------------------------------------------------------------------------- tokenizer
TOKEN_PATTERN = r"####|Question:|Answer:| ?<<|>>| ?[A-Za-z]+| ?\d| ?[^\sA-Za-z\d]|\n| "
SPECIAL = ["<pad>", "<bos>", "<eos>", "<unk>"]


def build_tokenizer():
    """A closed-vocabulary WordLevel tokenizer (one token per digit), as a transformers
    ``PreTrainedTokenizerFast`` that adds ``<bos>`` and decodes by plain concatenation."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    pat = re.compile(TOKEN_PATTERN)
    toks: set[str] = set()
    r = random.Random(0)
    for fam in FAMILIES:
        for _ in range(3000):
            q, s, a = FAMILIES[fam](r)
            toks.update(pat.findall(training_text({"question": q, "answer": f"{s}\n#### {a}"})))
    for w in NAMES + OBJS + list(PRON.values()) + [p.lower() for p in PRON.values()]:
        toks.update(pat.findall(" " + w))
        toks.update(pat.findall(w))
    for d in "0123456789":
        toks.update([d, " " + d])
    toks.update(["\n", " ", "-", " -", ".", ",", "$", " $"])
    itos = SPECIAL + sorted(toks - set(SPECIAL))
    vocab = {t: i for i, t in enumerate(itos)}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Split(Regex(TOKEN_PATTERN), behavior="isolated")
    tk.decoder = decoders.Fuse()
    tk.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", vocab["<bos>"])])
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<bos>", eos_token="<eos>",
                                   pad_token="<pad>", unk_token="<unk>",
                                   clean_up_tokenization_spaces=False, padding_side="left",
                                   model_max_length=4096)


# ------------------------------------------------------------------------------- recipes
PRESETS: dict[str, dict[str, Any]] = {
    # tiny-domains.md recipe w1 (h256 L2, 2.1M params; about 3.5-4 min on 2 quiet cores)
    "full": dict(hidden=256, layers=2, heads=4, intermediate=1024, max_positions=160,
                 seed_steps=400, seed_lr=2e-3, seed_mix="A:1,B:1,C:1", seed_examples=1000,
                 expert_steps=200, expert_lr=2e-4, expert_examples=3000, batch=32, warmup=20,
                 pool=4000, n_dev=100, n_test=500),
    # a small family for tests (well under a minute)
    "test": dict(hidden=64, layers=2, heads=4, intermediate=256, max_positions=160,
                 seed_steps=150, seed_lr=3e-3, seed_mix="A:1,B:1,C:1", seed_examples=600,
                 expert_steps=40, expert_lr=1e-3, expert_examples=600, batch=32, warmup=10,
                 pool=1200, n_dev=30, n_test=60),
}
SEED_KEYS = ("hidden", "layers", "heads", "intermediate", "max_positions", "seed_steps", "seed_lr",
             "seed_mix", "seed_examples", "batch", "warmup", "pool", "n_dev", "n_test")
EXPERT_KEYS = ("expert_steps", "expert_lr", "expert_examples", "batch", "warmup")
#: expert sets: which families each expert trains on (name -> list of (family, weight)),
#: a seed offset and whether alt templates are mixed in
EXPERT_SETS: dict[str, dict[str, Any]] = {
    "main": {"offset": 0, "experts": {"A": [("A", 1.0)], "B": [("B", 1.0)], "C": [("C", 1.0)]}},
    # "unseen" experts for transfer: other seeds, half of the data in other templates
    "alt": {"offset": 1000, "experts": {"A": [("A", 0.5), ("A2", 0.5)], "B": [("B", 0.5), ("B2", 0.5)],
                                        "C": [("C", 1.0)]}},
}


def _hash(obj: Any) -> str:
    return hashlib.blake2b(json.dumps(obj, sort_keys=True).encode(), digest_size=6).hexdigest()


def _parse_mix(mix: str) -> list[tuple[str, float]]:
    out = []
    for part in str(mix).split(","):
        fam, _, w = part.strip().partition(":")
        if fam not in FAMILIES:
            raise ConfigError(f"toymath: unknown family {fam!r} in mix {mix!r}")
        out.append((fam, float(w or 1)))
    return out


@contextlib.contextmanager
def _threads(n: int):
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(max(1, min(n, old)))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


# ------------------------------------------------------------------------------- training
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


class _NullTask:
    def advance(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def _task(progress, desc: str, total: int):
    return progress.task(desc, total=total) if progress is not None else _NullTask()


def _seed_job(root: Path, recipe: dict[str, Any], seed: int) -> dict[str, Any]:
    return {"kind": "seed", "root": str(root), "recipe": recipe, "seed": seed,
            "out": str(root / "seed"), "steps": recipe["seed_steps"], "desc": "toymath: training the seed"}


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
        rows = _read_jsonl(root / "data" / "train.jsonl")
        model = _make_model(len(tok), recipe, job["seed"], tok)
        stats = train_lm(model, _encode(tok, rows), recipe["seed_steps"], recipe["seed_lr"], recipe["batch"],
                         recipe["warmup"], job["seed"] + 1, tok.pad_token_id, progress=progress)
    else:
        rng = random.Random(job["seed"])
        rows = []
        for src, w in job["mix"]:
            pool = _read_jsonl(root / "data" / f"pool-{src}.jsonl")
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


_MARK = "@@selfdev-toymath "


class _PrintProgress:
    def advance(self, n: int = 1) -> None:
        print(f"{_MARK}advance {n}", flush=True)

    def close(self) -> None:
        pass


def _worker_main() -> None:  # pragma: no cover - runs in a subprocess
    import sys

    job = json.loads(sys.stdin.read())
    import torch

    torch.set_num_threads(int(job.get("threads", 1)))
    stats = run_job(job, _PrintProgress())
    print(f"{_MARK}result {json.dumps(stats)}", flush=True)


def run_jobs(jobs: list[dict[str, Any]], threads: int, progress=None, isolate: bool = True) -> list[dict[str, Any]]:
    """Run training jobs, in parallel worker processes when ``isolate`` (``threads`` cores in all).

    Workers start with ``OMP_WAIT_POLICY=PASSIVE`` (unless set): on shared, busy cores OpenMP's
    default spin-waiting made 2-thread training up to 5x slower than 1 thread (measured here).
    """
    import subprocess
    import sys
    import threading

    if not jobs:
        return []
    if not isolate:
        out = []
        for job in jobs:
            task = _task(progress, job["desc"], job["steps"])
            with _threads(threads):
                out.append(run_job(job, task))
            task.close()
        return out
    workers = max(1, min(len(jobs), threads))
    per = max(1, threads // workers)
    env = dict(os.environ)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    env["OMP_NUM_THREADS"] = str(per)
    results: list[dict[str, Any] | None] = [None] * len(jobs)
    errors: list[str] = []

    def one(i: int) -> None:
        job = dict(jobs[i], threads=per)
        task = _task(progress, job["desc"], job["steps"])
        proc = subprocess.Popen([sys.executable, "-c", "from selfdev.plugins.domains.toymath import _worker_main; _worker_main()"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=env)
        err: list[str] = []
        t = threading.Thread(target=lambda: err.extend(proc.stderr), daemon=True)
        t.start()
        proc.stdin.write(json.dumps(job))
        proc.stdin.close()
        for line in proc.stdout:
            if line.startswith(_MARK + "advance"):
                task.advance(int(line.split()[-1]))
            elif line.startswith(_MARK + "result"):
                results[i] = json.loads(line[len(_MARK + "result "):])
        proc.wait()
        t.join(timeout=5)
        task.close()
        if proc.returncode != 0 or results[i] is None:
            errors.append(f"{job['desc']} failed (exit {proc.returncode}): {''.join(err)[-2000:]}")

    pending = list(range(len(jobs)))
    while pending:
        batch, pending = pending[:workers], pending[workers:]
        ths = [threading.Thread(target=one, args=(i,)) for i in batch]
        for th in ths:
            th.start()
        for th in ths:
            th.join()
        if errors:
            from selfdev import SelfdevError

            raise SelfdevError("toymath build failed: " + errors[0])
    return results  # type: ignore[return-value]


def build_seed(recipe: dict[str, Any], seed: int, progress=None, threads: int = 2, isolate: bool = True) -> Path:
    """Build (or reuse) the seed model and the data files; return the seed-family root."""
    seed_recipe = {k: recipe[k] for k in SEED_KEYS}
    key = {"v": RECIPE_VERSION, "seed": seed, **seed_recipe}
    root = cache_dir("toymath", f"seed-{_hash(key)}")
    manifest = root / "seed.json"
    with cache_lock(root / ".lock"):
        if manifest.is_file() and (root / "seed" / "config.json").is_file():
            return root
        t0 = time.perf_counter()
        data = root / "data"
        data.mkdir(exist_ok=True)
        n_dev, n_test, pool_n = recipe["n_dev"], recipe["n_test"], recipe["pool"]
        dev = make_problems("A", n_dev, 1000 + seed) + make_problems("B", n_dev, 2000 + seed)
        held = {r["question"] for r in dev}
        test = (make_problems("A", n_test, 3000 + seed, exclude=held)
                + make_problems("B", n_test, 4000 + seed, exclude=held))
        held |= {r["question"] for r in test}
        pools = {fam: make_problems(fam, pool_n, 100 * (i + 1) + seed, exclude=held)
                 for i, fam in enumerate(FAMILIES)}
        for fam, rows in pools.items():
            _write_jsonl(data / f"pool-{fam}.jsonl", rows)
        mix = []
        rng = random.Random(seed)
        for fam, w in _parse_mix(recipe["seed_mix"]):
            mix += rng.sample(pools[fam], int(w * recipe["seed_examples"]))
        _write_jsonl(data / "dev.jsonl", dev)
        _write_jsonl(data / "test.jsonl", test)
        _write_jsonl(data / "train.jsonl", mix)
        (stats,) = run_jobs([_seed_job(root, recipe, seed)], threads, progress, isolate)
        info = {"recipe": key, "train": stats, "params": stats["params"], "vocab": stats["vocab"],
                "build_seconds": round(time.perf_counter() - t0, 2), "threads": threads,
                "n_dev": len(dev), "n_test": len(test), "n_train_mix": len(mix)}
        manifest.write_text(json.dumps(info, indent=2) + "\n")
    return root


def build_experts(root: Path, recipe: dict[str, Any], seed: int, families: list[str], expert_set: str = "main",
                  scope: str = "all", progress=None, threads: int = 2, isolate: bool = True) -> dict[str, Path]:
    """Fine-tune one expert per family from the seed (cached; missing ones are trained in
    parallel worker processes); return name -> directory."""
    if expert_set not in EXPERT_SETS:
        raise ConfigError(f"toymath: expert_set must be one of {', '.join(EXPERT_SETS)}; got {expert_set!r}")
    if scope not in ("all", "mlp"):
        raise ConfigError(f"toymath: expert_scope must be 'all' or 'mlp'; got {scope!r}")
    spec = EXPERT_SETS[expert_set]
    key = {"v": RECIPE_VERSION, "seed": seed, "set": expert_set, "scope": scope,
           **{k: recipe[k] for k in EXPERT_KEYS}}
    edir = root / f"experts-{_hash(key)}"
    edir.mkdir(exist_ok=True)
    out = {}
    for fam in families:
        if fam not in spec["experts"]:
            raise ConfigError(f"toymath: no expert family {fam!r}; allowed: {', '.join(spec['experts'])}")
        out[fam] = edir / fam
    with cache_lock(edir / ".lock"):
        todo = [f for f in families if not (out[f] / "config.json").is_file()]
        jobs = [{"kind": "expert", "root": str(root), "recipe": recipe, "scope": scope, "mix": spec["experts"][f],
                 "seed": seed + 10 + list(spec["experts"]).index(f) + spec["offset"], "out": str(out[f]),
                 "steps": recipe["expert_steps"], "desc": f"toymath: training expert {f} ({expert_set})"}
                for f in todo]
        t0 = time.perf_counter()
        for f, stats in zip(todo, run_jobs(jobs, threads, progress, isolate)):
            (out[f] / "selfdev-expert.json").write_text(json.dumps(
                {"recipe": key, "family": f, "train": stats, "threads": threads,
                 "build_seconds": round(time.perf_counter() - t0, 2)}, indent=2) + "\n")
    return out


def resolve_recipe(size: str, overrides: dict[str, Any]) -> dict[str, Any]:
    if size not in PRESETS:
        raise ConfigError(f"toymath: size must be one of {', '.join(PRESETS)}; got {size!r}")
    recipe = dict(PRESETS[size])
    for k, v in overrides.items():
        if v is None:
            continue
        if k not in recipe:
            raise ConfigError(f"toymath: unknown recipe key {k!r}; allowed: {', '.join(recipe)}")
        recipe[k] = type(recipe[k])(v)
    return recipe


def build_family(size: str = "full", seed: int = 0, families=("A", "B"), expert_set: str = "main",
                 scope: str = "all", progress=None, threads: int = 2, isolate: bool = True,
                 **overrides) -> dict[str, Any]:
    """Build (or load from the cache) seed, data and experts. Returns paths and timings."""
    recipe = resolve_recipe(size, overrides)
    t0 = time.perf_counter()
    root = build_seed(recipe, seed, progress, threads, isolate)
    experts = build_experts(root, recipe, seed, list(families), expert_set, scope, progress, threads, isolate)
    return {"root": root, "seed": root / "seed", "data": root / "data", "experts": experts,
            "recipe": recipe, "seconds": round(time.perf_counter() - t0, 2)}


# ------------------------------------------------------------------------------- the domain
class ToyMathDomain(LMDomain):
    """The ``lm`` domain on the toymath family (built and cached on first use)."""

    name = "toymath"
    default_evaluator = "toymath"

    def __init__(self, ctx, size: str = "full", seed: int = 0, families: str | list = "A,B",
                 expert_set: str = "main", mergeable: str = "all", expert_scope: str | None = None,
                 threads: int = 2, hidden: int | None = None, layers: int | None = None,
                 intermediate: int | None = None, seed_steps: int | None = None, seed_lr: float | None = None,
                 expert_steps: int | None = None, expert_lr: float | None = None,
                 n_dev: int | None = None, n_test: int | None = None) -> None:
        super().__init__(ctx, mergeable=mergeable, seed=seed,
                         task="toymath arithmetic word problems in GSM8k format (exact match of the "
                              "final number after '####', zero-shot)")
        fams = [f.strip() for f in families.split(",")] if isinstance(families, str) else list(families)
        self.size, self.family_seed, self.families = size, int(seed), fams
        self.expert_set = expert_set
        self.expert_scope = expert_scope or ("mlp" if mergeable == "mlp" else "all")
        self.threads = int(threads)
        self.overrides = dict(hidden=hidden, layers=layers, intermediate=intermediate, seed_steps=seed_steps,
                              seed_lr=seed_lr, expert_steps=expert_steps, expert_lr=expert_lr,
                              n_dev=n_dev, n_test=n_test)
        resolve_recipe(size, self.overrides)  # validate early
        if expert_set not in EXPERT_SETS:
            raise ConfigError(f"toymath: expert_set must be one of {', '.join(EXPERT_SETS)}; got {expert_set!r}")
        self.family: dict[str, Any] | None = None

    def _resolve_models(self) -> None:
        if self.family is None:
            self.family = build_family(self.size, self.family_seed, self.families, self.expert_set,
                                       self.expert_scope, getattr(self.ctx, "progress", None), self.threads,
                                       **self.overrides)
            self.seed_dir = self.family["seed"]
            self.expert_dirs = dict(self.family["experts"])

    def prepare(self) -> dict[str, Any]:
        info = super().prepare()
        info.update(size=self.size, family_seed=self.family_seed, expert_set=self.expert_set,
                    expert_scope=self.expert_scope, data=str(self.family["data"]))
        return info

    def eval_spec(self) -> dict[str, Any]:
        self._resolve_models()
        data = self.family["data"]
        return {"dev_file": str(data / "dev.jsonl"), "test_file": str(data / "test.jsonl"),
                "train_file": str(data / "train.jsonl"), "shots": 0, "max_new_tokens": 40,
                "batch_size": 256, "metric": "strict"}


@hookimpl
def register_domains(register):
    register(ToyMathDomain)


def main(argv: list[str] | None = None) -> None:  # pragma: no cover - manual use
    import argparse

    ap = argparse.ArgumentParser(description="build the toymath family and print its paths/timings")
    ap.add_argument("--size", default="full", choices=sorted(PRESETS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--families", default="A,B")
    ap.add_argument("--expert-set", default="main", choices=sorted(EXPERT_SETS))
    ap.add_argument("--scope", default="all", choices=["all", "mlp"])
    a = ap.parse_args(argv)
    fam = build_family(a.size, a.seed, a.families.split(","), a.expert_set, a.scope)
    print(json.dumps({k: (str(v) if isinstance(v, Path) else v) for k, v in fam.items()
                      if k != "experts"} | {"experts": {k: str(v) for k, v in fam["experts"].items()}}, indent=2))


if __name__ == "__main__":  # pragma: no cover
    main()
