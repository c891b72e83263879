"""The ``tiny`` generator: the embedded algorithm factory, a small Llama-style causal LM.

selfdev builds it deterministically on first use and caches it under
``$SELFDEV_HOME/cache/factory/``:

1. a corpus of working ``merge_models`` programs from the ``grammar`` generator
   (``plugins.generators.grammar.corpus(n, seed)``), docstrings removed (see
   ``corpus_programs``);
2. a byte-level BPE tokenizer trained on that corpus with ``tokenizers``. Merges may cross spaces
   inside a line but never a line break, so frequent code phrases become single tokens and the
   rest stays sub-word (numbers, rare names);
3. a ``LlamaForCausalLM`` (tied embeddings) pretrained on ``<bos> <merge_models> program <eos>``
   sequences with AdamW for a fixed number of steps from a fixed seed.

**What it reads.** The tiny factory is a miniature of "a code LLM prompted with an example": it
does *not* read the domain prompt. Every completion is conditioned on the same two tokens
(``<bos><merge_models>``), the header it was pretrained with, whatever the prompt says; its
completions are bare code. DPO and SFT train it on that same header
(``selfdev prompt DOMAIN --generator tiny`` shows it).

It writes programs it has never seen (new combinations of the corpus' building blocks, new
constants), some broken (mostly names from two naming schemes mixed in one program, as a weak
code model does; also truncated bodies and wrong shapes) and some good;
``selfdev factory stats`` measures how many are new, how many pass the sandbox's static screen,
and the sampling speed.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal, Optional

import selfdev
from selfdev import Context, Field, Generator, SelfdevError, cache_lock, derive_seed
from selfdev import hookimpl
from selfdev.plugins.factory.checkpoints import MANIFEST, quiet_hf, write_manifest
from selfdev.plugins.factory.options import (BatchSize, CacheImplementation, Decoder,
                                             MaxNewTokens, Threads, TopK, TopP)
from selfdev.plugins.factory.sampling import LocalModelGenerator
from selfdev.plugins.factory.threads import resolve_threads
from selfdev.plugins.generators import grammar

HEADER = "<merge_models>"
SPECIALS = ["<pad>", "<unk>", "<bos>", "<eos>", HEADER]
BUILD_VERSION = 1


@dataclass(frozen=True)
class TinySpec:
    """Everything that determines a tiny factory (its cache key)."""

    corpus_size: int = 3000
    corpus_seed: int = 0
    corpus_temperature: float | None = None   # None: the grammar's spread over [0.6, 1.4]
    strip_docstrings: bool = True   # see corpus_programs
    canonical_names: bool = False   # one naming scheme for the whole corpus (see canonical_names)
    vocab_size: int = 1024
    hidden_size: int = 128
    layers: int = 2
    heads: int = 2                  # head_dim 64 (vLLM's CPU kernels need >= 32)
    intermediate_size: int = 352
    max_length: int = 320           # programs longer than this (in tokens) are left out
    steps: int = 600
    batch_size: int = 8
    learning_rate: float = 3e-3
    warmup: int = 30
    weight_decay: float = 0.1
    seed: int = 0


SIZES: dict[str, TinySpec] = {
    "default": TinySpec(),
    # the test-size factory: builds in about 30 s; one naming scheme makes its language small
    # enough to learn in 250 steps
    "test": TinySpec(corpus_size=1000, canonical_names=True, max_length=256, steps=250,
                     warmup=10),
}


def spec_for(size: str, **overrides: Any) -> TinySpec:
    """The recipe of size ``size`` (a key of ``SIZES``) with the overrides that are set."""
    clean = {k: v for k, v in overrides.items() if v is not None}
    return replace(SIZES[size], **clean)


# --------------------------------------------------------------------------------------------
# building


def strip_docstring(code: str) -> str:
    """Remove the docstring of ``merge_models`` (and of nested helpers), keep everything else
    (comments included) byte for byte."""
    import ast

    try:
        tree = ast.parse(code)
    except SyntaxError:
        return code
    lines = code.splitlines(keepends=True)
    spans = []
    for node in _statements(tree):
        if isinstance(node, ast.FunctionDef) and node.body:
            first = node.body[0]
            if (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
                    and isinstance(first.value.value, str) and len(node.body) > 1):
                spans.append((first.lineno - 1, first.end_lineno))
    for start, end in sorted(spans, reverse=True):
        del lines[start:end]
    return "".join(lines)


def _statements(tree: Any) -> list:
    """Every statement under ``tree`` (a function definition is one, and only statements hold
    statements: walking them alone finds the same definitions as ``ast.walk``, faster)."""
    import ast

    out: list = []
    blocks = [tree.body]
    while blocks:
        for node in blocks.pop():
            out.append(node)
            for field in ("body", "orelse", "finalbody"):
                block = getattr(node, field, None)
                if isinstance(block, list) and block and isinstance(block[0], ast.stmt):
                    blocks.append(block)
            for holder in getattr(node, "handlers", ()) or getattr(node, "cases", ()):
                blocks.append(holder.body)
    return out


def canonical_names(code: str) -> str:
    """Rename the grammar's alternative variable names (``deltas/delta/result``,
    ``vectors/vec/combined``, ...) to its first scheme (``taus/tau/merged``); code names only
    (comments and strings are left alone). A smaller language for the test-size factory, which
    has no time to learn to keep one scheme through a program."""
    import io
    import tokenize

    target = grammar.NAMINGS[0]
    table = {old: new for scheme in grammar.NAMINGS[1:] for old, new in zip(scheme, target)}
    lines = code.splitlines(keepends=True)
    edits: list[tuple[int, int, int, str]] = []
    try:
        for tok in tokenize.generate_tokens(io.StringIO(code).readline):
            if tok.type == tokenize.NAME and tok.string in table:
                edits.append((tok.start[0] - 1, tok.start[1], tok.end[1], table[tok.string]))
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return code
    for row, start, end, new in sorted(edits, reverse=True):
        line = lines[row]
        lines[row] = line[:start] + new + line[end:]
    return "".join(lines)


def corpus_programs(spec: TinySpec) -> list[str]:
    """The pretraining corpus: ``grammar.corpus(corpus_size, corpus_seed)``, docstrings removed.

    The grammar's docstrings are prose summaries of the whole pipeline and a quarter of its
    tokens. Measured with the default model (100 samples per temperature, executable in the
    digits sandbox at T = 1.2 / 1.0 / 0.857): without them 26 / 63 / 86 %, with them
    24 / 62 / 82 %, a 30 % longer build and fewer structurally new programs; so they go
    (``strip_docstrings = False`` keeps them; comments always stay). ``canonical_names`` is for
    the test size (see ``canonical_names``)."""
    programs = grammar.corpus(spec.corpus_size, spec.corpus_seed, temperature=spec.corpus_temperature)
    if spec.strip_docstrings:
        programs = [strip_docstring(p) for p in programs]
    if spec.canonical_names:
        programs = [canonical_names(p) for p in programs]
    return programs


def cache_key(spec: TinySpec, programs: list[str]) -> str:
    h = hashlib.blake2b(digest_size=8)
    h.update(json.dumps({"build": BUILD_VERSION, **asdict(spec)}, sort_keys=True).encode())
    for p in programs:
        h.update(p.encode() + b"\0")
    return h.hexdigest()


def train_tokenizer(programs: list[str], vocab_size: int) -> Any:
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE(unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"\n+|[^\n]+"), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tk.train_from_iterator(programs, trainer)
    tk.post_processor = processors.TemplateProcessing(
        single="<bos> $A", special_tokens=[("<bos>", tk.token_to_id("<bos>"))])
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<bos>", eos_token="<eos>",
                                   pad_token="<pad>", unk_token="<unk>",
                                   model_max_length=4096)


def _batches(lengths: list[int], batch_size: int, steps: int, seed: int) -> list[list[int]]:
    """Length-grouped random batches: shuffle, sort within windows of 32 batches, shuffle."""
    import random

    rng = random.Random(derive_seed("tiny-batches", seed))
    out: list[list[int]] = []
    while len(out) < steps:
        order = list(range(len(lengths)))
        rng.shuffle(order)
        window = batch_size * 32
        epoch: list[list[int]] = []
        for w in range(0, len(order), window):
            chunk = sorted(order[w:w + window], key=lambda i: lengths[i])
            epoch += [chunk[k:k + batch_size] for k in range(0, len(chunk), batch_size)]
        rng.shuffle(epoch)
        out += [b for b in epoch if len(b) == batch_size] or epoch
    return out[:steps]


def build(spec: TinySpec, dest: Path, *, threads: int | None = None, progress: Any = None) -> dict:
    """Build a tiny factory into ``dest`` (a new directory); return the build report."""
    n_threads = resolve_threads(threads)
    with selfdev.torch_threads(n_threads):
        return _build(spec, dest, n_threads, progress)


def _build(spec: TinySpec, dest: Path, n_threads: int, progress: Any) -> dict:
    import math

    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    started = time.perf_counter()
    programs = corpus_programs(spec)
    tok = train_tokenizer(programs, spec.vocab_size)
    header_ids = tok(HEADER)["input_ids"]
    seqs, dropped = [], 0
    for p in programs:
        ids = header_ids + tok(p, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        if len(ids) > spec.max_length:
            dropped += 1
            continue
        seqs.append(ids)
    if not seqs:
        raise SelfdevError("tiny factory: every corpus program is longer than max_length")
    tokenizer_seconds = time.perf_counter() - started

    torch.manual_seed(derive_seed("tiny-init", spec.seed) % (2 ** 31))
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=spec.hidden_size, intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.layers, num_attention_heads=spec.heads,
        num_key_value_heads=spec.heads, max_position_embeddings=max(1024, spec.max_length + 64),
        tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id, attention_dropout=0.0)
    model = LlamaForCausalLM(config)
    model.train()
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": spec.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=spec.learning_rate, betas=(0.9, 0.95))

    def lr_at(step: int) -> float:
        if step < spec.warmup:
            return spec.learning_rate * (step + 1) / spec.warmup
        frac = (step - spec.warmup) / max(1, spec.steps - spec.warmup)
        return spec.learning_rate * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))

    lengths = [len(s) for s in seqs]
    batches = _batches(lengths, spec.batch_size, spec.steps, spec.seed)
    task = progress.task("building the tiny factory", total=spec.steps) if progress else None
    losses: list[float] = []
    tokens_seen = 0
    train_started = time.perf_counter()
    try:
        for step, batch in enumerate(batches):
            width = max(lengths[i] for i in batch)
            ids = torch.full((len(batch), width), tok.pad_token_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for r, i in enumerate(batch):
                ids[r, :lengths[i]] = torch.tensor(seqs[i])
                mask[r, :lengths[i]] = 1
            labels = ids.masked_fill(mask == 0, -100)
            labels[:, :len(header_ids)] = -100
            for group in opt.param_groups:
                group["lr"] = lr_at(step)
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
            tokens_seen += int(mask.sum())
            if task:
                task.advance()
    finally:
        if task:
            task.close()
    train_seconds = time.perf_counter() - train_started
    model.eval()
    model.generation_config = GenerationConfig(bos_token_id=tok.bos_token_id,
                                               eos_token_id=tok.eos_token_id,
                                               pad_token_id=tok.pad_token_id)
    dest.mkdir(parents=True)
    with quiet_hf():
        model.save_pretrained(str(dest))
        tok.save_pretrained(str(dest))
    tail = losses[-max(1, len(losses) // 10):]
    report = {
        "spec": asdict(spec),
        "corpus_programs": len(programs), "corpus_used": len(seqs), "corpus_dropped": dropped,
        "corpus_tokens": sum(lengths), "parameters": sum(p.numel() for p in model.parameters()),
        "vocab": len(tok), "threads": n_threads, "steps": len(batches),
        "tokens_seen": tokens_seen, "epochs": round(tokens_seen / max(1, sum(lengths)), 2),
        "loss_first": round(losses[0], 4), "loss_last": round(sum(tail) / len(tail), 4),
        "tokenizer_seconds": round(tokenizer_seconds, 2),
        "train_seconds": round(train_seconds, 2),
        "seconds": round(time.perf_counter() - started, 2),
    }
    (dest / "build.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    (dest / "corpus.sha").write_text(hashlib.blake2b("\0".join(programs).encode(),
                                                     digest_size=16).hexdigest() + "\n")
    write_manifest(dest, {"kind": "full", "factory": "tiny", "initial": str(dest.resolve()),
                             "prompt": {"mode": "header", "header": HEADER}})
    return report


@functools.lru_cache(maxsize=8)
def _factory_key(spec: TinySpec) -> str:
    """``cache_key(spec, corpus_programs(spec))``, once a process: the corpus is a pure function
    of the spec and of the code (which cannot change under a running process), and generating it
    takes seconds."""
    return cache_key(spec, corpus_programs(spec))


def ensure_factory(home: Path, size: str = "default", *, threads: int | None = None,
                   progress: Any = None, **overrides: Any) -> Path:
    """The cached tiny factory for this spec, built first if missing (one builder at a time)."""
    spec = spec_for(size, **overrides)
    key = _factory_key(spec)
    root = Path(home) / "cache" / "factory"
    dest = root / f"tiny-{size}-{key}"
    if (dest / MANIFEST).is_file():
        return dest
    with cache_lock(root / f".tiny-{size}-{key}.lock"):
        if (dest / MANIFEST).is_file():
            return dest
        tmp = root / f".tmp-tiny-{size}-{key}-{os.getpid()}"
        if tmp.exists():
            shutil.rmtree(tmp)
        try:
            report = build(spec, tmp, threads=threads, progress=progress)
            # the manifest names the final directory
            write_manifest(tmp, {"kind": "full", "factory": "tiny",
                                    "initial": str(dest.resolve()),
                                    "prompt": {"mode": "header", "header": HEADER},
                                    "build_seconds": report["seconds"]})
            if dest.exists():
                shutil.rmtree(dest)
            os.replace(tmp, dest)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return dest


# --------------------------------------------------------------------------------------------
# the generator


class TinyGenerator(LocalModelGenerator, Generator):
    """The embedded factory (built and cached on first use; see the module docstring)."""

    name = "tiny"

    class Options(Generator.Options):
        size: Literal[tuple(SIZES)] = Field(  # type: ignore[valid-type]
            "default", description="the build recipe: default, or test (builds in about 30 s)")
        steps: Optional[int] = Field(None, ge=1, description="training steps of the build "
                                                             "(unset: the size's)")
        corpus_size: Optional[int] = Field(None, ge=16, description="programs in the training "
                                                                    "corpus (unset: the size's)")
        max_new_tokens: MaxNewTokens = 400
        top_p: TopP = 1.0
        top_k: TopK = 0
        batch_size: BatchSize = 1024
        threads: Threads = 0
        cache_implementation: CacheImplementation = "dynamic"
        decoder: Decoder = "auto"

    def __init__(self, ctx: Context, **options: Any) -> None:
        super().__init__(ctx, **options)
        self._initial: Path | None = None

    def build_spec(self) -> TinySpec:
        """The recipe of the factory this generator samples from."""
        return spec_for(self.options.size, **self._build_overrides())

    def _build_overrides(self) -> dict[str, Any]:
        return {"steps": self.options.steps, "corpus_size": self.options.corpus_size}

    def initial_checkpoint(self) -> Path:
        if self._initial is None:
            self._initial = ensure_factory(self.ctx.home, self.options.size,
                                           threads=self.options.threads,
                                           progress=self.ctx.progress, **self._build_overrides())
        return self._initial


@hookimpl
def register_generators(register):
    register(TinyGenerator)
