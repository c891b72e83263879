"""Fixtures for the built-in plugin tests: one digits domain built once per session."""
from __future__ import annotations

import pytest

from selfdev.engine.api import Context, NullProgress


@pytest.fixture(scope="session")
def digits_home(tmp_path_factory):
    """A SELFDEV_HOME shared by the session's digits builds (the cache lives here)."""
    return tmp_path_factory.mktemp("home")


@pytest.fixture(scope="session")
def make_ctx(digits_home):
    def make(seed: int = 0) -> Context:
        return Context(run_id="test", seed=seed, home=digits_home,
                       artifacts=digits_home / "artifacts", progress=NullProgress())
    return make


@pytest.fixture(scope="session")
def digits(digits_home, make_ctx):
    """The default digits domain (seed 0), prepared once; its sandbox is closed at the end."""
    from selfdev.plugins.domains.digits import DigitsDomain

    mp = pytest.MonkeyPatch()
    mp.setenv("SELFDEV_HOME", str(digits_home))
    try:
        domain = DigitsDomain(make_ctx())
        domain.prepare()
    finally:
        mp.undo()
    yield domain
    domain.close()


@pytest.fixture(scope="session")
def accuracy(make_ctx):
    from selfdev.plugins.evaluators.accuracy import AccuracyEvaluator

    return AccuracyEvaluator(make_ctx())


@pytest.fixture(scope="session")
def dev_score(digits, accuracy):
    """``dev_score(model) -> accuracy in percent`` on the digits dev split."""
    def score(model, split: str = "dev") -> float:
        return accuracy.evaluate(digits, model, split)["score"]
    return score
