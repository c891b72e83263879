"""The ``toymath`` domain: the ``lm`` domain on the toymath family (built and cached on first
use)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal, Optional, Union

from pydantic import model_validator

from selfdev import Field
from selfdev import hookimpl
from selfdev.plugins.domains.lm.domain import LMDomain, MergeOptions
from selfdev.plugins.domains.toymath.family import EXPERT_SETS, PRESETS, build_family

Count = Optional[int]


class ToyMathDomain(LMDomain):
    """The ``lm`` domain on the toymath family (built and cached on first use)."""

    name = "toymath"
    default_evaluator = "toymath"
    task = ("toymath arithmetic word problems in GSM8k format (exact match of the final number "
            "after '####', zero-shot)")

    class Options(MergeOptions):
        size: Literal[tuple(PRESETS)] = Field(  # type: ignore[valid-type]
            "full", description="the family's recipe: full (minutes to build) or test")
        seed: int = Field(0, description="seed of the family build and of the baselines")
        families: Union[str, list[str]] = Field(
            "A,B", description="the experts merged: families of the expert_set ('A,B' or a list)")
        expert_set: Literal[tuple(EXPERT_SETS)] = Field(  # type: ignore[valid-type]
            "main", description="main, or alt (unseen experts: other seeds and templates)")
        expert_scope: Optional[Literal["all", "mlp"]] = Field(
            None, description="the weights the experts fine-tune (unset: mlp when mergeable = "
                              "mlp, else all)")
        threads: int = Field(2, ge=1, description="torch threads of the build")
        hidden: Count = Field(None, ge=1, description="recipe override: hidden size")
        layers: Count = Field(None, ge=1, description="recipe override: layers")
        intermediate: Count = Field(None, ge=1, description="recipe override: MLP width")
        seed_steps: Count = Field(None, ge=1, description="recipe override: seed training steps")
        seed_lr: Optional[float] = Field(None, gt=0, description="recipe override: seed "
                                                                 "learning rate")
        expert_steps: Count = Field(None, ge=1, description="recipe override: expert training "
                                                            "steps")
        expert_lr: Optional[float] = Field(None, gt=0, description="recipe override: expert "
                                                                   "learning rate")
        n_dev: Count = Field(None, ge=1, description="recipe override: dev problems")
        n_test: Count = Field(None, ge=1, description="recipe override: test problems")

        #: the options that override the size's recipe
        RECIPE_KEYS: ClassVar[tuple[str, ...]] = ("hidden", "layers", "intermediate", "seed_steps",
                                                  "seed_lr", "expert_steps", "expert_lr", "n_dev",
                                                  "n_test")

        @model_validator(mode="after")
        def _families_of_the_set(self) -> "ToyMathDomain.Options":
            allowed = EXPERT_SETS[self.expert_set]["experts"]
            for fam in self.family_list():
                if fam not in allowed:
                    raise ValueError(f"families: no expert family {fam!r} in expert_set "
                                     f"{self.expert_set!r}; allowed: {', '.join(allowed)}")
            return self

        def family_list(self) -> list[str]:
            if isinstance(self.families, str):
                return [f.strip() for f in self.families.split(",")]
            return list(self.families)

    def __init__(self, ctx, **options: Any) -> None:
        super().__init__(ctx, **options)
        self.family: dict[str, Any] | None = None

    @property
    def expert_scope(self) -> str:
        o = self.options
        return o.expert_scope or ("mlp" if o.mergeable == "mlp" else "all")

    def _model_dirs(self) -> tuple[Path | None, dict[str, Path]]:
        return None, {}  # built in _resolve_models

    def _resolve_models(self) -> None:
        if self.family is None:
            o = self.options
            overrides = {k: getattr(o, k) for k in o.RECIPE_KEYS}
            self.family = build_family(o.size, o.seed, o.family_list(), o.expert_set,
                                       self.expert_scope, getattr(self.ctx, "progress", None),
                                       o.threads, **overrides)
            self.seed_dir = self.family["seed"]
            self.expert_dirs = dict(self.family["experts"])

    def prepare(self) -> dict[str, Any]:
        info = super().prepare()
        o = self.options
        info.update(size=o.size, family_seed=o.seed, expert_set=o.expert_set,
                    expert_scope=self.expert_scope, data=str(self.family["data"]))
        return info

    @classmethod
    def supplies_eval_data(cls, options: Any) -> bool:
        """Always: the family's generated GSM8k-format files (``eval_spec``)."""
        return True

    def eval_spec(self) -> dict[str, Any]:
        self._resolve_models()
        data = self.family["data"]
        return {"dev_file": str(data / "dev.jsonl"), "test_file": str(data / "test.jsonl"),
                "train_file": str(data / "train.jsonl"), "shots": 0, "max_new_tokens": 40,
                "batch_size": 256, "metric": "strict"}


@hookimpl
def register_domains(register):
    register(ToyMathDomain)
