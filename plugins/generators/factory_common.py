"""Shared pieces of the model-backed factories (``tiny``, ``hf``, ``vllm``) and their optimizers.

* **checkpoints**: a factory checkpoint is a directory holding either a full Hugging Face causal
  LM (``config.json`` + weights + tokenizer) or a LoRA adapter (``adapter_config.json``) over a
  base model. selfdev writes ``selfdev_factory.json`` next to it (the *manifest*): its kind, its
  base, the initial checkpoint it descends from, and how prompts are formatted for it. A plain
  Hugging Face directory without a manifest works too.
* **prompt formats**: ``header`` (the tiny factory: a fixed header token, the prompt text is not
  read), ``chat`` (the tokenizer's chat template, one user turn with an optional system turn) and
  ``plain`` (the prompt text as is). The generators and the optimizers format prompts through the
  same functions, so DPO trains on exactly the context that sampling used.
* **sampling**: batched ``generate`` with a KV cache, where every completion has its own random
  stream (Gumbel-max noise drawn from a ``torch.Generator`` seeded with
  ``derive_seed(seed, prompt_index, i)``), so completion ``i`` depends on (seed, i, checkpoint,
  temperature) and not on which other completions share its batch.

torch and transformers are imported inside the functions that need them.
"""
from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from selfdev import ConfigError, SelfdevError, derive_seed

MANIFEST = "selfdev_factory.json"
FORMAT = "selfdev-factory/1"
PROMPT_MODES = ("header", "chat", "plain")


# --------------------------------------------------------------------------------------------
# options


def resolve_threads(threads: int | None) -> int:
    """torch's CPU threads: ``threads`` if positive, else automatic.

    Automatic is min(2, cores) on an idle machine and 1 when the 1-minute load average says
    the cores are busy: on a shared 2-core machine two OpenMP threads that keep waiting for each
    other at barriers ran 3-5x *slower* than one thread (measured: a tiny-factory build took
    56 s with 1 thread and 172 s with 2 at load 5). Results do not depend on the thread count
    (same weights, bit for bit, for a build with 1 and 2 threads).
    """
    if threads is not None and int(threads) > 0:
        return int(threads)
    cores = os.cpu_count() or 1
    want = max(1, min(2, cores))
    try:
        load = os.getloadavg()[0]
    except OSError:
        return want
    return want if load < cores / 2 else 1


def set_threads(threads: int | None) -> int:
    import torch

    n = resolve_threads(threads)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def check_choice(kind: str, key: str, value: Any, allowed: Iterable[Any]) -> Any:
    allowed = list(allowed)
    if value not in allowed:
        raise ConfigError(f"config: [{kind}] {key} must be one of "
                          f"{', '.join(repr(a) for a in allowed)}; got {value!r}")
    return value


def check_number(kind: str, key: str, value: Any, *, lo: float | None = None,
                 hi: float | None = None, integer: bool = False) -> Any:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if integer:
        ok = ok and float(value).is_integer()
    if ok and lo is not None and value < lo:
        ok = False
    if ok and hi is not None and value > hi:
        ok = False
    if not ok:
        rng = f" in [{lo}, {hi}]" if lo is not None and hi is not None else (
            f" >= {lo}" if lo is not None else "")
        what = "an integer" if integer else "a number"
        raise ConfigError(f"config: [{kind}] {key} must be {what}{rng}; got {value!r}")
    return int(value) if integer else float(value)


def chat_option(kind: str, value: Any) -> str:
    """``chat_template``: "auto" (use the tokenizer's template when it has one), true or false."""
    if value in (True, "on", "true", "yes"):
        return "on"
    if value in (False, "off", "false", "no"):
        return "off"
    if value in ("auto", None, ""):
        return "auto"
    raise ConfigError(f"config: [{kind}] chat_template must be \"auto\", true or false; got {value!r}")


# --------------------------------------------------------------------------------------------
# checkpoints and manifests


def read_manifest(path: Path | str | None) -> dict[str, Any]:
    if path is None:
        return {}
    file = Path(path) / MANIFEST
    if not file.is_file():
        return {}
    try:
        return json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        raise SelfdevError(f"unreadable factory manifest {file}: {exc}") from None


def write_manifest(path: Path, data: dict[str, Any]) -> None:
    data = {"format": FORMAT, **data}
    (Path(path) / MANIFEST).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def is_adapter(path: Path) -> bool:
    return (Path(path) / "adapter_config.json").is_file()


def adapter_base(path: Path) -> Path:
    """The base model directory a LoRA adapter checkpoint applies to."""
    manifest = read_manifest(path)
    base = manifest.get("base")
    if not base:
        try:
            base = json.loads((Path(path) / "adapter_config.json").read_text()).get(
                "base_model_name_or_path")
        except (OSError, ValueError):
            base = None
    if not base:
        raise SelfdevError(f"factory checkpoint {path} is a LoRA adapter without a base model")
    return Path(base)


def check_checkpoint(path: Path | str | None, who: str) -> Path:
    if path is None:
        raise ConfigError(f"{who} needs a local factory checkpoint (a model directory); "
                          f"use the tiny or hf generator")
    path = Path(path)
    if not path.is_dir():
        raise SelfdevError(f"{who}: factory checkpoint {path} is not a directory")
    if not (path / "config.json").is_file() and not is_adapter(path):
        raise SelfdevError(f"{who}: {path} holds neither a model (config.json) nor a LoRA adapter "
                           f"(adapter_config.json)")
    return path


def checkpoint_stamp(path: Path) -> tuple:
    """Identifies a checkpoint's current content cheaply (path + name/size/mtime of its files),
    so a directory rewritten in place is reloaded."""
    files = []
    for file in sorted(Path(path).iterdir()):
        if file.is_file():
            st = file.stat()
            files.append((file.name, st.st_size, st.st_mtime_ns))
    return (str(Path(path).resolve()), tuple(files))


def initial_of(path: Path) -> Path:
    """The initial checkpoint a (refined) checkpoint descends from (itself for an initial one)."""
    manifest = read_manifest(path)
    if manifest.get("initial"):
        return Path(manifest["initial"])
    if is_adapter(path):
        return adapter_base(path)
    return Path(path)


@dataclass
class LoadedFactory:
    path: Path
    model: Any
    tokenizer: Any
    manifest: dict[str, Any]
    adapter: bool = False


def load_tokenizer(path: Path) -> Any:
    from transformers import AutoTokenizer

    src = Path(path)
    if not (src / "tokenizer_config.json").is_file() and not (src / "tokenizer.json").is_file():
        if is_adapter(src):
            src = adapter_base(src)
    tok = AutoTokenizer.from_pretrained(str(src))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


@contextmanager
def quiet_hf():
    """Silence transformers/datasets progress bars and info logs (the console draws its own)."""
    import transformers

    hf_log = transformers.utils.logging
    verbosity = hf_log.get_verbosity()
    bars = hf_log.is_progress_bar_enabled()
    ds_bars = None
    try:
        import datasets

        ds_bars = datasets.utils.logging.is_progress_bar_enabled()
        datasets.utils.logging.disable_progress_bar()
    except ImportError:
        datasets = None  # type: ignore[assignment]
    hf_log.set_verbosity_error()
    hf_log.disable_progress_bar()
    try:
        yield
    finally:
        hf_log.set_verbosity(verbosity)
        if bars:
            hf_log.enable_progress_bar()
        if datasets is not None and ds_bars:
            datasets.utils.logging.enable_progress_bar()


def torch_dtype(name: str | None) -> Any:
    import torch

    if name in (None, "", "auto"):
        return "auto"
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
             "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    if name not in table:
        raise ConfigError(f"config: dtype must be auto, float32, bfloat16 or float16; got {name!r}")
    return table[name]


def pick_device(device: str | None) -> str:
    import torch

    if device in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def load_factory(path: Path | str, *, device: str = "cpu", dtype: str | None = None,
                 trainable: bool = False, merge_adapter: bool = True) -> LoadedFactory:
    """Load a checkpoint: a full model, or a base model with the LoRA adapter applied.

    For sampling (``trainable=False``) an adapter is merged into the weights (faster); for
    training it stays a ``PeftModel`` whose adapter is trainable.
    """
    path = Path(path)
    manifest = read_manifest(path)
    tok = load_tokenizer(path)
    kwargs: dict[str, Any] = {"dtype": torch_dtype(dtype)}
    with quiet_hf():
        model, adapter = _load_model(path, kwargs, trainable, merge_adapter)
    model.to(device)
    if not trainable:
        model.eval()
    return LoadedFactory(path=path, model=model, tokenizer=tok, manifest=manifest, adapter=adapter)


def _load_model(path: Path, kwargs: dict[str, Any], trainable: bool, merge_adapter: bool) -> Any:
    from transformers import AutoModelForCausalLM

    if is_adapter(path):
        from peft import PeftModel

        base = AutoModelForCausalLM.from_pretrained(str(adapter_base(path)), **kwargs)
        model = PeftModel.from_pretrained(base, str(path), is_trainable=trainable)
        if not trainable and merge_adapter:
            model = model.merge_and_unload()
        adapter = True
    else:
        model = AutoModelForCausalLM.from_pretrained(str(path), **kwargs)
        adapter = False
    return model, adapter


# --------------------------------------------------------------------------------------------
# prompt formats


@dataclass
class PromptFormat:
    """How a domain prompt becomes the factory's context (shared by sampling and training)."""

    mode: str = "plain"          # header | chat | plain
    header: str = ""             # the fixed context of ``header`` mode
    system: str = ""             # an optional system turn in ``chat`` mode

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mode": self.mode}
        if self.header:
            out["header"] = self.header
        if self.system:
            out["system"] = self.system
        return out

    # -- for sampling: token ids of the context ----------------------------------------------

    def messages(self, prompt: str) -> list[dict[str, str]]:
        msgs = [{"role": "system", "content": self.system}] if self.system else []
        return msgs + [{"role": "user", "content": prompt}]

    def text(self, tokenizer: Any, prompt: str) -> str:
        """The context as text (what ``selfdev prompt --generator`` shows)."""
        if self.mode == "header":
            return self.header
        if self.mode == "chat":
            return tokenizer.apply_chat_template(self.messages(prompt), tokenize=False,
                                                 add_generation_prompt=True)
        return prompt

    def ids(self, tokenizer: Any, prompt: str) -> list[int]:
        """Token ids exactly as trl tokenizes the prompt of a preference row."""
        if self.mode == "chat":
            out = tokenizer.apply_chat_template(self.messages(prompt), tokenize=True,
                                                add_generation_prompt=True, return_dict=True)
            return list(out["input_ids"])
        return list(tokenizer(self.text(tokenizer, prompt))["input_ids"])

    # -- for trl: preference / sft rows ------------------------------------------------------

    def row_prompt(self, prompt: str) -> Any:
        if self.mode == "chat":
            return self.messages(prompt)
        return self.header if self.mode == "header" else prompt

    def row_completion(self, text: str) -> Any:
        if self.mode == "chat":
            return [{"role": "assistant", "content": text}]
        return text


def prompt_format(tokenizer: Any, manifest: dict[str, Any], chat_template: str = "auto",
                  system: str = "") -> PromptFormat:
    """The format recorded in the manifest, else chat when the tokenizer has a template."""
    recorded = manifest.get("prompt") or {}
    if recorded.get("mode") in PROMPT_MODES:
        return PromptFormat(mode=recorded["mode"], header=recorded.get("header", ""),
                            system=system or recorded.get("system", ""))
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if chat_template == "on" and not has_template:
        raise ConfigError("chat_template = true, but the factory's tokenizer has no chat template")
    use_chat = chat_template == "on" or (chat_template == "auto" and has_template)
    return PromptFormat(mode="chat" if use_chat else "plain", system=system)


# --------------------------------------------------------------------------------------------
# sampling


def _gumbel_processor(generators: list[Any], temperature: float, top_p: float, top_k: int) -> Any:
    """A logits processor that turns greedy decoding into per-row sampling.

    Row ``r`` adds Gumbel noise drawn from its own generator to ``logits / T`` (after top-k /
    top-p filtering); the argmax of that is a sample from the filtered softmax. Each row draws
    exactly one noise vector per step, so its stream never depends on the other rows.
    """
    import torch
    from transformers import LogitsProcessor

    class PerRowGumbel(LogitsProcessor):
        def __call__(self, input_ids: Any, scores: Any) -> Any:
            scores = scores.float()
            if temperature <= 0:
                return scores
            scores = scores / temperature
            if top_k and top_k < scores.shape[-1]:
                kth = torch.topk(scores, top_k, dim=-1).values[..., -1:]
                scores = scores.masked_fill(scores < kth, float("-inf"))
            if 0 < top_p < 1:
                sorted_scores, order = torch.sort(scores, descending=True, dim=-1)
                cum = torch.softmax(sorted_scores, dim=-1).cumsum(dim=-1)
                drop = cum - torch.softmax(sorted_scores, dim=-1) >= top_p
                drop[..., 0] = False
                scores = scores.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
            noise = torch.stack([
                torch.rand(scores.shape[-1], generator=g).clamp_(1e-10, 1.0 - 1e-7)
                for g in generators])
            return scores - torch.log(-torch.log(noise)).to(scores.device)

    return PerRowGumbel()


@dataclass
class SampleSpec:
    max_new_tokens: int = 512
    top_p: float = 1.0
    top_k: int = 0
    batch_size: int = 32
    cache_implementation: str | None = None
    stop_strings: list[str] = field(default_factory=list)


def sample(model: Any, tokenizer: Any, contexts: list[list[int]], n: int, temperature: float,
           seed: int, spec: SampleSpec, *, progress: Any = None) -> list[tuple[int, str, dict]]:
    """``n`` completions for each context (token ids): ``[(prompt_index, text, meta)]``.

    Rows are batched in order (prompt 0's n completions, then prompt 1's); each row's random
    stream is seeded with ``derive_seed(seed, prompt_index, i)``.
    """
    import torch
    from transformers import GenerationConfig

    rows = [(p, i) for p in range(len(contexts)) for i in range(n)]
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    eos = model.generation_config.eos_token_id if model.generation_config is not None else None
    if eos is None:
        eos = tokenizer.eos_token_id
    out: list[tuple[int, str, dict]] = []
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
                pad_token_id=pad_id, eos_token_id=eos, bos_token_id=tokenizer.bos_token_id,
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
            eos_set = set(eos if isinstance(eos, list) else [eos])
            for r, (p, i) in enumerate(batch):
                toks = new[r].tolist()
                finish = "length"
                for k, t in enumerate(toks):
                    if t in eos_set:
                        toks, finish = toks[:k], "stop"
                        break
                while toks and toks[-1] == pad_id:
                    toks.pop()
                text = tokenizer.decode(toks, skip_special_tokens=True)
                out.append((p, text, {"tokens": len(toks), "finish": finish,
                                      "seed": derive_seed(seed, p, i),
                                      "batch_seconds": round(seconds, 3)}))
            if task:
                task.advance(len(batch))
    finally:
        if task:
            task.close()
    return out


class LocalModelGenerator:
    """Mixin for generators that sample from a local checkpoint directory with transformers.

    Subclasses set ``self.spec`` (SampleSpec), ``self.device``, ``self.dtype``,
    ``self.threads``, ``self.chat_template`` and ``self.system`` and implement
    ``initial_checkpoint()``. The loaded model is kept for the next call with the same checkpoint.
    """

    spec: SampleSpec
    device: str = "auto"
    dtype: str | None = None
    threads: int | None = None
    chat_template: str = "auto"
    system: str = ""
    _loaded: LoadedFactory | None = None
    _loaded_stamp: Any = None

    def load(self, checkpoint: Path | None) -> LoadedFactory:
        path = Path(checkpoint) if checkpoint is not None else self.initial_checkpoint()  # type: ignore[attr-defined]
        path = check_checkpoint(path, f"generator {self.name!r}")  # type: ignore[attr-defined]
        stamp = checkpoint_stamp(path)
        if self._loaded is None or self._loaded_stamp != stamp:
            self._loaded = None
            set_threads(self.threads)
            self._loaded = load_factory(path, device=pick_device(self.device), dtype=self.dtype)
            self._loaded_stamp = stamp
        return self._loaded

    def prompt_format(self, loaded: LoadedFactory) -> PromptFormat:
        return prompt_format(loaded.tokenizer, loaded.manifest, self.chat_template, self.system)

    def format_prompt(self, prompt: str, checkpoint: Path | None = None) -> str:
        """The text the factory is actually conditioned on for ``prompt``."""
        loaded = self.load(checkpoint)
        return self.prompt_format(loaded).text(loaded.tokenizer, prompt)

    def generate(self, prompts: list[str], n: int, temperature: float, seed: int,
                 checkpoint: Path | None = None, iteration: int = 1) -> list[Any]:
        from selfdev import Completion

        loaded = self.load(checkpoint)
        set_threads(self.threads)
        fmt = self.prompt_format(loaded)
        contexts = [fmt.ids(loaded.tokenizer, p) for p in prompts]
        progress = getattr(getattr(self, "ctx", None), "progress", None)
        started = time.perf_counter()
        rows = sample(loaded.model, loaded.tokenizer, contexts, n, temperature, seed, self.spec,
                      progress=progress)
        seconds = time.perf_counter() - started
        tokens = sum(m["tokens"] for _, _, m in rows)
        self.last_stats = {"completions": len(rows), "tokens": tokens,
                           "seconds": round(seconds, 3),
                           "tokens_per_second": round(tokens / seconds, 1) if seconds else None}
        return [Completion(text=text, prompt_index=p,
                           meta={"tokens": m["tokens"], "finish": m["finish"],
                                 "temperature": round(float(temperature), 6),
                                 "prompt_mode": fmt.mode})
                for p, text, m in rows]


# --------------------------------------------------------------------------------------------
# log-probabilities (the DPO margin, measured the way trl tokenizes)


def completion_logps(model: Any, tokenizer: Any, fmt: PromptFormat, prompt: str,
                     completions: list[str], *, batch_size: int = 8) -> list[float]:
    """Sum of log p(completion tokens + eos | prompt) for each completion."""
    import torch

    prompt_ids = fmt.ids(tokenizer, prompt)
    seqs: list[tuple[list[int], int]] = []
    for text in completions:
        if fmt.mode == "chat":
            full = tokenizer.apply_chat_template(
                fmt.messages(prompt) + [{"role": "assistant", "content": text}],
                tokenize=True, return_dict=True)["input_ids"]
            full = list(full)
        else:
            eos = tokenizer.eos_token or ""
            full = list(tokenizer(fmt.text(tokenizer, prompt) + text
                                  + ("" if text.endswith(eos) else eos))["input_ids"])
        k = 0
        while k < min(len(prompt_ids), len(full)) and prompt_ids[k] == full[k]:
            k += 1
        seqs.append((full, k))
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out: list[float] = []
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(seqs), batch_size):
            chunk = seqs[start:start + batch_size]
            width = max(len(s) for s, _ in chunk)
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for r, (s, _) in enumerate(chunk):
                ids[r, :len(s)] = torch.tensor(s)
                mask[r, :len(s)] = 1
            with torch.no_grad():
                logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
            logp = torch.log_softmax(logits.float(), dim=-1).cpu()
            for r, (s, k) in enumerate(chunk):
                if len(s) <= k:
                    out.append(0.0)
                    continue
                target = torch.tensor(s[k:])
                pos = torch.arange(k - 1, len(s) - 1)
                out.append(float(logp[r, pos, target].sum()))
    finally:
        if was_training:
            model.train()
    return out


def pair_margin(model: Any, tokenizer: Any, fmt: PromptFormat, pairs: list[Any]) -> dict[str, float]:
    """Mean log p(chosen) - log p(rejected) over the pairs (and the share where it is > 0)."""
    by_prompt: dict[str, set[str]] = {}
    for p in pairs:
        by_prompt.setdefault(p.prompt, set()).update([p.chosen, p.rejected])
    logps: dict[tuple[str, str], float] = {}
    for prompt, texts in by_prompt.items():
        texts_l = sorted(texts)
        for text, lp in zip(texts_l, completion_logps(model, tokenizer, fmt, prompt, texts_l)):
            logps[(prompt, text)] = lp
    margins = [logps[(p.prompt, p.chosen)] - logps[(p.prompt, p.rejected)] for p in pairs]
    chosen = [logps[(p.prompt, p.chosen)] for p in pairs]
    rejected = [logps[(p.prompt, p.rejected)] for p in pairs]
    n = max(1, len(pairs))
    return {"logp_margin": sum(margins) / n,
            "logp_accuracy": sum(m > 0 for m in margins) / n,
            "chosen_logp": sum(chosen) / n,
            "rejected_logp": sum(rejected) / n}
