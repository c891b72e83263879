"""The ``accuracy`` evaluator: classification accuracy (percent) of a logits model on a split.

Works with any domain that provides ``labelled_split(split) -> (X, y)`` (inputs and int labels
as tensors) and model handles that map ``X`` to logits ``[n, classes]`` (e.g. ``digits``).
"""
from __future__ import annotations

from typing import Any

from selfdev import ConfigError, Domain, Evaluator
from selfdev import hookimpl


class AccuracyEvaluator(Evaluator):
    """Percent of examples whose arg-max logit is the label; ``score`` is that percentage."""

    name = "accuracy"

    def evaluate(self, domain: Domain, model: Any, split: str) -> dict[str, float]:
        labelled = getattr(domain, "labelled_split", None)
        if not callable(labelled):
            raise ConfigError(
                f"evaluator 'accuracy' needs a domain with labelled_split(split); "
                f"domain {getattr(domain, 'name', type(domain).__name__)!r} has none "
                f"(use the domain's own evaluator, e.g. {getattr(domain, 'default_evaluator', '?')!r})")
        import torch

        X, y = labelled(split)
        if len(y) == 0:
            return {"score": 0.0, "n": 0, "correct": 0}
        was_training = getattr(model, "training", False)
        if hasattr(model, "eval"):
            model.eval()
        try:
            with torch.no_grad():
                pred = model(X).argmax(-1)
        finally:
            if was_training:
                model.train()
        correct = int((pred == y).sum())
        n = int(len(y))
        return {"score": 100.0 * correct / n, "n": n, "correct": correct}


@hookimpl
def register_evaluators(register):
    register(AccuracyEvaluator)
