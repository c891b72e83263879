"""Per iteration, recorded and shown: the merge primitives programs call (and their share),
unique programs, and the compute of each phase next to the baselines' sweep.

A real run of the engine (digits + grammar, 2 iterations x 6 candidates) is the subject:
``candidate.screened`` records each program's primitives, ``phase.timed`` each costly step,
and ``selfdev show`` reports them (timings under ``timing`` only, which determinism tests
leave out)."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from rich.console import Console

from selfdev.engine.cli import cli
from selfdev.engine.primitives import FAMILIES, PRIMITIVES, families_of, primitives_of, shares
from selfdev.store import EventStore, NewEvent


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def run_db(grammar_run_db):
    return grammar_run_db  # tests/engine/conftest.py: one real run per session


def test_primitives_of_a_program():
    code = ("import torch\n"
            "def merge_models(task_vectors, base, name):\n"
            "    stacked = torch.stack(list(task_vectors.values()))\n"
            "    k = max(1, stacked.numel() // 5)\n"
            "    thr = torch.topk(stacked.abs().flatten(), k).values[-1]\n"
            "    sign = torch.sign(stacked.sum(dim=0))\n"
            "    keep = torch.where(stacked.abs() >= thr, stacked, torch.zeros_like(stacked))\n"
            "    return keep.median(dim=0).values * sign\n")
    assert primitives_of(code) == ["abs", "median", "sign", "sum", "topk", "where"]
    assert families_of(primitives_of(code)) == ["magnitude", "mask", "mean", "median", "sign",
                                                "trim"]
    assert primitives_of("def merge_models(:\n") is None
    assert primitives_of("def merge_models(t, b, n):\n    return b * 0\n") == []
    assert all(PRIMITIVES[n] == f for f, names in FAMILIES.items() for n in names)
    assert shares([["a", "b"], ["a"], []]) == {"a": 0.6667, "b": 0.3333}


def test_screened_events_record_primitives_and_steps_record_their_time(run_db):
    with EventStore(run_db, readonly=True) as store:
        run_id = store.run_ids()[0]
        screened = [e.payload for e in store.iter_events(run_id=run_id,
                                                         types=["candidate.screened"])]
        for p in screened:
            if p["code"] is not None:
                assert p["primitives"] == primitives_of(store.get_text(p["code"]))
        assert any(p["primitives"] for p in screened)
        timed = [(e.payload["iteration"], e.payload["phase"])
                 for e in store.iter_events(run_id=run_id, types=["phase.timed"])]
        order = [e.type for e in store.iter_events(run_id=run_id)]
    assert timed == [(0, "baselines"), (1, "sampling"), (1, "screening"), (1, "execution"),
                     (1, "refinement"), (2, "sampling"), (2, "screening"), (2, "execution"),
                     (0, "test")]
    # each follows its step's events: the one after the generated batch is sampling's
    first = order.index("candidate.generated")
    assert order[first + 6] == "phase.timed"


def test_show_json_reports_primitive_shares_and_compute(run_db):
    data = json.loads(invoke("show", "latest", "--db", run_db, "--json").output)
    with EventStore(run_db, readonly=True) as store:
        screened = [e.payload for e in store.iter_events(types=["candidate.screened"])]
    for it in data["iterations"]:
        written = [p["primitives"] for p in screened
                   if p["candidate_id"].startswith(f"i{it['iteration']}-")
                   and p["status"] in ("accepted", "duplicate")]
        assert it["primitives"] == shares(written)
        assert it["families"] == shares([families_of(w) for w in written])
        assert it["unique"] >= 1
    timing = data["timing"]
    assert [p["iteration"] for p in timing["phases"]] == [1, 2]
    one, two = timing["phases"]
    for phase in ("sampling", "screening", "execution"):
        assert one[phase]["seconds"] >= 0 and one[phase]["cpu_seconds"] >= 0
    assert one["execution"]["items"] == sum(1 for p in screened
                                            if p["candidate_id"].startswith("i1-")
                                            and p["status"] == "accepted")
    assert one["refinement"] is not None and two["refinement"] is None  # none after the last
    assert one["sandbox_seconds"] > 0
    assert timing["baselines"]["evaluated"] == len(data["baselines"])
    assert timing["baselines"]["items"] == len(data["baselines"])
    assert timing["test"]["items"] == len(data["selection"])
    every = [v["seconds"] for p in timing["phases"] for k, v in p.items()
             if isinstance(v, dict)] + [timing["baselines"]["seconds"], timing["test"]["seconds"]]
    assert timing["seconds_total"] == pytest.approx(sum(every), abs=1e-3)


def test_show_prints_both_tables_within_80_columns(run_db):
    from selfdev.engine.report import render, summary
    from selfdev.engine.runs import load_state

    with EventStore(run_db, readonly=True) as store:
        data = summary(load_state(store, store.run_ids()[0]))
    console = Console(width=80, record=True, color_system=None)
    render(data, console)
    text = console.export_text()
    assert "programs written: unique" in text and "compute (wall seconds per phase)" in text
    assert f"baselines ({len(data['baselines'])})" in text
    assert all(len(line) <= 80 for line in text.splitlines())
    assert "…" not in text  # nothing cut


def test_a_log_from_before_primitives_and_timings(run_db, tmp_path):
    """The same events without ``primitives`` and ``phase.timed`` (a log written before them):
    ``show`` takes the primitives from the programs, the same numbers, and reports no
    compute instead of zeros."""
    old = tmp_path / "old.db"
    with EventStore(run_db, readonly=True) as src, EventStore(old, writer="test") as dst:
        run_id = src.run_ids()[0]
        for e in src.iter_events(run_id=run_id):
            if e.type == "phase.timed":
                continue
            payload = {k: v for k, v in e.payload.items()
                       if not (e.type == "candidate.screened" and k == "primitives")}
            dst.append(run_id, [NewEvent(e.type, payload, e.type_version, source=e.source)])
        for ref in {e.payload["code"] for e in src.iter_events(types=["candidate.screened"])
                    if e.payload.get("code")} | {e.payload["completion"] for e in
                                                  src.iter_events(types=["candidate.generated"])}:
            dst.put_blob(src.get_text(ref))
    new = json.loads(invoke("show", "latest", "--db", run_db, "--json").output)
    then = json.loads(invoke("show", "latest", "--db", old, "--json").output)
    assert [i["families"] for i in then["iterations"]] == [i["families"] for i in new["iterations"]]
    assert [i["primitives"] for i in then["iterations"]] == \
        [i["primitives"] for i in new["iterations"]]
    assert then["timing"]["seconds_total"] is None and then["timing"]["baselines"] is None
    text = invoke("show", "latest", "--db", old).output
    assert "programs written" in text and "compute (wall seconds" not in text
