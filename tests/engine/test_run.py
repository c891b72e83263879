"""End-to-end runs of the real loop on the digits domain (real sandbox, real store)."""

import pytest

from selfdev.engine import hookimpl
from selfdev.engine.api import Completion, Generator, SelfdevError
from selfdev.engine.config import from_dict
from selfdev.engine.loop import Runner, run_config
from selfdev.engine.plugins import pm
from selfdev.engine.report import summary
from selfdev.engine.runs import run_summaries
from selfdev.store import EventStore

TA = '''
import torch

def merge_models(task_vectors, base, name):
    """Task arithmetic with lambda 0.5."""
    return 0.5 * sum(task_vectors.values())
'''

SCRIPT = [
    "Here is my idea:\n```python\n" + TA + "```\n",
    "I could not think of anything.",  # no merge_models
    "```python\nimport torch\ndef merge_models(task_vectors, base, name):\n    raise ValueError('boom')\n```",
    "```python\nimport torch\ndef merge_models(task_vectors, base, name):\n    return torch.zeros(3)\n```",
    "```python\nimport torch\ndef merge_models(task_vectors, base, name):\n    return base * float('nan')\n```",
    "```python\nimport os\ndef merge_models(task_vectors, base, name):\n    return os.system('true')\n```",
    "```python\n" + TA.replace('"""Task arithmetic with lambda 0.5."""', "# same program") + "```",
]


class Scripted(Generator):
    """Stands in for a language model: returns fixed completions (the LLM cannot run here)."""

    name = "scripted"

    def generate(self, prompts, n, temperature, seed, checkpoint=None, iteration=1):
        return [Completion(SCRIPT[i % len(SCRIPT)]) for i in range(n)]


class ScriptedPlugin:
    @hookimpl
    def register_generators(self, register):
        register(Scripted)


@pytest.fixture
def scripted():
    pm.register(ScriptedPlugin(), name="scripted-plugin")
    yield
    pm.unregister(name="scripted-plugin")


def small(**over):
    data = {"run": {"seed": 0, "iterations": 2, "candidates": 12, "top_k": 3, "timeout": 20.0},
            "domain": {"name": "digits"}, "generator": {"name": "grammar"},
            "optimizer": {"name": "none"}}
    for k, v in over.items():
        data.setdefault(k, {}).update(v)
    return from_dict(data)


def comparable(state):
    data = summary(state)
    data.pop("run_id")
    data.pop("timing")
    return data


def test_bad_candidates_are_recorded_and_the_run_goes_on(db_path, scripted):
    with EventStore(db_path) as store:
        state = run_config(store, small(generator={"name": "scripted"}, run={"candidates": 7, "iterations": 1}))
        by_index = {c.index: c for c in state.candidates.values()}
        assert by_index[0].dev is not None and by_index[0].dev > 30
        assert by_index[1].screen == "rejected" and "no merge_models" in by_index[1].reason
        assert by_index[2].execution == "error" and "boom" in by_index[2].reason
        assert by_index[3].execution == "rejected" and "shape" in by_index[3].reason
        assert by_index[4].execution == "rejected" and "finite" in by_index[4].reason.lower()
        assert by_index[5].screen == "rejected" and "not allowed" in by_index[5].reason
        assert by_index[6].screen == "duplicate" and by_index[6].duplicate_of == by_index[0].candidate_id
        assert state.finished is not None
        assert store.verify().ok


def test_same_seed_same_run_and_a_finished_run_has_everything(db_path):
    with EventStore(db_path) as store:
        a = run_config(store, small())
        b = run_config(store, small())
        c = run_config(store, small(run={"seed": 1}))
        assert comparable(a) == comparable(b)
        assert comparable(a)["leaderboard"] != comparable(c)["leaderboard"]
        data = summary(a)
        labels = [row["method"] for row in data["table"]]
        assert labels[0] == "seed" and "best TA" in labels and "best TIES" in labels
        assert "best DARE" in labels and labels[-1] == "best discovered"
        assert [s["temperature"] for s in data["iterations"]] == [1.2, 1.0]
        assert len(data["selection"]) == 3
        assert all(r["test"] is not None for r in data["leaderboard"][:3])
        runs = {r["run_id"]: r for r in run_summaries(store)}
        assert runs[a.run_id]["status"] == "finished"
        assert store.verify().ok


def test_replay_reissues_recorded_completions(db_path):
    with EventStore(db_path) as store:
        a = run_config(store, small())
        b = run_config(store, small(generator={"name": "replay", "run": a.run_id}))
        texts = lambda s: [store.get_text(c.completion) for c in sorted(s.candidates.values(), key=lambda c: c.candidate_id)]
        assert texts(a) == texts(b)
        assert comparable(a)["leaderboard"] == comparable(b)["leaderboard"]


def test_resume_of_a_finished_run_changes_nothing(db_path):
    with EventStore(db_path) as store:
        a = run_config(store, small(run={"iterations": 1, "candidates": 4}))
        before = store.count(run_id=a.run_id)
        Runner(store, a.run_id).run()
        assert store.count(run_id=a.run_id) == before


def test_unknown_plugin_is_refused_before_anything_is_recorded(db_path):
    with EventStore(db_path) as store:
        with pytest.raises(SelfdevError, match="unknown generator 'gpt-17'; allowed:"):
            run_config(store, small(generator={"name": "gpt-17"}))
        assert store.count() == 0
