"""The merge primitives a candidate program calls, read from its AST.

"Does the factory converge on one family of algorithms?" is answered by what the programs are
built from: a TIES-like program elects signs, a DARE-like one drops entries at random, a
trimming one keeps the top-k by magnitude. :data:`PRIMITIVES` is the small, fixed vocabulary
counted (torch functions, ``torch.linalg``/``torch.nn.functional`` functions and tensor methods
of the same names), each in one family of :data:`FAMILIES`. Anything else a program calls
(arithmetic operators, ``stack``, ``reshape``, ``dict.items``) is structure, not a building
block, and is not counted.

A call counts wherever it is written: ``torch.sign(x)``, ``x.sign()``, ``F.normalize(x)`` (an
attribute call whose name is in the vocabulary; a program cannot rename ``torch``'s functions
inside the sandbox, so the attribute's name is the function). ``primitives_of`` is a pure
function of the code, so recording it in ``candidate.screened`` keeps the log deterministic:
the same program always gives the same list.
"""
from __future__ import annotations

import ast
import warnings

#: family -> the primitive names in it (torch function / tensor method names)
FAMILIES: dict[str, tuple[str, ...]] = {
    "sign": ("sign", "sgn", "signbit", "copysign"),  # sign election (TIES)
    "trim": ("topk", "kthvalue", "quantile", "nanquantile", "sort", "argsort", "msort"),
    "drop": ("bernoulli", "rand", "rand_like", "randn", "randn_like", "randint", "randperm",
             "multinomial", "dropout"),  # random drop and rescale (DARE)
    "median": ("median", "nanmedian", "mode"),
    "mean": ("mean", "nanmean", "sum", "nansum", "cumsum"),
    "extreme": ("max", "min", "amax", "amin", "maximum", "minimum", "argmax", "argmin"),
    "clamp": ("clamp", "clip", "clamp_min", "clamp_max"),
    "mask": ("where", "masked_fill", "masked_select"),
    "magnitude": ("abs", "norm", "vector_norm", "matrix_norm", "std", "var"),
    "similarity": ("cosine_similarity", "dot", "normalize", "vdot"),
    "lowrank": ("svd", "svdvals", "qr", "pinv", "lstsq", "eigh"),
    "weight": ("softmax", "sigmoid", "tanh", "exp", "log"),
    "interp": ("lerp",),
}

#: primitive name -> its family
PRIMITIVES: dict[str, str] = {name: family for family, names in FAMILIES.items()
                              for name in names}


def primitives_of(code: str, tree: ast.AST | None = None) -> list[str] | None:
    """The sorted distinct primitives ``code`` calls; None when it does not parse. ``tree``: an
    unmodified ``ast.parse(code)`` the caller already holds (read, not changed)."""
    from selfdev.sandbox.policy import walk_nodes

    if tree is None:
        try:
            with warnings.catch_warnings():  # a program's bad literals are not our warnings
                warnings.simplefilter("ignore", SyntaxWarning)
                tree = ast.parse(code)
        except (SyntaxError, ValueError):
            return None
    found = {node.func.attr for node in walk_nodes(tree)
             if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
             and node.func.attr in PRIMITIVES}
    return sorted(found)


def families_of(primitives: list[str]) -> list[str]:
    """The sorted distinct families of ``primitives``."""
    return sorted({PRIMITIVES[p] for p in primitives if p in PRIMITIVES})


def shares(lists: list[list[str]]) -> dict[str, float]:
    """Per name, the share of ``lists`` that hold it (most common first, then by name)."""
    if not lists:
        return {}
    counts: dict[str, int] = {}
    for names in lists:
        for name in set(names):
            counts[name] = counts.get(name, 0) + 1
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return {name: round(n / len(lists), 4) for name, n in ordered}
