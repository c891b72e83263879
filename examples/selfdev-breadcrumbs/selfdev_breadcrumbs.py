"""selfdev-breadcrumbs: an example selfdev plugin package with two components.

* The ``breadcrumbs`` generator writes Model Breadcrumbs (Davari and Belilovsky, "Model
  Breadcrumbs: Scaling Multi-Task Model Merging with Sparse Masks", 2023) as candidate programs:
  each task vector loses its largest entries by magnitude (outliers, a fraction ``gamma``) and
  its smallest (noise, keeping a fraction ``density``), then the masked task vectors are summed
  and scaled by ``lam``. Candidate ``i`` is the method at the ``i``-th point of the grid
  densities x gammas x lams, so a run scores this human baseline through the same sandbox,
  evaluator and tables as the programs a factory discovers (a grid point written twice is
  screened out as a duplicate). It is not a language model: the prompt, the temperature and
  the seed do not change what it writes.

* A listener (``on_event``) appends every committed event to ``DIR/<run id>.jsonl``, one JSON
  object per line (position, run, version, type, source, time, payload and hash, as the log
  holds them), for tools that read JSON Lines. ``DIR`` is ``$SELFDEV_JSONL_DIR``, by default
  ``$SELFDEV_HOME/jsonl``.

It imports only ``selfdev`` (the public door) and is found through its entry point in the
``selfdev`` group, like any installed plugin.
"""
from __future__ import annotations

import itertools
import json
import os
from pathlib import Path

from pydantic import field_validator

import selfdev

PROGRAM = '''\
import torch


def merge_models(task_vectors, base, name):
    """Model Breadcrumbs (density {density}, gamma {gamma}, lambda {lam}): drop the largest
    and the smallest entries of each task vector by magnitude, sum the rest, scale."""
    merged = torch.zeros_like(base)
    for tau in task_vectors.values():
        size = tau.abs().flatten()
        n = size.numel()
        n_top = int({gamma} * n)
        n_keep = max(1, int({density} * n))
        high = size.kthvalue(max(1, n - n_top)).values
        low = size.kthvalue(max(1, n - n_top - n_keep + 1)).values
        mask = (tau.abs() >= low) & (tau.abs() <= high)
        merged = merged + torch.where(mask, tau, torch.zeros_like(tau))
    return {lam} * merged
'''


class Breadcrumbs(selfdev.Generator):
    """Writes Model Breadcrumbs over a grid of (density, gamma, lambda): a human baseline
    scored like a discovered program."""

    name = "breadcrumbs"

    class Options(selfdev.Options):
        densities: list[float] = selfdev.Field(
            [0.5, 0.9], min_length=1, description="fractions of each task vector kept, after "
                                                  "the largest entries are dropped",
            json_schema_extra={"must_be": "a list of numbers in (0, 1]"})
        gammas: list[float] = selfdev.Field(
            [0.01, 0.05], min_length=1, description="fractions of the largest-magnitude "
                                                    "entries dropped",
            json_schema_extra={"must_be": "a list of numbers in [0, 1)"})
        lams: list[float] = selfdev.Field(
            [0.5, 1.0], min_length=1, description="scales of the summed task vectors",
            json_schema_extra={"must_be": "a list of positive numbers"})

        @field_validator("densities")
        @classmethod
        def _densities(cls, value: list[float]) -> list[float]:
            if not all(0 < v <= 1 for v in value):
                raise ValueError("must be a list of numbers in (0, 1]")
            return value

        @field_validator("gammas")
        @classmethod
        def _gammas(cls, value: list[float]) -> list[float]:
            if not all(0 <= v < 1 for v in value):
                raise ValueError("must be a list of numbers in [0, 1)")
            return value

        @field_validator("lams")
        @classmethod
        def _lams(cls, value: list[float]) -> list[float]:
            if not all(v > 0 for v in value):
                raise ValueError("must be a list of positive numbers")
            return value

    def grid(self) -> list[dict[str, float]]:
        """The (density, gamma, lam) points, in the order candidates take them."""
        o = self.options
        return [{"density": d, "gamma": g, "lam": lam}
                for d, g, lam in itertools.product(o.densities, o.gammas, o.lams)]

    def generate(self, prompts, n, temperature, seed, checkpoint=None, iteration=1):
        grid = self.grid()
        completions = []
        for p, _prompt in enumerate(prompts):
            for i in range(n):
                point = grid[i % len(grid)]
                text = (f"Model Breadcrumbs at density {point['density']}, gamma "
                        f"{point['gamma']}, lambda {point['lam']}:\n\n```python\n"
                        f"{PROGRAM.format(**point)}```\n")
                completions.append(selfdev.Completion(text, prompt_index=p, meta=dict(point)))
        return completions


@selfdev.hookimpl
def register_generators(register):
    register(Breadcrumbs)


# -------------------------------------------------------------------------------- listener


def jsonl_dir() -> Path:
    """Where the JSON Lines files go: ``$SELFDEV_JSONL_DIR``, else ``$SELFDEV_HOME/jsonl``."""
    return Path(os.environ.get("SELFDEV_JSONL_DIR") or selfdev.selfdev_home() / "jsonl")


@selfdev.hookimpl
def on_event(event):
    """One line per committed event; the file is opened for each append, so a resumed run (or
    a second process following another run) only ever adds lines, in log order."""
    folder = jsonl_dir()
    folder.mkdir(parents=True, exist_ok=True)
    record = {"position": event.position, "event_id": event.event_id, "run_id": event.run_id,
              "stream_version": event.stream_version, "type": event.type,
              "type_version": event.type_version, "occurred_at": event.occurred_at,
              "source": event.source, "payload": event.payload, "hash": event.hash}
    with open(folder / f"{event.run_id}.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, sort_keys=True, ensure_ascii=False) + "\n")
