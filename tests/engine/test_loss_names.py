"""The loss a factory was refined with is named beside its results ("DPO" vs "DPO+NLL")."""
from __future__ import annotations

from types import SimpleNamespace

from selfdev.engine.report import loss_name, optimizer_loss


def test_loss_lists_get_their_literature_names():
    assert loss_name("sigmoid") == "DPO"
    assert loss_name(["sigmoid"]) == "DPO"
    assert loss_name(["sigmoid", "sft"]) == "DPO+NLL"
    assert loss_name(["ipo", "sft"]) == "ipo+sft"


def _state(optimizer: dict, refined_loss=None):
    iterations = {1: SimpleNamespace(refined=None)}
    if refined_loss is not None:
        iterations[1] = SimpleNamespace(refined=SimpleNamespace(metrics={"loss_type": refined_loss}))
    return SimpleNamespace(iterations=iterations,
                           started=SimpleNamespace(config={"optimizer": optimizer}))


def test_the_recorded_loss_wins_over_the_configuration():
    # the tiny preset's default (no loss_type configured) is only known once recorded
    assert optimizer_loss(_state({"name": "dpo"})) is None
    assert optimizer_loss(_state({"name": "dpo"}, ["sigmoid", "sft"])) == "DPO+NLL"
    assert optimizer_loss(_state({"name": "dpo", "loss_type": "sigmoid"})) == "DPO"
    assert optimizer_loss(_state({"name": "sft"})) == "SFT"
    assert optimizer_loss(_state({"name": "none"})) is None
