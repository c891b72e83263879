"""The ``cmaes`` generator: an evolutionary same-budget control (CMA-ES over merge coefficients).

What users know from mergekit-evolve and Sakana's evolutionary model merge: fix a human merge
method (TIES, Task Arithmetic or DARE) and let CMA-ES search its coefficients per layer (or per
tensor) on the dev score. Here each CMA-ES solution is written out as an ordinary
``merge_models`` program with its coefficients as literal tables keyed by parameter name, so a
candidate of this control is screened, sandboxed, evaluated on dev, recorded, shown and compared
exactly like one of the LLM factory, and a run with ``generator = "cmaes"`` gets the same number
of evaluations as a factory run with the same ``iterations x candidates``.

**One CMA-ES generation per iteration.** The population is the iteration's candidates. The dev
scores of a generation exist only after the engine has executed and evaluated it, which happens
after ``generate`` returns, so a ``tell`` can only come between iterations; several generations
inside one ``generate`` call would mean telling CMA-ES scores it never saw. For more generations
at the same budget, run more iterations with fewer candidates (``iterations = 30``,
``candidates = 20`` is the same 600 evaluations as 3 x 200).

**Deterministic ask/tell from the log.** Nothing is kept between calls: for iteration ``t`` the
strategy is rebuilt from the run seed, then for each earlier iteration ``s`` it asks (the same
population as before, since every random draw comes from one seeded generator) and is told the
dev scores the log holds for the candidates of iteration ``s``. The asked solutions are checked
against the ones recorded in those candidates' ``meta`` (a different ``cma`` version after a
resume would silently search elsewhere otherwise). A candidate with no dev score gets the score
of the program it repeats (a screening duplicate), else the worst score of its generation (a
failure); a generation with no score at all tells the same value for everyone.
So the same seed gives the same programs, and a resumed run the same as an uninterrupted one.

**Search space.** CMA-ES works in the unit box ``[0, 1]^D`` (bounds handled by ``cma``;
``sigma0`` is relative to the box) mapped linearly onto ``weight_range`` and ``density_range``;
it starts at the centre. Per group (a layer: the parameter name without its last dotted part;
a tensor; or one global group) there is one shared λ, or one weight per expert
(``per_expert = true``, as mergekit-evolve's per-model ``weight``), plus one density for TIES
(the kept fraction) and DARE (the keep probability). With every weight equal to λ the programs equal the
swept baselines ``ties(density, λ)``, ``task_arithmetic(λ)`` and ``dare(p = 1 - density, λ)``
of ``plugins/domains/baselines.py`` (up to DARE's random masks), so the swept grid is inside the
search space. DARE here rescales by ``1/density`` (the paper's rule, not mergekit's L1 rescale).

The generator needs the names of the mergeable parameters and of the experts, which it reads
from the run's ``domain.prepared`` summary; domains built on ``TensorDomain`` (``digits``)
record them, and any other domain is refused before the run starts. The prompt and the
temperature are not used.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator, Literal

from pydantic import field_validator

import selfdev
from selfdev import Completion, ConfigError, Field, Generator, SelfdevError, derive_seed
from selfdev import hookimpl

METHODS = ("ties", "task_arithmetic", "dare_linear")

HEADER = '''\
import torch


def merge_models(task_vectors: dict[str, torch.Tensor], base: torch.Tensor, name: str) -> torch.Tensor:
'''

#: the body after the tables, per method (the tables define group, weights, density, seed)
BODIES = {
    "task_arithmetic": '''\
    # Task Arithmetic: a weighted sum of the task vectors.
    merged = torch.zeros_like(base)
    for expert in task_vectors:
        merged = merged + weights[expert] * task_vectors[expert]
    return merged
''',
    "ties": '''\
    # TIES: trim each task vector to its largest `density` fraction (per tensor), weight it,
    # elect the sign of the summed mass, average the entries that agree with it.
    weighted = []
    for expert in task_vectors:
        tau = task_vectors[expert]
        n = tau.numel()
        keep = int(density * n)
        if density >= 1:
            trimmed = tau
        elif keep <= 0:
            trimmed = torch.zeros_like(tau)
        else:
            threshold = tau.abs().flatten().kthvalue(n - keep).values
            trimmed = torch.where(tau.abs() > threshold, tau, torch.zeros_like(tau))
        weighted.append(weights[expert] * trimmed)
    stacked = torch.stack(weighted)
    sign = torch.sign(stacked.sum(dim=0))
    sign = torch.where(sign == 0, torch.ones_like(sign), sign)
    agree = (torch.sign(stacked) == sign) & (stacked != 0)
    count = agree.sum(dim=0).clamp(min=1)
    return (stacked * agree).sum(dim=0) / count
''',
    "dare_linear": '''\
    # DARE: drop each entry with probability 1 - density and rescale the survivors by
    # 1 / density (one seeded generator per tensor, experts in sorted order), weighted sum.
    generator = torch.Generator().manual_seed(seed)
    merged = torch.zeros_like(base)
    for expert in sorted(task_vectors):
        tau = task_vectors[expert]
        mask = torch.bernoulli(torch.full_like(tau, density), generator=generator)
        merged = merged + weights[expert] * (tau * mask / density)
    return merged
''',
}

DESCRIPTIONS = {
    "task_arithmetic": "Task Arithmetic",
    "ties": "TIES",
    "dare_linear": "DARE (linear)",
}


def group_key(name: str, groups: str) -> str:
    """The coefficient group of parameter ``name``: its layer (the name without the last dotted
    part, so a layer's weight and bias share coefficients), the tensor itself, or one group."""
    if groups == "tensor":
        return name
    if groups == "global":
        return "all"
    return name.rsplit(".", 1)[0] if "." in name else name


def num(value: float, digits: int) -> str:
    """A coefficient as a literal with ``digits`` significant digits."""
    text = f"{value:.{digits}g}"
    if "e" in text or "." in text:
        return repr(float(text)) if "e" in text else text
    return text + ".0"


class Space:
    """The coefficient layout: which coordinate of the unit box is which coefficient."""

    def __init__(self, parameters: list[str], experts: list[str], options: Any) -> None:
        self.parameters = list(parameters)
        self.experts = list(experts)
        self.options = options
        self.groups: list[str] = []
        for name in self.parameters:
            key = group_key(name, options.groups)
            if key not in self.groups:
                self.groups.append(key)
        self.has_density = options.method != "task_arithmetic"
        self.n_weights = len(self.experts) if options.per_expert else 1
        self.dim = len(self.groups) * (self.n_weights + (1 if self.has_density else 0))

    def decode(self, x: list[float]) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
        """Unit-box coordinates -> (group -> expert -> weight, group -> density)."""
        o = self.options
        w_lo, w_hi = o.weight_range
        d_lo, d_hi = o.density_range
        weights: dict[str, dict[str, float]] = {}
        density: dict[str, float] = {}
        i = 0
        for g in self.groups:
            raw = [w_lo + (w_hi - w_lo) * min(1.0, max(0.0, x[i + j]))
                   for j in range(self.n_weights)]
            i += self.n_weights
            weights[g] = {e: raw[k if o.per_expert else 0] for k, e in enumerate(self.experts)}
            if self.has_density:
                density[g] = d_lo + (d_hi - d_lo) * min(1.0, max(0.0, x[i]))
                i += 1
        return weights, density

    def program(self, x: list[float], seed: int, label: str) -> tuple[str, dict[str, Any]]:
        """The ``merge_models`` program of solution ``x`` and its decoded coefficients."""
        o = self.options
        weights, density = self.decode(x)
        d = o.digits
        lines = [HEADER.rstrip("\n")]
        where = {"layer": "per layer", "tensor": "per tensor", "global": "for all parameters"}
        lines.append(f'    """{DESCRIPTIONS[o.method]} with coefficients {where[o.groups]}, '
                     f'found by CMA-ES ({label})."""')
        lines.append("    group = {")
        lines += [f"        {n!r}: {group_key(n, o.groups)!r}," for n in self.parameters]
        lines.append("    }[name]")
        lines.append("    weights = {")
        for g in self.groups:
            inner = ", ".join(f"{e!r}: {num(weights[g][e], d)}" for e in self.experts)
            lines.append(f"        {g!r}: {{{inner}}},")
        lines.append("    }[group]")
        if self.has_density:
            lines.append("    density = {")
            lines += [f"        {g!r}: {num(density[g], d)}," for g in self.groups]
            lines.append("    }[group]")
        if o.method == "dare_linear":
            lines.append("    seed = {")
            lines += [f"        {n!r}: {derive_seed('cmaes-dare', seed, n) % (1 << 31)},"
                      for n in self.parameters]
            lines.append("    }[name]")
        code = "\n".join(lines) + "\n" + BODIES[o.method]
        coefficients = {"weights": {g: {e: float(num(v, d)) for e, v in w.items()}
                                    for g, w in weights.items()}}
        if self.has_density:
            coefficients["density"] = {g: float(num(v, d)) for g, v in density.items()}
        return code, coefficients


@contextlib.contextmanager
def numpy_state(seed: int) -> Iterator[Any]:
    """numpy's global RNG seeded for the block and restored after it, plus a private generator.

    ``cma`` draws its samples through the ``randn`` option (given the private generator), but
    parts of it may still touch the global RNG; seeding and restoring it keeps the rebuild
    deterministic without changing anyone else's random stream."""
    import numpy as np

    saved = np.random.get_state()
    np.random.seed(seed % (1 << 32))
    try:
        yield np.random.default_rng(seed)
    finally:
        np.random.set_state(saved)


class CMAESGenerator(Generator):
    """CMA-ES over per-layer coefficients of TIES / Task Arithmetic / DARE (a same-budget
    evolutionary control, as mergekit-evolve)."""

    name = "cmaes"

    class Options(Generator.Options):
        method: Literal["ties", "task_arithmetic", "dare_linear"] = Field(
            "ties", description="the merge method whose coefficients are searched")
        groups: Literal["layer", "tensor", "global"] = Field(
            "layer", description="coefficient groups: per layer (weight and bias share), per "
                                 "tensor, or one global set")
        per_expert: bool = Field(False, description="one weight per expert and group (as "
                                                    "mergekit-evolve), else one λ per group")
        sigma0: float = Field(0.25, gt=0, le=1, description="CMA-ES initial step size, as a "
                                                            "fraction of each coefficient's range")
        weight_range: list[float] = Field(
            [0.0, 2.0], description="[low, high] of every weight (λ)")
        density_range: list[float] = Field(
            [0.05, 1.0], description="[low, high] of the density (TIES: kept fraction; DARE: "
                                     "keep probability), within (0, 1]")
        digits: int = Field(4, ge=2, le=12, description="significant digits of the "
                                                        "coefficients written into programs")

        @field_validator("weight_range")
        @classmethod
        def _weights(cls, value: list[float]) -> list[float]:
            if len(value) != 2 or not value[0] < value[1]:
                raise ValueError("must be [low, high] with low < high")
            return value

        @field_validator("density_range")
        @classmethod
        def _density(cls, value: list[float]) -> list[float]:
            if len(value) != 2 or not 0 < value[0] < value[1] <= 1:
                raise ValueError("must be [low, high] with 0 < low < high <= 1")
            return value

    @classmethod
    def preflight_run(cls, options: Any, classes: dict[str, type],
                      run_options: dict[str, Any] | None = None) -> None:
        """Refuse, before ``run.started``, a run this generator cannot serve: without ``cma``
        installed, or with a domain it cannot write programs for (it needs the per-tensor
        candidate contract and the parameter and expert names that ``TensorDomain`` domains
        record in ``domain.prepared``)."""
        import importlib.util

        from selfdev.plugins.domains.tensors import TensorDomain

        if importlib.util.find_spec("cma") is None:
            raise ConfigError("config: generator 'cmaes' needs the cma package: "
                              "pip install 'selfdev[control]'")
        domain = classes["domain"]
        if not issubclass(domain, TensorDomain):
            allowed = sorted(n for n in selfdev.get_registry().names("domain")
                             if issubclass(selfdev.get_registry().get("domain", n), TensorDomain))
            raise ConfigError(
                f"config: generator 'cmaes' writes coefficient programs for in-memory tensor "
                f"domains ({', '.join(allowed)}); domain {domain.name!r} is not one")

    # ---- reading the run -----------------------------------------------------------------

    def read_run(self) -> Any:
        """The run's folded state, read back from its database (dev scores of the earlier
        iterations, the domain's summary, each candidate's recorded ``meta``)."""
        if self.ctx.db is None:
            raise SelfdevError("generator 'cmaes' reads the dev scores of earlier iterations "
                               "from the run's database; it needs a database file, not an "
                               "in-memory store")
        with selfdev.open_store(self.ctx.db, readonly=True) as store:
            return selfdev.load_state(store, self.ctx.run_id)

    def space(self, state: Any) -> Space:
        summary = state.prepared or {}
        parameters, experts = summary.get("mergeable"), summary.get("experts")
        if isinstance(experts, dict):
            experts = list(experts)
        if not (isinstance(parameters, list) and parameters and all(isinstance(p, str)
                                                                   for p in parameters)
                and isinstance(experts, list) and experts):
            raise SelfdevError("generator 'cmaes' needs the mergeable parameter names and the "
                               "expert names in the domain's summary (domain.prepared: "
                               "'mergeable' and 'experts'); this domain does not record them")
        return Space(parameters, [str(e) for e in experts], self.options)

    @staticmethod
    def scores(state: Any, iteration: int, n: int) -> list[float]:
        """The dev scores of iteration ``iteration``'s candidates, by index (see the module
        docstring for duplicates and failures)."""
        cands = state.in_iteration(iteration)
        if len(cands) != n:
            raise SelfdevError(f"generator 'cmaes': iteration {iteration} has {len(cands)} "
                               f"candidates in the log, the population is {n}")
        raw: list[float | None] = []
        for c in cands:
            dev = c.dev
            if dev is None and c.duplicate_of in state.candidates:
                dev = state.candidates[c.duplicate_of].dev
            raw.append(dev)
        known = [v for v in raw if v is not None]
        worst = min(known) if known else 0.0
        return [worst if v is None else float(v) for v in raw]

    # ---- generating ----------------------------------------------------------------------

    def strategy(self, dim: int, n: int, rng: Any) -> Any:
        import cma

        return cma.CMAEvolutionStrategy(
            [0.5] * dim, self.options.sigma0,
            {"popsize": n, "bounds": [0.0, 1.0], "randn": lambda *shape: rng.standard_normal(shape),
             # no log files, no printing; ``seed`` is unused with our ``randn`` (set so cma's
             # default, the clock, is never consulted)
             "verbose": -9, "verb_log": 0, "verb_disp": 0, "seed": 1})

    def generate(self, prompts: list[str], n: int, temperature: float, seed: int,
                 checkpoint: Path | None = None, iteration: int = 1) -> list[Completion]:
        """Generation ``iteration`` of CMA-ES, rebuilt from the run seed and the log.

        The engine's per-iteration ``seed`` is not used: the whole search follows one seeded
        strategy (``derive_seed("cmaes", run seed)``), which is what lets iteration ``t``
        replay generations ``1..t-1``."""
        import cma
        import numpy as np

        if n < 2:
            raise SelfdevError("generator 'cmaes' needs a population of at least 2 "
                               "([run] candidates >= 2)")
        state = self.read_run()
        space = self.space(state)
        run_seed = derive_seed("cmaes", self.ctx.seed)
        with numpy_state(run_seed) as rng:
            es = self.strategy(space.dim, n, rng)
            for s in range(1, iteration):
                asked = es.ask()
                recorded = [c.meta.get("x") for c in state.in_iteration(s)]
                if len(recorded) == n and all(isinstance(r, list) for r in recorded):
                    if not np.allclose(np.array(asked), np.array(recorded, dtype=float),
                                       rtol=0, atol=1e-9):
                        raise SelfdevError(
                            f"generator 'cmaes': replaying CMA-ES does not give the solutions "
                            f"recorded for iteration {s} (a different cma version than "
                            f"{recorded_version(state, s)}? this one is {cma.__version__}); "
                            f"finish the run with the cma it started with")
                es.tell(asked, [-v for v in self.scores(state, s, n)])
            population = es.ask()
            sigma = float(es.sigma)
        out = []
        for prompt_index in range(len(prompts)):
            for i, x in enumerate(population):
                xs = [float(v) for v in x]
                label = f"generation {iteration}, member {i + 1} of {n}"
                code, coefficients = space.program(xs, self.ctx.seed, label)
                text = (f"CMA-ES {self.options.method} coefficients, {label}.\n\n"
                        f"```python\n{code}```\n")
                meta = {"generator": "cmaes", "method": self.options.method,
                        "groups": self.options.groups, "generation": iteration, "member": i,
                        "x": xs, "sigma": sigma, "cma": cma.__version__,
                        "coefficients": coefficients}
                out.append(Completion(text=text, prompt_index=prompt_index, meta=meta))
        return out


def recorded_version(state: Any, iteration: int) -> str:
    versions = {c.meta.get("cma") for c in state.in_iteration(iteration)}
    return ", ".join(sorted(str(v) for v in versions))


@hookimpl
def register_generators(register):
    register(CMAESGenerator)
