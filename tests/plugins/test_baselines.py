"""Human merge baselines: hand-computed values, DARE reproducibility, edge cases, the grid."""
import functools
import pickle

import pytest
import torch

from selfdev.engine.api import Baseline
from selfdev.plugins.domains.baselines import (average, baseline_grid, dare, dare_ties, task_arithmetic,
                                       ties, trim_top_k)


def t(rows):
    return torch.tensor(rows, dtype=torch.float32)


# two experts on a 2x3 parameter; base is irrelevant for the merged task vector
A = t([[1, -2, 3], [0, 4, -1]])
B = t([[-1, -1, 1], [2, 0, -3]])
BASE = torch.zeros(2, 3)
TV = {"a": A, "b": B}

# research/merging.md, "Worked example for unit tests" (one 5-element tensor, base 0)
W1 = t([1, -2, 0.5, 0.1, 3])
W2 = t([-1.5, -1, 2, 0.2, -0.5])
W3 = t([0.5, 0, -0.1, 0.3, 1])
WTV = {"m1": W1, "m2": W2, "m3": W3}
WBASE = torch.zeros(5)


def close(x, rows):
    torch.testing.assert_close(x, t(rows))


def test_average_and_task_arithmetic_by_hand():
    close(average(TV, BASE, "w"), [[0, -1.5, 2], [1, 2, -2]])
    close(task_arithmetic(TV, BASE, "w", lam=1.0), [[0, -3, 4], [2, 4, -4]])
    close(task_arithmetic(TV, BASE, "w", lam=0.5), [[0, -1.5, 2], [1, 2, -2]])


def test_ties_without_trimming_by_hand():
    # (0,0): sum 0 -> sign +, only a's +1 agrees; (1,0): a is 0 and does not count -> b's 2
    close(ties(TV, BASE, "w", density=1.0, lam=1.0), [[1, -1.5, 2], [2, 4, -2]])
    close(ties(TV, BASE, "w", density=1.0, lam=2.0), [[2, -3, 4], [4, 8, -4]])


def test_ties_with_trimming_by_hand():
    # keep int(0.5 * 6) = 3 per expert: threshold = 3rd smallest |x|, strictly above survives.
    # a: |.| sorted 0,1,1,2,3,4 -> thr 1 -> keeps -2, 3, 4
    # b: |.| sorted 0,1,1,1,2,3 -> thr 1 -> keeps 2, -3 (a tie at the threshold keeps fewer)
    close(trim_top_k(A, 0.5), [[0, -2, 3], [0, 4, 0]])
    close(trim_top_k(B, 0.5), [[0, 0, 0], [2, 0, -3]])
    close(ties(TV, BASE, "w", density=0.5, lam=1.0), [[0, -2, 3], [2, 4, -3]])
    close(ties(TV, BASE, "w", density=0.5, lam=0.5), [[0, -1, 1.5], [1, 2, -1.5]])


def test_merging_md_worked_example():
    close(task_arithmetic(WTV, WBASE, "x", lam=1.0), [0, -3, 2.4, 0.6, 3.5])
    close(task_arithmetic(WTV, WBASE, "x", lam=0.5), [0, -1.5, 1.2, 0.3, 1.75])
    close(ties(WTV, WBASE, "x", density=1.0, lam=1.0), [0.75, -1.5, 1.25, 0.2, 2.0])
    close(ties(WTV, WBASE, "x", density=0.6, lam=1.0), [0.75, -1.5, 2.0, 0.3, 2.0])


def test_dare_with_no_drop_is_task_arithmetic_and_dare_ties_sums_agreeing():
    close(dare(TV, BASE, "w", p=0.0, lam=1.0), [[0, -3, 4], [2, 4, -4]])
    # sign by summed mass, agreeing entries summed (mergekit's dare_ties default)
    close(dare_ties(TV, BASE, "w", p=0.0, lam=1.0), [[1, -3, 4], [2, 4, -4]])
    close(dare_ties(TV, BASE, "w", p=0.0, lam=0.5), [[0.5, -1.5, 2], [1, 2, -2]])


def test_dare_masks_and_rescales():
    x = torch.randn(40, 50, generator=torch.Generator().manual_seed(3))
    out = dare({"only": x}, torch.zeros_like(x), "layer.weight", p=0.9, lam=1.0, seed=0)
    kept = out != 0
    torch.testing.assert_close(out[kept], x[kept] / 0.1)
    assert 0.05 < kept.float().mean().item() < 0.15


def test_dare_is_reproducible_and_seeded_by_name():
    x = torch.randn(30, 30, generator=torch.Generator().manual_seed(1))
    tv = {"a": x, "b": -x}
    one = dare(tv, torch.zeros_like(x), "fc1.weight", p=0.5, seed=7)
    torch.manual_seed(12345)  # the global RNG plays no part
    torch.rand(100)
    assert torch.equal(one, dare(tv, torch.zeros_like(x), "fc1.weight", p=0.5, seed=7))
    assert not torch.equal(one, dare(tv, torch.zeros_like(x), "fc1.weight", p=0.5, seed=8))
    assert not torch.equal(one, dare(tv, torch.zeros_like(x), "fc2.weight", p=0.5, seed=7))


def test_dare_is_independent_of_tensor_and_expert_order():
    gen = torch.Generator().manual_seed(5)
    params = {n: {e: torch.randn(8, 9, generator=gen) for e in ("x", "y", "z")}
              for n in ("p1", "p2", "p3")}
    base = torch.zeros(8, 9)
    forward = {n: dare_ties(params[n], base, n, p=0.5, seed=1) for n in ["p1", "p2", "p3"]}
    backward = {n: dare_ties(dict(reversed(params[n].items())), base, n, p=0.5, seed=1)
                for n in ["p3", "p2", "p1"]}
    for n in forward:
        assert torch.equal(forward[n], backward[n])


def test_dare_mean_over_seeds_tends_to_the_sum():
    x = t([[1.0, -2.0, 0.5], [0.25, 3.0, -1.0]])
    draws = torch.stack([dare({"a": x}, torch.zeros_like(x), "w", p=0.5, seed=s)
                         for s in range(2000)])
    torch.testing.assert_close(draws.mean(0), x, atol=0.15, rtol=0.1)


def test_edge_cases_zero_tensors_one_d_and_dtype():
    zeros = {"a": torch.zeros(4, 3), "b": torch.zeros(4, 3)}
    for fn in (average, task_arithmetic, ties, dare, dare_ties):
        out = fn(zeros, torch.ones(4, 3), "z")
        assert torch.equal(out, torch.zeros(4, 3)), fn.__name__
    vec = {"a": t([1, -1, 2]), "b": t([1, 1, -4])}
    close(ties(vec, torch.zeros(3), "bias", density=1.0), [1, 1, -4])
    close(ties(vec, torch.zeros(3), "bias", density=0.2), [0, 0, 0])  # keeps int(0.6) = 0
    half = {"a": A.half(), "b": B.half()}
    for fn in (average, task_arithmetic, ties, dare, dare_ties):
        out = fn(half, BASE.half(), "w")
        assert out.dtype == torch.float16 and out.shape == (2, 3)
    assert torch.equal(ties({}, torch.ones(2, 2), "w"), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="shape"):
        average({"a": torch.zeros(2)}, torch.zeros(3), "w")
    with pytest.raises(ValueError, match="drop rate"):
        dare(TV, BASE, "w", p=1.0)


def test_density_one_keeps_everything():
    assert torch.equal(trim_top_k(A, 1.0), A)


def test_baseline_grid():
    grid = baseline_grid(seed=3)
    assert all(isinstance(b, Baseline) for b in grid)
    labels = [b.label for b in grid]
    assert len(grid) == 18 and len(set(labels)) == 18
    assert labels[0] == "average"
    assert "task_arithmetic lam=0.5" in labels
    assert "ties density=0.2 lam=0.5" in labels
    assert "dare p=0.9 lam=1.0" in labels
    assert "dare_ties p=0.5 lam=0.5" in labels
    counts = {m: sum(b.method == m for b in grid)
              for m in ("average", "task_arithmetic", "ties", "dare", "dare_ties")}
    assert counts == {"average": 1, "task_arithmetic": 4, "ties": 8, "dare": 4, "dare_ties": 1}
    ties_02 = next(b for b in grid if b.label == "ties density=0.2 lam=0.5")
    assert ties_02.params == {"density": 0.2, "lam": 0.5}
    torch.testing.assert_close(ties_02.fn(TV, BASE, "w"), ties(TV, BASE, "w", density=0.2, lam=0.5))
    dare_b = next(b for b in grid if b.method == "dare")
    assert isinstance(dare_b.fn, functools.partial) and dare_b.fn.keywords["seed"] == 3
    assert "seed" not in dare_b.params
    for b in grid:  # executors may ship baselines to worker processes
        restored = pickle.loads(pickle.dumps(b.fn))
        torch.testing.assert_close(restored(TV, BASE, "w"), b.fn(TV, BASE, "w"))


def test_kth_smallest_equals_kthvalue_on_big_tensors():
    """The sampled bracket is exact: same value as kthvalue on continuous, tied (bf16-like),
    sorted and adversarial inputs (a bracket that misses falls back to the full selection)."""
    from selfdev.plugins.domains.baselines import _SELECT_DIRECT, kth_smallest

    gen = torch.Generator().manual_seed(0)
    n = _SELECT_DIRECT * 3 + 17
    cases = {
        "normal": torch.randn(n, generator=gen).abs(),
        "bf16 ties": torch.randn(n, generator=gen).abs().bfloat16().float(),
        "few values": torch.randint(0, 5, (n,), generator=gen).float(),
        "sorted": torch.arange(n, dtype=torch.float32),
        # the strided sample sees only the zeros: the bracket misses, the fallback answers
        "strided trap": torch.where(torch.arange(n) % (n // (1 << 16)) == 0, 0.0,
                                    torch.rand(n, generator=gen) + 1.0),
    }
    for label, v in cases.items():
        for k in (1, n // 5, n // 2, n - n // 5, n):
            assert torch.equal(kth_smallest(v, k), v.kthvalue(k).values), (label, k)


def test_trim_top_k_on_a_big_tensor_keeps_exactly_the_top_entries():
    x = torch.randn(700, 1000, generator=torch.Generator().manual_seed(4))
    out = trim_top_k(x, 0.2)
    assert int((out != 0).sum()) == 140_000
    thr = x.abs().flatten().kthvalue(700_000 - 140_000).values
    assert torch.equal(out, torch.where(x.abs() > thr, x, torch.zeros_like(x)))
