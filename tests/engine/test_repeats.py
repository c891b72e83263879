"""A program the factory writes again (screen status ``duplicate``) is a repeat, not a failure:
validity is counted over new programs, repeats have their own count, and a repeat carries its
earlier score into the mean dev of what the factory wrote."""
from __future__ import annotations

import re

from rich.console import Console

from selfdev.engine.report import render, summary


def program(body: str) -> str:
    return f"```python\nimport torch\n\ndef merge_models(task_vectors, base, name):\n{body}\n```\n"


A = program("    return 0.5 * sum(task_vectors.values())")
B = program("    return 0.3 * sum(task_vectors.values())")
BROKEN = program("    raise RuntimeError('no idea')")


def test_repeats_are_neither_failures_nor_lost(selfdev_engine, selfdev_scripted, capsys):
    # 3 new programs (A, B, BROKEN) and 3 repeats (A twice, BROKEN once)
    selfdev_scripted.enqueue(A, B, BROKEN, A, A, BROKEN)
    state = selfdev_engine.iteration(generator="scripted")
    stats = state.iterations[1].stats
    cands = state.in_iteration(1)
    a, b = cands[0].dev, cands[1].dev
    assert a is not None and b is not None and cands[2].execution == "error"

    assert stats["repeats"] == stats["duplicates"] == 3
    assert stats["new"] == 3 and stats["unique"] == 3
    assert stats["executed_ok"] == 2 and stats["scored"] == 2
    assert stats["executable_rate"] == round(2 / 3, 4)  # not 2 / 6: repeats never ran
    assert stats["mean"] == round((a + b + a + a) / 4, 4)  # A's repeats carry its score
    assert stats["best"] == max(a, b)

    # the iterations table of `selfdev show` has the column
    console = Console(width=100, record=True)
    render(summary(state), console)
    text = console.export_text()
    assert "repeats" in text
    row = next(line for line in text.splitlines() if re.match(r"\W*1\W", line))
    assert re.search(r"\b6\D+3\D+3\D+67%", row), row
