"""The ``cmaes`` generator: CMA-ES over merge coefficients, written as ordinary candidates.

One seeded digits run (4 generations of 5, one global (λ, density) pair of TIES) is shared by
most tests: its programs all ran, CMA-ES improved on its first generation, regenerating from
the log gives the recorded programs, and a run killed with SIGKILL and resumed writes the same
programs as the uninterrupted one.
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from selfdev.engine.api import ConfigError, Context, NullProgress, SelfdevError

pytest.importorskip("cma")

CONFIG = {"run": {"seed": 0, "iterations": 4, "candidates": 5, "top_k": 1},
          "domain": {"name": "digits"},
          "generator": {"name": "cmaes", "method": "ties", "groups": "global",
                        "per_expert": False},
          "optimizer": {"name": "none"}}


def generator(options: dict | None = None, *, db=None, run_id="test", seed=0):
    from selfdev.plugins.generators.cmaes import CMAESGenerator

    ctx = Context(run_id=run_id, seed=seed, home=db.parent if db else None, artifacts=None,
                  progress=NullProgress(), db=db)
    return CMAESGenerator(ctx, **(options or {}))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The reference run: (database, folded state)."""
    from selfdev.engine.config import from_dict
    from selfdev.engine.loop import run_config
    from selfdev.store import EventStore

    db = tmp_path_factory.mktemp("cmaes") / "runs.db"
    with EventStore(db) as store:
        state = run_config(store, from_dict(json.loads(json.dumps(CONFIG))))
    return db, state


def programs(db, run_id=None):
    """candidate id -> (code, dev) of a run."""
    from selfdev.engine.runs import load_state
    from selfdev.store import EventStore

    with EventStore(db, readonly=True) as store:
        run_id = run_id or store.run_ids()[0]
        state = load_state(store, run_id)
        return {cid: (c.code and store.get_text(c.code), c.dev)
                for cid, c in state.candidates.items()}


# ---------------------------------------------------------------------------- the programs

@pytest.mark.parametrize("method", ["ties", "task_arithmetic", "dare_linear"])
@pytest.mark.parametrize("groups", ["layer", "tensor", "global"])
def test_programs_pass_the_screen_and_run_in_the_sandbox(digits, method, groups):
    from selfdev.plugins.generators.cmaes import Space
    from selfdev.sandbox import SandboxUnavailable, screen

    try:
        digits.sandbox()
    except SandboxUnavailable as exc:
        pytest.skip(f"sandbox unavailable here: {exc}")
    summary = digits.prepare()
    options = generator({"method": method, "groups": groups}).options
    space = Space(summary["mergeable"], list(summary["experts"]), options)
    rng = random.Random(f"{method}{groups}")
    x = [rng.random() for _ in range(space.dim)]
    code, coefficients = space.program(x, 0, "test")
    verdict = screen(code)
    assert verdict.ok, verdict.reason
    out = digits.apply(code, timeout=10.0)
    assert out.ok, out.reason
    groups_seen = set(coefficients["weights"])
    assert len(groups_seen) == {"layer": 3, "tensor": 6, "global": 1}[groups]
    assert ("density" in coefficients) == (method != "task_arithmetic")


@pytest.mark.parametrize("method, baseline, weight, density", [
    ("ties", {"density": 0.2, "lam": 0.5}, 0.5, 0.2),
    ("task_arithmetic", {"lam": 0.7}, 0.7, None),
])
def test_equal_weights_give_the_swept_baseline(digits, method, baseline, weight, density):
    """The swept grid lies inside the search space: every weight λ (and one density) is the
    baseline with those coefficients, tensor for tensor (up to the order of float sums: the
    program adds λ·τ_i one by one, the baseline sums then scales). The program is our own
    generated code, run here in-process (the sandboxed runs are the test above)."""
    import torch

    from selfdev.plugins.domains.baselines import task_arithmetic, ties
    from selfdev.plugins.generators.cmaes import Space

    summary = digits.prepare()
    options = generator({"method": method}).options
    space = Space(summary["mergeable"], list(summary["experts"]), options)
    x = []
    for _ in space.groups:
        x += [weight / 2.0] * space.n_weights  # weight_range (0, 2)
        if density is not None:
            x.append((density - 0.05) / 0.95)  # density_range (0.05, 1)
    code, coefficients = space.program(x, 0, "test")
    assert {v for w in coefficients["weights"].values() for v in w.values()} == {weight}
    namespace: dict = {}
    exec(compile(code, "<cmaes>", "exec"), namespace)  # noqa: S102 - our generated code
    fn = {"ties": ties, "task_arithmetic": task_arithmetic}[method]
    for name in digits.mergeable:
        tvs = {e: digits.task_vectors[e][name].clone() for e in digits.task_vectors}
        torch.testing.assert_close(namespace["merge_models"](tvs, digits.base[name], name),
                                   fn(tvs, digits.base[name], name, **baseline))


# ---------------------------------------------------------------------------- the search

def test_the_run_s_programs_all_ran(run):
    _, state = run
    cands = list(state.candidates.values())
    assert len(cands) == 20
    assert all(c.execution == "ok" and c.dev is not None for c in cands), \
        [(c.candidate_id, c.status, c.reason) for c in cands if c.dev is None]
    assert {c.meta["generation"] for c in cands} == {1, 2, 3, 4}


def test_cmaes_improves_on_its_first_generation(run):
    """Seeded, so it either holds or fails every time: the mean dev score of the last
    generation beats the first by a clear margin, and so does the best."""
    _, state = run
    first, last = state.iteration_stats(1), state.iteration_stats(4)
    assert last["mean"] > first["mean"] + 5, (first, last)
    assert max(c.dev for c in state.in_iteration(4)) > max(c.dev for c in state.in_iteration(1))
    # and it moved where the swept baselines say the good coefficients are (λ < 1 from 1)
    lam = [c.meta["coefficients"]["weights"]["all"]["g012"] for c in state.in_iteration(4)]
    assert sum(lam) / len(lam) < 0.9, lam


def test_regenerating_from_the_log_gives_the_recorded_programs(run):
    """Same seed, same log -> the same programs (what a redo after a crash relies on); another
    seed gives others."""
    from selfdev.sandbox import extract_candidate

    db, state = run
    recorded = programs(db)
    options = {k: v for k, v in CONFIG["generator"].items() if k != "name"}
    gen = generator(options, db=db, run_id=state.run_id, seed=0)
    for t in range(1, 5):
        again = gen.generate(["ignored"], 5, 1.0, 123, iteration=t)
        assert [extract_candidate(c.text) for c in again] == \
            [recorded[f"i{t}-c{i:04d}"][0] for i in range(5)]
    other = generator(options, db=db, run_id=state.run_id, seed=1)
    first_other = [extract_candidate(c.text) for c in other.generate(["x"], 5, 1.0, 123)]
    assert first_other != [recorded[f"i1-c{i:04d}"][0] for i in range(5)]


def test_a_replay_that_does_not_match_the_log_is_refused(run):
    """Generation 2 rebuilt with another sigma0 asks other solutions than the log recorded:
    one clear error instead of a search that silently diverged."""
    db, state = run
    options = {k: v for k, v in CONFIG["generator"].items() if k != "name"} | {"sigma0": 0.3}
    gen = generator(options, db=db, run_id=state.run_id)
    with pytest.raises(SelfdevError, match="replaying CMA-ES does not give the solutions "
                                           "recorded for iteration 1"):
        gen.generate(["x"], 5, 1.0, 0, iteration=2)


def test_in_memory_stores_are_refused_with_one_line():
    with pytest.raises(SelfdevError, match="needs a database file"):
        generator().generate(["x"], 4, 1.0, 0)


# ---------------------------------------------------------------------------- refusals

def test_other_domains_are_refused_before_run_started(db_path):
    from selfdev.engine.config import from_dict
    from selfdev.engine.loop import start_run
    from selfdev.store import EventStore

    cfg = from_dict({"run": {"iterations": 1, "candidates": 4}, "domain": {"name": "toymath"},
                     "generator": {"name": "cmaes"}, "optimizer": {"name": "none"}})
    with EventStore(db_path) as store:
        with pytest.raises(ConfigError, match=r"generator 'cmaes' writes coefficient programs "
                                              r"for in-memory tensor domains \(digits\); domain "
                                              r"'toymath' is not one"):
            start_run(store, cfg)
        assert store.count() == 0


def test_a_missing_cma_is_refused_before_run_started(db_path, monkeypatch):
    from selfdev.engine.config import from_dict
    from selfdev.engine.loop import start_run
    from selfdev.store import EventStore

    monkeypatch.setitem(sys.modules, "cma", None)  # what Python does for an absent module
    cfg = from_dict(json.loads(json.dumps(CONFIG)))
    with EventStore(db_path) as store:
        with pytest.raises(ConfigError, match=r"needs the cma package: pip install "
                                              r"'selfdev\[control\]'"):
            start_run(store, cfg)
        assert store.count() == 0


def test_the_cli_refuses_in_one_line(tmp_path):
    out = subprocess.run([sys.executable, "-m", "selfdev.engine", "demo", "--domain", "toymath",
                          "--generator", "cmaes", "--optimizer", "none", "--iterations", "1",
                          "--db", str(tmp_path / "runs.db"), "--quiet"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "domain 'toymath' is not one" in lines[0], out.stderr


@pytest.mark.parametrize("options, match", [
    ({"method": "slerp"}, "method must be one of .ties., .task_arithmetic., .dare_linear."),
    ({"weight_range": [1.0, 0.5]}, r"weight_range must be \[low, high\] with low < high"),
    ({"density_range": [0.0, 0.5]}, r"0 < low < high <= 1; got \[0.0, 0.5\]"),
    ({"sigma0": 0}, r"sigma0 must be a number in \(0, 1\]"),
])
def test_bad_options(options, match):
    with pytest.raises(ConfigError, match=match):
        generator(options)


# ---------------------------------------------------------------------------- kill and resume

def scored(db) -> int:
    """How many candidates the log has dev scores for (0 while the database is being made)."""
    from selfdev.store import EventStore

    if not db.exists():
        return 0
    try:
        with EventStore(db, readonly=True) as store:
            return sum(1 for _ in store.iter_events(types=["candidate.evaluated"]))
    except Exception:  # noqa: BLE001 - being created
        return 0


@pytest.mark.slow
def test_kill_9_then_resume_writes_the_same_programs(run, tmp_path):
    """Killed with SIGKILL inside iteration 2 (some of its candidates scored, some not), then
    resumed: every candidate's program and dev score equal the uninterrupted run's."""
    ref_db, _ = run
    config = tmp_path / "cmaes.toml"
    g = CONFIG["generator"]
    config.write_text(
        "[run]\nseed = 0\niterations = 4\ncandidates = 5\ntop_k = 1\n"
        "[domain]\nname = \"digits\"\n[optimizer]\nname = \"none\"\n"
        f"[generator]\nname = \"cmaes\"\nmethod = \"{g['method']}\"\n"
        f"groups = \"{g['groups']}\"\nper_expert = false\n")
    db = tmp_path / "runs.db"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "selfdev.engine", "run", str(config),
                             "--db", str(db), "--quiet"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # kill once iteration 1 (5 candidates) and 2 of iteration 2's are scored
    deadline = time.time() + 300
    while scored(db) < 7 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    assert proc.poll() is None, "the run ended before the kill point"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = programs(db)
    assert any(c.startswith("i2-") for c in before), sorted(before)
    assert sum(1 for _, dev in before.values() if dev is not None) < 10, before
    from selfdev.engine.loop import Runner
    from selfdev.store import EventStore

    with EventStore(db) as store:  # what `selfdev resume` does, in this process
        Runner(store, store.run_ids()[0]).run()
    assert programs(db) == programs(ref_db)
