"""selfdev's human baselines against mergekit 0.1.5 on the same Hugging Face models.

Why: the baselines are what every discovered algorithm is compared with, so "TIES" in a
result table must mean what the community means by it, and mergekit is what the community
runs. For each method both have, mergekit merges tiny random Llamas (float32, built once per
session with transformers) through its Python API (``run_merge``, what ``mergekit-yaml``
calls), and the baseline is applied with the candidate contract the ``lm`` domain uses
(θ = θ_0 + fn(τ, θ_0, name), float32). Every tensor must agree to 1e-6.

Where the definitions differ, the deviation is measured instead (documented in
``plugins/domains/baselines.py`` and ``research/merging.md``):

* DARE draws random masks: mergekit from the global RNG in its own tensor order, selfdev from
  a generator seeded per (seed, tensor). The masks cannot match; what is compared is the rule
  applied to a mask (mergekit's mask is read back from its output): ``rescale="l1"`` is
  mergekit's rule to 1e-6, the paper's ``1/(1−p)`` differs by a measured factor near 1;
* TIES trimming when ``density · numel < 1`` (mergekit keeps one entry, selfdev none) and
  when magnitudes tie at the threshold (mergekit keeps exactly k, in argsort's arbitrary order;
  selfdev keeps the entries strictly above the k-th largest).

Skipped without mergekit (the ``bench`` extra, which ``dev`` includes).
"""
from __future__ import annotations

import glob
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.filterwarnings("ignore:numpy.core is deprecated:DeprecationWarning")
pytest.importorskip("mergekit", reason="mergekit is not installed: pip install -e '.[bench]' "
                                       "(the dev extra includes it)")

from selfdev.plugins.domains.baselines import (average, dare, dare_rescale, task_arithmetic,  # noqa: E402
                                               ties, trim_top_k)
from selfdev.plugins.domains.lm.baselines import model_stock, slerp  # noqa: E402

EXPERTS = ("x", "y", "z")
TOL = 1e-6


def _load(directory: Path) -> dict[str, "torch.Tensor"]:
    from safetensors.torch import load_file

    out: dict[str, torch.Tensor] = {}
    for f in sorted(glob.glob(str(directory / "*.safetensors"))):
        out.update(load_file(f))
    return out


@pytest.fixture(scope="session")
def hf_models(tmp_path_factory) -> dict[str, Path]:
    """Seed and three experts: a random tiny Llama (transformers' own init, untied, float32)
    and the seed plus 0.02·(shared + own) standard normal noise on every tensor,
    deterministic, built once a session.

    The shared part makes the task vectors correlate (cos ≈ 0.5), so Model Stock's t is far
    from 0; the noise is as large as the weights' own init (std 0.02), so the experts' weight
    vectors are far from colinear and SLERP takes its spherical branch on the matrices (the
    norms, 1 + noise, stay nearly colinear and take the linear branch): both are exercised.
    """
    from safetensors.torch import save_file
    from transformers import LlamaConfig, LlamaForCausalLM

    root = tmp_path_factory.mktemp("mergekit-models")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      tie_word_embeddings=False)
    LlamaForCausalLM(cfg).save_pretrained(root / "seed")
    seed = _load(root / "seed")
    config = (root / "seed" / "config.json").read_text()
    dirs = {"seed": root / "seed"}
    gen = torch.Generator().manual_seed(1)
    shared = {k: torch.randn(v.shape, generator=gen) for k, v in sorted(seed.items())}
    for name in EXPERTS:
        d = root / name
        d.mkdir()
        (d / "config.json").write_text(config)
        save_file({k: (v + 0.02 * (shared[k] + torch.randn(v.shape, generator=gen))).contiguous()
                   for k, v in sorted(seed.items())}, str(d / "model.safetensors"),
                  metadata={"format": "pt"})
        dirs[name] = d
    return dirs


@pytest.fixture(scope="session")
def weights(hf_models) -> dict[str, dict[str, "torch.Tensor"]]:
    return {k: _load(v) for k, v in hf_models.items()}


@pytest.fixture(scope="session")
def mergekit_merge(hf_models, tmp_path_factory):
    """``merge(config) -> {tensor name: tensor}``: mergekit's ``run_merge`` on the models,
    named in ``config`` by key (seed, x, y, z)."""
    from mergekit.config import MergeConfiguration
    from mergekit.merge import MergeOptions, run_merge

    out_root = tmp_path_factory.mktemp("mergekit-out")
    count = [0]

    def path(name: str) -> str:
        return str(hf_models[name])

    def merge(method: str, models: list[tuple[str, dict]], base: str | None,
              parameters: dict | None = None, seed: int | None = None) -> dict[str, torch.Tensor]:
        cfg = {"merge_method": method, "dtype": "float32",
               "models": [{"model": path(m), "parameters": p} for m, p in models]}
        if base is not None:
            cfg["base_model"] = path(base)
        if parameters:
            cfg["parameters"] = parameters
        count[0] += 1
        out = out_root / f"{count[0]}-{method}"
        run_merge(MergeConfiguration.model_validate(cfg), str(out),
                  options=MergeOptions(copy_tokenizer=False, write_model_card=False, quiet=True,
                                       random_seed=seed))
        return _load(out)

    return merge


def ours(weights, fn, experts=EXPERTS, **params) -> dict[str, "torch.Tensor"]:
    """The ``lm`` domain's contract: θ_0 + fn({e: θ_e − θ_0}, θ_0, name), float32."""
    base = weights["seed"]
    return {k: b + fn({e: weights[e][k] - b for e in experts}, b, k, **params)
            for k, b in base.items()}


def max_diff(a: dict, b: dict) -> tuple[float, str]:
    """The largest |a − b| over all tensors, and the tensor where it is."""
    assert sorted(a) == sorted(b), "the two merges hold different tensors"
    for k in a:
        assert a[k].shape == b[k].shape and a[k].dtype == b[k].dtype == torch.float32, k
    return max(((a[k] - b[k]).abs().max().item(), k) for k in a)


W1 = {"weight": 1.0}

# (id, mergekit method, models with their parameters, base, global parameters, ours, our params)
CASES = [
    ("linear", "linear", [(e, W1) for e in EXPERTS], None, None, average, {}),
    ("task_arithmetic", "task_arithmetic", [(e, W1) for e in EXPERTS], "seed", {"lambda": 0.7},
     task_arithmetic, {"lam": 0.7}),
    ("ties-d0.2-l1.5", "ties", [(e, {"weight": 1.0, "density": 0.2}) for e in EXPERTS], "seed",
     {"lambda": 1.5}, ties, {"density": 0.2, "lam": 1.5}),
    ("ties-d0.5-l1", "ties", [(e, {"weight": 1.0, "density": 0.5}) for e in EXPERTS], "seed",
     None, ties, {"density": 0.5, "lam": 1.0}),
    ("model_stock", "model_stock", [(e, {}) for e in EXPERTS], "seed", None, model_stock, {}),
    ("model_stock-filter_wise", "model_stock", [(e, {}) for e in EXPERTS], "seed",
     {"filter_wise": True}, model_stock, {"filter_wise": True}),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_baseline_equals_mergekit(case, weights, mergekit_merge):
    _, method, models, base, params, fn, our_params = case
    theirs = mergekit_merge(method, models, base, params)
    mine = ours(weights, fn, **our_params)
    diff, where = max_diff(mine, theirs)
    assert diff <= TOL, f"max |difference| {diff:.3g} at {where}"
    # not vacuous: the merge moved every tensor away from the seed
    assert all((mine[k] - weights["seed"][k]).abs().max() > 1e-3 for k in mine)


def test_slerp_equals_mergekit_on_both_branches(weights, mergekit_merge):
    """mergekit's ``slerp`` interpolates from its base model to the other one, so base = x;
    selfdev's ``slerp`` (weight space) goes from the first expert to the second."""
    theirs = mergekit_merge("slerp", [("x", {}), ("y", {})], "x", {"t": 0.3})
    mine = ours(weights, slerp, experts=("x", "y"), t=0.3)
    diff, where = max_diff(mine, theirs)
    assert diff <= TOL, f"max |difference| {diff:.3g} at {where}"
    cos = {k: torch.nn.functional.cosine_similarity(weights["x"][k].flatten(),
                                                    weights["y"][k].flatten(), dim=0).item()
           for k in mine}
    assert any(c > 0.9995 for c in cos.values()), "no tensor took the linear branch"
    assert any(c < 0.9 for c in cos.values()), "no tensor took the spherical branch"


def test_dare_rescale_rules_against_mergekit(weights, mergekit_merge):
    """mergekit's ``dare_linear`` keeps each entry with probability ``density`` and rescales the
    kept ones to the unmasked tensor's L1 norm. Its mask is read back from its output (one
    expert, λ 1: an entry is kept iff the output differs from the seed); applied to that mask,
    ``dare_rescale(..., "l1")`` gives mergekit's tensor to 1e-6, while the paper's 1/(1−p),
    selfdev's default, differs by a per-tensor factor that stays near 1.
    """
    density = 0.7
    theirs = mergekit_merge("dare_linear", [("x", {"weight": 1.0, "density": density})], "seed",
                            None, seed=0)
    kept = total = 0
    factors = []
    for k, b in weights["seed"].items():
        tau = weights["x"][k] - b
        mask = (theirs[k] != b).to(torch.float32)
        kept += int(mask.sum())
        total += mask.numel()
        l1 = b + dare_rescale(tau * mask, tau, 1 - density, "l1")
        assert (l1 - theirs[k]).abs().max().item() <= TOL, k
        inverse = dare_rescale(tau * mask, tau, 1 - density, "inverse")
        factor = (tau.abs().sum() / (tau * mask).abs().sum()).item() * density
        if tau.numel() >= 1024:  # a 32-entry norm's factor is as noisy as its 32 draws
            factors.append(factor)
        if abs(factor - 1) > 1e-3:
            assert (b + inverse - theirs[k]).abs().max().item() > TOL, k  # the rules differ
    # the mask is Bernoulli(density): its mean within 4 standard deviations
    sd = (density * (1 - density) / total) ** 0.5
    assert abs(kept / total - density) < 4 * sd
    # E[‖m⊙τ‖₁] = density·‖τ‖₁: the factor between the two rules is 1 on average, not per draw
    assert factors and all(0.9 < f < 1.1 for f in factors)
    assert any(abs(f - 1) > 1e-3 for f in factors)
    # selfdev's own draw, with mergekit's rule, follows the same law: seeded, not mergekit's mask
    mine = ours(weights, dare, experts=("x",), p=1 - density, lam=1.0, seed=0, rescale="l1")
    for k, b in weights["seed"].items():
        tau = weights["x"][k] - b
        my_mask = (mine[k] != b).to(torch.float32)
        expected = b + dare_rescale(tau * my_mask, tau, 1 - density, "l1")
        assert (mine[k] - expected).abs().max().item() <= TOL
    assert any(not torch.equal(mine[k] != b, theirs[k] != b) for k, b in weights["seed"].items())


def test_ties_trimming_deviations_from_mergekit():
    """Two documented corner cases of the per-tensor top-k (``trim_top_k``)."""
    from mergekit.sparsify import magnitude

    # density · numel < 1: mergekit keeps one entry, selfdev keeps none
    v = torch.tensor([0.5, -3.0, 1.0, 2.0])
    assert int((magnitude(v, 0.2) != 0).sum()) == 1
    assert int((trim_top_k(v, 0.2) != 0).sum()) == 0
    # magnitudes tied at the threshold (common for bf16 weights): mergekit keeps exactly
    # k = 2 (which of the tied entries is argsort's choice), selfdev keeps only those above
    w = torch.tensor([4.0, 1.0, -1.0, 1.0, 0.5])
    assert int((magnitude(w, 0.4) != 0).sum()) == 2
    assert torch.equal(trim_top_k(w, 0.4), torch.tensor([4.0, 0.0, 0.0, 0.0, 0.0]))
    # without ties the two agree entry for entry
    x = torch.randn(50, 40, generator=torch.Generator().manual_seed(0))
    for density in (0.05, 0.2, 0.5, 0.9):
        assert torch.equal(magnitude(x, density), trim_top_k(x, density))


def test_mergekit_is_the_pinned_version():
    """The equality above is with mergekit 0.1.5 (the ``bench`` extra pins it)."""
    from importlib.metadata import version

    assert version("mergekit") == "0.1.5"
