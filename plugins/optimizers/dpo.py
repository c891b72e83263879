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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import selfdev
from selfdev import ConfigError, Context, Optimizer, Pair, Refinement, derive_seed
from selfdev import hookimpl
from selfdev.plugins.factory.checkpoints import (check_checkpoint, load_factory, quiet_hf,
                                                 read_manifest)
from selfdev.plugins.factory.checks import check_choice, check_number, check_reference
from selfdev.plugins.factory.prompts import prompt_options
from selfdev.plugins.factory.threads import resolve_threads
from selfdev.plugins.factory.training import (LoraSettings, new_checkpoint_dir, Policy,
                                              prepare_policy, record_margin, save_checkpoint,
                                              silence, summarise, timer, training_arguments,
                                              unique_pairs, Workdir)


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


class DPOOptimizer(Optimizer):
    """DPO on the preference pairs with trl (optional LoRA through peft)."""

    name = "dpo"

    def __init__(self, ctx: Context, *, preset: str = "auto", learning_rate: float | None = None,
                 beta: float | None = None, epochs: float | None = None,
                 batch_size: int | None = None, grad_accum: int = 1, lora: bool | None = None,
                 lora_r: int | None = None, lora_alpha: int | None = None,
                 lora_dropout: float = 0.0, target_modules: Any = "all-linear",
                 reference: str = "current", loss_type: Any = None,
                 loss_weights: list[float] | None = None,
                 max_length: int | None = None, max_pairs: int = 0, device: str = "auto",
                 dtype: str = "auto", threads: int = 0, chat_template: Any = None,
                 system: str | None = None, measure_margin: bool = True) -> None:
        super().__init__(ctx)
        k = "optimizer"
        self.preset = check_choice(k, "preset", preset, ["auto", *PRESETS])
        num = check_number
        self.overrides = {
            "learning_rate": None if learning_rate is None else num(k, "learning_rate", learning_rate, lo=0.0),
            "beta": None if beta is None else num(k, "beta", beta, lo=0.0),
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
            raise ConfigError("config: [optimizer] target_modules must be \"all-linear\" or a list of "
                              "module names")
        self.target_modules = target_modules
        self.reference = check_reference(k, reference)
        types = [loss_type] if isinstance(loss_type, str) else loss_type
        if types is not None:
            if not isinstance(types, list) or not types:
                raise ConfigError("config: [optimizer] loss_type must be a name or a list of names")
            for t in types:
                check_choice(k, "loss_type", t, LOSS_TYPES)
        self.loss_types = types
        if loss_weights is not None:
            if (not isinstance(loss_weights, list) or types is None
                    or len(loss_weights) != len(types)):
                raise ConfigError("config: [optimizer] loss_weights needs one number per loss_type")
            loss_weights = [check_number(k, "loss_weights", w, lo=0.0) for w in loss_weights]
        self.loss_weights = loss_weights
        self.max_pairs = num(k, "max_pairs", max_pairs, lo=0, integer=True)
        self.device = device
        self.dtype = None if dtype in ("auto", "", None) else dtype
        self.threads = num(k, "threads", threads, lo=0, integer=True)
        # the prompt format follows the generator's options unless given here
        self.chat_template, self.system = prompt_options(ctx, chat_template, system)
        self.measure_margin = bool(measure_margin)

    def settings(self, manifest: dict[str, Any]) -> tuple[str, DPOSettings]:
        preset = self.preset
        if preset == "auto":
            preset = "tiny" if manifest.get("factory") == "tiny" else "paper"
        chosen = {k: v for k, v in self.overrides.items() if v is not None}
        if self.loss_types is not None:
            chosen["loss_type"] = tuple(self.loss_types)
            chosen["loss_weights"] = tuple(self.loss_weights) if self.loss_weights else None
        return preset, replace(PRESETS[preset], **chosen)

    # ----------------------------------------------------------------------------------------

    def refine(self, checkpoint: Path | None, pairs: list[Pair], iteration: int) -> Refinement:
        with selfdev.torch_threads(resolve_threads(self.threads)):
            return self._refine(checkpoint, pairs, iteration)

    def _refine(self, checkpoint: Path | None, pairs: list[Pair], iteration: int) -> Refinement:
        checkpoint = check_checkpoint(checkpoint, f"optimizer {self.name!r}")
        preset, s = self.settings(read_manifest(checkpoint))
        seed = derive_seed(self.ctx.seed, self.name, iteration)
        usable = unique_pairs(pairs, self.max_pairs, seed)
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
            "reference": self.reference, "loss_type": list(s.loss_type), "trained": True}
        if s.loss_weights:
            metrics["loss_weights"] = list(s.loss_weights)
        if s.lora:
            metrics.update(lora_r=s.lora_r, lora_alpha=s.lora_alpha)
        if self.measure_margin:
            record_margin(metrics, policy.model, policy, fmt, usable, "before")

        ref_model, peft_config = self.reference_model(policy, lora, device)
        tok.padding_side = "right"
        train_started = timer()
        with Workdir() as out_dir, quiet_hf():
            args = DPOConfig(**training_arguments(
                output_dir=out_dir, learning_rate=s.learning_rate, epochs=s.epochs,
                batch_size=s.batch_size, grad_accum=self.grad_accum, seed=seed,
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
        if self.measure_margin:
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
            if self.reference == "current" or same_as_initial:
                ref = copy.deepcopy(policy.model)
            else:
                ref = load_factory(policy.initial, device=device, dtype=self.dtype).model
            ref.eval()
            for p in ref.parameters():
                p.requires_grad_(False)
            return ref, None
        if policy.continued_adapter:
            if self.reference == "current":
                return None, None   # trl copies the loaded adapter into a frozen "ref" adapter
            return load_factory(policy.initial, device=device, dtype=self.dtype).model, None
        # a fresh adapter on a full checkpoint: with adapters disabled the model *is* the
        # checkpoint being refined
        if self.reference == "current" or same_as_initial:
            return None, lora.config()
        return load_factory(policy.initial, device=device, dtype=self.dtype).model, lora.config()


@hookimpl
def register_optimizers(register):
    register(DPOOptimizer)
