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
    "dare_rescale",
    "kth_smallest",
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


def _floats(task_vectors: dict[str, "Tensor"], base: "Tensor") -> list["Tensor"]:
    """The task vectors in float32 (not copied when they already are: never write to them),
    checked against ``base``'s shape like ``_stack``."""
    import torch

    xs = [tv.to(torch.float32) for tv in task_vectors.values()]
    for expert, x in zip(task_vectors, xs):
        if x.shape != base.shape:
            raise ValueError(f"task vector of {expert!r} has shape {tuple(x.shape)}, "
                             f"base has {tuple(base.shape)}")
    return xs


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


#: tensors up to this many entries take ``kthvalue`` directly (sampling would not pay)
_SELECT_DIRECT = 1 << 18
#: entries in the strided sample that brackets the threshold
_SELECT_SAMPLE = 1 << 16


def kth_smallest(values: "Tensor", k: int) -> "Tensor":
    """The ``k``-th smallest entry (1-based) of the flat tensor ``values``; the same value as
    ``values.kthvalue(k).values``, bit for bit, at a fraction of the cost for big tensors.

    Why: ``kthvalue`` is a single-threaded selection over a copy of all ``n`` entries, and
    TIES calls it once per expert and tensor (for a 1.1B model, seconds per expert per 100M
    entries). Here a strided sample of 65,536 entries, sorted, brackets the answer by
    [lo, hi] (the sample quantile ± 8 standard deviations of its rank); one vectorised pass
    counts the entries below ``lo`` and gathers those in [lo, hi] (a few % of ``n``), and the
    answer is the (k − below)-th smallest of that band. Exact whatever the sample: ties and
    the bounds' own values are inside the band, and if the bracket missed (the rank falls
    outside the band) the full ``kthvalue`` runs instead.
    """
    import math

    n = values.numel()
    if n <= _SELECT_DIRECT:
        return values.kthvalue(k).values
    step = max(1, n // _SELECT_SAMPLE)
    sample = values[::step].sort().values
    m = sample.numel()
    q = k / n
    spread = int(8 * math.sqrt(m * q * (1 - q))) + 2
    lo = sample[max(0, int(q * m) - spread)]
    hi = sample[min(m - 1, int(q * m) + spread)]
    below = int((values < lo).count_nonzero())
    rank = k - below
    if rank >= 1:
        band = values[(values >= lo) & (values <= hi)]
        if rank <= band.numel():
            return band.kthvalue(rank).values
    return values.kthvalue(k).values


def trim_top_k(d: "Tensor", density: float) -> "Tensor":
    """Keep the ``density`` fraction of entries of ``d`` with the largest magnitude, zero the rest.

    ``keep = int(density · numel)`` entries; the threshold is the ``numel − keep``-th smallest
    magnitude (``kth_smallest``, equal to ``kthvalue``) and entries strictly above it survive,
    so ties at the threshold can keep fewer than ``keep``. The original TIES code keeps one
    more entry (``>=`` on the kthvalue) and trims over the whole model at once; mergekit, like
    this function, trims per tensor, keeps exactly ``keep`` (choosing among tied magnitudes in
    argsort's order) and keeps one entry when ``keep`` rounds to 0, where this returns zeros.
    Without ties the two agree entry for entry (tests/plugins/test_mergekit_equality.py).
    ``d`` is left as it is; the result is a new tensor (``d`` itself when density >= 1).
    """
    if density >= 1:
        return d
    return _trim(d, density)


def _trim(d: "Tensor", density: float, scratch: "Tensor | None" = None) -> "Tensor":
    """``trim_top_k`` into a new tensor (also when density >= 1), by ``hardshrink`` (entries
    with |d| <= threshold become 0, one fused pass; ``masked_fill`` with a boolean mask is
    several times slower). ``scratch``, a float32 tensor of ``d``'s shape that is overwritten,
    holds |d| for the threshold: fresh memory costs page faults, often more than the
    arithmetic on it."""
    import torch

    if density >= 1:
        return d.clone()
    n = d.numel()
    keep = int(density * n)
    if keep <= 0:
        return torch.zeros_like(d)
    mag = d.abs() if scratch is None else scratch.copy_(d).abs_()
    thr = kth_smallest(mag.reshape(-1), n - keep)
    return d.hardshrink(thr.item())


def _elect(D: "Tensor") -> "Tensor":
    """Mask of entries that agree with the elected sign (sign of the summed mass; 0 counts +):
    where the sum is >= 0 the positive entries, elsewhere the negative ones (zeros never)."""
    import torch

    return torch.where(D.sum(0) >= 0, D > 0, D < 0)


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
    weight 1, as here, the two coincide (to 1e-6 in float32: tests/plugins/
    test_mergekit_equality.py).

    Computed without an [N, ...] stack: with s = ±1 the elected sign, an entry agrees iff
    s·τ̂_i > 0, so Σ agreeing τ̂_i = s · Σ_i relu(s·τ̂_i) and the count is Σ_i sign(relu(s·τ̂_i)).
    In-place float ops; besides the N trimmed task vectors, one scratch tensor (|τ_i|, then
    the elected sign) and the count are the only tensor-sized allocations: boolean masks
    multiplied into floats, summed booleans and fresh memory (page faults) each cost more than
    the arithmetic (this is the hot loop of every TIES merge; ``bench/TIES.py`` is the same
    code as a candidate, bit for bit).
    """
    import torch

    xs = _floats(task_vectors, base)
    if not xs:
        return torch.zeros_like(base)
    scratch = torch.empty(base.shape, dtype=torch.float32)
    trimmed = [_trim(x, density, scratch) for x in xs]
    s = scratch.copy_(trimmed[0])
    for t in trimmed[1:]:
        s.add_(t)
    s.sign_().add_(0.5).sign_()  # the elected sign: -1, 0, 1 -> -1, +1, +1
    num = trimmed[0].mul_(s).clamp_(min=0)
    count = num.sign()
    for t in trimmed[1:]:
        agreeing = t.mul_(s).clamp_(min=0)
        num.add_(agreeing)
        count.add_(agreeing.sign_())
    merged = num.mul_(s).div_(count.clamp_(min=1))
    return _out(merged.mul_(lam) if lam != 1 else merged, base)


def dare_rescale(masked: "Tensor", original: "Tensor", p: float, rescale: str = "inverse") -> "Tensor":
    """Rescale one masked task vector so that dropping keeps its size.

    * ``"inverse"`` (the DARE paper, MergeLM, FusionBench): ``masked / (1 − p)``, unbiased per
      entry (E[result] = original);
    * ``"l1"`` (mergekit's ``dare_linear``/``dare_ties`` with ``rescale: true``, since its PR
      #245): ``masked · ‖original‖₁ / ‖masked‖₁``, so the tensor keeps its L1 norm exactly.
      mergekit skips the rescale when either norm is below 1e-7; so does this.

    The two agree in expectation and differ per draw by the factor ``(1 − p)·‖τ‖₁/‖m⊙τ‖₁``,
    close to 1 for big tensors (tests/plugins/test_mergekit_equality.py measures it).
    """
    if rescale == "inverse":
        return masked / (1.0 - p)
    if rescale == "l1":
        before, after = original.abs().sum(), masked.abs().sum()
        if before < 1e-7 or after < 1e-7:
            return masked
        return masked * (before / after)
    raise ValueError(f"DARE rescale must be 'inverse' or 'l1', got {rescale!r}")


def _dare_masked(task_vectors: dict[str, "Tensor"], base: "Tensor", name: str,
                 p: float, seed: int, rescale: str = "inverse") -> "Tensor":
    """Drop each entry with probability ``p`` and rescale the survivors (``dare_rescale``).

    One ``torch.Generator`` per tensor, seeded with ``derive_seed(seed, name)``; the experts
    draw their masks, and are stacked, in sorted name order. The result therefore depends only
    on (seed, name, the task vectors): not on the order in which tensors or experts are
    visited, nor on the global RNG. (mergekit draws from the global RNG, seeded once by
    ``--random-seed``, in its own tensor order, so its masks cannot be reproduced here: that
    randomness is the one difference left once ``rescale="l1"`` is chosen.)
    """
    import torch

    if not 0.0 <= p < 1.0:
        raise ValueError(f"DARE drop rate p must be in [0, 1), got {p}")
    if rescale not in ("inverse", "l1"):
        raise ValueError(f"DARE rescale must be 'inverse' or 'l1', got {rescale!r}")
    ordered = {expert: task_vectors[expert] for expert in sorted(task_vectors)}
    D = _stack(ordered, base)
    if p == 0 or D.shape[0] == 0:
        return D
    gen = torch.Generator().manual_seed(derive_seed(seed, name))
    keep = torch.stack([torch.bernoulli(torch.full_like(x, 1.0 - p), generator=gen) for x in D])
    return torch.stack([dare_rescale(x * k, x, p, rescale) for x, k in zip(D, keep)])


def dare(task_vectors: dict[str, "Tensor"], base: "Tensor", name: str, *,
         p: float = 0.9, lam: float = 1.0, seed: int = 0, rescale: str = "inverse") -> "Tensor":
    """DARE (Yu et al. 2024) then Task Arithmetic: λ · Σ_i m_i ⊙ τ_i / (1 − p), m_i ~ Bernoulli(1 − p).

    ``p`` is the drop rate (mergekit's ``density`` is 1 − p). The paper, MergeLM and FusionBench
    rescale by 1/(1 − p) as here; mergekit (``dare_linear``, since PR #245) instead rescales each
    masked tensor to the L1 norm of the unmasked one: equal in expectation, different per draw;
    ``rescale="l1"`` chooses mergekit's rule (see ``dare_rescale``). mergekit also draws from
    the global RNG; we seed per tensor (see ``_dare_masked``).
    """
    D = _dare_masked(task_vectors, base, name, p, seed, rescale)
    return _out(lam * D.sum(0), base)


def dare_ties(task_vectors: dict[str, "Tensor"], base: "Tensor", name: str, *,
              p: float = 0.5, lam: float = 1.0, seed: int = 0, rescale: str = "inverse") -> "Tensor":
    """DARE drop-and-rescale, then TIES sign election; the agreeing entries are **summed**, × λ.

    Summing (not averaging) matches mergekit's ``dare_ties`` default (``normalize: false``);
    ``rescale`` as in :func:`dare`.
    """
    D = _dare_masked(task_vectors, base, name, p, seed, rescale)
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
