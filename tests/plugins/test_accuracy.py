"""The accuracy evaluator."""
import pytest
import torch

from selfdev.engine.api import ConfigError, Domain
from selfdev.engine.plugins import get_registry
from selfdev.plugins.evaluators.accuracy import AccuracyEvaluator


class TinyDomain(Domain):
    name = "tiny-labelled"

    def labelled_split(self, split):
        X = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
        y = torch.tensor([0, 1, 1, 1])
        return (X, y) if split == "dev" else (X[:0], y[:0])


def test_counts_and_percent(make_ctx):
    ev = AccuracyEvaluator(make_ctx())
    identity = lambda X: X  # noqa: E731  (a plain callable is a valid model handle)
    assert ev.evaluate(TinyDomain(make_ctx()), identity, "dev") == {"score": 75.0, "n": 4, "correct": 3}
    assert ev.evaluate(TinyDomain(make_ctx()), identity, "test") == {"score": 0.0, "n": 0, "correct": 0}


def test_domain_without_labelled_split_is_a_config_error(make_ctx):
    class NoLabels(Domain):
        name = "no-labels"
        default_evaluator = "gsm8k"

    with pytest.raises(ConfigError, match="labelled_split.*'no-labels'.*gsm8k"):
        AccuracyEvaluator(make_ctx()).evaluate(NoLabels(make_ctx()), lambda X: X, "dev")


def test_scores_digits_models_without_grad_and_restores_train_mode(digits, accuracy):
    model = digits.seed_model()
    model.train()
    dev = accuracy.evaluate(digits, model, "dev")
    assert dev["n"] == 359 and 0 <= dev["correct"] <= 359
    assert dev["score"] == pytest.approx(100 * dev["correct"] / 359)
    assert model.training
    assert all(p.grad is None for p in model.parameters())
    assert accuracy.evaluate(digits, model, "test")["n"] == 360


def test_registered_as_accuracy():
    assert get_registry().get("evaluator", "accuracy") is AccuracyEvaluator
