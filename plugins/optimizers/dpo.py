"""The ``dpo`` optimizer: refines the factory with trl's ``DPOTrainer`` on the preference pairs.

The engine builds the pairs (chosen = top ``p_w`` by dev score, rejected = bottom ``p_l``, elites
of earlier iterations on the chosen side; dev scores only) and hands them to ``refine`` with the
current factory checkpoint. ``refine`` trains, writes the new checkpoint under
``ctx.artifacts/factory`` and returns it with its metrics (trl's losses and reward margins, and
the policy's log-probability margin log p(chosen) - log p(rejected) on the pairs before and
after training); the engine stores it by content hash in a ``factory.refined`` event.

Presets (every option below overrides its preset value):

========== ======= ============ ====== ===== ====== ===== ================ ====================
preset     lora    rank / alpha lr     beta  epochs batch loss (trl)       use
========== ======= ============ ====== ===== ====== ===== ================ ====================
``tiny``   no      -            5e-4   0.1   2      8     sigmoid + sft    the tiny factory
``paper``  yes     256 / 512    1e-6   0.01  1      8     sigmoid          a 7B factory (§1.7)
========== ======= ============ ====== ===== ====== ===== ================ ====================

The tiny preset adds trl's ``sft`` loss (the NLL of the chosen completion, weight 1) to the DPO
loss, as RPO does: with the DPO loss alone the tiny factory drifted away from code that runs
(measured on the test-size factory, lr 5e-4: executable 42 % -> 4 %, while the margin rose);
with the NLL term it kept running (42 % -> 46 %) and scored higher. ``loss_type = "sigmoid"``
gives plain DPO.

``preset = "auto"`` (default) picks ``tiny`` for the tiny factory and ``paper`` otherwise. The
reference model is always set explicitly: ``reference = "current"`` (default) is the factory
being refined (iterative DPO), ``"initial"`` the first factory (the paper does not say which).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Optional, Union

from pydantic import model_validator

from selfdev import Field, Pair, Refinement, derive_seed
from selfdev import hookimpl
from selfdev.plugins.factory.checkpoints import (check_checkpoint, load_factory, quiet_hf,
                                                 read_manifest)
from selfdev.plugins.factory.options import TrainerOptions
from selfdev.plugins.factory.training import (LoraSettings, new_checkpoint_dir, Policy,
                                              prepare_policy, record_margin, save_checkpoint,
                                              silence, summarise, timer, Trainer,
                                              training_arguments, unique_pairs, Workdir)


@dataclass(frozen=True)
class DPOSettings:
    learning_rate: float
    beta: float
    epochs: float
    batch_size: int
    lora: bool
    lora_r: int
    lora_alpha: int
    max_length: int
    loss_type: tuple[str, ...] = ("sigmoid",)
    loss_weights: tuple[float, ...] | None = None


PRESETS: dict[str, DPOSettings] = {
    "tiny": DPOSettings(learning_rate=5e-4, beta=0.1, epochs=2, batch_size=8, lora=False,
                        lora_r=16, lora_alpha=32, max_length=512,
                        loss_type=("sigmoid", "sft"), loss_weights=(1.0, 1.0)),
    "paper": DPOSettings(learning_rate=1e-6, beta=0.01, epochs=1, batch_size=8, lora=True,
                         lora_r=256, lora_alpha=512, max_length=2048),
}
LOSS_TYPES = ("sigmoid", "hinge", "ipo", "robust", "bco_pair", "sppo_hard", "nca_pair",
              "aot", "aot_unpaired", "apo_zero", "apo_down", "discopop", "exo_pair",
              "sigmoid_norm", "sft")


LossType = Literal[LOSS_TYPES]  # type: ignore[valid-type]


class DPOOptions(TrainerOptions):
    """The shared trainer options plus DPO's own."""

    preset: Literal[("auto", *PRESETS)] = Field(  # type: ignore[valid-type]
        "auto", description="auto (tiny for the tiny factory, else paper), tiny or paper")
    beta: Optional[float] = Field(None, ge=0, description="DPO beta: how far the policy may "
                                                          "move from the reference (preset)")
    reference: Literal["current", "initial"] = Field(
        "current", description="the reference model: current (the factory being refined) or "
                               "initial (the first factory)")
    loss_type: Union[LossType, Annotated[list[LossType], Field(min_length=1)], None] = Field(
        None, description="trl's loss, or a list of losses summed (preset)",
        json_schema_extra={"must_be": f"one of {', '.join(LOSS_TYPES)}, or a list of them"})
    loss_weights: Optional[list[Annotated[float, Field(ge=0)]]] = Field(
        None, description="one weight per loss_type")
    max_pairs: int = Field(0, ge=0, description="most pairs trained on (a seeded subsample; "
                                                "0 = all)")

    PRESET_KEYS: ClassVar[tuple[str, ...]] = (*TrainerOptions.PRESET_KEYS, "beta")

    @model_validator(mode="after")
    def _one_weight_per_loss(self) -> "DPOOptions":
        types = self.loss_types()
        if self.loss_weights is not None and (types is None
                                              or len(self.loss_weights) != len(types)):
            raise ValueError("loss_weights needs one number per loss_type")
        return self

    def loss_types(self) -> list[str] | None:
        if self.loss_type is None:
            return None
        return [self.loss_type] if isinstance(self.loss_type, str) else list(self.loss_type)


class DPOOptimizer(Trainer):
    """DPO on the preference pairs with trl (optional LoRA through peft)."""

    name = "dpo"
    #: refuse, before the run starts, a generator with no checkpoint to train
    needs_checkpoint = True
    Options = DPOOptions
    PRESETS = PRESETS
    LARGE_PRESET = "paper"
    HAS_REFERENCE = True

    def preset_overrides(self) -> dict[str, Any]:
        chosen = super().preset_overrides()
        types = self.options.loss_types()
        if types is not None:
            chosen["loss_type"] = tuple(types)
            weights = self.options.loss_weights
            chosen["loss_weights"] = tuple(weights) if weights else None
        return chosen

    # ----------------------------------------------------------------------------------------

    def _refine(self, checkpoint: Path | None, pairs: list[Pair], iteration: int) -> Refinement:
        checkpoint = check_checkpoint(checkpoint, f"optimizer {self.name!r}")
        preset, s = self.settings(read_manifest(checkpoint))
        seed = derive_seed(self.ctx.seed, self.name, iteration)
        usable = unique_pairs(pairs, self.options.max_pairs, seed)
        if not usable:
            return Refinement(checkpoint=None, metrics={"pairs": 0, "trained": False,
                                                        "skipped": "no usable preference pairs"})
        elapsed = timer()
        from datasets import Dataset
        from trl import DPOConfig, DPOTrainer

        policy, fmt, device, lora = prepare_policy(self, checkpoint, s, seed)
        tok = policy.tokenizer
        rows = [{"prompt": fmt.row_prompt(p.prompt), "chosen": fmt.row_completion(p.chosen),
                 "rejected": fmt.row_completion(p.rejected)} for p in usable]
        metrics: dict[str, Any] = {
            "pairs": len(usable), "pairs_given": len(pairs),
            "unique_chosen": len({p.chosen for p in usable}),
            "unique_rejected": len({p.rejected for p in usable}),
            "preset": preset, "learning_rate": s.learning_rate, "beta": s.beta,
            "epochs": s.epochs, "batch_size": s.batch_size, "lora": s.lora,
            "reference": self.options.reference, "loss_type": list(s.loss_type), "trained": True}
        if s.loss_weights:
            metrics["loss_weights"] = list(s.loss_weights)
        if s.lora:
            metrics.update(lora_r=s.lora_r, lora_alpha=s.lora_alpha)
        if self.options.measure_margin:
            record_margin(metrics, policy.model, policy, fmt, usable, "before")

        ref_model, peft_config = self.reference_model(policy, lora, device)
        tok.padding_side = "right"
        train_started = timer()
        with Workdir() as out_dir, quiet_hf():
            args = DPOConfig(**training_arguments(
                output_dir=out_dir, learning_rate=s.learning_rate, epochs=s.epochs,
                batch_size=s.batch_size, grad_accum=self.options.grad_accum, seed=seed,
                max_length=s.max_length, device=device,
                extra={"beta": s.beta, "loss_type": list(s.loss_type),
                       "loss_weights": list(s.loss_weights) if s.loss_weights else None}))
            trainer = DPOTrainer(model=policy.model, ref_model=ref_model, args=args,
                                 train_dataset=Dataset.from_list(rows), processing_class=tok,
                                 peft_config=peft_config)
            silence(trainer).train()
        metrics["train_seconds"] = train_started()
        metrics.update(summarise(trainer.state.log_history, {
            "rewards/margins": "reward_margin", "rewards/accuracies": "reward_accuracy",
            "rewards/chosen": "reward_chosen", "rewards/rejected": "reward_rejected"}))
        model = trainer.accelerator.unwrap_model(trainer.model)
        del trainer, ref_model
        if self.options.measure_margin:
            record_margin(metrics, model, policy, fmt, usable, "after")
        out = new_checkpoint_dir(self.ctx, self.name, iteration)
        save_checkpoint(model, tok, policy, out, optimizer=self.name, iteration=iteration,
                           prompt=fmt, extra={"metrics": {k: v for k, v in metrics.items()
                                                          if k != "losses"}})
        metrics["seconds"] = elapsed()
        return Refinement(checkpoint=out, metrics=metrics)

    def reference_model(self, policy: Policy, lora: LoraSettings | None,
                        device: str) -> tuple[Any, Any]:
        """``(ref_model, peft_config)`` for DPOTrainer; the reference is never left to trl's
        default of reloading ``config._name_or_path``."""
        same_as_initial = Path(policy.source).resolve() == Path(policy.initial).resolve()
        if lora is None:
            if self.options.reference == "current" or same_as_initial:
                ref = copy.deepcopy(policy.model)
            else:
                ref = load_factory(policy.initial, device=device, dtype=self.options.dtype).model
            ref.eval()
            for p in ref.parameters():
                p.requires_grad_(False)
            return ref, None
        if policy.continued_adapter:
            if self.options.reference == "current":
                return None, None   # trl copies the loaded adapter into a frozen "ref" adapter
            return load_factory(policy.initial, device=device, dtype=self.options.dtype).model, None
        # a fresh adapter on a full checkpoint: with adapters disabled the model *is* the
        # checkpoint being refined
        if self.options.reference == "current" or same_as_initial:
            return None, lora.config()
        initial = load_factory(policy.initial, device=device, dtype=self.options.dtype).model
        return initial, lora.config()


@hookimpl
def register_optimizers(register):
    register(DPOOptimizer)
