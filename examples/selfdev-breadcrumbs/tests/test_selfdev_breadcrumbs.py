"""The example plugin's own tests, written with the fixtures selfdev ships (no import of them)."""
import json

import pytest

import selfdev
import selfdev_breadcrumbs


def run_trusted(code, task_vectors, base, name="w"):
    """Our own program, run in this process to check what it computes (a candidate from a
    model would only ever run in the sandbox)."""
    namespace = {}
    exec(compile(code, "<breadcrumbs>", "exec"), namespace)
    return namespace["merge_models"](task_vectors, base, name)


def test_candidates_walk_the_grid_in_order(selfdev_engine):
    generator = selfdev_engine.build("generator", "breadcrumbs", densities=[0.5],
                                     gammas=[0.0, 0.1], lams=[1.0])
    completions = generator.generate(["any prompt"], 3, temperature=1.2, seed=7)
    assert [c.meta for c in completions] == [
        {"density": 0.5, "gamma": 0.0, "lam": 1.0},
        {"density": 0.5, "gamma": 0.1, "lam": 1.0},
        {"density": 0.5, "gamma": 0.0, "lam": 1.0},  # the grid again
    ]
    for completion in completions:
        assert selfdev.screen(selfdev.extract_candidate(completion.text)).ok


def test_the_program_drops_the_largest_and_the_smallest_entries(selfdev_engine):
    import torch

    generator = selfdev_engine.build("generator", "breadcrumbs", densities=[0.5],
                                     gammas=[0.1], lams=[2.0])
    (completion,) = generator.generate(["p"], 1, 1.0, 0)
    tau = torch.arange(1.0, 21.0)  # magnitudes 1..20
    merged = run_trusted(selfdev.extract_candidate(completion.text), {"a": tau}, torch.zeros(20))
    kept = (merged != 0).nonzero().flatten().tolist()
    assert kept == list(range(8, 18))  # 9..18 kept: the top 2 (gamma 0.1) and the bottom 8 dropped
    assert torch.equal(merged[kept], 2.0 * tau[kept])


def test_bad_options_are_refused_in_one_line(selfdev_engine):
    with pytest.raises(selfdev.ConfigError, match=r"densities must be a list of numbers in \(0, 1\]"):
        selfdev_engine.build("generator", "breadcrumbs", densities=[1.5])


def test_breadcrumbs_beats_the_seed_on_digits(selfdev_digits, selfdev_engine):
    accuracy = selfdev_engine.build("evaluator", "accuracy")
    seed = accuracy.evaluate(selfdev_digits, selfdev_digits.seed_model(), "dev")["score"]
    (completion,) = selfdev_engine.build("generator", "breadcrumbs").generate(["p"], 1, 1.0, 0)
    outcome = selfdev_digits.apply(selfdev.extract_candidate(completion.text), timeout=30)
    assert outcome.ok, outcome.reason
    assert accuracy.evaluate(selfdev_digits, outcome.model, "dev")["score"] > seed + 10


def test_a_run_scores_the_grid_and_logs_every_event(selfdev_engine, selfdev_iteration,
                                                    tmp_path, monkeypatch):
    monkeypatch.setenv("SELFDEV_JSONL_DIR", str(tmp_path / "jsonl"))
    state = selfdev_iteration(generator={"name": "breadcrumbs", "densities": [0.9],
                                         "gammas": [0.01], "lams": [0.5, 1.0]}, candidates=2)
    assert state.finished is not None, state.failed
    assert [c.dev is not None for c in state.candidates.values()] == [True, True]

    lines = (tmp_path / "jsonl" / f"{state.run_id}.jsonl").read_text().splitlines()
    logged = {e.position: e for e in selfdev_engine.events(state.run_id)}
    records = [json.loads(line) for line in lines]
    assert records[-1]["type"] == "run.finished" and len(records) >= len(logged) - 1
    for record in records:  # each line is the event as the log holds it
        event = logged[record["position"]]
        assert (record["type"], record["hash"], record["payload"]) == (event.type, event.hash,
                                                                       event.payload)
    assert [r["position"] for r in records] == sorted(r["position"] for r in records)
