"""The ``none`` optimizer: the control. It records the pairs it would train on and leaves the
factory as it is."""
from __future__ import annotations

from pathlib import Path

from selfdev import Optimizer, Pair, Refinement
from selfdev import hookimpl


class NoneOptimizer(Optimizer):
    """The control: records the pairs it would train on, leaves the factory as it is."""

    name = "none"

    def refine(self, checkpoint: Path | None, pairs: list[Pair], iteration: int) -> Refinement:
        return Refinement(checkpoint=None, metrics={"pairs": len(pairs), "trained": False})


@hookimpl
def register_optimizers(register):
    register(NoneOptimizer)
