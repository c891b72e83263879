"""Sampling from a local factory checkpoint with transformers.

Batched ``generate`` with a KV cache, where every completion has its own random stream
(Gumbel-max noise drawn from a ``torch.Generator`` seeded with
``derive_seed(seed, prompt_index, i)``), so completion ``i`` depends on (seed, i, checkpoint,
temperature) and not on which other completions share its batch.

torch and transformers are imported inside the functions that need them.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import selfdev
from selfdev import Completion, derive_seed
from selfdev.plugins.factory.checkpoints import (LoadedFactory, check_checkpoint, checkpoint_stamp,
                                                 load_factory, pick_device)
from selfdev.plugins.factory.prompts import PromptFormat, prompt_format
from selfdev.plugins.factory.threads import resolve_threads


def filtered_scores(scores: Any, temperature: float, top_p: float, top_k: int) -> Any:
    """``scores / T`` in float32 with top-k / top-p filtering (``-inf`` outside); unscaled
    when ``temperature <= 0`` (greedy)."""
    import torch

    scores = scores.float()
    if temperature <= 0:
        return scores
    scores = scores / temperature
    if top_k and top_k < scores.shape[-1]:
        kth = torch.topk(scores, top_k, dim=-1).values[..., -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if 0 < top_p < 1:
        sorted_scores, order = torch.sort(scores, descending=True, dim=-1)
        probs = torch.softmax(sorted_scores, dim=-1)
        drop = probs.cumsum(dim=-1) - probs >= top_p
        drop[..., 0] = False
        scores = scores.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return scores


def _log_neg_log(noise: Any) -> Any:
    """``log(-log(u))`` of uniform noise, clamped away from 0 and 1 (minus a Gumbel sample)."""
    import torch

    noise.clamp_(1e-10, 1.0 - 1e-7)
    return torch.log(-torch.log(noise))


def gumbel_scores(scores: Any, generators: list[Any], temperature: float, top_p: float,
                  top_k: int) -> Any:
    """``filtered_scores`` plus per-row Gumbel noise.

    Row ``r`` draws one noise vector from ``generators[r]``; the argmax of the result is a
    sample from the filtered softmax. A row whose generator is None (a finished row still in
    the batch) draws nothing, so each row's stream never depends on the other rows.
    """
    import torch

    scores = filtered_scores(scores, temperature, top_p, top_k)
    if temperature <= 0:
        return scores
    noise = torch.full(scores.shape, 0.5, dtype=torch.float32)
    for r, g in enumerate(generators):
        if g is not None:
            torch.rand(scores.shape[-1], generator=g, out=noise[r])
    return scores - _log_neg_log(noise).to(scores.device)


class RowSampler:
    """Next tokens for a batch whose rows have their own random streams, as ``gumbel_scores``
    picks them, with each row's noise drawn several steps at a time.

    ``torch.rand(k * V, generator=g)`` yields the same numbers as ``k`` draws of ``V``, so row
    ``r`` sees exactly the noise it would see one step at a time, for one generator call per
    ``steps`` steps instead of one per step (a third of the tiny factory's sampling time went
    to those calls). ``keep(positions)`` follows the batch when finished rows are dropped; a
    finished row still in the batch goes on drawing from its own stream, which nothing else
    reads.
    """

    BUDGET = 1 << 23  # floats of noise held per batch (32 MiB)

    def __init__(self, generators: list[Any], vocab: int, temperature: float, top_p: float,
                 top_k: int, device: Any = "cpu") -> None:
        self.generators, self.vocab, self.device = list(generators), vocab, device
        self.temperature, self.top_p, self.top_k = temperature, top_p, top_k
        self.steps = max(1, min(64, self.BUDGET // max(1, len(self.generators) * vocab)))
        self.buffer: Any = None   # [rows, steps, V]: log(-log(u)) of the next steps' noise
        self.used = self.steps

    def __call__(self, logits: Any) -> Any:
        scores = filtered_scores(logits, self.temperature, self.top_p, self.top_k)
        if self.temperature <= 0:
            return scores.argmax(-1)
        if self.used == self.steps:
            self._draw()
        step = self.buffer[:, self.used]
        self.used += 1
        return (scores - step).argmax(-1)

    def _draw(self) -> None:
        import torch

        noise = torch.empty((len(self.generators), self.steps, self.vocab), dtype=torch.float32)
        for r, g in enumerate(self.generators):
            torch.rand(self.steps * self.vocab, generator=g, out=noise[r].view(-1))
        self.buffer, self.used = _log_neg_log(noise).to(self.device), 0

    def keep(self, positions: list[int]) -> None:
        self.generators = [self.generators[j] for j in positions]
        if self.buffer is not None:
            import torch

            self.buffer = self.buffer[torch.tensor(positions, device=self.buffer.device)]

    def __len__(self) -> int:
        return len(self.generators)


def _gumbel_processor(generators: list[Any], temperature: float, top_p: float, top_k: int) -> Any:
    """``gumbel_scores`` as a logits processor: turns greedy ``generate`` into sampling."""
    from transformers import LogitsProcessor

    class PerRowGumbel(LogitsProcessor):
        def __call__(self, input_ids: Any, scores: Any) -> Any:
            return gumbel_scores(scores, generators, temperature, top_p, top_k)

    return PerRowGumbel()


@dataclass
class SampleSpec:
    max_new_tokens: int = 512
    top_p: float = 1.0
    top_k: int = 0
    batch_size: int = 32
    cache_implementation: str | None = None
    stop_strings: list[str] = field(default_factory=list)
    decoder: str = "auto"


def sample(model: Any, tokenizer: Any, contexts: list[list[int]], n: int, temperature: float,
           seed: int, spec: SampleSpec, *, progress: Any = None) -> list[tuple[int, str, dict]]:
    """``n`` completions for each context (token ids): ``[(prompt_index, text, meta)]``.

    Rows are batched in order (prompt 0's n completions, then prompt 1's); each row's random
    stream is seeded with ``derive_seed(seed, prompt_index, i)``.
    """
    return [row for batch in sample_batches(model, tokenizer, contexts, n, temperature, seed,
                                            spec, progress=progress) for row in batch]


def sample_batches(model: Any, tokenizer: Any, contexts: list[list[int]], n: int,
                   temperature: float, seed: int, spec: SampleSpec, *,
                   progress: Any = None) -> Iterator[list[tuple[int, str, dict]]]:
    """``sample``'s rows, in order, one list per batch as each batch is done."""
    from selfdev.plugins.factory.decoding import unsupported_reason

    if spec.decoder == "auto" and not spec.stop_strings and unsupported_reason(model) is None:
        yield from _sample_own_loop(model, tokenizer, contexts, n, temperature, seed, spec,
                                    progress=progress)
        return
    yield from _sample_generate(model, tokenizer, contexts, n, temperature, seed, spec,
                                progress=progress)


def _sample_generate(model: Any, tokenizer: Any, contexts: list[list[int]], n: int,
                     temperature: float, seed: int, spec: SampleSpec, *,
                     progress: Any = None) -> Iterator[list[tuple[int, str, dict]]]:
    """``sample_batches`` through ``model.generate``."""
    import torch
    from transformers import GenerationConfig

    rows = [(p, i) for p in range(len(contexts)) for i in range(n)]
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    eos = _eos_ids(model, tokenizer)
    task = progress.task("factory: sampling", total=len(rows)) if progress else None
    try:
        for start in range(0, len(rows), max(1, spec.batch_size)):
            batch = rows[start:start + spec.batch_size]
            ctx = [contexts[p] for p, _ in batch]
            width = max(len(c) for c in ctx)
            ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for r, c in enumerate(ctx):  # left padding
                ids[r, width - len(c):] = torch.tensor(c, dtype=torch.long)
                mask[r, width - len(c):] = 1
            gens = [torch.Generator().manual_seed(derive_seed(seed, p, i)) for p, i in batch]
            config = GenerationConfig(
                do_sample=False, num_beams=1, max_new_tokens=spec.max_new_tokens,
                pad_token_id=pad_id, eos_token_id=sorted(eos), bos_token_id=tokenizer.bos_token_id,
                cache_implementation=spec.cache_implementation,
                stop_strings=spec.stop_strings or None)
            started = time.perf_counter()
            with torch.no_grad():
                kwargs: dict[str, Any] = {}
                if spec.stop_strings:
                    kwargs["tokenizer"] = tokenizer
                result = model.generate(
                    input_ids=ids.to(device), attention_mask=mask.to(device),
                    generation_config=config,
                    logits_processor=[_gumbel_processor(gens, temperature, spec.top_p,
                                                        spec.top_k)], **kwargs)
            seconds = time.perf_counter() - started
            new = result[:, width:].cpu()
            out: list[tuple[int, str, dict]] = []
            for r, (p, i) in enumerate(batch):
                toks = new[r].tolist()
                finish = "length"
                for k, t in enumerate(toks):
                    if t in eos:
                        toks, finish = toks[:k], "stop"
                        break
                while toks and toks[-1] == pad_id:
                    toks.pop()
                out.append(_row(tokenizer, p, i, toks, finish, seed, seconds))
            if task:
                task.advance(len(batch))
            yield out
    finally:
        if task:
            task.close()


def _row(tokenizer: Any, p: int, i: int, toks: list[int], finish: str, seed: int,
         seconds: float) -> tuple[int, str, dict]:
    """One sampled row as ``sample`` returns it: (prompt index, text, meta)."""
    return (p, tokenizer.decode(toks, skip_special_tokens=True),
            {"tokens": len(toks), "finish": finish, "seed": derive_seed(seed, p, i),
             "batch_seconds": round(seconds, 3)})


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    eos = model.generation_config.eos_token_id if model.generation_config is not None else None
    if eos is None:
        eos = tokenizer.eos_token_id
    return set(eos if isinstance(eos, list) else [eos])


def _sample_own_loop(model: Any, tokenizer: Any, contexts: list[list[int]], n: int,
                     temperature: float, seed: int, spec: SampleSpec, *,
                     progress: Any = None) -> Iterator[list[tuple[int, str, dict]]]:
    """``sample_batches`` through ``selfdev.plugins.factory.decoding`` (same rows, same
    streams)."""
    import torch

    from selfdev.plugins.factory.decoding import LlamaDecoder, decode

    decoder = LlamaDecoder(model)
    eos = _eos_ids(model, tokenizer)
    task = progress.task("factory: sampling", total=len(contexts) * n) if progress else None

    try:
        for p, context in enumerate(contexts):
            for start in range(0, n, max(1, spec.batch_size)):
                rows = range(start, min(n, start + spec.batch_size))
                gens = [torch.Generator().manual_seed(derive_seed(seed, p, i)) for i in rows]
                started = time.perf_counter()
                sampler = RowSampler(gens, decoder.vocab, temperature, spec.top_p, spec.top_k,
                                     decoder.device)
                done = decode(decoder, context, sampler, max_new_tokens=spec.max_new_tokens,
                              eos=eos, on_done=task.advance if task else None)
                seconds = time.perf_counter() - started
                yield [_row(tokenizer, p, i, toks, finish, seed, seconds)
                       for i, (toks, finish) in zip(rows, done)]
    finally:
        if task:
            task.close()


class LocalModelGenerator:
    """Mixin for generators that sample from a local checkpoint directory with transformers.

    It reads the component's options (``self.options``): the sampling options ``max_new_tokens``,
    ``top_p``, ``top_k``, ``batch_size``, ``cache_implementation`` and ``threads``, and, where
    the generator declares them, ``device``, ``dtype``, ``chat_template``, ``system`` and
    ``stop`` (else ``cpu``, ``auto``, ``auto``, no system turn, no stop strings). Subclasses
    implement ``initial_checkpoint()``. The loaded model is kept for the next call with the
    same checkpoint.
    """

    options: Any
    _loaded: LoadedFactory | None = None
    _loaded_stamp: Any = None

    def _option(self, key: str, default: Any) -> Any:
        return getattr(self.options, key, default)

    @property
    def spec(self) -> SampleSpec:
        o = self.options
        return SampleSpec(max_new_tokens=o.max_new_tokens, top_p=o.top_p, top_k=o.top_k,
                          batch_size=o.batch_size,
                          cache_implementation=None if o.cache_implementation == "dynamic"
                          else o.cache_implementation,
                          stop_strings=list(self._option("stop", [])),
                          decoder=self._option("decoder", "auto"))

    def load(self, checkpoint: Path | None) -> LoadedFactory:
        path = Path(checkpoint) if checkpoint is not None else self.initial_checkpoint()  # type: ignore[attr-defined]
        path = check_checkpoint(path, f"generator {self.name!r}")  # type: ignore[attr-defined]
        stamp = checkpoint_stamp(path)
        if self._loaded is None or self._loaded_stamp != stamp:
            self._loaded = None
            with selfdev.torch_threads(resolve_threads(self.options.threads)):
                self._loaded = load_factory(path, device=pick_device(self._option("device", "cpu")),
                                            dtype=self._option("dtype", "auto"))
            self._loaded_stamp = stamp
        return self._loaded

    def prompt_format(self, loaded: LoadedFactory) -> PromptFormat:
        return prompt_format(loaded.tokenizer, loaded.manifest,
                             self._option("chat_template", "auto"), self._option("system", ""))

    def format_prompt(self, prompt: str, checkpoint: Path | None = None) -> str:
        """The text the factory is actually conditioned on for ``prompt``."""
        loaded = self.load(checkpoint)
        return self.prompt_format(loaded).text(loaded.tokenizer, prompt)

    def generate(self, prompts: list[str], n: int, temperature: float, seed: int,
                 checkpoint: Path | None = None, iteration: int = 1) -> list[Any]:
        return [c for batch in self.generate_batches(prompts, n, temperature, seed, checkpoint,
                                                     iteration) for c in batch]

    def generate_batches(self, prompts: list[str], n: int, temperature: float, seed: int,
                         checkpoint: Path | None = None, iteration: int = 1
                         ) -> Iterator[list[Any]]:
        loaded = self.load(checkpoint)
        fmt = self.prompt_format(loaded)
        contexts = [fmt.ids(loaded.tokenizer, p) for p in prompts]
        progress = getattr(getattr(self, "ctx", None), "progress", None)
        started = time.perf_counter()
        completions = tokens = 0
        with selfdev.torch_threads(resolve_threads(self.options.threads)):
            for rows in sample_batches(loaded.model, loaded.tokenizer, contexts, n, temperature,
                                       seed, self.spec, progress=progress):
                completions += len(rows)
                tokens += sum(m["tokens"] for _, _, m in rows)
                yield [Completion(text=text, prompt_index=p,
                                  meta={"tokens": m["tokens"], "finish": m["finish"],
                                        "temperature": round(float(temperature), 6),
                                        "prompt_mode": fmt.mode})
                       for p, text, m in rows]
        seconds = time.perf_counter() - started
        self.last_stats = {"completions": completions, "tokens": tokens,
                           "seconds": round(seconds, 3),
                           "tokens_per_second": round(tokens / seconds, 1) if seconds else None}
