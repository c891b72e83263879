"""The toymath family: recipes, and the cached seed, data and experts built from them.

``build_family`` builds (or finds in the cache) everything a recipe describes; each cache folder
is named by a hash of what its content depends on, so a changed recipe builds a new folder.
"""
from __future__ import annotations

import hashlib
import json
import random
import time
from pathlib import Path
from typing import Any

from selfdev import ConfigError, cache_dir, cache_lock
from selfdev.plugins.domains.toymath.jobs import run_jobs
from selfdev.plugins.domains.toymath.problems import FAMILIES, make_problems, write_jsonl

#: bump when the build changes in a way the recipe does not capture
RECIPE_VERSION = 1

PRESETS: dict[str, dict[str, Any]] = {
    # tiny-domains.md recipe w1 (h256 L2, 2.1M params; about 3.5-4 min on 2 quiet cores)
    "full": dict(hidden=256, layers=2, heads=4, intermediate=1024, max_positions=160,
                 seed_steps=400, seed_lr=2e-3, seed_mix="A:1,B:1,C:1", seed_examples=1000,
                 expert_steps=200, expert_lr=2e-4, expert_examples=3000, batch=32, warmup=20,
                 pool=4000, n_dev=100, n_test=500),
    # a small family for tests (well under a minute)
    "test": dict(hidden=64, layers=2, heads=4, intermediate=256, max_positions=160,
                 seed_steps=150, seed_lr=3e-3, seed_mix="A:1,B:1,C:1", seed_examples=600,
                 expert_steps=40, expert_lr=1e-3, expert_examples=600, batch=32, warmup=10,
                 pool=1200, n_dev=30, n_test=60),
}
SEED_KEYS = ("hidden", "layers", "heads", "intermediate", "max_positions", "seed_steps", "seed_lr",
             "seed_mix", "seed_examples", "batch", "warmup", "pool", "n_dev", "n_test")
EXPERT_KEYS = ("expert_steps", "expert_lr", "expert_examples", "batch", "warmup")
#: expert sets: which families each expert trains on (name -> list of (family, weight)),
#: a seed offset and whether alt templates are mixed in
EXPERT_SETS: dict[str, dict[str, Any]] = {
    "main": {"offset": 0, "experts": {"A": [("A", 1.0)], "B": [("B", 1.0)], "C": [("C", 1.0)]}},
    # "unseen" experts for transfer: other seeds, half of the data in other templates
    "alt": {"offset": 1000, "experts": {"A": [("A", 0.5), ("A2", 0.5)], "B": [("B", 0.5), ("B2", 0.5)],
                                        "C": [("C", 1.0)]}},
}


def _hash(obj: Any) -> str:
    return hashlib.blake2b(json.dumps(obj, sort_keys=True).encode(), digest_size=6).hexdigest()


def _parse_mix(mix: str) -> list[tuple[str, float]]:
    out = []
    for part in str(mix).split(","):
        fam, _, w = part.strip().partition(":")
        if fam not in FAMILIES:
            raise ConfigError(f"toymath: unknown family {fam!r} in mix {mix!r}")
        out.append((fam, float(w or 1)))
    return out


def _seed_job(root: Path, recipe: dict[str, Any], seed: int) -> dict[str, Any]:
    return {"kind": "seed", "root": str(root), "recipe": recipe, "seed": seed,
            "out": str(root / "seed"), "steps": recipe["seed_steps"], "desc": "toymath: training the seed"}


def build_seed(recipe: dict[str, Any], seed: int, progress=None, threads: int = 2, isolate: bool = True) -> Path:
    """Build (or reuse) the seed model and the data files; return the seed-family root."""
    seed_recipe = {k: recipe[k] for k in SEED_KEYS}
    key = {"v": RECIPE_VERSION, "seed": seed, **seed_recipe}
    root = cache_dir("toymath", f"seed-{_hash(key)}")
    manifest = root / "seed.json"
    with cache_lock(root / ".lock"):
        if manifest.is_file() and (root / "seed" / "config.json").is_file():
            return root
        t0 = time.perf_counter()
        data = root / "data"
        data.mkdir(exist_ok=True)
        n_dev, n_test, pool_n = recipe["n_dev"], recipe["n_test"], recipe["pool"]
        dev = make_problems("A", n_dev, 1000 + seed) + make_problems("B", n_dev, 2000 + seed)
        held = {r["question"] for r in dev}
        test = (make_problems("A", n_test, 3000 + seed, exclude=held)
                + make_problems("B", n_test, 4000 + seed, exclude=held))
        held |= {r["question"] for r in test}
        pools = {fam: make_problems(fam, pool_n, 100 * (i + 1) + seed, exclude=held)
                 for i, fam in enumerate(FAMILIES)}
        for fam, rows in pools.items():
            write_jsonl(data / f"pool-{fam}.jsonl", rows)
        mix = []
        rng = random.Random(seed)
        for fam, w in _parse_mix(recipe["seed_mix"]):
            mix += rng.sample(pools[fam], int(w * recipe["seed_examples"]))
        write_jsonl(data / "dev.jsonl", dev)
        write_jsonl(data / "test.jsonl", test)
        write_jsonl(data / "train.jsonl", mix)
        (stats,) = run_jobs([_seed_job(root, recipe, seed)], threads, progress, isolate)
        info = {"recipe": key, "train": stats, "params": stats["params"], "vocab": stats["vocab"],
                "build_seconds": round(time.perf_counter() - t0, 2), "threads": threads,
                "n_dev": len(dev), "n_test": len(test), "n_train_mix": len(mix)}
        manifest.write_text(json.dumps(info, indent=2) + "\n")
    return root


def build_experts(root: Path, recipe: dict[str, Any], seed: int, families: list[str], expert_set: str = "main",
                  scope: str = "all", progress=None, threads: int = 2, isolate: bool = True) -> dict[str, Path]:
    """Fine-tune one expert per family from the seed (cached; missing ones are trained in
    parallel worker processes); return name -> directory."""
    if expert_set not in EXPERT_SETS:
        raise ConfigError(f"toymath: expert_set must be one of {', '.join(EXPERT_SETS)}; got {expert_set!r}")
    if scope not in ("all", "mlp"):
        raise ConfigError(f"toymath: expert_scope must be 'all' or 'mlp'; got {scope!r}")
    spec = EXPERT_SETS[expert_set]
    key = {"v": RECIPE_VERSION, "seed": seed, "set": expert_set, "scope": scope,
           **{k: recipe[k] for k in EXPERT_KEYS}}
    edir = root / f"experts-{_hash(key)}"
    edir.mkdir(exist_ok=True)
    out = {}
    for fam in families:
        if fam not in spec["experts"]:
            raise ConfigError(f"toymath: no expert family {fam!r}; allowed: {', '.join(spec['experts'])}")
        out[fam] = edir / fam
    with cache_lock(edir / ".lock"):
        todo = [f for f in families if not (out[f] / "config.json").is_file()]
        jobs = [{"kind": "expert", "root": str(root), "recipe": recipe, "scope": scope, "mix": spec["experts"][f],
                 "seed": seed + 10 + list(spec["experts"]).index(f) + spec["offset"], "out": str(out[f]),
                 "steps": recipe["expert_steps"], "desc": f"toymath: training expert {f} ({expert_set})"}
                for f in todo]
        t0 = time.perf_counter()
        for f, stats in zip(todo, run_jobs(jobs, threads, progress, isolate)):
            (out[f] / "selfdev-expert.json").write_text(json.dumps(
                {"recipe": key, "family": f, "train": stats, "threads": threads,
                 "build_seconds": round(time.perf_counter() - t0, 2)}, indent=2) + "\n")
    return out


def resolve_recipe(size: str, overrides: dict[str, Any]) -> dict[str, Any]:
    if size not in PRESETS:
        raise ConfigError(f"toymath: size must be one of {', '.join(PRESETS)}; got {size!r}")
    recipe = dict(PRESETS[size])
    for k, v in overrides.items():
        if v is None:
            continue
        if k not in recipe:
            raise ConfigError(f"toymath: unknown recipe key {k!r}; allowed: {', '.join(recipe)}")
        recipe[k] = type(recipe[k])(v)
    return recipe


def build_family(size: str = "full", seed: int = 0, families=("A", "B"), expert_set: str = "main",
                 scope: str = "all", progress=None, threads: int = 2, isolate: bool = True,
                 **overrides) -> dict[str, Any]:
    """Build (or load from the cache) seed, data and experts. Returns paths and timings."""
    recipe = resolve_recipe(size, overrides)
    t0 = time.perf_counter()
    root = build_seed(recipe, seed, progress, threads, isolate)
    experts = build_experts(root, recipe, seed, list(families), expert_set, scope, progress, threads, isolate)
    return {"root": root, "seed": root / "seed", "data": root / "data", "experts": experts,
            "recipe": recipe, "seconds": round(time.perf_counter() - t0, 2)}


def main(argv: list[str] | None = None) -> None:  # pragma: no cover - manual use
    import argparse

    ap = argparse.ArgumentParser(description="build the toymath family and print its paths/timings")
    ap.add_argument("--size", default="full", choices=sorted(PRESETS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--families", default="A,B")
    ap.add_argument("--expert-set", default="main", choices=sorted(EXPERT_SETS))
    ap.add_argument("--scope", default="all", choices=["all", "mlp"])
    a = ap.parse_args(argv)
    fam = build_family(a.size, a.seed, a.families.split(","), a.expert_set, a.scope)
    print(json.dumps({k: (str(v) if isinstance(v, Path) else v) for k, v in fam.items()
                      if k != "experts"} | {"experts": {k: str(v) for k, v in fam["experts"].items()}}, indent=2))
