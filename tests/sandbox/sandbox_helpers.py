"""Helpers shared by the sandbox tests and bench/sandbox.py (a unique module name: tests/ has
no packages)."""
import os

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# digits-like shapes: a small MLP (~26k parameters), three experts
SHAPES = {"fc1.weight": (128, 64), "fc1.bias": (128,), "fc2.weight": (64, 128), "fc2.bias": (64,),
          "out.weight": (10, 64), "out.bias": (10,)}


def make_inputs(seed=0, shapes=SHAPES, experts=("e1", "e2", "e3")):
    g = torch.Generator().manual_seed(seed)
    base = {k: torch.randn(s, generator=g) for k, s in shapes.items()}
    tvs = {e: {k: 0.1 * torch.randn(s, generator=g) for k, s in shapes.items()} for e in experts}
    return base, tvs


def attack(body: str) -> str:
    """A full-Python candidate (for ``Sandbox(_os_only=True)``): run ``body`` at import time,
    then offer a valid merge."""
    return body + "\n\ndef merge_models(task_vectors, base, name):\n    return base * 0\n"


def out(res) -> str:
    """Everything the child wrote: print() goes straight to fd 1 when L2 is off."""
    return res.stdout + res.details.get("fd_output", "")


def src(body: str, imports: str = "import torch\nimport math\n") -> str:
    """Wrap a function body into a candidate module."""
    lines = body.strip("\n").splitlines()
    return imports + "def merge_models(task_vectors, base, name):\n" + "\n".join("    " + ln for ln in lines) + "\n"


# TIES merging (trim to the top 20% by magnitude, elect signs, average the agreeing values):
# a realistic candidate, run by test_sandbox_benign.py and timed by bench/sandbox.py
TIES = src("""
k = 0.2
tvs = torch.stack([task_vectors[e] for e in sorted(task_vectors)])
flat = tvs.abs().reshape(tvs.shape[0], -1)
n = flat.shape[1]
keep = max(1, int(n * k))
thr = flat.kthvalue(n - keep + 1, dim=1).values
for i in range(tvs.shape[0]):
    t = tvs[i]
    t[t.abs() < thr[i]] = 0
sign = torch.sign(tvs.sum(dim=0))
agree = (torch.sign(tvs) == sign) & (tvs != 0)
num = (tvs * agree).sum(dim=0)
den = agree.sum(dim=0).clamp(min=1)
return num / den
""")
