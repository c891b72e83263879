"""One GPU, three phases, on a CPU machine: the whole loop (two iterations) with the ``vllm``
generator, the ``gsm8k`` evaluator on vLLM and the real ``dpo`` optimizer, where only what
cannot run here is a stand-in: the ``vllm`` module and ``torch.cuda``.

The stand-ins share one fake device that records who allocates and who releases, and flags
any allocation (an engine start, a wake-up, a training) while another component still holds
the device, and any generation by a sleeping engine. The test checks the order of the phases,
that every hand-over releases (sleep, then ``torch.cuda.empty_cache()``) before the next
allocation, and that evaluation loads every candidate's weights into ONE engine in place.
"""
from __future__ import annotations

import json
import shutil
import sys
import types
from dataclasses import dataclass

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("trl")

from selfdev.engine.config import from_dict  # noqa: E402
from selfdev.engine.loop import run_config  # noqa: E402
from selfdev.plugins.domains.lm.engine import VLLMEngine, load_file_into  # noqa: E402
from selfdev.plugins.evaluators import gsm8k as gsm8k_plugin  # noqa: E402
from selfdev.plugins.factory.training import Trainer  # noqa: E402
from selfdev.plugins.generators import vllm as vllm_plugin  # noqa: E402
from selfdev.plugins.optimizers.dpo import DPOOptimizer  # noqa: E402
from selfdev.store import EventStore  # noqa: E402
from tests.plugins.conftest import make_tiny_llama  # noqa: E402
from tests.plugins.test_tiny_factory import factory_home, tiny_factory  # noqa: E402,F401


class Device:
    """The one fake GPU: who holds memory now, what happened in order, what went wrong."""

    def __init__(self) -> None:
        self.holders: set[str] = set()
        self.journal: list[str] = []
        self.violations: list[str] = []

    def take(self, who: str) -> None:
        others = sorted(self.holders - {who})
        if others:
            self.violations.append(f"{who} allocated while {others} held the device "
                                   f"(after {self.journal[-3:]})")
        self.holders.add(who)
        self.journal.append(f"{who}:allocate")

    def give(self, who: str, how: str = "release") -> None:
        self.holders.discard(who)
        self.journal.append(f"{who}:{how}")

    def use(self, who: str, what: str) -> None:
        if who not in self.holders:
            self.violations.append(f"{who} {what} without holding the device")
        self.journal.append(f"{who}:{what}")


PROGRAM = '''import torch


def merge_models(task_vectors, base, name):
    merged = torch.zeros_like(base)
    for tau in task_vectors.values():
        merged = merged + tau
    return merged * {lam}
'''


class _Weights:
    """What ``load_weights`` fills: a sum per tensor name, so answers follow the weights."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.loads = 0

    def load_weights(self, items) -> None:
        for name, t in items:
            self.sums[name] = float(t.double().sum())
            self.loads += 1


def make_fake_vllm(device: Device) -> types.ModuleType:
    @dataclass
    class SamplingParams:
        n: int = 1
        temperature: float = 1.0
        top_p: float = 1.0
        top_k: int = -1
        max_tokens: int = 16
        seed: int | None = None
        stop: list | None = None

    @dataclass
    class LoRARequest:
        lora_name: str
        lora_int_id: int
        lora_path: str

    class LLM:
        """vLLM's ``LLM`` as far as selfdev uses it, allocating on the fake device."""

        instances: list = []

        def __init__(self, model, **kwargs):
            assert kwargs.get("enable_sleep_mode") is True, kwargs
            self.role = "generator" if kwargs.get("enable_lora") else "evaluator"
            self.model, self.kwargs, self.asleep = model, kwargs, False
            self.weights = _Weights()
            core = types.SimpleNamespace(shutdown=self._shutdown)
            self.llm_engine = types.SimpleNamespace(engine_core=core)
            LLM.instances.append(self)
            device.take(self.role)

        def _shutdown(self):
            device.give(self.role, "shutdown")

        def sleep(self, level=1):
            assert not self.asleep
            self.asleep = True
            device.give(self.role, f"sleep{level}")

        def wake_up(self, tags=None):
            if tags == ["kv_cache"]:  # the second half of a staged wake-up
                device.use(self.role, "kv_cache")
                return
            assert self.asleep
            self.asleep = False
            device.take(self.role)

        def reset_prefix_cache(self):
            pass

        def collective_rpc(self, method, args=()):
            assert method == "selfdev_load_weights"
            device.use(self.role, "load_weights")
            path, names = args
            return [load_file_into(self.weights, path, names)]

        def generate(self, prompts, params, lora_request=None, use_tqdm=True):
            device.use(self.role, "generate")
            if self.role == "generator":
                texts = [PROGRAM.format(lam=round(0.2 + (p.seed % 9) / 10, 1)) for p in params]
            else:  # the answer is right or wrong depending on the weights loaded in place
                key = int(abs(sum(self.weights.sums.values())) * 1e4)
                texts = []
                for i, prompt in enumerate(prompts):
                    a, b = (int(x) for x in prompt.split("What is ")[1].split("?")[0].split(" + "))
                    texts.append(f" {a} + {b} = #### {a + b + ((key >> i) & 1)}")
            return [types.SimpleNamespace(outputs=[types.SimpleNamespace(
                text=t, token_ids=[1, 2, 3], finish_reason="stop")]) for t in texts]

    vllm = types.ModuleType("vllm")
    vllm.LLM, vllm.SamplingParams = LLM, SamplingParams
    request = types.ModuleType("vllm.lora.request")
    request.LoRARequest = LoRARequest
    return vllm, types.ModuleType("vllm.lora"), request


@pytest.fixture
def fake_gpu(monkeypatch):
    """vLLM and ``torch.cuda`` stand-ins on one recording device; trainers are recorded as
    holding the device from the start of training until their ``release()``."""
    device = Device()
    vllm, lora, request = make_fake_vllm(device)
    monkeypatch.setitem(sys.modules, "vllm", vllm)
    monkeypatch.setitem(sys.modules, "vllm.lora", lora)
    monkeypatch.setitem(sys.modules, "vllm.lora.request", request)
    monkeypatch.setattr(vllm_plugin, "vllm_available", lambda: True)
    monkeypatch.setattr(gsm8k_plugin, "vllm_available", lambda: (True, ""))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: device.journal.append("empty_cache"))

    real_refine, real_release = DPOOptimizer._refine, Trainer.release

    def refine(self, checkpoint, pairs, iteration):
        device.take("optimizer")
        return real_refine(self, checkpoint, pairs, iteration)

    def release(self):
        real_release(self)  # gc + torch.cuda.empty_cache()
        if "optimizer" in device.holders:
            device.give("optimizer")

    monkeypatch.setattr(DPOOptimizer, "_refine", refine)
    monkeypatch.setattr(Trainer, "release", release)
    return device, vllm.LLM


def test_phases_take_the_device_in_turn_across_two_iterations(fake_gpu, tmp_path, tiny_factory,
                                                             monkeypatch):
    device, LLM = fake_gpu
    factory = tmp_path / "factory"
    # with its manifest: its prompt format (a fixed header) fits the factory's 1,024 positions
    shutil.copytree(tiny_factory, factory)
    seed = make_tiny_llama(tmp_path / "seed")
    experts = {n: str(make_tiny_llama(tmp_path / n, seed=i + 1, perturb_from=seed))
               for i, n in enumerate("xy")}
    data = tmp_path / "data"
    data.mkdir()
    for split, pairs in (("dev", [(2, 3), (4, 1), (7, 5), (1, 1), (6, 2), (3, 9)]),
                         ("test", [(5, 5), (8, 1), (2, 2)])):
        (data / f"{split}.jsonl").write_text("".join(
            json.dumps({"question": f"What is {a} + {b}?", "answer": f"#### {a + b}"}) + "\n"
            for a, b in pairs))
    monkeypatch.setenv("SELFDEV_HOME", str(tmp_path / "home"))
    cfg = from_dict({
        "run": {"iterations": 2, "candidates": 4, "top_k": 2, "timeout": 30},
        "pairs": {"p_w": 0.25, "p_l": 0.5},
        "domain": {"name": "lm", "seed_model": str(seed), "experts": experts},
        "generator": {"name": "vllm", "model": str(factory), "max_new_tokens": 64},
        "evaluator": {"name": "gsm8k", "backend": "vllm", "dev_file": str(data / "dev.jsonl"),
                      "test_file": str(data / "test.jsonl"), "shots": 0, "max_new_tokens": 8},
        "optimizer": {"name": "dpo", "preset": "tiny", "device": "cpu", "threads": 1,
                      "measure_margin": False, "epochs": 1},
    })
    with EventStore(tmp_path / "runs.db") as store:
        state = run_config(store, cfg)
    assert state.finished is not None

    assert device.violations == []
    holders = [e.split(":")[0] for e in device.journal if e.endswith(":allocate")]
    # baselines, then per iteration: generation, evaluation, refinement (not after the last)
    assert holders == ["evaluator", "generator", "evaluator", "optimizer", "generator",
                       "evaluator"], device.journal
    # every hand-over: the holder released (sleep / end of training) and the CUDA cache was
    # emptied after that, before the next phase allocated
    for i, entry in enumerate(device.journal):
        if not entry.endswith(":allocate"):
            continue
        who = entry.split(":")[0]
        before = device.journal[:i]
        last_alloc = max((j for j, e in enumerate(before) if e.endswith(":allocate")),
                         default=None)
        if last_alloc is None or before[last_alloc].startswith(who):
            continue
        prev = before[last_alloc].split(":")[0]
        since = before[last_alloc:]
        released = [j for j, e in enumerate(since) if e.startswith(prev + ":")
                    and e.split(":")[1] in ("sleep1", "release", "shutdown")]
        assert released, (prev, who, since)
        assert "empty_cache" in since[released[-1]:], (prev, who, since)

    evaluators = [e for e in LLM.instances if e.role == "evaluator"]
    generators = [e for e in LLM.instances if e.role == "generator"]
    # ONE evaluation engine for every baseline and candidate: merged weights load in place
    assert len(evaluators) == 1 and evaluators[0].weights.loads > 0
    scored = [c for c in state.candidates.values() if c.dev is not None]
    assert len(scored) >= 2 and len({c.dev for c in scored}) >= 2
    # iteration 2 samples from the DPO-refined (full-weights) checkpoint: a new engine on it
    assert state.checkpoint_path  # refined once, after iteration 1
    assert len(generators) == 2 and generators[1].model != generators[0].model
    assert "generator:shutdown" in device.journal


def test_the_evaluation_engine_survives_a_level_2_sleep(fake_gpu, tmp_path):
    """Sleep level 2 drops vLLM's weights: waking reloads the seed from disk, and the next
    candidate's tensors are pushed again, so its scores do not change."""
    device, LLM = fake_gpu
    from selfdev.engine.api import Context, NullProgress
    from selfdev.plugins.domains.lm.domain import LMDomain

    seed = make_tiny_llama(tmp_path / "seed")
    expert = make_tiny_llama(tmp_path / "x", seed=1, perturb_from=seed)
    ctx = Context(run_id="t", seed=0, home=tmp_path, artifacts=tmp_path / "art",
                  progress=NullProgress())
    dom = LMDomain(ctx, seed_model=str(seed), experts={"x": str(expert)})
    engine = VLLMEngine(sleep_level=2)
    engine.generate(dom.seed_model(), ["What is 1 + 2?"], 8, [])
    handle = dom.expert_model("x")  # same layout, another checkpoint: loaded whole, in place
    engine.generate(handle, ["What is 1 + 2?"], 8, [])
    assert engine.builds == 1 and len(LLM.instances) == 1
    llm = LLM.instances[-1]
    expert_sums = dict(llm.weights.sums)
    assert len(expert_sums) >= 10
    engine.sleep()
    llm.weights.sums = {k: float("nan") for k in llm.weights.sums}  # level 2: weights gone
    engine.wake()
    seed_sums = dict(llm.weights.sums)  # the seed again, from disk
    assert seed_sums.keys() == expert_sums.keys() and seed_sums != expert_sums
    engine.generate(handle, ["What is 1 + 2?"], 8, [])
    assert llm.weights.sums == expert_sums  # the candidate is pushed again after the wake
    tail = device.journal[device.journal.index("evaluator:sleep2"):]
    assert tail[:4] == ["evaluator:sleep2", "empty_cache", "evaluator:allocate",
                        "evaluator:load_weights"]
    assert tail[-3:] == ["evaluator:kv_cache", "evaluator:load_weights", "evaluator:generate"]
    assert device.violations == []
