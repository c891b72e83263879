"""Fixtures for the lm / gsm8k / toymath / transfer tests (imported by those test files).

* ``toymath_family``: the test-size toymath family (hidden 64; main experts A, B and the "alt"
  set), built once per session under the session's ``SELFDEV_HOME`` (the root conftest makes a
  private one) and cached in this module, so importing the fixture in several files builds once.
* ``toymath_env``: points ``SELFDEV_HOME`` at that home for one test.
* ``tiny_llama``: a factory for random tiny Llama directories (seed + perturbed experts) with
  the toymath tokenizer, for tests that need no training.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

_FAMILY: dict = {}


def _build_family() -> dict:
    if not _FAMILY:
        from selfdev.plugins.domains.toymath import build_family

        home = Path(os.environ["SELFDEV_HOME"])
        # in-process (no worker start-up); the worker path is covered by test_toymath
        main = build_family("test", 0, ["A", "B"], "main", threads=1, isolate=False)
        alt = build_family("test", 0, ["A", "B"], "alt", threads=1, isolate=False)
        _FAMILY.update(home=home, main=main, alt=alt)
    return _FAMILY


@pytest.fixture(scope="session")
def toymath_family() -> dict:
    return _build_family()


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

    from selfdev.plugins.domains.toymath import build_tokenizer

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
