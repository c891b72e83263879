"""Human merge baselines shared by every tensor domain (Task Arithmetic, TIES, DARE, ...).

Every function has exactly the candidate contract plus keyword hyper-parameters::

    fn(task_vectors: dict[str, Tensor], base: Tensor, name: str, **params) -> Tensor

``task_vectors`` maps an expert name to this parameter's task vector τ_i = θ_i − θ_0, ``base``
is the seed's value θ_0 of the parameter and ``name`` its name. The result is the **merged task
vector** (the domain adds it to the seed), computed in float32 and returned in ``base``'s dtype
and shape. Everything works per tensor, as mergekit does; the equations follow
``research/merging.md`` §1–2, and the docstrings say where mergekit differs.

``baseline_grid(seed)`` is the coefficient sweep that every run scores next to its candidates.
torch is imported lazily so that importing this module stays cheap.
"""
from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from selfdev import Baseline, derive_seed

if TYPE_CHECKING:  # pragma: no cover
    from torch import Tensor

__all__ = [
    "average",
    "task_arithmetic",
    "ties",
    "dare",
    "dare_ties",
    "trim_top_k",
    "baseline_grid",
]


def _stack(task_vectors: dict[str, "Tensor"], base: "Tensor") -> "Tensor":
    """The task vectors as one float32 tensor ``[N, *base.shape]`` (N may be 0)."""
    import torch

    xs = [tv.to(torch.float32) for tv in task_vectors.values()]
    for expert, x in zip(task_vectors, xs):
        if x.shape != base.shape:
            raise ValueError(f"task vector of {expert!r} has shape {tuple(x.shape)}, "
                             f"base has {tuple(base.shape)}")
    if not xs:
        return torch.zeros((0, *base.shape), dtype=torch.float32)
    return torch.stack(xs)


def _out(x: "Tensor", base: "Tensor") -> "Tensor":
    return x.reshape(base.shape).to(base.dtype)


def average(task_vectors: dict[str, "Tensor"], base: "Tensor", name: str) -> "Tensor":
    """Mean of the task vectors (model soup of the experts = Task Arithmetic with λ = 1/N)."""
    D = _stack(task_vectors, base)
    if D.shape[0] == 0:
        return _out(D.sum(0), base)
    return _out(D.mean(0), base)


def task_arithmetic(task_vectors: dict[str, "Tensor"], base: "Tensor", name: str, *,
                    lam: float = 1.0) -> "Tensor":
    """Task Arithmetic (Ilharco et al. 2023): λ · Σ_i τ_i.

    Same as mergekit's ``task_arithmetic`` with every weight 1 and ``normalize: false`` (its
    default); mergekit's ``lambda`` is our ``lam``.
    """
    return _out(lam * _stack(task_vectors, base).sum(0), base)


def trim_top_k(d: "Tensor", density: float) -> "Tensor":
    """Keep the ``density`` fraction of entries of ``d`` with the largest magnitude, zero the rest.

    ``keep = int(density · numel)`` entries; the threshold is the ``numel − keep``-th smallest
    magnitude (``kthvalue``) and entries strictly above it survive, so ties at the threshold can
    keep fewer than ``keep``. The original TIES code keeps one more entry (``>=`` on the
    kthvalue) and trims over the whole model at once; mergekit, like this function, trims per
    tensor. ``density >= 1`` keeps everything; a density that keeps no entry returns zeros
    (mergekit asserts instead).
    """
    import torch

    if density >= 1:
        return d
    n = d.numel()
    keep = int(density * n)
    if keep <= 0:
        return torch.zeros_like(d)
    mag = d.abs()
    thr = mag.flatten().kthvalue(n - keep).values
    return torch.where(mag > thr, d, torch.zeros_like(d))


def _elect(D: "Tensor") -> "Tensor":
    """Mask of entries that agree with the elected sign (sign of the summed mass; 0 counts +)."""
    import torch

    gamma = torch.sign(D.sum(0))
    gamma = torch.where(gamma == 0, torch.ones_like(gamma), gamma)
    return (torch.sign(D) == gamma) & (D != 0)


def ties(task_vectors: dict[str, "Tensor"], base: "Tensor", name: str, *,
         density: float = 0.2, lam: float = 1.0) -> "Tensor":
    """TIES-Merging (Yadav et al. 2023): trim, elect sign, disjoint mean, times λ.

    1. trim: τ̂_i = top-k(τ_i, density) per tensor (``trim_top_k``);
    2. elect: γ = sign(Σ_i τ̂_i), the sign of the summed mass; a zero sum resolves to +1
       (mergekit's choice; the original code uses the sign of the sum of elected signs);
    3. disjoint mean: τ_m = Σ_i [sign(τ̂_i) = γ] τ̂_i / #{i : sign(τ̂_i) = γ, τ̂_i ≠ 0}
       (0 where no expert agrees), and the result is λ · τ_m.

    Quirks of mergekit's ``ties``: its ``density`` defaults to 1.0 (no trimming unless set; the
    paper uses 0.2), it multiplies by the per-model ``weight`` before electing the sign (so the
    weights change the vote; issue #474) and normalises by the agreeing weights. With every
    weight 1, as here, the two coincide.
    """
    import torch

    D = _stack(task_vectors, base)
    if D.shape[0] == 0:
        return _out(D.sum(0), base)
    D = torch.stack([trim_top_k(x, density) for x in D])
    agree = _elect(D)
    count = agree.sum(0).clamp(min=1)
    merged = (D * agree).sum(0) / count
    return _out(lam * merged, base)


def _dare_masked(task_vectors: dict[str, "Tensor"], base: "Tensor", name: str,
                 p: float, seed: int) -> "Tensor":
    """Drop each entry with probability ``p`` and rescale the survivors by 1/(1−p).

    One ``torch.Generator`` per tensor, seeded with ``derive_seed(seed, name)``; the experts
    draw their masks, and are stacked, in sorted name order. The result therefore depends only
    on (seed, name, the task vectors): not on the order in which tensors or experts are
    visited, nor on the global RNG.
    """
    import torch

    if not 0.0 <= p < 1.0:
        raise ValueError(f"DARE drop rate p must be in [0, 1), got {p}")
    ordered = {expert: task_vectors[expert] for expert in sorted(task_vectors)}
    D = _stack(ordered, base)
    if p == 0 or D.shape[0] == 0:
        return D
    gen = torch.Generator().manual_seed(derive_seed(seed, name))
    keep = torch.stack([torch.bernoulli(torch.full_like(x, 1.0 - p), generator=gen) for x in D])
    return D * keep / (1.0 - p)


def dare(task_vectors: dict[str, "Tensor"], base: "Tensor", name: str, *,
         p: float = 0.9, lam: float = 1.0, seed: int = 0) -> "Tensor":
    """DARE (Yu et al. 2024) then Task Arithmetic: λ · Σ_i m_i ⊙ τ_i / (1 − p), m_i ~ Bernoulli(1 − p).

    ``p`` is the drop rate (mergekit's ``density`` is 1 − p). The paper, MergeLM and FusionBench
    rescale by 1/(1 − p) as here; mergekit (``dare_linear``, since PR #245) instead rescales each
    masked tensor to the L1 norm of the unmasked one: equal in expectation, different per draw.
    mergekit also draws from the global RNG; we seed per tensor (see ``_dare_masked``).
    """
    D = _dare_masked(task_vectors, base, name, p, seed)
    return _out(lam * D.sum(0), base)


def dare_ties(task_vectors: dict[str, "Tensor"], base: "Tensor", name: str, *,
              p: float = 0.5, lam: float = 1.0, seed: int = 0) -> "Tensor":
    """DARE drop-and-rescale, then TIES sign election; the agreeing entries are **summed**, × λ.

    Summing (not averaging) matches mergekit's ``dare_ties`` default (``normalize: false``).
    """
    D = _dare_masked(task_vectors, base, name, p, seed)
    if D.shape[0] == 0:
        return _out(D.sum(0), base)
    agree = _elect(D)
    return _out(lam * (D * agree).sum(0), base)


#: method name -> function (what Baseline.method refers to)
METHODS = {
    "average": average,
    "task_arithmetic": task_arithmetic,
    "ties": ties,
    "dare": dare,
    "dare_ties": dare_ties,
}


def _baseline(method: str, seed: int | None = None, **params) -> Baseline:
    fn = METHODS[method]
    bound = dict(params)
    if seed is not None:
        bound["seed"] = seed
    return Baseline(method=method, params=dict(params),
                    fn=functools.partial(fn, **bound) if bound else fn)


def baseline_grid(seed: int) -> list[Baseline]:
    """The coefficient sweep scored next to every run (18 baselines).

    average; TA λ ∈ {0.3, 0.5, 0.7, 1.0}; TIES density ∈ {0.2, 0.5} × λ ∈ {0.5, 1, 1.5, 2};
    DARE p ∈ {0.5, 0.9} × λ ∈ {0.5, 1}; DARE-TIES p 0.5 λ 0.5. DARE masks are seeded from
    ``seed`` (bound in ``fn``, not listed in ``params``).
    """
    grid = [_baseline("average")]
    grid += [_baseline("task_arithmetic", lam=lam) for lam in (0.3, 0.5, 0.7, 1.0)]
    grid += [_baseline("ties", density=d, lam=lam)
             for d in (0.2, 0.5) for lam in (0.5, 1.0, 1.5, 2.0)]
    grid += [_baseline("dare", seed, p=p, lam=lam) for p in (0.5, 0.9) for lam in (0.5, 1.0)]
    grid += [_baseline("dare_ties", seed, p=0.5, lam=0.5)]
    return grid
