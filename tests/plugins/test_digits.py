"""The digits domain (and the TensorDomain machinery it inherits)."""
import functools
import json
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from selfdev.engine.api import ConfigError, MergeOutcome
from selfdev.engine.plugins import get_registry
from selfdev.plugins.domains.baselines import task_arithmetic, ties
from selfdev.plugins.domains.digits import EXAMPLE, DigitsDomain
from selfdev.plugins.domains.tensors import TensorDomain

ROOT = Path(__file__).resolve().parents[2]


def test_prepare_summary(digits):
    s = digits.prepare()
    json.dumps(s)
    assert s["domain"] == "digits"
    assert s["params"] == 26122
    assert s["splits"] == {"train": 1078, "dev": 359, "test": 360}
    assert s["experts"] == {"g012": "012", "g345": "345", "g6789": "6789"}
    assert s["mergeable"] == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias",
                              "head.weight", "head.bias"]
    assert digits.expert_names() == ["g012", "g345", "g6789"]
    cache = Path(s["cache"])
    assert {p.name for p in cache.iterdir()} == {
        "seed.safetensors", "expert_g012.safetensors", "expert_g345.safetensors",
        "expert_g6789.safetensors", "meta.json"}
    assert json.loads((cache / "meta.json").read_text())["recipe"] == digits.recipe()


def test_second_prepare_loads_the_cache(digits, digits_home, make_ctx, monkeypatch):
    monkeypatch.setenv("SELFDEV_HOME", str(digits_home))
    again = DigitsDomain(make_ctx())
    s = again.prepare()
    assert s["cached"] is True and s["cache"] == digits.prepare()["cache"]
    assert again.mergeable == digits.mergeable and list(again.base) == list(digits.base)
    for k, v in digits.base.items():
        assert torch.equal(v, again.base[k])
    for e in digits.expert_names():
        for k, v in digits.task_vectors[e].items():
            assert torch.equal(v, again.task_vectors[e][k])


def test_recipe_hash_depends_on_every_option(make_ctx):
    default = DigitsDomain(make_ctx()).recipe_hash()
    variants = [dict(seed=1), dict(groups="01234,56789"), dict(base_frac=0.3), dict(base_epochs=3),
                dict(expert_epochs=5), dict(lr=2e-3), dict(batch_size=16), dict(hidden=64),
                dict(threads=2)]
    hashes = {DigitsDomain(make_ctx(), **v).recipe_hash() for v in variants}
    assert default not in hashes and len(hashes) == len(variants)


@pytest.mark.parametrize("options, match", [
    (dict(groups="012,2345"), "groups"), (dict(groups="0a1,23"), "groups"), (dict(groups="0123"), "groups"),
    (dict(base_frac=0), "base_frac"), (dict(expert_epochs=-1), "expert_epochs"),
    (dict(batch_size=0), "batch_size"),
])
def test_bad_options(make_ctx, options, match):
    with pytest.raises(ConfigError, match=match):
        DigitsDomain(make_ctx(), **options)


def test_build_is_deterministic_and_leaves_the_global_rng_alone(make_ctx):
    small = DigitsDomain(make_ctx(), base_epochs=1, expert_epochs=1, groups="01234,56789")
    state = torch.get_rng_state()
    threads = torch.get_num_threads()
    base1, experts1 = small._build()
    base2, experts2 = small._build()
    assert torch.equal(state, torch.get_rng_state())
    assert torch.get_num_threads() == threads
    assert list(experts1) == ["g01234", "g56789"]
    for k in base1:
        assert torch.equal(base1[k], base2[k])
        for e in experts1:
            assert torch.equal(experts1[e][k], experts2[e][k])
            assert not torch.equal(experts1[e][k], base1[k])


def test_splits(digits):
    sizes = {s: digits.labelled_split(s)[0].shape for s in ("train", "dev", "test")}
    assert sizes == {"train": (1078, 64), "dev": (359, 64), "test": (360, 64)}
    X, y = digits.labelled_split("dev")
    assert X.dtype == torch.float32 and y.dtype == torch.int64
    assert 0 <= X.min() and X.max() <= 1 and set(y.tolist()) == set(range(10))
    with pytest.raises(ConfigError, match="validation"):
        digits.labelled_split("validation")


def test_reference_numbers(digits, dev_score):
    """tiny-domains.md A2 (3 groups, base_frac 0.1, 2 epochs, seed 0): seed 24.2, experts
    30-39, TA λ0.5 55.2, TIES k0.2 λ0.5 73.5 on dev. Small tolerances for other CPUs."""
    seed = dev_score(digits.seed_model())
    assert seed == pytest.approx(24.2, abs=3)
    for name in digits.expert_names():
        assert 25 <= dev_score(digits.expert_model(name)) <= 45
    ta = dev_score(digits.apply_function(functools.partial(task_arithmetic, lam=0.5)).model)
    best_ties = dev_score(digits.apply_function(functools.partial(ties, density=0.2, lam=0.5)).model)
    assert ta == pytest.approx(55.2, abs=4)
    assert best_ties == pytest.approx(73.5, abs=4)
    assert seed < ta < best_ties


def test_zero_merge_is_the_seed_and_models_are_independent(digits):
    zero = digits.apply_function(lambda tv, base, name: torch.zeros_like(base))
    assert zero.ok and zero.duration_ms >= 0
    X, _ = digits.labelled_split("dev")
    with torch.no_grad():
        assert torch.equal(zero.model(X), digits.seed_model()(X))
    # a model handle owns its tensors: changing it leaves the domain's seed untouched
    with torch.no_grad():
        zero.model.fc1.weight.add_(1.0)
    assert not torch.equal(zero.model.fc1.weight, digits.base["fc1.weight"])


def test_apply_function_protects_the_domain_from_in_place_edits(digits):
    before = {k: v.clone() for k, v in digits.base.items()}
    tv_before = digits.task_vectors["g012"]["fc1.weight"].clone()

    def vandal(task_vectors, base, name):
        base.mul_(0)
        for tau in task_vectors.values():
            tau.mul_(0)
        return base

    assert digits.apply_function(vandal).ok
    for k, v in before.items():
        assert torch.equal(v, digits.base[k])
    assert torch.equal(tv_before, digits.task_vectors["g012"]["fc1.weight"])


@pytest.mark.parametrize("fn, match", [
    (lambda tv, base, name: base.flatten(), r"shape \(8192,\) for 'fc1.weight', expected \(128, 64\)"),
    (lambda tv, base, name: base.double(), "dtype torch.float64"),
    (lambda tv, base, name: base / 0.0 * 0.0, "non-finite values for 'fc1.weight'"),
    (lambda tv, base, name: [1.0], "returned list"),
    (lambda tv, base, name: tv["nope"], "KeyError: 'nope'"),
])
def test_apply_function_failures(digits, fn, match):
    out = digits.apply_function(fn)
    assert isinstance(out, MergeOutcome) and out.status == "error" and out.model is None
    assert re.search(match, out.reason), out.reason


def test_models_pickle(digits):
    model = digits.expert_model("g345")
    clone = pickle.loads(pickle.dumps(model))
    X, _ = digits.labelled_split("test")
    with torch.no_grad():
        assert torch.equal(model(X), clone(X))
    with pytest.raises(ConfigError, match="g999"):
        digits.expert_model("g999")


def test_prompt_and_its_example(digits, dev_score):
    prompt = digits.prompt()
    assert "def merge_models(task_vectors: dict[str, torch.Tensor], base: torch.Tensor, name: str)" in prompt
    assert "import only torch and math" in prompt
    flat = " ".join(prompt.split())
    assert "g012: classes {0, 1, 2}" in flat and "26,122 parameters" in flat
    assert "'fc1.weight', 'fc1.bias', 'fc2.weight'" in flat
    assert EXAMPLE in prompt and "```python" in prompt
    namespace = {}
    exec(compile(EXAMPLE, "example", "exec"), namespace)  # trusted test code
    example = dev_score(digits.apply_function(namespace["merge_models"]).model)
    ta = dev_score(digits.apply_function(functools.partial(task_arithmetic, lam=0.5)).model)
    assert example == ta


def test_baselines(digits):
    grid = digits.baselines()
    assert len(grid) == 18 and grid[0].method == "average"


def test_registered_and_cheap_to_import():
    assert get_registry().get("domain", "digits") is DigitsDomain
    code = ("import sys; import selfdev.plugins.domains.digits, selfdev.plugins.domains.baselines, "
            "selfdev.plugins.domains.tensors, selfdev.plugins.evaluators.accuracy, "
            "selfdev.plugins.generators.grammar; "
            "heavy = [m for m in ('torch', 'sklearn', 'numpy', 'safetensors') if m in sys.modules]; "
            "print(heavy); sys.exit(1 if heavy else 0)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


class Toy(TensorDomain):
    """Two parameters, only 'w' mergeable."""

    name = "toy"

    def prepare(self):
        self.base = {"w": torch.ones(2, 2), "frozen": torch.full((3,), 5.0)}
        self.task_vectors = {"a": {"w": torch.eye(2)}, "b": {"w": -torch.ones(2, 2)}}
        self.mergeable = ["w"]
        return {}

    def build_model(self, merged_tv):
        return self.merged_state(merged_tv)


def test_tensor_domain_merges_only_mergeable_parameters(make_ctx):
    toy = Toy(make_ctx())
    out = toy.apply_function(functools.partial(task_arithmetic, lam=1.0))
    assert out.ok
    torch.testing.assert_close(out.model["w"], torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    assert torch.equal(out.model["frozen"], torch.full((3,), 5.0))
    assert toy.expert_names() == ["a", "b"]
    toy.close()  # no sandbox was started: nothing to do


# -- through the real sandbox ------------------------------------------------------------------

TIES_CANDIDATE = '''\
import torch


def merge_models(task_vectors, base, name):
    """TIES, density 0.2, lambda 0.5 (the same operations as baselines.ties)."""
    trimmed = []
    for tau in task_vectors.values():
        tau = tau.float()
        n = tau.numel()
        keep = int(0.2 * n)
        if keep <= 0:
            trimmed.append(torch.zeros_like(tau))
            continue
        threshold = tau.abs().flatten().kthvalue(n - keep).values
        trimmed.append(torch.where(tau.abs() > threshold, tau, torch.zeros_like(tau)))
    stacked = torch.stack(trimmed)
    sign = torch.sign(stacked.sum(0))
    sign = torch.where(sign == 0, torch.ones_like(sign), sign)
    agree = (torch.sign(stacked) == sign) & (stacked != 0)
    merged = (stacked * agree).sum(0) / agree.sum(0).clamp(min=1)
    return (0.5 * merged).reshape(base.shape).to(base.dtype)
'''


@pytest.fixture(scope="module")
def sandboxed(digits):
    from selfdev.sandbox import SandboxUnavailable

    try:
        digits.sandbox()
    except SandboxUnavailable as exc:  # the sandbox's own tests report this loudly
        pytest.skip(f"sandbox unavailable here: {exc}")
    return digits


def test_sandboxed_ties_scores_like_the_baseline(sandboxed, dev_score):
    out = sandboxed.apply(TIES_CANDIDATE, timeout=10.0)
    assert out.ok, out.reason
    assert out.duration_ms > 0 and out.details.get("ast_hash")
    trusted = sandboxed.apply_function(functools.partial(ties, density=0.2, lam=0.5))
    assert dev_score(out.model) == dev_score(trusted.model)
    assert dev_score(out.model, "test") == dev_score(trusted.model, "test")
    for key, value in trusted.model.state_dict().items():
        torch.testing.assert_close(out.model.state_dict()[key], value)
    # the warm sandbox is reused
    assert sandboxed.sandbox() is sandboxed.sandbox()


FAILING = {
    "raises": ("def merge_models(task_vectors, base, name):\n"
               "    raise ValueError('no idea')\n", "error", r"ValueError.*no idea"),
    "nan": ("import torch\n\ndef merge_models(task_vectors, base, name):\n"
            "    return base * float('nan')\n", "rejected", r"non-finite"),
    "shape": ("import torch\n\ndef merge_models(task_vectors, base, name):\n"
              "    return base.flatten()[:3]\n", "rejected", r"shape \(3,\)"),
    "missing": ("import torch\n\ndef merge(task_vectors, base, name):\n"
                "    return base\n", "rejected", r"no top-level function merge_models"),
    "import": ("import os\n\ndef merge_models(task_vectors, base, name):\n"
               "    return base\n", "rejected", r"import of 'os' is not allowed"),
}


@pytest.mark.parametrize("case", sorted(FAILING))
def test_sandboxed_failures_are_precise(sandboxed, case):
    code, status, reason = FAILING[case]
    out = sandboxed.apply(code, timeout=10.0)
    assert out.status == status and out.model is None, (out.status, out.reason)
    assert re.search(reason, out.reason), out.reason


def test_sandboxed_timeout(sandboxed):
    code = ("import torch\n\ndef merge_models(task_vectors, base, name):\n"
            "    x = 0\n    while True:\n        x = x + 1\n")
    out = sandboxed.apply(code, timeout=0.5)
    assert out.status in ("timeout", "killed") and out.model is None
    assert sandboxed.apply(TIES_CANDIDATE, timeout=10.0).ok  # the sandbox recovers


def test_concurrent_candidates_each_take_their_own_warm_sandbox(sandboxed):
    """A sandbox runs one child at a time: two candidates in flight (executor workers) get two
    warm sandboxes, and a returned one is reused rather than started again."""
    first = sandboxed._checkout()
    second = sandboxed._checkout()
    try:
        assert first is not second
        assert first is sandboxed.sandbox()
    finally:
        sandboxed._checkin(second)
        sandboxed._checkin(first)
    again = sandboxed._checkout()
    sandboxed._checkin(again)
    assert again in (first, second)
    out = sandboxed.apply(TIES_CANDIDATE, timeout=10.0)
    assert out.ok, out.reason
