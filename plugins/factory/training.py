"""What the ``dpo`` and ``sft`` optimizers share: loading the policy (full or LoRA), trl training
arguments that work on a CPU-only machine, reading trl's logs, writing the new checkpoint, and
the policy's log-probability margin on the preference pairs.

The traps this module exists for (see research/feasibility.md §3):

* trl's configs default to ``bf16=True`` (a ValueError without a GPU) and
  ``gradient_checkpointing=True``; both are set explicitly here;
* trl's default learning rate (1e-6) does not move a tiny model; each optimizer has presets;
* without an explicit reference model (and without PEFT) ``DPOTrainer`` *reloads the original
  checkpoint path* as the reference, so iterative DPO silently keeps the first factory as the
  reference. The optimizers always decide the reference themselves;
* the tokenizer goes in as ``processing_class``;
* checkpoints are written under ``ctx.artifacts / "factory"`` (the engine renames them by hash).

Heavy imports (torch, transformers, trl, peft, datasets) stay inside functions.
"""
from __future__ import annotations

import math
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import selfdev
from selfdev import Context, Optimizer, Pair, Refinement, derive_seed
from selfdev.plugins.factory.checkpoints import (adapter_base, check_checkpoint, initial_of,
                                                 is_adapter, load_factory, pick_device, quiet_hf,
                                                 write_manifest)
from selfdev.plugins.factory.options import TrainerOptions
from selfdev.plugins.factory.prompts import PromptFormat, prompt_format, prompt_options
from selfdev.plugins.factory.threads import resolve_threads


class Trainer(Optimizer):
    """The half of ``dpo`` and ``sft`` that is the same: options (:class:`TrainerOptions`),
    presets, the prompt format of the training rows, torch threads and the policy set-up.
    A subclass sets ``PRESETS`` (name -> settings dataclass), ``LARGE_PRESET`` (what ``auto``
    picks for a factory other than the tiny one) and implements ``_refine``."""

    Options = TrainerOptions
    PRESETS: ClassVar[dict[str, Any]] = {}
    LARGE_PRESET: ClassVar[str] = ""

    def __init__(self, ctx: Context, **options: Any) -> None:
        super().__init__(ctx, **options)
        # the prompt format follows the generator's options unless given here
        self.chat_template, self.system = prompt_options(ctx, self.options.chat_template,
                                                         self.options.system)

    def preset_overrides(self) -> dict[str, Any]:
        """The settings this configuration sets over its preset's."""
        return self.options.overrides()

    def settings(self, manifest: dict[str, Any]) -> tuple[str, Any]:
        """``(preset name, settings)`` for the checkpoint described by ``manifest``."""
        preset = self.options.preset
        if preset == "auto":
            preset = "tiny" if manifest.get("factory") == "tiny" else self.LARGE_PRESET
        return preset, replace(self.PRESETS[preset], **self.preset_overrides())

    def refine(self, checkpoint: Path | None, pairs: list[Pair], iteration: int) -> Refinement:
        with selfdev.torch_threads(resolve_threads(self.options.threads)):
            return self._refine(checkpoint, pairs, iteration)

    # ---------------------------------------------------------------- one GPU, three phases
    #: whether training holds a reference model beside the policy (DPO does, SFT does not)
    HAS_REFERENCE: ClassVar[bool] = False
    #: bytes per trainable parameter beyond its weight: gradient + AdamW's two moments, each
    #: in the parameter's dtype (torch keeps the moments in the parameter's dtype)
    ADAM_COPIES: ClassVar[int] = 3

    def release(self) -> None:
        """The policy, reference and optimizer states die with ``refine``; collect the
        cycles trl's trainer leaves and hand the cached blocks back to the device."""
        selfdev.free_device_memory()

    @classmethod
    def device_memory(cls, options: Any, plan: Any) -> selfdev.DeviceNeed | None:
        """The refinement phase from the factory's configuration (``plan.factory_model``): the
        policy's weights; with LoRA the rank-r adapters on every targeted linear module, kept
        in float32 by peft, with their gradients and AdamW moments (16 bytes a parameter);
        fully fine-tuned, every weight's gradient and moments; and the reference model (DPO:
        a copy of the policy, or with LoRA the frozen reference adapter, or the initial model
        with ``reference = "initial"``). Activations are not counted (``engine/device.py``).
        None on an explicit CPU device or when the factory has no readable configuration."""
        shape = plan.shape(plan.factory_model)
        if shape is None or options.device == "cpu":
            return None
        from selfdev.plugins.factory.checkpoints import read_manifest

        probe = cls.__new__(cls)   # settings() reads the options alone; nothing is built
        probe.options = options
        preset, s = probe.settings(read_manifest(plan.factory_model))
        b = selfdev.dtype_bytes(options.dtype, shape)
        weights = shape.params * b
        parts = {"weights": weights}
        initial_reference = getattr(options, "reference", "current") == "initial"
        if s.lora:
            lora = shape.lora_params(s.lora_r, options.target_modules)
            parts[f"LoRA r {s.lora_r} with gradients and Adam states"] = lora * 16
            if cls.HAS_REFERENCE:
                parts["reference"] = weights if initial_reference else lora * 4
        else:
            parts["gradients and Adam states"] = weights * cls.ADAM_COPIES
            if cls.HAS_REFERENCE:
                parts["reference"] = weights
        return selfdev.DeviceNeed(parts=parts)

    def _refine(self, checkpoint: Path | None, pairs: list[Pair], iteration: int) -> Refinement:
        raise NotImplementedError


@dataclass
class LoraSettings:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: Any = "all-linear"

    def config(self) -> Any:
        from peft import LoraConfig

        return LoraConfig(r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout,
                          target_modules=self.target_modules, task_type="CAUSAL_LM")


@dataclass
class Policy:
    """The model being refined, and where it comes from."""

    source: Path                 # the checkpoint refined
    initial: Path                # the initial checkpoint it descends from
    base: Path                   # the full model under it (itself, or the adapter's base)
    model: Any
    tokenizer: Any
    manifest: dict[str, Any]
    lora: bool                   # training a LoRA adapter (new or continued)
    continued_adapter: bool = False


def load_policy(checkpoint: Path, *, lora: LoraSettings | None, device: str, dtype: str | None,
                who: str) -> Policy:
    """Load the policy to train.

    * full fine-tuning of a full checkpoint: the model itself;
    * LoRA on a full checkpoint: the model (trl wraps it with a fresh adapter from
      ``peft_config``);
    * a LoRA checkpoint: base + that adapter, trainable; training continues the same adapter
      (so a checkpoint stays "one adapter over the initial base"). Full fine-tuning of a LoRA
      checkpoint merges the adapter first.
    """
    checkpoint = check_checkpoint(checkpoint, who)
    initial = initial_of(checkpoint)
    if is_adapter(checkpoint):
        base = adapter_base(checkpoint)
        if lora is not None:
            loaded = load_factory(checkpoint, device=device, dtype=dtype, trainable=True)
            return Policy(checkpoint, initial, base, loaded.model, loaded.tokenizer,
                          loaded.manifest, True, continued_adapter=True)
        loaded = load_factory(checkpoint, device=device, dtype=dtype, trainable=False)
        loaded.model.train()
        return Policy(checkpoint, initial, base, loaded.model, loaded.tokenizer, loaded.manifest,
                      False)
    loaded = load_factory(checkpoint, device=device, dtype=dtype, trainable=True)
    loaded.model.train()
    return Policy(checkpoint, initial, checkpoint, loaded.model, loaded.tokenizer,
                  loaded.manifest, lora is not None)


def prepare_policy(optimizer: Trainer, checkpoint: Path, settings: Any, seed: int
                   ) -> tuple[Policy, Any, str, LoraSettings | None]:
    """Seed, device, LoRA settings, the loaded policy and its prompt format: the set-up both
    optimizers do before training (inside their ``torch_threads`` block). ``settings`` has
    ``lora``, ``lora_r``, ``lora_alpha``."""
    import transformers

    options = optimizer.options
    transformers.set_seed(seed % (2 ** 31))
    device = pick_device(options.device)
    lora = LoraSettings(settings.lora_r, settings.lora_alpha, options.lora_dropout,
                        options.target_modules) if settings.lora else None
    policy = load_policy(checkpoint, lora=lora, device=device, dtype=options.dtype,
                         who=f"optimizer {optimizer.name!r}")
    fmt = prompt_format(policy.tokenizer, policy.manifest, optimizer.chat_template,
                           optimizer.system)
    return policy, fmt, device, lora


def record_margin(metrics: dict[str, Any], model: Any, policy: Policy, fmt: Any,
                  pairs: list[Pair], when: str) -> None:
    """Store the policy's log-prob margin chosen - rejected on ``pairs`` as ``*_{when}``."""
    margin = pair_margin(model, policy.tokenizer, fmt, pairs)
    metrics.update({f"{k}_{when}": round(v, 5) for k, v in margin.items()})


def training_arguments(*, output_dir: str, learning_rate: float, epochs: float, batch_size: int,
                       grad_accum: int, seed: int, max_length: int, device: str,
                       extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Keyword arguments shared by ``DPOConfig`` and ``SFTConfig`` (CPU-safe)."""
    # transformers 5 renames gradient_checkpointing (set below, and read by trl) and warns on
    # every training, between the run's progress lines; the setting itself is what we want
    warnings.filterwarnings("ignore", r"`(is_)?gradient_checkpointing` is deprecated", FutureWarning)
    use_cpu = device == "cpu"
    return {
        "output_dir": output_dir,
        "bf16": False, "fp16": False, "use_cpu": use_cpu,
        "gradient_checkpointing": False,
        "per_device_train_batch_size": batch_size,
        "gradient_accumulation_steps": grad_accum,
        "num_train_epochs": epochs,
        "learning_rate": learning_rate,
        "lr_scheduler_type": "constant_with_warmup", "warmup_steps": 0,
        "max_length": max_length,
        "logging_steps": 1, "save_strategy": "no", "report_to": "none",
        "dataloader_pin_memory": False, "disable_tqdm": True,
        "seed": seed % (2 ** 31), "data_seed": seed % (2 ** 31),
        "remove_unused_columns": True,
        **(extra or {}),
    }


def silence(trainer: Any) -> Any:
    """No console printing from the Trainer (selfdev's console draws progress itself)."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    return trainer


def step_logs(log_history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [h for h in log_history if "loss" in h and "train_runtime" not in h]


def summarise(log_history: list[dict[str, Any]], keys: dict[str, str]) -> dict[str, Any]:
    """First/last/mean of the logged values, plus the per-step losses (rounded)."""
    steps = step_logs(log_history)
    out: dict[str, Any] = {"steps": len(steps)}
    if not steps:
        return out
    losses = [float(h["loss"]) for h in steps]
    out["loss_first"] = round(losses[0], 5)
    out["loss_last"] = round(losses[-1], 5)
    out["loss_mean"] = round(sum(losses) / len(losses), 5)
    out["losses"] = [round(x, 4) for x in losses[:200]]
    for logged, name in keys.items():
        values = [float(h[logged]) for h in steps if logged in h and _finite(h[logged])]
        if values:
            out[f"{name}_first"] = round(values[0], 5)
            out[f"{name}_last"] = round(values[-1], 5)
            out[f"{name}_mean"] = round(sum(values) / len(values), 5)
    return out


def _finite(x: Any) -> bool:
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def new_checkpoint_dir(ctx: Context, optimizer: str, iteration: int) -> Path:
    """A fresh directory under ``ctx.artifacts/factory`` for the engine to rename by hash."""
    root = Path(ctx.artifacts) / "factory"
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"tmp-{optimizer}-{iteration}-{derive_seed(ctx.run_id, optimizer, iteration) % 10 ** 8}"
    if path.exists():
        shutil.rmtree(path)
    return path


def is_timing(key: str) -> bool:
    """Whether a metric is a wall-clock measurement (``train_seconds``, trl's ``train_runtime``,
    ``..._per_second``): it differs between two identical trainings."""
    return key.endswith(("seconds", "_runtime", "per_second"))


def without_timings(value: Any) -> Any:
    """``value`` with every timing key dropped, at any depth.

    The engine names a checkpoint by the hash of its directory, manifest included, and a
    resumed run must reach the same checkpoint (the same ``factory.refined``) as an
    uninterrupted one; so timings go to the ``factory.refined`` event's metrics only, never
    into the checkpoint."""
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if not is_timing(str(k))}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value


def save_checkpoint(model: Any, tokenizer: Any, policy: Policy, out: Path, *, optimizer: str,
                    iteration: int, prompt: PromptFormat, extra: dict[str, Any]) -> None:
    """Write the refined factory: full weights, or the LoRA adapter (named ``default``)."""
    from peft import PeftModel

    out.mkdir(parents=True)
    with quiet_hf():
        if isinstance(model, PeftModel):
            for name in list(model.peft_config):
                if name != "default":
                    model.delete_adapter(name)
            model.save_pretrained(str(out))
            kind = "lora"
        else:
            model.save_pretrained(str(out))
            kind = "full"
        tokenizer.save_pretrained(str(out))
    extra = without_timings(extra)
    lineage = list(policy.manifest.get("lineage", []))
    lineage.append({"optimizer": optimizer, "iteration": iteration})
    data: dict[str, Any] = {"kind": kind, "initial": str(policy.initial), "prompt": prompt.to_dict(),
                            "lineage": lineage, **extra}
    if policy.manifest.get("factory"):
        data["factory"] = policy.manifest["factory"]
    if kind == "lora":
        data["base"] = str(policy.base)
    write_manifest(out, data)


@dataclass
class Workdir:
    """A scratch directory for trl's ``output_dir`` (nothing is saved there)."""

    path: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="selfdev-trl-")))

    def __enter__(self) -> str:
        return str(self.path)

    def __exit__(self, *exc: Any) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def unique_pairs(pairs: list[Pair], max_pairs: int, seed: int) -> list[Pair]:
    """Drop exact duplicates; keep at most ``max_pairs`` (seeded subsample; 0 = all)."""
    import random

    seen, out = set(), []
    for p in pairs:
        key = (p.prompt, p.chosen, p.rejected)
        if key not in seen and p.chosen != p.rejected:
            seen.add(key)
            out.append(p)
    if max_pairs and len(out) > max_pairs:
        out = random.Random(seed).sample(out, max_pairs)
    return out


def timer() -> Any:
    start = time.perf_counter()
    return lambda: round(time.perf_counter() - start, 3)


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
