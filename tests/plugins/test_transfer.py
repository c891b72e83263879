"""``selfdev apply``: a discovered algorithm on unseen experts, compared with the baselines."""
from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from click.testing import CliRunner  # noqa: E402

ALGO_A = '''\
Here is my algorithm.

```python
import torch


def merge_models(task_vectors: dict[str, torch.Tensor], base: torch.Tensor, name: str) -> torch.Tensor:
    """Paper Fig. 11 'Algorithm A': fold in the next experts' row means."""
    taus = list(task_vectors.values())
    acc = taus[0].clone()
    for y in taus[1:]:
        dim = 0 if acc.dim() == 1 else 1
        acc = 0.5 * acc + 0.5 * torch.mean(y, dim=dim, keepdim=True)
    return acc
```
'''


@pytest.fixture
def cli():
    from selfdev.engine.cli import cli as selfdev_cli

    return selfdev_cli


def test_apply_to_unseen_toymath_experts(cli, toymath_env, tmp_path):
    from transformers import AutoModelForCausalLM

    from selfdev.store import EventStore

    algo = tmp_path / "algo_a.md"
    algo.write_text(ALGO_A)
    out, db = tmp_path / "merged", tmp_path / "events.db"
    res = CliRunner().invoke(cli, ["apply", str(algo), "--toymath", "alt", "--toymath-size", "test",
                                   "--out", str(out), "--db", str(db), "--json"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    data = json.loads(res.output)
    labels = [r["label"] for r in data["rows"]]
    assert labels[:3] == ["seed", "expert A", "expert B"] and labels[-1] == "algo_a"
    assert {"task_arithmetic lam=0.5", "ties density=0.2 lam=1.0", "model_stock", "slerp t=0.5"} <= set(labels)
    for r in data["rows"]:
        assert r["status"] == "ok", r
        assert set(r["scores"]) == {"dev", "test"}
        assert all(0 <= v <= 100 for v in r["scores"].values())
    assert data["best_baseline"] in labels
    assert data["split_info"]["n_dev"] == 60 and data["domain"]["expert_set"] == "alt"
    # the unseen experts are the alt set, not the ones of the main set
    assert data["domain"]["experts"]["A"] == str(toymath_env["alt"]["experts"]["A"])
    # the merged model is a normal HF directory
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.hidden_size == 64
    # and the run is recorded as events
    with EventStore(db, readonly=True) as store:
        (run_id,) = store.run_ids()
        types = [e.type for e in store.iter_events(run_id=run_id)]
    assert types[0] == "transfer.started" and types[-1] == "transfer.finished"
    assert types.count("transfer.row_evaluated") == len(labels)


def test_apply_with_explicit_dirs_prints_a_table(cli, toymath_env, tmp_path):
    fam = toymath_env["main"]
    algo = tmp_path / "avg.py"
    algo.write_text("import torch\n\n\ndef merge_models(task_vectors, base, name):\n"
                    "    return sum(task_vectors.values()) / len(task_vectors)\n")
    args = ["apply", str(algo), "--base", str(fam["seed"]), "--expert", f"A={fam['experts']['A']}",
            "--expert", f"B={fam['experts']['B']}", "--eval", "toymath", "--eval-data", str(fam["data"]),
            "--no-baselines", "--split", "dev", "--mergeable", "mlp", "--quiet"]
    res = CliRunner().invoke(cli, args, terminal_width=160)
    assert res.exit_code == 0, res.output + repr(res.exception)
    for word in ("seed", "expert A", "expert B", "avg", "dev", "Δ seed"):
        assert word in res.output


def test_apply_reports_user_errors(cli, tmp_path):
    algo = tmp_path / "nothing.py"
    algo.write_text("print('hi')\n")
    res = CliRunner().invoke(cli, ["apply", str(algo), "--base", str(tmp_path)])
    assert res.exit_code == 2 and "merge_models" in res.output
    good = tmp_path / "ok.py"
    good.write_text("import torch\n\ndef merge_models(task_vectors, base, name):\n    return base * 0\n")
    res = CliRunner().invoke(cli, ["apply", str(good), "--base", str(tmp_path)])
    assert res.exit_code == 2 and "--expert" in res.output
