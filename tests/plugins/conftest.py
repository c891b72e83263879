"""Fixtures for the built-in plugin tests.

* ``digits``: the default digits domain, built once per session (with ``accuracy`` and
  ``dev_score`` to score its models);
* ``toymath_family``: the test-size toymath family (hidden 64; main experts A, B and the "alt"
  set), built once per session under the session's ``SELFDEV_HOME`` (the root conftest makes a
  private one); ``toymath_env`` points ``SELFDEV_HOME`` at that home for one test;
* ``tiny_llama`` / ``make_tiny_llama``: random tiny Llama directories (seed + perturbed experts)
  with the toymath tokenizer, for tests that need no training.
"""
from __future__ import annotations

import os
from pathlib import Path

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


# -------------------------------------------------------------------- lm, toymath, apply

@pytest.fixture(scope="session")
def toymath_family() -> dict:
    from selfdev.plugins.domains.toymath.family import build_family

    home = Path(os.environ["SELFDEV_HOME"])
    # in-process (no worker start-up); the worker path is covered by test_toymath
    main = build_family("test", 0, ["A", "B"], "main", threads=1, isolate=False)
    alt = build_family("test", 0, ["A", "B"], "alt", threads=1, isolate=False)
    return {"home": home, "main": main, "alt": alt}


@pytest.fixture
def toymath_env(toymath_family, monkeypatch) -> dict:
    monkeypatch.setenv("SELFDEV_HOME", str(toymath_family["home"]))
    return toymath_family


def make_tiny_llama(path: Path, seed: int = 0, hidden: int = 32, layers: int = 2, tie: bool = True,
                    perturb_from: Path | None = None, scale: float = 0.02, max_shard_size: str | None = None,
                    vocab_extra: int = 0):
    """Save a random tiny Llama (or ``perturb_from`` + noise) with the toymath tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    from selfdev.plugins.domains.toymath.tokenizer import build_tokenizer

    tok = build_tokenizer()
    torch.manual_seed(seed)
    if perturb_from is not None:
        model = AutoModelForCausalLM.from_pretrained(perturb_from, dtype=torch.float32)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(scale * torch.randn_like(p))
    else:
        cfg = LlamaConfig(vocab_size=len(tok) + vocab_extra, hidden_size=hidden, intermediate_size=2 * hidden,
                          num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=4,
                          max_position_embeddings=256, tie_word_embeddings=tie, bos_token_id=tok.bos_token_id,
                          eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
        model = LlamaForCausalLM(cfg)
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(path, **kwargs)
    tok.save_pretrained(path)
    return path


@pytest.fixture(name="make_tiny_llama")
def make_tiny_llama_fixture():
    """``make_tiny_llama(path, ...)``: one random tiny Llama directory (see ``make_tiny_llama``)."""
    return make_tiny_llama


@pytest.fixture
def tiny_llama(tmp_path):
    """``tiny_llama()`` -> (seed_dir, {"x": dir, "y": dir}) random tiny models sharing a seed."""

    def make(n_experts: int = 2, **kw):
        seed = make_tiny_llama(tmp_path / "seed", **kw)
        experts = {}
        for i, name in enumerate("xyz"[:n_experts]):
            experts[name] = make_tiny_llama(tmp_path / f"expert-{name}", seed=i + 1, perturb_from=seed,
                                            max_shard_size=kw.get("max_shard_size"))
        return seed, experts

    return make
