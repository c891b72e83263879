"""TIES-Merging as a selfdev candidate program (what ``bench/merge.py`` applies with
``selfdev apply bench/TIES.py``; mergekit runs the same configuration: ``ties``, density 0.2,
λ 1, every weight 1, normalize: the disjoint mean).

It is the baseline ``selfdev.plugins.domains.baselines.ties`` written as a candidate: a
candidate runs in the sandbox and may import only torch and math, so the exact sampled top-k
threshold (``kth_smallest``) is restated here; tests/plugins/test_bench_ties.py checks that
the two give the same tensors bit for bit.
"""
import math

import torch

DENSITY = 0.2
LAMBDA = 1.0


def kth_smallest(values, k):
    """The k-th smallest entry of a flat tensor, equal to ``values.kthvalue(k).values``:
    a sorted strided sample brackets it, one pass keeps the band in between (exact; a
    bracket that misses falls back to kthvalue)."""
    n = values.numel()
    if n <= 262144:
        return values.kthvalue(k).values
    step = max(1, n // 65536)
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


def trim(tau, density, scratch=None):
    """A new tensor: tau with all but its int(density * numel) largest-magnitude entries
    (those above the threshold) zeroed, by hardshrink (|tau| <= threshold -> 0) in one fused
    pass. ``scratch`` (a float tensor of tau's shape, overwritten) holds |tau| for the
    threshold: fresh memory costs page faults, often more than the arithmetic."""
    if density >= 1:
        return tau.clone()
    n = tau.numel()
    keep = int(density * n)
    if keep <= 0:
        return torch.zeros_like(tau)
    mag = tau.abs() if scratch is None else scratch.copy_(tau).abs_()
    threshold = kth_smallest(mag.reshape(-1), n - keep)
    return tau.hardshrink(threshold.item())


def merge_models(task_vectors, base, name):
    """Trim each task vector, elect the sign of the summed mass (0 counts as +), average the
    entries that agree with it (0 where none does), times lambda. With s = +-1 the elected
    sign an entry agrees iff s * tau > 0, so the agreeing sum is s * sum(relu(s * tau)) and
    the count sum(sign(relu(s * tau))): in-place float ops, no [N, ...] stack; the elected
    sign is computed into the scratch tensor, so besides the trimmed task vectors only the
    count is a fresh allocation."""
    if not task_vectors:
        return torch.zeros_like(base)
    scratch = torch.empty(base.shape, dtype=torch.float32)
    trimmed = [trim(tau.to(torch.float32), DENSITY, scratch) for tau in task_vectors.values()]
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
    if LAMBDA != 1:
        merged = merged.mul_(LAMBDA)
    return merged.reshape(base.shape).to(base.dtype)
