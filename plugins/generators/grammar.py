"""The ``grammar`` generator: random ``merge_models`` programs composed from merge primitives.

A control factory with no language model. Each program is a pipeline written the way a person
or an LLM would write it (comments, a docstring, readable names)::

    preprocess each task vector   trim by magnitude (kthvalue / topk / quantile), DARE dropout with
                                  a seeded torch.Generator, outlier clipping, norm equalisation,
                                  removing the shared component, row-norm balancing
    combine the experts           (weighted) sums and means with norm/softmax/cosine/energy weights,
                                  TIES-style sign election (by mass or by vote) with a disjoint mean
                                  or sum, max-magnitude selection, consensus masks, agreement
                                  scaling, median, interpolation, the paper's row-mean fold,
                                  magnitude attention, ...
    postprocess                   norm matching, quantile clipping, sparsifying, residual mixing,
                                  soft (tanh) clipping
    scale per layer               one coefficient, or rules on ``name`` / ``base.dim()`` (head,
                                  bias, input layer), or a different combine rule for the head

Choices are drawn with the sampling temperature: option logits are divided by it and
coefficients spread with it, so a higher temperature gives more primitives, rarer ones and more
extreme coefficients. A fraction ``broken_rate × temperature`` of the programs is broken the
way LLM output is (a typo'd name, a 0/0 division, a wrong reduction axis, a missing return, a
forbidden import, a truncated answer), so the control sees the same failure kinds.

Programs use only ``torch`` and ``math``, no names with a leading underscore and no
``getattr``/``exec``-style builtins. ``corpus(n, seed)`` returns the code of ``n`` working programs
(the pretraining corpus of the tiny factory).
"""
from __future__ import annotations

import math
import random
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from selfdev import Completion, Field, Generator, derive_seed
from selfdev import hookimpl

SIGNATURE = ("def merge_models(task_vectors: dict[str, torch.Tensor], base: torch.Tensor, "
             "name: str) -> torch.Tensor:")

#: variable naming schemes: (list of task vectors, one task vector, the merged result)
NAMINGS = [
    ("taus", "tau", "merged"),
    ("deltas", "delta", "result"),
    ("vectors", "vec", "combined"),
    ("updates", "update", "merged_update"),
    ("task_list", "tv", "out"),
]

BROKEN_KINDS = ("typo", "nan_division", "wrong_axis", "missing_return", "bad_import", "truncated")


# --------------------------------------------------------------------------------------------
# sampling


class Sampler:
    """Temperature-shaped random choices (logits / T, coefficients spread × T)."""

    def __init__(self, rng: random.Random, temperature: float) -> None:
        self.rng = rng
        self.t = max(float(temperature), 0.05)

    def pick(self, logits: dict[str, float]) -> str:
        names = list(logits)
        top = max(logits.values())
        weights = [math.exp((logits[k] - top) / self.t) for k in names]
        return self.rng.choices(names, weights)[0]

    def chance(self, p: float) -> bool:
        """True with probability ``p`` at T = 1; the temperature pushes it towards 1/2."""
        p = min(max(p, 1e-6), 1 - 1e-6)
        return self.pick({"yes": math.log(p), "no": math.log(1 - p)}) == "yes"

    def coef(self, center: float, spread: float, lo: float, hi: float, step: float = 0.05) -> float:
        value = center + self.rng.gauss(0.0, 1.0) * spread * self.t
        value = min(hi, max(lo, value))
        value = round(value / step) * step
        return float(f"{min(hi, max(lo, value)):.4g}")

    def integer(self, logits: dict[int, float]) -> int:
        return int(self.pick({str(k): v for k, v in logits.items()}))


def num(value: float) -> str:
    """A float literal as a person writes it: 0.5, 1.0, 0.25, 3.0."""
    text = f"{value:.4g}"
    if "e" in text:
        text = repr(float(value))
    if "." not in text and "e" not in text:
        text += ".0"
    return text


def pct(value: float) -> str:
    return f"{round(100 * value):d}%"


# --------------------------------------------------------------------------------------------
# the program being built


@dataclass
class Program:
    L: str
    x: str
    M: str
    helpers: list[str] = field(default_factory=list)      # nested helper functions (lines)
    body: list[str] = field(default_factory=list)
    summary: list[str] = field(default_factory=list)       # docstring phrases
    primitives: list[str] = field(default_factory=list)
    uses_math: bool = False
    has_stacked: bool = False

    def add(self, lines: str, indent: int = 0) -> None:
        text = textwrap.dedent(lines).strip("\n").format(L=self.L, x=self.x, M=self.M)
        pad = " " * (4 + indent)
        for line in text.splitlines():
            self.body.append(pad + line if line.strip() else "")

    def blank(self) -> None:
        if self.body and self.body[-1] != "":
            self.body.append("")


# --------------------------------------------------------------------------------------------
# preprocessing: each task vector on its own


def pre_trim_kth(p: Program, s: Sampler) -> None:
    d = s.coef(0.25, 0.15, 0.05, 0.9)
    p.add(f"""
        # Trim: keep only the top {pct(d)} of each task vector by magnitude.
        trimmed = []
        for {{x}} in {{L}}:
            k = int({num(d)} * {{x}}.numel())
            if k < 1:
                trimmed.append(torch.zeros_like({{x}}))
            else:
                threshold = {{x}}.abs().flatten().kthvalue({{x}}.numel() - k + 1).values
                trimmed.append(torch.where({{x}}.abs() >= threshold, {{x}}, torch.zeros_like({{x}})))
        {{L}} = trimmed
    """)
    p.summary.append(f"keep the top {pct(d)} of each task vector by magnitude")
    p.primitives.append(f"trim_kthvalue:{d}")


def pre_trim_topk(p: Program, s: Sampler) -> None:
    d = s.coef(0.25, 0.15, 0.05, 0.9)
    p.helpers += [
        "def keep_largest(t, density):",
        '    """Zero every entry except the largest-magnitude fraction `density`."""',
        "    k = int(density * t.numel()) + 1",
        "    threshold = torch.topk(t.abs().flatten(), k).values[-1]",
        "    return torch.where(t.abs() >= threshold, t, torch.zeros_like(t))",
    ]
    p.add(f"""
        # Sparsify each task vector before combining them.
        {{L}} = [keep_largest({{x}}, {num(d)}) for {{x}} in {{L}}]
    """)
    p.summary.append(f"sparsify each task vector to its largest {pct(d)} entries")
    p.primitives.append(f"trim_topk:{d}")


def pre_trim_quantile(p: Program, s: Sampler) -> None:
    q = s.coef(0.7, 0.15, 0.1, 0.95)
    p.add(f"""
        # Drop small updates: zero everything below the {num(q)} quantile of |tau|.
        pruned = []
        for {{x}} in {{L}}:
            cutoff = torch.quantile({{x}}.abs().flatten(), {num(q)})
            pruned.append({{x}} * ({{x}}.abs() >= cutoff))
        {{L}} = pruned
    """)
    p.summary.append(f"drop updates below the {num(q)} magnitude quantile")
    p.primitives.append(f"trim_quantile:{q}")


def pre_dare(p: Program, s: Sampler) -> None:
    drop = s.coef(0.4, 0.2, 0.05, 0.9)
    salt = s.rng.choice([0, 1, 7, 42, 123, 2024])
    keep = 1 - drop
    if s.rng.random() < 0.5:
        p.add(f"""
            # DARE: randomly drop {pct(drop)} of every update and rescale the survivors.
            generator = torch.Generator().manual_seed({salt} + len(name))
            rescaled = []
            for {{x}} in {{L}}:
                mask = torch.rand({{x}}.shape, generator=generator) >= {num(drop)}
                rescaled.append({{x}} * mask / {num(keep)})
            {{L}} = rescaled
        """)
    else:
        p.add(f"""
            # Random drop-and-rescale (DARE), seeded per parameter so the merge is reproducible.
            generator = torch.Generator()
            generator.manual_seed({salt} + 31 * len(name) + base.numel())
            rescaled = []
            for {{x}} in {{L}}:
                keep = torch.bernoulli(torch.full_like({{x}}, {num(keep)}), generator=generator)
                rescaled.append({{x}} * keep / {num(keep)})
            {{L}} = rescaled
        """)
    p.summary.append(f"randomly drop {pct(drop)} of each update and rescale (DARE)")
    p.primitives.append(f"dare:{drop}")


def pre_clip(p: Program, s: Sampler) -> None:
    c = s.coef(3.0, 1.5, 1.0, 10.0, step=0.5)
    p.add(f"""
        # Clip outliers at {num(c)}x the mean absolute update of each expert.
        clipped = []
        for {{x}} in {{L}}:
            limit = {num(c)} * {{x}}.abs().mean()
            clipped.append(torch.clamp({{x}}, -limit, limit))
        {{L}} = clipped
    """)
    p.summary.append(f"clip outliers at {num(c)}x the mean absolute update")
    p.primitives.append(f"clip:{c}")


def pre_equalize(p: Program, s: Sampler) -> None:
    p.add("""
        # Put every task vector on the same scale (the average norm) so no expert dominates.
        norms = [{x}.norm() for {x} in {L}]
        target = torch.stack(norms).mean()
        {L} = [{L}[i] * (target / (norms[i] + 1e-8)) for i in range(len({L}))]
    """)
    p.summary.append("equalise the experts' norms")
    p.primitives.append("equalize_norms")


def pre_center(p: Program, s: Sampler) -> None:
    a = s.coef(0.3, 0.2, 0.05, 1.0)
    p.add(f"""
        # Remove part of the component shared by all experts (summing would count it twice).
        shared = torch.stack({{L}}).mean(dim=0)
        {{L}} = [{{x}} - {num(a)} * shared for {{x}} in {{L}}]
    """)
    p.summary.append(f"subtract {num(a)}x the shared component")
    p.primitives.append(f"center:{a}")


def pre_rownorm(p: Program, s: Sampler) -> None:
    p.add("""
        # Row balance: give every output row of a weight matrix the same update norm.
        if base.dim() == 2:
            balanced = []
            for {x} in {L}:
                row_norms = {x}.norm(dim=1, keepdim=True)
                balanced.append({x} / (row_norms + 1e-8) * row_norms.mean())
            {L} = balanced
    """)
    p.summary.append("balance the row norms of weight matrices")
    p.primitives.append("row_balance")


PRE: dict[str, tuple[Callable[[Program, Sampler], None], float, str]] = {
    # name: (builder, logit, exclusive group)
    "trim_kth": (pre_trim_kth, 0.8, "trim"),
    "trim_topk": (pre_trim_topk, 0.4, "trim"),
    "trim_quantile": (pre_trim_quantile, 0.3, "trim"),
    "dare": (pre_dare, 0.3, "dare"),
    "clip": (pre_clip, 0.0, "clip"),
    "equalize": (pre_equalize, 0.0, "scale"),
    "center": (pre_center, -0.4, "center"),
    "rownorm": (pre_rownorm, -0.6, "scale"),
}


# --------------------------------------------------------------------------------------------
# expert weights (for weighted combines): a 1-D tensor `weights` summing to 1


def weights_code(p: Program, s: Sampler, indent: int) -> str:
    kind = s.pick({"uniform": -0.5, "norm": 0.5, "softmax": 0.3, "inverse": -0.2,
                   "cosine": 0.3, "energy": 0.1, "decay": -0.4})
    if kind == "uniform":
        p.add("weights = torch.ones(len({L})) / len({L})", indent)
        desc = "equal weights"
    elif kind == "norm":
        p.add("""
            # Experts that moved further get a larger say.
            norms = torch.stack([{x}.norm() for {x} in {L}])
            weights = norms / (norms.sum() + 1e-8)
        """, indent)
        desc = "weights proportional to the task-vector norms"
    elif kind == "softmax":
        t = s.coef(0.5, 0.3, 0.1, 2.0)
        p.add(f"""
            # Softmax over relative norms (temperature {num(t)}).
            norms = torch.stack([{{x}}.norm() for {{x}} in {{L}}])
            weights = torch.softmax(norms / (norms.mean() + 1e-8) / {num(t)}, dim=0)
        """, indent)
        desc = "softmax weights over the norms"
    elif kind == "inverse":
        p.add("""
            # Smaller, more conservative updates get larger weights.
            norms = torch.stack([{x}.norm() for {x} in {L}])
            weights = 1.0 / (norms + 1e-8)
            weights = weights / weights.sum()
        """, indent)
        desc = "inverse-norm weights"
    elif kind == "cosine":
        p.add("""
            # Weight each expert by how well it agrees with the average direction.
            mean_direction = torch.stack({L}).mean(dim=0).flatten()
            similarities = torch.stack([
                torch.cosine_similarity({x}.flatten(), mean_direction, dim=0) for {x} in {L}
            ])
            weights = torch.clamp(similarities, min=0.0) + 1e-3
            weights = weights / weights.sum()
        """, indent)
        desc = "weights from the cosine to the mean direction"
    elif kind == "energy":
        p.add("""
            # Weight by the energy (mean squared update) of each expert.
            energy = torch.stack([({x} ** 2).mean() for {x} in {L}])
            weights = energy / (energy.sum() + 1e-12)
        """, indent)
        desc = "energy-based weights"
    else:
        g = s.coef(0.8, 0.15, 0.3, 1.0)
        p.add(f"""
            # Geometrically decaying weights in expert order.
            weights = torch.tensor([{num(g)} ** i for i in range(len({{L}}))])
            weights = weights / weights.sum()
        """, indent)
        desc = f"decaying weights ({num(g)}^i)"
    p.primitives.append(f"weights:{kind}")
    return desc


# --------------------------------------------------------------------------------------------
# combining the experts into `M` (unscaled); each returns (description, natural scale centre)


def stack(p: Program, indent: int) -> None:
    p.add("stacked = torch.stack({L})", indent)


def comb_weighted(p: Program, s: Sampler, indent: int) -> tuple[str, float]:
    desc = weights_code(p, s, indent)
    if s.rng.random() < 0.5:
        p.add("""
            {M} = torch.zeros_like({L}[0])
            for i in range(len({L})):
                {M} = {M} + weights[i] * {L}[i]
        """, indent)
    else:
        stack(p, indent)
        p.add("""
            shape = [len({L})] + [1] * base.dim()
            {M} = (weights.reshape(shape) * stacked).sum(dim=0)
        """, indent)
    p.primitives.append("weighted_sum")
    return f"a weighted average with {desc}", 1.5


def comb_sum(p: Program, s: Sampler, indent: int) -> tuple[str, float]:
    p.add("{M} = torch.stack({L}).sum(dim=0)", indent)
    p.primitives.append("sum")
    return "the sum of the task vectors (task arithmetic)", 0.5


def comb_mean(p: Program, s: Sampler, indent: int) -> tuple[str, float]:
    p.add("{M} = torch.stack({L}).mean(dim=0)", indent)
    p.primitives.append("mean")
    return "the mean task vector", 1.5


def _elect(p: Program, s: Sampler, indent: int, by: str) -> None:
    stack(p, indent)
    if by == "mass":
        p.add("""
            # Elect a sign per entry from the total mass of the updates.
            sign = torch.sign(stacked.sum(dim=0))
        """, indent)
    else:
        p.add("""
            # Elect a sign per entry by majority vote of the experts.
            sign = torch.sign(torch.sign(stacked).sum(dim=0))
        """, indent)
    p.add("""
        sign = torch.where(sign == 0, torch.ones_like(sign), sign)
        agree = (torch.sign(stacked) == sign) & (stacked != 0)
    """, indent)


def comb_ties_mean(p: Program, s: Sampler, indent: int) -> tuple[str, float]:
    by = s.pick({"mass": 0.6, "vote": 0.0})
    _elect(p, s, indent, by)
    p.add("""
        # Disjoint mean: average only the updates that agree with the elected sign.
        {M} = (stacked * agree).sum(dim=0) / agree.sum(dim=0).clamp(min=1)
    """, indent)
    p.primitives.append(f"elect_{by}+disjoint_mean")
    return f"a sign election by {by} and the disjoint mean of the agreeing updates", 0.7


def comb_ties_sum(p: Program, s: Sampler, indent: int) -> tuple[str, float]:
    by = s.pick({"mass": 0.6, "vote": 0.0})
    _elect(p, s, indent, by)
    p.add("{M} = (stacked * agree).sum(dim=0)", indent)
    p.primitives.append(f"elect_{by}+sum")
    return f"a sign election by {by} and the sum of the agreeing updates", 0.5


def comb_max_magnitude(p: Program, s: Sampler, indent: int) -> tuple[str, float]:
    stack(p, indent)
    p.add("""
        # For every entry keep the update with the largest magnitude.
        index = stacked.abs().argmax(dim=0, keepdim=True)
        {M} = torch.gather(stacked, 0, index).squeeze(0)
    """, indent)
    p.primitives.append("max_magnitude")
    return "the largest-magnitude update per entry", 0.7


def comb_consensus(p: Program, s: Sampler, indent: int) -> tuple[str, float]:
    thr = s.coef(0.6, 0.25, 0.1, 1.0)
    stack(p, indent)
    p.add(f"""
        # Consensus mask: keep entries where the experts agree on the sign.
        agreement = torch.sign(stacked).mean(dim=0).abs()
        {{M}} = stacked.mean(dim=0) * (agreement >= {num(thr)})
    """, indent)
    p.primitives.append(f"consensus:{thr}")
    return f"the mean over entries with sign agreement >= {num(thr)}", 1.5


def comb_soft_agreement(p: Program, s: Sampler, indent: int) -> tuple[str, float]:
    power = s.coef(1.0, 0.5, 0.5, 3.0, step=0.5)
    stack(p, indent)
    p.add(f"""
        # Scale the summed update by how strongly the experts agree on its sign.
        agreement = torch.sign(stacked).mean(dim=0).abs()
        {{M}} = stacked.sum(dim=0) * agreement ** {num(power)}
    """, indent)
    p.primitives.append(f"soft_agreement:{power}")
    return "the sum damped by the sign agreement", 0.6


def comb_median(p: Program, s: Sampler, indent: int) -> tuple[str, float]:
    p.add("""
        # The element-wise median is robust to one expert pulling in its own direction.
        {M} = torch.median(torch.stack({L}), dim=0).values
    """, indent)
    p.primitives.append("median")
    return "the element-wise median", 1.5


def comb_interpolate(p: Program, s: Sampler, indent: int) -> tuple[str, float]:
    a = s.coef(0.5, 0.25, 0.0, 1.0)
    stack(p, indent)
    p.add(f"""
        # Interpolate between the mean and the strongest update per entry.
        mean_update = stacked.mean(dim=0)
        index = stacked.abs().argmax(dim=0, keepdim=True)
        strongest = torch.gather(stacked, 0, index).squeeze(0)
        {{M}} = {num(a)} * strongest + {num(1 - a)} * mean_update
    """, indent)
    p.primitives.append(f"interpolate:{a}")
    return f"an interpolation ({num(a)}) between the strongest and the mean update", 1.0


def comb_fold_rowmean(p: Program, s: Sampler, indent: int) -> tuple[str, float]:
    a = s.coef(0.5, 0.2, 0.1, 0.9)
    p.add(f"""
        # Fold the experts in one by one, mixing in the row means of each new expert.
        {{M}} = {{L}}[0].clone()
        dim = 0 if {{M}}.dim() == 1 else 1
        for {{x}} in {{L}}[1:]:
            {{M}} = {num(1 - a)} * {{M}} + {num(a)} * torch.mean({{x}}, dim=dim, keepdim=True)
    """, indent)
    p.primitives.append(f"fold_rowmean:{a}")
    return "a running fold with the experts' row means", 1.0


def comb_magnitude_attention(p: Program, s: Sampler, indent: int) -> tuple[str, float]:
    beta = s.coef(2.0, 1.0, 0.5, 8.0, step=0.5)
    stack(p, indent)
    p.add(f"""
        # Attention over experts per entry: larger updates get exponentially more weight.
        scores = stacked.abs() / (stacked.abs().mean() + 1e-8)
        attention = torch.softmax({num(beta)} * scores, dim=0)
        {{M}} = (attention * stacked).sum(dim=0)
    """, indent)
    p.primitives.append(f"magnitude_attention:{beta}")
    return "a per-entry softmax attention over the experts' magnitudes", 1.2


def comb_product(p: Program, s: Sampler, indent: int) -> tuple[str, float]:
    p.add("""
        # Multiplicative interaction: only entries that all experts change survive.
        {M} = {L}[0].clone()
        for {x} in {L}[1:]:
            {M} = {M} * {x}
    """, indent)
    p.primitives.append("product")
    return "the element-wise product of the updates", 1.0


COMBINE: dict[str, tuple[Callable[[Program, Sampler, int], tuple[str, float]], float]] = {
    "ties_mean": (comb_ties_mean, 0.8),
    "ties_sum": (comb_ties_sum, 0.3),
    "weighted": (comb_weighted, 0.6),
    "sum": (comb_sum, 0.4),
    "mean": (comb_mean, 0.2),
    "max_magnitude": (comb_max_magnitude, 0.4),
    "consensus": (comb_consensus, 0.2),
    "soft_agreement": (comb_soft_agreement, 0.2),
    "median": (comb_median, 0.0),
    "interpolate": (comb_interpolate, 0.3),
    "fold_rowmean": (comb_fold_rowmean, -0.6),
    "magnitude_attention": (comb_magnitude_attention, 0.0),
    "product": (comb_product, -1.6),
}


# --------------------------------------------------------------------------------------------
# postprocessing of the merged update


def post_norm_match(p: Program, s: Sampler) -> None:
    f = s.coef(1.0, 0.3, 0.3, 2.5)
    p.add(f"""
        # Rescale the merge to {num(f)}x the average norm of the experts' updates.
        target_norm = {num(f)} * torch.stack([{{x}}.norm() for {{x}} in {{L}}]).mean()
        {{M}} = {{M}} * (target_norm / ({{M}}.norm() + 1e-8))
    """)
    p.summary.append(f"match {num(f)}x the mean expert norm")
    p.primitives.append(f"norm_match:{f}")


def post_clip_quantile(p: Program, s: Sampler) -> None:
    q = s.coef(0.98, 0.03, 0.8, 0.999, step=0.005)
    p.add(f"""
        # Clamp the few extreme entries at the {num(q)} quantile.
        limit = torch.quantile({{M}}.abs().flatten(), {num(q)})
        {{M}} = torch.clamp({{M}}, -limit, limit)
    """)
    p.summary.append(f"clamp at the {num(q)} quantile")
    p.primitives.append(f"clip_quantile:{q}")


def post_sparsify(p: Program, s: Sampler) -> None:
    d = s.coef(0.5, 0.2, 0.1, 0.95)
    p.add(f"""
        # Keep only the strongest {pct(d)} of the merged update.
        keep = int({num(d)} * {{M}}.numel()) + 1
        threshold = {{M}}.abs().flatten().kthvalue({{M}}.numel() - keep + 1).values
        {{M}} = torch.where({{M}}.abs() >= threshold, {{M}}, torch.zeros_like({{M}}))
    """)
    p.summary.append(f"keep the strongest {pct(d)} of the result")
    p.primitives.append(f"sparsify:{d}")


def post_residual(p: Program, s: Sampler) -> None:
    b = s.coef(0.3, 0.2, 0.05, 0.9)
    p.add(f"""
        # Blend a little of the plain average back in for stability.
        {{M}} = {num(1 - b)} * {{M}} + {num(b)} * torch.stack({{L}}).mean(dim=0)
    """)
    p.summary.append(f"blend in {num(b)}x the plain average")
    p.primitives.append(f"residual_mix:{b}")


def post_tanh(p: Program, s: Sampler) -> None:
    c = s.coef(3.0, 1.5, 1.0, 10.0, step=0.5)
    p.add(f"""
        # Soft clipping: large entries saturate smoothly at {num(c)}x the mean magnitude.
        cap = {num(c)} * {{M}}.abs().mean() + 1e-8
        {{M}} = cap * torch.tanh({{M}} / cap)
    """)
    p.summary.append("soft-clip with tanh")
    p.primitives.append(f"tanh_clip:{c}")


POST: dict[str, tuple[Callable[[Program, Sampler], None], float]] = {
    "norm_match": (post_norm_match, 0.2),
    "clip_quantile": (post_clip_quantile, 0.1),
    "sparsify": (post_sparsify, 0.0),
    "residual": (post_residual, 0.1),
    "tanh": (post_tanh, -0.2),
}


# --------------------------------------------------------------------------------------------
# assembling a program


def _scale(s: Sampler, centre: float) -> float:
    return s.coef(centre, 0.35 * centre + 0.1, 0.05, 4.0)


def build_program(rng: random.Random, temperature: float) -> Program:
    """Sample one working program."""
    s = Sampler(rng, temperature)
    L, x, M = rng.choice(NAMINGS)
    p = Program(L, x, M)
    p.add("{L} = [{x}.float() for {x} in task_vectors.values()]")
    if s.chance(0.3):
        p.add("""
            if len({L}) == 0:
                return torch.zeros_like(base)
        """)
    p.blank()

    # preprocessing
    n_pre = s.integer({0: 0.3, 1: 0.7, 2: 0.0, 3: -1.2})
    used: set[str] = set()
    for _ in range(n_pre):
        options = {k: logit for k, (fn, logit, group) in PRE.items() if group not in used}
        if not options:
            break
        kind = s.pick(options)
        builder, _logit, group = PRE[kind]
        used.add(group)
        builder(p, s)
        p.blank()

    # combine (optionally a different rule for the classifier head / output layer)
    rule = s.pick({"single": 1.0, "head_scale": -0.2, "bias_scale": -0.5, "head_bias": -0.6,
                   "input_scale": -1.2, "head_branch": -0.5, "sqrt_n": -1.0})
    if rule == "head_branch":
        kind_head = s.pick({k: v for k, (fn, v) in COMBINE.items()})
        kind_rest = s.pick({k: v for k, (fn, v) in COMBINE.items() if k != kind_head})
        head_test = rng.choice(['"head" in name', 'name.startswith("head")',
                                '"head" in name or "lm_head" in name'])
        p.add(f"if {head_test}:")
        p.add("# The output layer decides between classes: merge it differently.", 4)
        desc_h, centre_h = COMBINE[kind_head][0](p, s, 4)
        lam_h = _scale(s, centre_h)
        p.add(f"{{M}} = {num(lam_h)} * {{M}}", 4)
        p.add("else:")
        desc_r, centre_r = COMBINE[kind_rest][0](p, s, 4)
        lam_r = _scale(s, centre_r)
        p.add(f"{{M}} = {num(lam_r)} * {{M}}", 4)
        p.summary.append(f"merge the head with {desc_h} (x{num(lam_h)}) and the other layers "
                         f"with {desc_r} (x{num(lam_r)})")
        p.primitives.append(f"head_branch:{kind_head}/{kind_rest}")
        scale_line = scale_phrase = None
    else:
        kind = s.pick({k: v for k, (fn, v) in COMBINE.items()})
        desc, centre = COMBINE[kind][0](p, s, 0)
        lam = _scale(s, centre)
        p.summary.append(f"combine with {desc}")
        if rule == "single":
            scale_line = f"scale = {num(lam)}"
            scale_phrase = f"scale by {num(lam)}"
        elif rule == "sqrt_n":
            p.uses_math = True
            c = float(f"{lam * math.sqrt(3):.2g}")
            scale_line = f"scale = {num(c)} / math.sqrt(len({{L}}))"
            scale_phrase = f"scale by {num(c)}/sqrt(N)"
        else:
            lam_other = _scale(s, centre)
            test = {"head_scale": '"head" in name',
                    "bias_scale": "base.dim() == 1",
                    "head_bias": '"head" in name',
                    "input_scale": '"fc1" in name or "embed" in name'}[rule]
            why = {"head_scale": "the classifier head",
                   "bias_scale": "biases and other vectors",
                   "head_bias": "the classifier head",
                   "input_scale": "the input layer"}[rule]
            lines = [f"# Per-layer step size: {why} gets its own scale.",
                     f"if {test}:", f"    scale = {num(lam_other)}"]
            if rule == "head_bias":
                lam_bias = _scale(s, centre)
                lines += ['elif name.endswith("bias"):', f"    scale = {num(lam_bias)}"]
            lines += ["else:", f"    scale = {num(lam)}"]
            scale_line = "\n".join(lines)
            scale_phrase = f"scale by {num(lam)} ({why}: {num(lam_other)})"
        p.primitives.append(f"rule:{rule}")
    p.blank()

    # postprocessing
    n_post = s.integer({0: 0.7, 1: 0.3, 2: -1.0})
    kinds = list(POST)
    for _ in range(n_post):
        options = {k: POST[k][1] for k in kinds}
        if not options:
            break
        kind = s.pick(options)
        kinds.remove(kind)
        POST[kind][0](p, s)
        p.blank()

    if scale_line is not None:
        p.summary.append(scale_phrase)
        p.add(scale_line)
        p.add("return (scale * {M}).to(base.dtype)")
    else:
        p.add("return {M}.to(base.dtype)")
    return p


def render(p: Program) -> str:
    """The program text (imports, signature, docstring, body)."""
    summary = "; ".join(p.summary) if p.summary else "merge the task vectors"
    summary = summary[0].upper() + summary[1:] + "."
    doc_lines = textwrap.wrap(summary, width=88, break_on_hyphens=False)
    lines = ["import torch"]
    if p.uses_math or any("math." in line for line in p.body):
        lines.append("import math")
    lines += ["", "", SIGNATURE]
    if len(doc_lines) == 1:
        lines.append(f'    """{doc_lines[0]}"""')
    else:
        lines.append(f'    """{doc_lines[0]}')
        lines += [f"    {d}" for d in doc_lines[1:]]
        lines.append('    """')
    if p.helpers:
        lines += ["    " + h if h else "" for h in p.helpers]
        lines.append("")
    body = list(p.body)
    while body and body[-1] == "":
        body.pop()
    lines += body
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# deliberate breakage (realistic LLM mistakes)


def break_program(code: str, p: Program, kind: str, rng: random.Random) -> str:
    lines = code.splitlines()
    if kind == "typo":
        # misspell the merged variable in the last line that reads it
        options = {p.M[:-1], p.M + "s", p.M.replace("e", "", 1), p.M.replace("r", "", 1)}
        typo = rng.choice(sorted(t for t in options if t and t != p.M))
        for i in range(len(lines) - 1, -1, -1):
            if f"{p.M})" in lines[i] or f"{p.M}." in lines[i] or f"* {p.M}" in lines[i]:
                lines[i] = lines[i].replace(p.M, typo, 1)
                break
        return "\n".join(lines) + "\n"
    if kind == "nan_division":
        # a disjoint mean without guarding the count: 0/0 where no expert survives trimming
        ret = next(i for i in range(len(lines) - 1, -1, -1) if lines[i].strip().startswith("return"))
        patch = [
            "    # Average the surviving entries of the experts.",
            f"    stacked_kept = torch.stack([torch.where({p.x}.abs() >= {p.x}.abs().mean() * 2, {p.x}, "
            f"torch.zeros_like({p.x})) for {p.x} in {p.L}])",
            "    count = (stacked_kept != 0).sum(dim=0)",
            f"    {p.M} = stacked_kept.sum(dim=0) / count",
        ]
        lines[ret:ret] = patch
        return "\n".join(lines) + "\n"
    if kind == "wrong_axis":
        ret = next(i for i in range(len(lines) - 1, -1, -1) if lines[i].strip().startswith("return"))
        lines[ret:ret] = ["    # Average over the experts.",
                          f"    {p.M} = torch.stack({p.L}).mean(dim=1)"]
        return "\n".join(lines) + "\n"
    if kind == "missing_return":
        ret = next(i for i in range(len(lines) - 1, -1, -1) if lines[i].strip().startswith("return"))
        lines[ret] = lines[ret].replace("return ", "final = ", 1)
        return "\n".join(lines) + "\n"
    if kind == "bad_import":
        lines.insert(1, "import numpy as np")
        ret = next(i for i in range(len(lines) - 1, -1, -1) if lines[i].strip().startswith("return"))
        lines[ret:ret] = [f"    {p.M} = torch.from_numpy(np.asarray({p.M}))"]
        return "\n".join(lines) + "\n"
    if kind == "truncated":
        cut = rng.randint(max(5, len(lines) // 3), max(6, len(lines) - 2))
        text = "\n".join(lines[:cut])
        tail = lines[cut] if cut < len(lines) else ""
        return text + "\n" + tail[: max(4, len(tail) // 2)]
    raise ValueError(kind)


# --------------------------------------------------------------------------------------------
# completions


INTROS = [
    "Here is a merging function that should generalise better than plain task arithmetic.",
    "Below is a new `merge_models` implementation.",
    "I propose the following merge algorithm.",
    "Sure! Here is an improved merging strategy.",
    "The idea: reduce interference between the experts before adding them up.",
    "Here's an algorithm that combines the task vectors more carefully.",
]

OUTROS = [
    "",
    "The coefficients can be tuned on the development set.",
    "It only uses torch operations and works for tensors of any shape.",
    "This keeps the merge cheap: everything is element-wise per parameter.",
]


def sample(rng: random.Random, temperature: float, broken_rate: float) -> tuple[str, str, dict[str, Any]]:
    """One completion: (LLM-style text, code, metadata)."""
    p = build_program(rng, temperature)
    code = render(p)
    broken = None
    if rng.random() < min(1.0, broken_rate * max(temperature, 0.05)):
        broken = rng.choice(BROKEN_KINDS)
        code = break_program(code, p, broken, rng)
    intro = rng.choice(INTROS)
    outro = rng.choice(OUTROS)
    if broken == "truncated":
        text = f"{intro}\n\n```python\n{code}"
    else:
        text = f"{intro}\n\n```python\n{code}```\n"
        if outro:
            text += f"\n{outro}\n"
    meta = {"generator": "grammar", "temperature": temperature, "broken": broken,
            "primitives": list(p.primitives)}
    return text, code, meta


def corpus(n: int, seed: int, *, temperature: float | None = None) -> list[str]:
    """``n`` distinct working programs (code only), the pretraining corpus of the tiny factory.

    With no ``temperature``, program ``i`` uses a temperature spread over [0.6, 1.4] (a
    low-discrepancy sequence), so the corpus covers plain and adventurous programs.
    """
    out: list[str] = []
    seen: set[str] = set()
    i = 0
    while len(out) < n and i < 20 * n + 100:  # distinct programs; the bound only guards a loop
        t = temperature if temperature is not None else 0.6 + 0.8 * ((i * 0.6180339887) % 1.0)
        rng = random.Random(derive_seed("grammar-corpus", seed, i))
        code = render(build_program(rng, t))
        i += 1
        if code not in seen:
            seen.add(code)
            out.append(code)
    return out


class GrammarGenerator(Generator):
    """Random merge programs from a grammar of merge primitives (a control without an LLM)."""

    name = "grammar"

    class Options(Generator.Options):
        broken_rate: float = Field(0.05, ge=0, le=1, description="share of programs broken on "
                                                                 "purpose (times the temperature)")

    def generate(self, prompts: list[str], n: int, temperature: float, seed: int,
                 checkpoint: Path | None = None, iteration: int = 1) -> list[Completion]:
        """``n`` completions per prompt; completion ``i`` depends only on (seed, i, temperature).

        ``checkpoint`` and ``iteration`` are ignored: the grammar does not learn.
        """
        out = []
        for prompt_index in range(len(prompts)):
            for i in range(n):
                rng = random.Random(derive_seed("grammar", seed, prompt_index, i))
                text, _code, meta = sample(rng, temperature, self.options.broken_rate)
                out.append(Completion(text=text, prompt_index=prompt_index, meta=meta))
        return out


@hookimpl
def register_generators(register):
    register(GrammarGenerator)
