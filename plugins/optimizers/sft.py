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

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from selfdev import Field, Pair, Refinement, derive_seed
from selfdev import hookimpl
from selfdev.plugins.factory.checkpoints import check_checkpoint, quiet_hf, read_manifest
from selfdev.plugins.factory.options import TrainerOptions
from selfdev.plugins.factory.training import (new_checkpoint_dir, prepare_policy, record_margin,
                                              save_checkpoint, silence, summarise, timer, Trainer,
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


class SFTOptions(TrainerOptions):
    """The shared trainer options plus SFT's own."""

    preset: Literal[("auto", *PRESETS)] = Field(  # type: ignore[valid-type]
        "auto", description="auto (tiny for the tiny factory, else lora), tiny or lora")
    max_examples: int = Field(0, ge=0, description="most chosen completions trained on (a "
                                                   "seeded subsample; 0 = all)")


class SFTOptimizer(Trainer):
    """Supervised fine-tuning of the factory on its best (chosen) completions."""

    name = "sft"
    #: refuse, before the run starts, a generator with no checkpoint to train
    needs_checkpoint = True
    Options = SFTOptions
    PRESETS = PRESETS
    LARGE_PRESET = "lora"

    def _refine(self, checkpoint: Path | None, pairs: list[Pair], iteration: int) -> Refinement:
        checkpoint = check_checkpoint(checkpoint, f"optimizer {self.name!r}")
        preset, s = self.settings(read_manifest(checkpoint))
        seed = derive_seed(self.ctx.seed, self.name, iteration)
        examples: dict[tuple[str, str], Pair] = {}
        for p in pairs:
            examples.setdefault((p.prompt, p.chosen), p)
        chosen = list(examples)
        if self.options.max_examples and len(chosen) > self.options.max_examples:
            import random

            chosen = random.Random(seed).sample(chosen, self.options.max_examples)
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
        if self.options.measure_margin and usable:
            record_margin(metrics, policy.model, policy, fmt, usable, "before")
        tok.padding_side = "right"
        peft_config = lora.config() if (lora is not None and not policy.continued_adapter) else None
        train_started = timer()
        with Workdir() as out_dir, quiet_hf():
            args = SFTConfig(**training_arguments(
                output_dir=out_dir, learning_rate=s.learning_rate, epochs=s.epochs,
                batch_size=s.batch_size, grad_accum=self.options.grad_accum, seed=seed,
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
        if self.options.measure_margin and usable:
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
