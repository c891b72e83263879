"""The ``toymath`` evaluator: the ``gsm8k`` evaluator with toymath defaults and per-family scores.

It reads the same GSM8k-format jsonl (the toymath domain supplies ``dev.jsonl``/``test.jsonl``
through ``eval_spec()``: zero-shot, ``max_new_tokens`` 40, one batch) and adds ``acc_<family>``
(accuracy in percent on the problems of each skill family, from the rows' ``family`` field).
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any

from selfdev import hookimpl

from selfdev.plugins.evaluators.gsm8k import GSM8kEvaluator


class ToyMathEvaluator(GSM8kEvaluator):
    """The gsm8k evaluator with toymath's defaults, plus the accuracy on each skill family."""

    name = "toymath"
    DEFAULTS = dict(GSM8kEvaluator.DEFAULTS, shots=0, max_new_tokens=40, batch_size=256, dev_size=200)

    def extra_metrics(self, rows, scored, metric) -> dict[str, float]:
        tot: dict[str, int] = defaultdict(int)
        ok: dict[str, int] = defaultdict(int)
        for row, s in zip(rows, scored):
            fam = row.get("family")
            if fam is None:
                continue
            tot[fam] += 1
            ok[fam] += bool(s["ok_" + metric])
        return {f"acc_{fam}": 100.0 * ok[fam] / tot[fam] for fam in sorted(tot)}


@hookimpl
def register_evaluators(register: Any) -> None:
    register(ToyMathEvaluator)
