"""The preference-pair rule, the final selection and next_step, on hand-built states."""
from selfdev.engine.config import from_dict
from selfdev.engine.loop import build_pairs, next_step, top_k
from selfdev.engine.state import CandidateState, IterationState, RunState


def state_with(scores_by_iteration):
    state = RunState(prepared={})
    for t, scores in scores_by_iteration.items():
        state.iterations[t] = IterationState(t, 1.0, generated=True)
        for i, s in enumerate(scores):
            cid = f"i{t}-c{i:04d}"
            state.candidates[cid] = CandidateState(cid, t, i, screen="accepted",
                                                   execution="ok" if s is not None else "error",
                                                   dev=s)
    return state


def test_top_three_percent_vs_bottom_ten_percent():
    cfg = from_dict({})
    scores = list(range(100))  # candidate i scored i
    built = build_pairs(state_with({1: scores}), cfg, 1)
    assert built.chosen == ["i1-c0099", "i1-c0098", "i1-c0097"]
    assert built.rejected == [f"i1-c{i:04d}" for i in range(9, -1, -1)]
    assert len(built.pairs) == 30 and built.elites == []


def test_failed_candidates_are_not_pairs_and_chosen_beats_rejected():
    cfg = from_dict({})
    built = build_pairs(state_with({1: [5.0, None, 5.0, None]}), cfg, 1)
    assert built.pairs == []  # equal scores make no preference
    built = build_pairs(state_with({1: [1.0, None, 3.0]}), cfg, 1)
    assert built.pairs == [["i1-c0002", "i1-c0000"]]


def test_elites_of_earlier_iterations_join_the_chosen_side():
    cfg = from_dict({"pairs": {"elites": 2}})
    state = state_with({1: [50, 60, 70, 10], 2: [1, 2, 3, 4, 5]})
    built = build_pairs(state, cfg, 2)
    assert built.chosen == ["i2-c0004"]
    assert built.elites == ["i1-c0002", "i1-c0001"]
    assert ["i1-c0002", "i2-c0000"] in built.pairs


def test_max_pairs_subsample_is_seeded():
    cfg = from_dict({"pairs": {"p_w": 0.5, "p_l": 0.5, "max_pairs": 7}})
    state = state_with({1: list(range(40))})
    a, b = build_pairs(state, cfg, 1), build_pairs(state, cfg, 1)
    assert len(a.pairs) == 7 and a.pairs == b.pairs


def test_top_k_pools_iterations_by_dev():
    state = state_with({1: [10, 90], 2: [80, 20]})
    assert [c.candidate_id for c in top_k(state, 3)] == ["i1-c0001", "i2-c0000", "i2-c0001"]


def test_next_step_walks_the_loop():
    cfg = from_dict({"run": {"iterations": 2, "top_k": 1}})
    state = RunState()
    assert next_step(state, cfg, []).kind == "prepare"
    state.prepared = {}
    assert next_step(state, cfg, ["seed"]).kind == "baselines"
    assert next_step(state, cfg, []).kind == "start_iteration"
    state = state_with({1: [1.0, 2.0]})
    state.candidates["i1-c0000"].execution = None
    step = next_step(state, cfg, [])
    assert (step.kind, step.ids) == ("execute", ["i1-c0000"])
    state.candidates["i1-c0000"].execution = "ok"
    assert next_step(state, cfg, []).kind == "pairs"
