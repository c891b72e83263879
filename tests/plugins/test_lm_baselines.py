"""Model Stock and SLERP on hand-computed tensors."""
from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from selfdev.plugins.domains.lm.baselines import lm_baseline_grid, model_stock, slerp, slerp_vectors  # noqa: E402


def T(*xs):
    return torch.tensor(xs, dtype=torch.float32)


# ---------------------------------------------------------------------------- Model Stock
def test_model_stock_orthogonal_task_vectors_give_the_base():
    # cos = 0 -> t = 0 -> merged = base (merged task vector 0)
    out = model_stock({"a": T(1, 0), "b": T(0, 1)}, T(5, 5), "w")
    assert torch.equal(out, T(0, 0))


def test_model_stock_two_experts_at_45_degrees():
    # cos = 1/sqrt2; t = 2c/(1+c) = 0.828427...; mean tau = (1, 0.5)
    c = 1 / math.sqrt(2)
    t = 2 * c / (1 + c)
    out = model_stock({"a": T(1, 1), "b": T(1, 0)}, T(0, 0), "w")
    assert torch.allclose(out, T(t * 1.0, t * 0.5), atol=1e-6)
    assert abs(t - 0.8284271) < 1e-6


def test_model_stock_identical_experts_keep_the_full_mean():
    # cos = 1 -> t = N/(1+(N-1)) = 1
    out = model_stock({"a": T(2, -1, 3), "b": T(2, -1, 3), "c": T(2, -1, 3)}, T(0, 0, 0), "w")
    assert torch.allclose(out, T(2, -1, 3))


def test_model_stock_three_experts_average_pairwise_cosines():
    a, b, c = T(1, 0, 0), T(0, 1, 0), T(1, 1, 0)
    cos = (0 + 1 / math.sqrt(2) + 1 / math.sqrt(2)) / 3       # mean of (ab, ac, bc)
    t = 3 * cos / (1 + 2 * cos)
    mean = (a + b + c) / 3
    out = model_stock({"a": a, "b": b, "c": c}, T(0, 0, 0), "w")
    assert torch.allclose(out, t * mean, atol=1e-6)


def test_model_stock_filter_wise_uses_one_t_per_row():
    base = torch.zeros(2, 2)
    a = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    b = torch.tensor([[0.0, 1.0], [1.0, 1.0]])  # row 0 orthogonal (t=0), row 1 identical (t=1)
    out = model_stock({"a": a, "b": b}, base, "w", filter_wise=True)
    assert torch.allclose(out, torch.tensor([[0.0, 0.0], [1.0, 1.0]]))


def test_model_stock_keeps_dtype_and_handles_zero_vectors():
    base = torch.zeros(3, dtype=torch.bfloat16)
    out = model_stock({"a": torch.zeros(3), "b": T(1, 2, 3)}, base, "w")
    assert out.dtype == torch.bfloat16 and torch.equal(out.float(), torch.zeros(3))
    assert torch.equal(model_stock({"a": T(1, 2)}, T(0, 0), "w"), T(1, 2))  # one expert: unchanged


# ---------------------------------------------------------------------------- SLERP
def test_slerp_vectors_quarter_circle():
    out = slerp_vectors(0.5, T(1, 0), T(0, 1))
    assert torch.allclose(out, T(math.sqrt(0.5), math.sqrt(0.5)), atol=1e-6)
    third = slerp_vectors(1 / 3, T(1, 0), T(0, 1))   # 30 degrees from the first
    assert torch.allclose(third, T(math.cos(math.pi / 6), math.sin(math.pi / 6)), atol=1e-6)


def test_slerp_endpoints_and_colinear_fallback_to_lerp():
    assert torch.allclose(slerp_vectors(0.0, T(1, 2), T(3, -1)), T(1, 2))
    assert torch.allclose(slerp_vectors(1.0, T(1, 2), T(3, -1)), T(3, -1), atol=1e-6)
    # colinear (cos = 1 > 0.9995): linear interpolation of magnitudes
    assert torch.allclose(slerp_vectors(0.25, T(1, 1), T(3, 3)), T(1.5, 1.5))


def test_slerp_in_weight_space_returns_a_task_vector():
    base = T(0, 0)
    # experts at (1,0) and (0,1) around a zero base: same as slerp of the task vectors
    out = slerp({"a": T(1, 0), "b": T(0, 1)}, base, "w", t=0.5)
    assert torch.allclose(out, T(math.sqrt(0.5), math.sqrt(0.5)), atol=1e-6)
    # a large shared base makes the weights nearly colinear: mergekit falls back to LERP = average
    base = T(100, 100)
    out = slerp({"a": T(1, 0), "b": T(0, 1)}, base, "w", t=0.5)
    assert torch.allclose(out, T(0.5, 0.5), atol=1e-4)


def test_slerp_task_space_keeps_the_norm():
    out = slerp({"a": T(2, 0), "b": T(0, 2)}, T(7, 7), "w", t=0.5, space="task")
    assert torch.allclose(out, T(math.sqrt(2), math.sqrt(2)), atol=1e-6)
    assert abs(out.norm().item() - 2.0) < 1e-5


def test_slerp_needs_two_experts():
    with pytest.raises(ValueError, match="exactly 2"):
        slerp({"a": T(1), "b": T(1), "c": T(1)}, T(0), "w")
    with pytest.raises(ValueError, match="space"):
        slerp({"a": T(1), "b": T(1)}, T(0), "w", space="nope")


def test_grid_contract_and_labels():
    grid = lm_baseline_grid(2)
    labels = [b.label for b in grid]
    assert labels == ["model_stock", "model_stock filter_wise=True", "slerp t=0.3", "slerp t=0.5",
                      "slerp t=0.7", "slerp t=0.5 space=task"]
    assert [b.label for b in lm_baseline_grid(3)] == labels[:2]
    base = torch.randn(4, 3)
    tvs = {"a": torch.randn(4, 3), "b": torch.randn(4, 3)}
    for b in grid:  # the candidate contract: (task_vectors, base, name) -> tensor like base
        out = b.fn(tvs, base, "w")
        assert out.shape == base.shape and out.dtype == base.dtype and torch.isfinite(out).all()
