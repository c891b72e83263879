"""Model Stock and SLERP baselines for the ``lm`` domain, with the candidate contract::

    fn(task_vectors: dict[str, Tensor], base: Tensor, name: str, **params) -> Tensor

They return the **merged task vector** (the domain adds it to the seed), in float32 maths and
``base``'s dtype and shape, like the shared methods in ``plugins/domains/baselines.py``.

* ``model_stock`` (Jang et al. 2024, mergekit ``model_stock``): per tensor,
  cos θ = mean pairwise cosine of the task vectors, t = N·cos θ / (1 + (N−1)·cos θ),
  θ = t·mean(θ_i) + (1−t)·θ_0, i.e. merged τ = t·mean(τ_i). With ``filter_wise`` the cosine and
  t are computed per row (dim 0), as mergekit's ``filter_wise: true``. N ≥ 2; a single expert is
  returned unchanged (t = 1). Like mergekit, cos θ is clamped to [−1, 1] and N > 2 averages the
  pairwise cosines (the paper defines two models). A zero task vector counts as cos θ = 0.
* ``slerp`` (Shoemake 1985, mergekit ``slerp``) between the first two experts, **in weight
  space**: θ = slerp(t, θ_1, θ_2) with θ_i = θ_0 + τ_i, so t = 0 is expert 1 and t = 1 expert 2;
  nearly colinear vectors (|cos| > 0.9995, typical for fine-tunes of one seed) fall back to
  linear interpolation, as in mergekit.
* ``slerp`` with ``space="task"`` (mergekit ``nuslerp`` with a base): slerp(t, τ_1, τ_2), which
  keeps the task vectors' norm instead of shrinking it as averaging does.

SLERP needs exactly two experts (with more it raises ``ValueError``); :func:`lm_baseline_grid`
only lists it for two experts.
"""
from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from selfdev import Baseline
from selfdev.plugins.domains.baselines import _stack  # one stacking rule for all baselines

if TYPE_CHECKING:  # pragma: no cover
    from torch import Tensor

__all__ = ["model_stock", "slerp", "slerp_vectors", "lm_baseline_grid", "METHODS"]


def _cos(a: "Tensor", b: "Tensor", dim: int = -1, eps: float = 1e-12) -> "Tensor":
    import torch

    na, nb = a.norm(dim=dim), b.norm(dim=dim)
    dot = (a * b).sum(dim=dim)
    denom = na * nb
    return torch.where(denom > eps, dot / denom.clamp(min=eps), torch.zeros_like(dot))


def model_stock(task_vectors: dict[str, "Tensor"], base: "Tensor", name: str, *,
                filter_wise: bool = False) -> "Tensor":
    """Model Stock: t · mean(τ_i) with t = N·cos/(1+(N−1)·cos), cos = mean pairwise cosine."""
    import torch

    D = _stack(task_vectors, base)
    n = D.shape[0]
    if n == 0:
        return torch.zeros_like(base)
    if n == 1:
        return D[0].to(base.dtype)
    if filter_wise and base.dim() >= 2:
        flat = D.reshape(n, base.shape[0], -1)  # rows: [N, rows, cols]
        cos_dim = -1
    else:
        flat = D.reshape(n, -1)
        cos_dim = -1
    pairs = [_cos(flat[i], flat[j], dim=cos_dim) for i in range(n) for j in range(i + 1, n)]
    c = torch.stack(pairs).mean(0).clamp(-1.0, 1.0)
    t = n * c / (1.0 + (n - 1) * c)
    t = torch.where(torch.isfinite(t), t, torch.zeros_like(t))
    mean = D.mean(0)
    if filter_wise and base.dim() >= 2:
        merged = t.reshape(base.shape[0], *([1] * (base.dim() - 1))) * mean
    else:
        merged = t * mean
    return merged.reshape(base.shape).to(base.dtype)


def slerp_vectors(t: float, v0: "Tensor", v1: "Tensor", dot_threshold: float = 0.9995,
                  eps: float = 1e-8) -> "Tensor":
    """mergekit's ``slerp``: spherical interpolation of the flattened tensors (LERP when colinear)."""
    import torch

    a, c = v0.reshape(-1).to(torch.float32), v1.reshape(-1).to(torch.float32)
    na, nc = a.norm(), c.norm()
    an = a / na if na > eps else a
    cn = c / nc if nc > eps else c
    dot = (an * cn).sum()
    if dot.abs() > dot_threshold or na <= eps or nc <= eps:
        out = (1 - t) * a + t * c
    else:
        omega = torch.arccos(dot.clamp(-1.0, 1.0))
        so = torch.sin(omega)
        out = (torch.sin((1 - t) * omega) / so) * a + (torch.sin(t * omega) / so) * c
    return out.reshape(v0.shape)


def slerp(task_vectors: dict[str, "Tensor"], base: "Tensor", name: str, *, t: float = 0.5,
          space: str = "weights") -> "Tensor":
    """SLERP between the two experts (first two in dict order); ``space`` = weights | task."""
    import torch

    D = _stack(task_vectors, base)
    if D.shape[0] != 2:
        raise ValueError(f"slerp merges exactly 2 experts, got {D.shape[0]}")
    if space == "weights":
        b = base.to(torch.float32)
        merged = slerp_vectors(t, b + D[0], b + D[1]) - b
    elif space == "task":
        merged = slerp_vectors(t, D[0], D[1])
    else:
        raise ValueError(f"slerp space must be 'weights' or 'task', got {space!r}")
    return merged.reshape(base.shape).to(base.dtype)


METHODS = {"model_stock": model_stock, "slerp": slerp}


def _baseline(method: str, **params) -> Baseline:
    fn = METHODS[method]
    return Baseline(method=method, params=dict(params),
                    fn=functools.partial(fn, **params) if params else fn)


def lm_baseline_grid(n_experts: int) -> list[Baseline]:
    """Model Stock (plain and filter-wise) and, for two experts, SLERP t ∈ {0.3, 0.5, 0.7} in
    weight space and t = 0.5 in task-vector space."""
    grid = [_baseline("model_stock"), _baseline("model_stock", filter_wise=True)]
    if n_experts == 2:
        grid += [_baseline("slerp", t=t) for t in (0.3, 0.5, 0.7)]
        grid += [_baseline("slerp", t=0.5, space="task")]
    return grid
