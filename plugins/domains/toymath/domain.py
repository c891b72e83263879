"""The ``toymath`` domain: the ``lm`` domain on the toymath family (built and cached on first
use)."""
from __future__ import annotations

from typing import Any

from selfdev import ConfigError
from selfdev import hookimpl
from selfdev.plugins.domains.lm.domain import LMDomain
from selfdev.plugins.domains.toymath.family import EXPERT_SETS, build_family, resolve_recipe


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
