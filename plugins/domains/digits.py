"""The ``digits`` domain: merge small MLP classifiers trained on scikit-learn's digits.

The recipe is ``research/tiny-domains.md`` §2/§6 (Appendix B): ``load_digits``, X/16, a stratified
60/20/20 split (random_state 0: train 1078 / dev 359 / test 360); an MLP 64-128-128-10; a weak
seed trained on the first 10 % of train for 2 epochs; three experts fine-tuned from it on the
class groups {0,1,2}, {3,4,5}, {6,7,8,9} for 10 epochs each (Adam, lr 1e-3, batch 32). Seed and
experts are built once, deterministically, and cached as safetensors under
``$SELFDEV_HOME/cache/digits/<recipe hash>/``. Every parameter is mergeable.

Model handles are ``torch.nn.Module`` logits models; ``labelled_split(split)`` gives the
``(X, y)`` tensors the ``accuracy`` evaluator scores them on.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import textwrap
import time
from typing import Any, Union

from pydantic import field_validator

import selfdev
from selfdev import ConfigError, Context, Field, cache_dir
from selfdev import hookimpl

from selfdev.plugins.domains.baselines import baseline_grid
from selfdev.plugins.domains.tensors import TensorDomain

#: bump when the build changes in a way the recipe options do not capture
RECIPE_VERSION = 1
SPLITS = ("train", "dev", "test")

EXAMPLE = '''\
import torch


def merge_models(task_vectors: dict[str, torch.Tensor], base: torch.Tensor, name: str) -> torch.Tensor:
    """Task Arithmetic: add up the experts' task vectors and scale the sum down."""
    merged = torch.zeros_like(base)
    for tau in task_vectors.values():
        merged = merged + tau
    return 0.5 * merged
'''

PROMPT = '''\
You are an expert in machine learning and model merging. Write a new algorithm that merges
several expert models into one better model.

{setting}

Write a Python function with exactly this signature:

def merge_models(task_vectors: dict[str, torch.Tensor], base: torch.Tensor, name: str) -> torch.Tensor:
    """task_vectors: expert name -> this parameter's task vector (same shape as base).
    base: the seed model's value of this parameter. name: the parameter's name.
    Return the merged task vector for this parameter (same shape and dtype as base)."""

{called}

Constraints:
- import only torch and math; no other modules, no files, no network, no printing of large data;
- return a tensor with the same shape and dtype as base, with finite values;
- keep it fast (well under a second per call) and deterministic (seed any torch.Generator you use);
- do not use names that start with an underscore, eval/exec/open/getattr, or global state.

Here is an example (a simple Task Arithmetic merge):

```python
{example}```

Write a new, better merge_models function. Answer with one ```python code block.
'''


GROUPS_MUST_BE = "two or more disjoint groups of digit classes like '012,345,6789'"


def parse_groups(groups: Any) -> list[list[int]]:
    """``"012,345,6789"`` (or ``["012", ...]``, ``[[0,1,2], ...]``) -> ``[[0, 1, 2], [3, 4, 5],
    [6, 7, 8, 9]]``; anything else raises ``ValueError``."""
    if isinstance(groups, str):
        parts = [p.strip() for p in groups.split(",") if p.strip()]
        try:
            out = [[int(c) for c in p] for p in parts]
        except ValueError:
            out = []
    else:
        try:
            out = [[int(c) for c in p] for p in groups]
        except (TypeError, ValueError):
            out = []
    flat = [c for g in out for c in g]
    if len(out) < 2 or any(not g for g in out) or len(set(flat)) != len(flat) \
            or any(not 0 <= c <= 9 for c in flat):
        raise ValueError(f"must be {GROUPS_MUST_BE}")
    return out


def _mlp_class():
    """The model class (defined lazily so importing this module does not import torch)."""
    global DigitsMLP
    try:
        return DigitsMLP
    except NameError:
        pass
    import torch
    from torch import nn

    class _DigitsMLP(nn.Module):
        """MLP 64-128-128-10 (ReLU); parameters fc1.*, fc2.*, head.*; forward gives logits."""

        def __init__(self, hidden: int = 128, device: Any = None) -> None:
            super().__init__()
            self.fc1 = nn.Linear(64, hidden, device=device)
            self.fc2 = nn.Linear(hidden, hidden, device=device)
            self.head = nn.Linear(hidden, 10, device=device)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = torch.relu(self.fc1(x))
            x = torch.relu(self.fc2(x))
            return self.head(x)

        @classmethod
        def from_state(cls, state: dict[str, torch.Tensor]) -> "_DigitsMLP":
            """A model holding ``state`` (no random init, so the global RNG is untouched)."""
            model = cls(hidden=state["fc1.weight"].shape[0], device="meta")
            model.load_state_dict(state, assign=True)
            return model.eval()

    _DigitsMLP.__name__ = _DigitsMLP.__qualname__ = "DigitsMLP"
    _DigitsMLP.__module__ = __name__
    DigitsMLP = _DigitsMLP
    return DigitsMLP


def __getattr__(name: str) -> Any:  # lets pickle find selfdev.plugins.domains.digits.DigitsMLP
    if name == "DigitsMLP":
        return _mlp_class()
    raise AttributeError(name)


class DigitsDomain(TensorDomain):
    """Merge class-group experts of a weak digits MLP (fast: builds in seconds, scores in ms)."""

    name = "digits"
    default_evaluator = "accuracy"

    class Options(TensorDomain.Options):
        seed: int = Field(0, description="seed of the seed model and experts' training")
        groups: Union[str, list[str], list[list[int]]] = Field(
            "012,345,6789", description="the experts: disjoint groups of digit classes, one "
                                        "expert per group",
            json_schema_extra={"must_be": GROUPS_MUST_BE})
        base_frac: float = Field(0.1, gt=0, le=1, description="share of the training set the "
                                                             "seed model sees")
        base_epochs: int = Field(2, ge=0, description="epochs of the seed model")
        expert_epochs: int = Field(10, ge=0, description="epochs of each expert's fine-tuning")
        lr: float = Field(1e-3, gt=0, description="Adam learning rate of the builds")
        batch_size: int = Field(32, ge=1, description="batch size of the builds")
        hidden: int = Field(128, ge=1, description="hidden width of the MLP")
        threads: int = Field(1, ge=1, description="torch threads of the builds (the weights "
                                                  "depend on it)")

        @field_validator("groups")
        @classmethod
        def _groups(cls, value: Any) -> Any:
            parse_groups(value)
            return value

    def __init__(self, ctx: Context, **options: Any) -> None:
        super().__init__(ctx, **options)
        self.groups = parse_groups(self.options.groups)
        self._data: dict[str, tuple[Any, Any]] | None = None
        self._experts: dict[str, dict[str, Any]] = {}
        self._summary: dict[str, Any] | None = None

    # -- recipe and cache ----------------------------------------------------------------------

    def recipe(self) -> dict[str, Any]:
        """Everything the built weights depend on (hashed into the cache folder name)."""
        return {
            "version": RECIPE_VERSION,
            "seed": self.options.seed,
            "groups": ["".join(map(str, g)) for g in self.groups],
            "base_frac": self.options.base_frac,
            "base_epochs": self.options.base_epochs,
            "expert_epochs": self.options.expert_epochs,
            "lr": self.options.lr,
            "batch_size": self.options.batch_size,
            "hidden": self.options.hidden,
            "threads": self.options.threads,  # the float reductions, so the weights, depend on it
        }

    def recipe_hash(self) -> str:
        text = json.dumps(self.recipe(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def cache_path(self):
        return cache_dir("digits", self.recipe_hash())

    def _expert_name(self, group: list[int]) -> str:
        return "g" + "".join(map(str, group))

    # -- data ----------------------------------------------------------------------------------

    def _load_data(self) -> dict[str, tuple[Any, Any]]:
        if self._data is None:
            import numpy as np
            import torch
            from sklearn.datasets import load_digits
            from sklearn.model_selection import train_test_split

            X, y = load_digits(return_X_y=True)
            X = (X / 16.0).astype(np.float32)
            Xtr, Xtmp, ytr, ytmp = train_test_split(X, y, test_size=0.4, random_state=0, stratify=y)
            Xdev, Xte, ydev, yte = train_test_split(Xtmp, ytmp, test_size=0.5, random_state=0,
                                                    stratify=ytmp)
            self._data = {
                "train": (torch.tensor(Xtr), torch.tensor(ytr)),
                "dev": (torch.tensor(Xdev), torch.tensor(ydev)),
                "test": (torch.tensor(Xte), torch.tensor(yte)),
            }
        return self._data

    def labelled_split(self, split: str) -> tuple[Any, Any]:
        """``(X, y)`` float32 inputs [n, 64] and int64 labels [n] of ``train``, ``dev`` or ``test``."""
        if split not in SPLITS:
            raise ConfigError(f"digits has no split {split!r}; allowed: {', '.join(SPLITS)}")
        return self._load_data()[split]

    # -- building ------------------------------------------------------------------------------

    def _train(self, model, X, y, epochs: int, seed: int) -> None:
        import torch
        from torch import nn

        gen = torch.Generator().manual_seed(seed)
        opt = torch.optim.Adam(model.parameters(), lr=self.options.lr)
        model.train()
        for _ in range(epochs):
            perm = torch.randperm(len(X), generator=gen)
            for i in range(0, len(X), self.options.batch_size):
                idx = perm[i:i + self.options.batch_size]
                loss = nn.functional.cross_entropy(model(X[idx]), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
        model.eval()

    def _build(self) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        """Train seed and experts exactly as Appendix B of tiny-domains.md.

        The seeds are the appendix's (``manual_seed(seed)`` for the init, ``seed + 1`` for the
        seed's shuffling, ``seed + 10 + i`` for expert ``i``), so ``seed=0`` reproduces the
        measured table (seed 24.2, TA λ0.5 55.2, TIES k0.2 λ0.5 73.5 on dev). The build runs on
        exactly ``threads`` torch threads (default 1: the weights' last bits depend on the count,
        the accuracies above do not, and one thread is the fastest on a busy 2-core machine);
        the global RNG and thread setting are restored afterwards.
        """
        import torch

        cls = _mlp_class()
        Xtr, ytr = self.labelled_split("train")
        o = self.options
        with selfdev.torch_threads(o.threads), torch.random.fork_rng(devices=[]):
            torch.manual_seed(o.seed)
            seed_model = cls(o.hidden)
            n = max(1, int(o.base_frac * len(Xtr)))
            self._train(seed_model, Xtr[:n], ytr[:n], o.base_epochs, o.seed + 1)
            base = {k: v.detach().clone() for k, v in seed_model.state_dict().items()}
            experts = {}
            for i, group in enumerate(self.groups):
                model = cls(o.hidden)
                model.load_state_dict(base)
                mask = torch.isin(ytr, torch.tensor(group))
                self._train(model, Xtr[mask], ytr[mask], o.expert_epochs, o.seed + 10 + i)
                experts[self._expert_name(group)] = {k: v.detach().clone()
                                                     for k, v in model.state_dict().items()}
        return base, experts

    def _write_cache(self, path, base, experts, meta) -> None:
        from safetensors.torch import save_file

        def atomic(target: str, write) -> None:
            tmp = path / f".{target}.{os.getpid()}.tmp"
            write(tmp)
            os.replace(tmp, path / target)

        atomic("seed.safetensors", lambda p: save_file(base, str(p)))
        for name, state in experts.items():
            atomic(f"expert_{name}.safetensors", lambda p, s=state: save_file(s, str(p)))
        # meta.json last: its presence marks a complete cache entry
        atomic("meta.json", lambda p: p.write_text(json.dumps(meta, indent=2, sort_keys=True)))

    def _read_cache(self, path):
        from safetensors.torch import load_file

        meta = json.loads((path / "meta.json").read_text())
        if meta.get("recipe") != self.recipe():
            return None
        order = meta["order"]  # safetensors sorts the keys; keep the module's order

        def load(file: str) -> dict[str, Any]:
            state = load_file(str(path / file))
            return {k: state[k] for k in order}

        return load("seed.safetensors"), {name: load(f"expert_{name}.safetensors")
                                          for name in meta["experts"]}

    def prepare(self) -> dict[str, Any]:
        """Build (or load from the cache) seed and experts; return a JSON summary."""
        if self._summary is not None:
            return self._summary
        start = time.perf_counter()
        path = self.cache_path()
        loaded = None
        if (path / "meta.json").exists():
            try:
                loaded = self._read_cache(path)
            except Exception:  # a damaged cache entry is rebuilt
                loaded = None
        cached = loaded is not None
        if loaded is None:
            base, experts = self._build()
            meta = {"recipe": self.recipe(), "experts": list(experts), "order": list(base),
                    "params": sum(v.numel() for v in base.values())}
            self._write_cache(path, base, experts, meta)
        else:
            base, experts = loaded
        self.base = base
        self._experts = experts
        self.mergeable = list(base)
        self.task_vectors = {name: {k: state[k] - base[k] for k in self.mergeable}
                             for name, state in experts.items()}
        self._load_data()
        self._summary = {
            "domain": self.name,
            "params": sum(v.numel() for v in base.values()),
            "mergeable": list(self.mergeable),
            "experts": {name: "".join(map(str, g))
                        for name, g in zip(experts, self.groups)},
            "splits": {s: len(self._load_data()[s][1]) for s in SPLITS},
            "cache": str(path),
            "cached": cached,
            "recipe": self.recipe(),
            "seconds": round(time.perf_counter() - start, 3),
        }
        return self._summary

    # -- models --------------------------------------------------------------------------------

    def build_model(self, merged_tv: dict[str, Any]):
        """``DigitsMLP`` with ``seed + merged_tv`` (a fresh module; the seed tensors are untouched)."""
        return _mlp_class().from_state(self.merged_state(merged_tv))

    def seed_model(self):
        self.prepare()
        return _mlp_class().from_state(dict(self.base))

    def expert_model(self, name: str):
        self.prepare()
        if name not in self._experts:
            raise ConfigError(f"digits has no expert {name!r}; allowed: {', '.join(self._experts)}")
        return _mlp_class().from_state(dict(self._experts[name]))

    def baselines(self):
        return baseline_grid(self.options.seed)

    def prompt(self) -> str:
        self.prepare()
        groups = ", ".join(f"{name}: classes {{{', '.join(map(str, g))}}}"
                           for name, g in zip(self.task_vectors, self.groups))
        params = sum(v.numel() for v in self.base.values())
        hidden = self.options.hidden
        setting = (
            f"Setting: a small seed classifier (an MLP 64-{hidden}-{hidden}-10 for 8x8 "
            f"handwritten digits, {params:,} parameters) was fine-tuned into {len(self.groups)} "
            f"experts, each on a different group of classes ({groups}). Every expert is good at "
            f"its own classes and bad at the others. For every parameter, the task vector of an "
            f"expert is (expert parameter - seed parameter). Your function combines the task "
            f"vectors of one parameter into one merged task vector; the merged model is seed + "
            f"merged task vector, and it is scored by its accuracy on all ten classes.")
        called = ("It is called once per parameter, with name in "
                  + ", ".join(repr(n) for n in self.mergeable) + ".")
        wrap = functools.partial(textwrap.fill, width=96, break_on_hyphens=False)
        return PROMPT.format(setting=wrap(setting), called=wrap(called), example=EXAMPLE)


@hookimpl
def register_domains(register):
    register(DigitsDomain)
