"""The ``sft`` optimizer: a second refinement strategy that fine-tunes the factory on the top
candidates only (rejection-sampling fine-tuning), with trl's ``SFTTrainer``.

It takes the *chosen* side of the engine's preference pairs (the top ``p_w`` of this iteration
and the elites of earlier ones, by dev score), de-duplicated, and trains on
``prompt -> completion`` rows with the loss on the completion only. The rejected side is not
used: that is the difference from ``dpo`` that the comparison measures. No reference model.

Presets (every option overrides its preset value; ``preset = "auto"`` picks ``tiny`` for the
tiny factory and ``lora`` otherwise):

========== ===== ======= ====== ====== =====
preset     lora  r/alpha lr     epochs batch
========== ===== ======= ====== ====== =====
``tiny``   no    -       3e-4   2      8
``lora``   yes   64/128  1e-5   1      8
========== ===== ======= ====== ====== =====
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import selfdev
from selfdev import ConfigError, Context, Optimizer, Pair, Refinement, derive_seed
from selfdev import hookimpl
from selfdev.plugins.factory.checkpoints import check_checkpoint, quiet_hf, read_manifest
from selfdev.plugins.factory.checks import check_choice, check_number
from selfdev.plugins.factory.prompts import prompt_options
from selfdev.plugins.factory.threads import resolve_threads
from selfdev.plugins.factory.training import (new_checkpoint_dir, prepare_policy, record_margin,
                                              save_checkpoint, silence, summarise, timer,
                                              training_arguments, Workdir)


@dataclass(frozen=True)
class SFTSettings:
    learning_rate: float
    epochs: float
    batch_size: int
    lora: bool
    lora_r: int
    lora_alpha: int
    max_length: int


PRESETS: dict[str, SFTSettings] = {
    "tiny": SFTSettings(learning_rate=3e-4, epochs=2, batch_size=8, lora=False, lora_r=16,
                        lora_alpha=32, max_length=512),
    "lora": SFTSettings(learning_rate=1e-5, epochs=1, batch_size=8, lora=True, lora_r=64,
                        lora_alpha=128, max_length=2048),
}


class SFTOptimizer(Optimizer):
    """Supervised fine-tuning of the factory on its best (chosen) completions."""

    name = "sft"

    def __init__(self, ctx: Context, *, preset: str = "auto", learning_rate: float | None = None,
                 epochs: float | None = None, batch_size: int | None = None, grad_accum: int = 1,
                 lora: bool | None = None, lora_r: int | None = None,
                 lora_alpha: int | None = None, lora_dropout: float = 0.0,
                 target_modules: Any = "all-linear", max_length: int | None = None,
                 max_examples: int = 0, device: str = "auto", dtype: str = "auto",
                 threads: int = 0, chat_template: Any = None, system: str | None = None,
                 measure_margin: bool = True) -> None:
        super().__init__(ctx)
        k = "optimizer"
        num = check_number
        self.preset = check_choice(k, "preset", preset, ["auto", *PRESETS])
        self.overrides = {
            "learning_rate": None if learning_rate is None else num(k, "learning_rate", learning_rate, lo=0.0),
            "epochs": None if epochs is None else num(k, "epochs", epochs, lo=0.0),
            "batch_size": None if batch_size is None else num(k, "batch_size", batch_size, lo=1, integer=True),
            "lora": None if lora is None else bool(lora),
            "lora_r": None if lora_r is None else num(k, "lora_r", lora_r, lo=1, integer=True),
            "lora_alpha": None if lora_alpha is None else num(k, "lora_alpha", lora_alpha, lo=1, integer=True),
            "max_length": None if max_length is None else num(k, "max_length", max_length, lo=8, integer=True),
        }
        self.grad_accum = num(k, "grad_accum", grad_accum, lo=1, integer=True)
        self.lora_dropout = num(k, "lora_dropout", lora_dropout, lo=0.0, hi=1.0)
        if not isinstance(target_modules, (str, list)):
            raise ConfigError("config: [optimizer] target_modules must be \"all-linear\" or a list")
        self.target_modules = target_modules
        self.max_examples = num(k, "max_examples", max_examples, lo=0, integer=True)
        self.device = device
        self.dtype = None if dtype in ("auto", "", None) else dtype
        self.threads = num(k, "threads", threads, lo=0, integer=True)
        # the prompt format follows the generator's options unless given here
        self.chat_template, self.system = prompt_options(ctx, chat_template, system)
        self.measure_margin = bool(measure_margin)

    def settings(self, manifest: dict[str, Any]) -> tuple[str, SFTSettings]:
        preset = self.preset
        if preset == "auto":
            preset = "tiny" if manifest.get("factory") == "tiny" else "lora"
        chosen = {k: v for k, v in self.overrides.items() if v is not None}
        return preset, replace(PRESETS[preset], **chosen)

    def refine(self, checkpoint: Path | None, pairs: list[Pair], iteration: int) -> Refinement:
        with selfdev.torch_threads(resolve_threads(self.threads)):
            return self._refine(checkpoint, pairs, iteration)

    def _refine(self, checkpoint: Path | None, pairs: list[Pair], iteration: int) -> Refinement:
        checkpoint = check_checkpoint(checkpoint, f"optimizer {self.name!r}")
        preset, s = self.settings(read_manifest(checkpoint))
        seed = derive_seed(self.ctx.seed, self.name, iteration)
        examples: dict[tuple[str, str], Pair] = {}
        for p in pairs:
            examples.setdefault((p.prompt, p.chosen), p)
        chosen = list(examples)
        if self.max_examples and len(chosen) > self.max_examples:
            import random

            chosen = random.Random(seed).sample(chosen, self.max_examples)
        if not chosen:
            return Refinement(checkpoint=None, metrics={"examples": 0, "trained": False,
                                                        "skipped": "no chosen completions"})
        elapsed = timer()
        from datasets import Dataset
        from trl import SFTConfig, SFTTrainer

        policy, fmt, device, lora = prepare_policy(self, checkpoint, s, seed)
        tok = policy.tokenizer
        rows = [{"prompt": fmt.row_prompt(prompt), "completion": fmt.row_completion(text)}
                for prompt, text in chosen]
        metrics: dict[str, Any] = {
            "examples": len(rows), "pairs_given": len(pairs), "preset": preset,
            "learning_rate": s.learning_rate, "epochs": s.epochs, "batch_size": s.batch_size,
            "lora": s.lora, "trained": True}
        usable = [p for p in pairs if p.chosen != p.rejected]
        if self.measure_margin and usable:
            record_margin(metrics, policy.model, policy, fmt, usable, "before")
        tok.padding_side = "right"
        peft_config = lora.config() if (lora is not None and not policy.continued_adapter) else None
        train_started = timer()
        with Workdir() as out_dir, quiet_hf():
            args = SFTConfig(**training_arguments(
                output_dir=out_dir, learning_rate=s.learning_rate, epochs=s.epochs,
                batch_size=s.batch_size, grad_accum=self.grad_accum, seed=seed,
                max_length=s.max_length, device=device,
                extra={"completion_only_loss": True, "packing": False}))
            trainer = SFTTrainer(model=policy.model, args=args,
                                 train_dataset=Dataset.from_list(rows), processing_class=tok,
                                 peft_config=peft_config)
            silence(trainer).train()
        metrics["train_seconds"] = train_started()
        metrics.update(summarise(trainer.state.log_history,
                                    {"mean_token_accuracy": "token_accuracy"}))
        model = trainer.accelerator.unwrap_model(trainer.model)
        del trainer
        if self.measure_margin and usable:
            record_margin(metrics, model, policy, fmt, usable, "after")
        out = new_checkpoint_dir(self.ctx, self.name, iteration)
        save_checkpoint(model, tok, policy, out, optimizer=self.name, iteration=iteration,
                           prompt=fmt, extra={"metrics": {k: v for k, v in metrics.items()
                                                          if k != "losses"}})
        metrics["seconds"] = elapsed()
        return Refinement(checkpoint=out, metrics=metrics)


@hookimpl
def register_optimizers(register):
    register(SFTOptimizer)
