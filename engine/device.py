"""One GPU, three phases: what each phase needs, whether it fits, and who holds the device.

A run with a GPU factory (``vllm``), a GPU evaluator (``gsm8k`` on vLLM) and a GPU optimizer
(``dpo``) cannot hold all three at once: vLLM alone reserves ``gpu_memory_utilization`` of the
device. So the loop runs its phases in turn, and each gives the device back before the next:

====================  ============================  =====================================
phase                 steps of the loop              component
====================  ============================  =====================================
``generation``        ``generate``                  the generator
``evaluation``        ``baselines``, ``execute``,   the evaluator
                      ``test``
``refinement``        ``refine``                    the optimizer
====================  ============================  =====================================

**The contract** (every method optional; the base :class:`~selfdev.engine.api.Component` has
no-op defaults, so CPU components do nothing):

* ``release()``: give back every byte of accelerator memory the component holds (vLLM's sleep
  mode or an engine shutdown, models moved off the device, then ``torch.cuda.empty_cache()``).
  The loop calls it on every built component of the other phases before a phase starts.
* ``acquire()``: take the device again (wake vLLM up, move a model back). The loop calls it on
  the phase's own components, after the others released; a component that is used while
  released must acquire by itself, so ``acquire`` is an ordering aid, never a precondition.
* ``device_memory(options, plan) -> DeviceNeed | None`` (classmethod): what the component needs
  on the device, estimated from the model configurations without building anything, for the
  check below. None: it does not use an accelerator with these options.

**The check**, before ``run.started`` (:func:`check_device_plan`, called by the loop's
preflight): each component's need must fit its own budget (vLLM: ``gpu_memory_utilization`` of
the device), and each phase must fit the device together with whatever other components keep
resident (``release = "keep"``). A refusal is one line naming the phase, the component and the
numbers. The device's size comes from ``SELFDEV_DEVICE_MEMORY`` (e.g. ``80GiB``; what tests and
dry runs use) or ``torch.cuda``; with neither (a CPU machine) nothing is checked: the GPU
components refuse by themselves there.

The estimate counts what the brief of a phase fixes before any data is seen: parameters ×
dtype bytes, the KV cache vLLM must hold (one full context), LoRA parameters, gradients and
Adam states, and the reference model. It does not count activations (they depend on the
lengths of the sequences) nor CUDA contexts, CUDA graphs and allocator slack (a sleeping vLLM
engine still keeps its context and graphs, about a GiB or two): it is a lower bound. A run it
refuses cannot fit; a run it accepts can still run out of memory in training activations
(lower ``batch_size`` with ``grad_accum``, or ``max_length``) or, with two vLLM engines at
``gpu_memory_utilization`` 0.9 and more, at the second engine's start.

``torch`` is imported only when a component reports a need and no size was given.
"""
from __future__ import annotations

import json
import math
import os
import re
import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from selfdev.engine.api import ConfigError

#: the loop's phases, in the order an iteration runs them
PHASES = ("generation", "evaluation", "refinement")
#: which component kind each phase belongs to
KIND_PHASE = {"generator": "generation", "evaluator": "evaluation", "optimizer": "refinement"}
#: which phase each step of the loop is (steps not listed use no accelerator)
STEP_PHASE = {"generate": "generation", "baselines": "evaluation", "execute": "evaluation",
              "test": "evaluation", "refine": "refinement"}

ENV_SIZE = "SELFDEV_DEVICE_MEMORY"
GIB = 1 << 30
DTYPE_BYTES = {"float32": 4, "fp32": 4, "float": 4, "bfloat16": 2, "bf16": 2, "float16": 2,
               "fp16": 2, "half": 2, "float64": 8, "int8": 1, "uint8": 1, "fp8": 1}
_ST_BYTES = {"F64": 8, "F32": 4, "BF16": 2, "F16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
             "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}


# --------------------------------------------------------------------------------- sizes
def gib(n: float) -> str:
    """``n`` bytes as ``"12.3 GiB"`` (``MiB`` below one GiB, so tiny models read sensibly)."""
    if n >= GIB:
        return f"{n / GIB:.1f} GiB"
    return f"{n / (1 << 20):.1f} MiB"


def parse_size(text: str) -> int:
    """``"80GiB"``, ``"81920M"``, ``"24 GB"``, ``"1073741824"`` -> bytes (binary units: a GPU's
    "80 GB" is 80 GiB as torch reports it, near enough for a fit check)."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGT]?)(?:I?B)?\s*", text.upper())
    if not m:
        raise ConfigError(f"{ENV_SIZE}={text!r} is not a size; give bytes or a number with "
                          "K, M, G or T (e.g. 80GiB)")
    scale = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}[m.group(2)]
    return int(float(m.group(1)) * scale)


def device_memory_bytes() -> int | None:
    """The accelerator's memory in bytes (device 0): ``$SELFDEV_DEVICE_MEMORY`` when set, else
    ``torch.cuda``; None where there is no GPU."""
    env = os.environ.get(ENV_SIZE, "").strip()
    if env:
        return parse_size(env)
    try:
        import torch
    except Exception:  # noqa: BLE001 - no torch, no GPU
        return None
    try:
        if not torch.cuda.is_available():
            return None
        return int(torch.cuda.get_device_properties(0).total_memory)
    except Exception:  # noqa: BLE001 - a broken CUDA set-up: the components say so themselves
        return None


def shutdown_engine(llm: Any) -> None:
    """Stop a vLLM ``LLM``'s engine (V1 runs its engine core as a process of its own, which a
    dropped reference does not end) and free the device memory it held. The caller must drop
    its own references to ``llm`` first."""
    core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
    stop = getattr(core, "shutdown", None)
    if callable(stop):
        stop()
    del llm
    free_device_memory()


def free_device_memory() -> None:
    """Drop unreachable tensors and hand the CUDA caching allocator's free blocks back to the
    device, so the next phase (often another process: vLLM's engine core) can take them.
    Does nothing where torch was never imported (then nothing can be on the device)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return
    import gc

    gc.collect()
    try:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001 - freeing memory is best effort
        pass


# --------------------------------------------------------------------------- model shapes
@dataclass(frozen=True)
class ModelShape:
    """What a memory estimate needs from a Hugging Face causal LM directory."""

    params: int
    dtype: str                    # the checkpoint's dtype (config ``torch_dtype``/``dtype``)
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    max_positions: int
    exact: bool                   # params counted from the safetensors headers

    @property
    def dtype_bytes(self) -> int:
        return DTYPE_BYTES.get(self.dtype, 4)

    def kv_bytes_per_token(self, dtype_bytes: int) -> int:
        """Keys and values of every layer for one token."""
        return 2 * self.layers * self.kv_heads * self.head_dim * dtype_bytes

    def linears(self) -> dict[str, tuple[int, int]]:
        """(in, out) features of each linear module of one decoder layer (Llama names)."""
        h, q, kv, i = self.hidden, self.heads * self.head_dim, self.kv_heads * self.head_dim, \
            self.intermediate
        return {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
                "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}

    def lora_params(self, r: int, targets: Any = "all-linear") -> int:
        """Parameters of rank-``r`` LoRA adapters (A: r x in, B: out x r) on the decoder layers'
        linear modules (``all-linear``: every one of them; peft leaves the output head out)."""
        wanted = set(self.linears()) if targets == "all-linear" else (
            {targets} if isinstance(targets, str) else set(targets))
        per_layer = sum(r * (a + b) for name, (a, b) in self.linears().items() if name in wanted)
        return per_layer * self.layers


def _config_dtype(cfg: dict[str, Any]) -> str:
    value = cfg.get("torch_dtype") or cfg.get("dtype") or "float32"
    return str(value).replace("torch.", "")


def _header_params(model_dir: Path) -> int | None:
    """Parameters counted from the safetensors headers (no tensor is read); None: no files."""
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for f in files:
        with open(f, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            if n > 100 << 20:
                return None
            header = json.loads(fh.read(n))
        for name, info in header.items():
            if name != "__metadata__":
                total += math.prod(info.get("shape", []))
    return total


def model_shape(model_dir: str | Path) -> ModelShape | None:
    """The shape of the model in ``model_dir`` from its ``config.json`` (and the safetensors
    headers for an exact parameter count); None when there is no readable config."""
    model_dir = Path(model_dir).expanduser()
    try:
        cfg = json.loads((model_dir / "config.json").read_text())
    except (OSError, ValueError):
        return None
    cfg = {**cfg.get("text_config", {}), **cfg} if isinstance(cfg.get("text_config"), dict) else cfg
    try:
        h = int(cfg["hidden_size"])
        layers = int(cfg["num_hidden_layers"])
        heads = int(cfg["num_attention_heads"])
    except (KeyError, TypeError, ValueError):
        return None
    kv = int(cfg.get("num_key_value_heads") or heads)
    head_dim = int(cfg.get("head_dim") or h // heads)
    inter = int(cfg.get("intermediate_size") or 4 * h)
    vocab = int(cfg.get("vocab_size") or 0)
    counted = _header_params(model_dir)
    if counted is None:  # a Llama-shaped count from the configuration
        per_layer = (h * heads * head_dim + 2 * h * kv * head_dim + heads * head_dim * h
                     + 3 * h * inter + 2 * h)
        counted = vocab * h * (1 if cfg.get("tie_word_embeddings") else 2) + layers * per_layer + h
        exact = False
    else:
        exact = True
    return ModelShape(params=counted, dtype=_config_dtype(cfg), hidden=h, intermediate=inter,
                      layers=layers, heads=heads, kv_heads=kv, head_dim=head_dim, vocab=vocab,
                      max_positions=int(cfg.get("max_position_embeddings") or 2048), exact=exact)


def dtype_bytes(option: str | None, shape: ModelShape, *, vllm: bool = False) -> int:
    """Bytes per weight for a ``dtype`` option: ``auto`` is the checkpoint's dtype, except that
    vLLM serves a float32 checkpoint in 16 bits (its documented ``auto``)."""
    if option in (None, "", "auto"):
        return 2 if vllm and shape.dtype_bytes >= 4 else shape.dtype_bytes
    return DTYPE_BYTES.get(str(option).replace("torch.", ""), 4)


# ---------------------------------------------------------------------------------- needs
@dataclass
class DeviceNeed:
    """One component's estimated accelerator memory.

    ``parts``: label -> bytes (what the refusal line lists); ``budget``: the share of the
    device the component reserves whatever it needs (vLLM's ``gpu_memory_utilization``), or
    None; ``resident``: the component keeps its memory through the other phases
    (``release = "keep"``); ``devices``: GPUs the need is split over (tensor parallel)."""

    parts: dict[str, int]
    budget: float | None = None
    resident: bool = False
    devices: int = 1
    component: str = ""           # filled by the engine: "generator 'vllm'"
    phase: str = ""               # filled by the engine

    @property
    def bytes(self) -> int:
        """Bytes on each device."""
        return math.ceil(sum(self.parts.values()) / max(1, self.devices))

    def footprint(self, total: int) -> int:
        """What the component occupies while it holds the device."""
        return int(self.budget * total) if self.budget is not None else self.bytes

    def describe(self) -> str:
        inner = " + ".join(f"{label} {gib(v)}" for label, v in self.parts.items() if v)
        split = f", over {self.devices} GPUs" if self.devices > 1 else ""
        return f"{gib(self.bytes)} ({inner}{split})"


@dataclass
class DevicePlan:
    """What a component's ``device_memory`` may read: the run's other validated options and
    the model directories the phases load (the factory, the model evaluated)."""

    options: dict[str, Any] = field(default_factory=dict)   # kind -> validated Options
    factory_model: Path | None = None
    evaluated_model: Path | None = None

    def shape(self, model_dir: str | Path | None) -> ModelShape | None:
        return model_shape(model_dir) if model_dir else None


def plan_for(classes: dict[str, type], options: dict[str, Any]) -> DevicePlan:
    """Where the models come from: the generator class's ``factory_model_dir(options)`` and the
    domain class's ``evaluated_model_dir(options)``, else a domain's ``seed_model`` option."""
    plan = DevicePlan(options=options)
    gen, dom = classes.get("generator"), classes.get("domain")
    fn = getattr(gen, "factory_model_dir", None)
    if fn is not None and options.get("generator") is not None:
        plan.factory_model = fn(options["generator"])
    fn = getattr(dom, "evaluated_model_dir", None)
    if fn is not None and options.get("domain") is not None:
        plan.evaluated_model = fn(options["domain"])
    elif getattr(options.get("domain"), "seed_model", None):
        plan.evaluated_model = Path(options["domain"].seed_model).expanduser()
    return plan


def collect_needs(classes: dict[str, type], options: dict[str, Any]) -> list[DeviceNeed]:
    """Each phase component's ``device_memory`` estimate (those that report one)."""
    plan = plan_for(classes, options)
    needs = []
    for kind, phase in KIND_PHASE.items():
        cls = classes.get(kind)
        fn = getattr(cls, "device_memory", None)
        if cls is None or fn is None or options.get(kind) is None:
            continue
        need = fn(options[kind], plan)
        if need is not None:
            need.component, need.phase = f"{kind} {cls.name!r}", phase
            needs.append(need)
    return needs


def check_device_plan(needs: list[DeviceNeed], total: int | None) -> None:
    """Refuse, in one line, a need over its component's budget or a phase over the device."""
    if not needs or total is None:
        return
    for n in needs:
        if n.budget is not None and n.bytes > n.budget * total:
            raise ConfigError(
                f"config: the {n.phase} phase cannot fit: {n.component} needs {n.describe()} "
                f"but gpu_memory_utilization {n.budget:g} of the {gib(total)} device is "
                f"{gib(n.budget * total)}; raise gpu_memory_utilization, shorten the context "
                f"or use a smaller model")
    for phase in PHASES:
        own = [n for n in needs if n.phase == phase]
        if not own:
            continue
        kept = [n for n in needs if n.phase != phase and n.resident]
        used = sum(n.footprint(total) for n in own + kept)
        if used <= total:
            continue
        what = " + ".join(f"{n.component} {gib(n.footprint(total))}" for n in own)
        if kept:
            held = " + ".join(f"{n.component} keeps {gib(n.footprint(total))} (release = "
                              f"\"keep\")" for n in kept)
            raise ConfigError(
                f"config: the {phase} phase cannot fit: {what} + {held} = {gib(used)}, more "
                f"than the {gib(total)} device; let the other phases release the device")
        detail = "; ".join(f"{n.component} needs {n.describe()}" for n in own)
        raise ConfigError(f"config: the {phase} phase cannot fit: {detail}, more than the "
                          f"{gib(total)} device")


def preflight_device(classes: dict[str, type], options: dict[str, Any]) -> list[DeviceNeed]:
    """The loop's device check: estimates, then the device's size (only when a component
    reports a need), then :func:`check_device_plan`. Returns the needs (for display)."""
    needs = collect_needs(classes, options)
    if needs:
        check_device_plan(needs, device_memory_bytes())
    return needs
