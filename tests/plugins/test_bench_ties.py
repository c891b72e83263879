"""``bench/TIES.py``, the TIES candidate that ``bench/merge.py`` times against mergekit, is the
``ties`` baseline: same tensors bit for bit in-process, and it passes the screen and runs in
the real sandbox (its sampled top-k uses slicing with a step, sort and kthvalue there)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from selfdev.plugins.domains.baselines import ties  # noqa: E402

TIES_PY = Path(__file__).resolve().parents[2] / "bench" / "TIES.py"


def _module():
    spec = importlib.util.spec_from_file_location("bench_ties", TIES_PY)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _inputs():
    gen = torch.Generator().manual_seed(0)
    base = {"big": torch.randn(600, 500, generator=gen),      # > 262,144 entries: sampled top-k
            "bias": torch.randn(64, generator=gen),
            "ties": torch.zeros(700, 400)}
    tvs = {e: {"big": 0.1 * torch.randn(600, 500, generator=gen),
               "bias": 0.1 * torch.randn(64, generator=gen),
               # bf16-like task vectors: many magnitudes tie at the threshold
               "ties": torch.randint(-6, 7, (700, 400), generator=gen).float() * 0.0078125}
           for e in ("x", "y", "z")}
    return base, tvs


def test_bench_ties_is_the_ties_baseline_bit_for_bit():
    mod = _module()
    assert (mod.DENSITY, mod.LAMBDA) == (0.2, 1.0)
    base, tvs = _inputs()
    for name, b in base.items():
        tv = {e: t[name] for e, t in tvs.items()}
        mine = mod.merge_models(tv, b, name)
        assert torch.equal(mine, ties(tv, b, name, density=0.2, lam=1.0)), name
        assert (mine != 0).any()
    half = mod.merge_models({e: t["bias"].bfloat16() for e, t in tvs.items()}, base["bias"].bfloat16(), "b")
    assert half.dtype == torch.bfloat16


def test_bench_ties_runs_in_the_sandbox():
    from selfdev.sandbox import Sandbox, SandboxUnavailable, screen

    code = TIES_PY.read_text()
    verdict = screen(code)
    assert verdict.ok, verdict.reason
    base, tvs = _inputs()
    try:
        sb = Sandbox(base, tvs, timeout=60.0)
    except SandboxUnavailable as exc:
        pytest.skip(f"sandbox unavailable here: {exc}")
    with sb:
        res = sb.run(code, timeout=60.0)
    assert res.status == "ok", res.reason
    for name, b in base.items():
        expected = ties({e: t[name] for e, t in tvs.items()}, b, name, density=0.2, lam=1.0)
        assert torch.equal(res.tensors[name], expected), name
