"""Warm evaluation engines: one loaded model per evaluator, each candidate's weights copied in.

Why: building a model (``from_pretrained``, or a vLLM engine start: weights, CUDA graphs, KV
cache) costs far more than a candidate's changed weights. A merged model differs from the seed
only in its mergeable tensors (``LMModel.base_dir`` + ``changed_names()``), so an engine builds
its model once from the seed and, per candidate, copies those tensors into it in place and
restores the ones the previous candidate changed that this one does not. Every other tensor is
never touched. An evaluator owns one engine for its lifetime: in the engine's process that is
the run; on a Ray worker actor (``executors/ray``, one per GPU with ``num_gpus = 1``) it is the
actor's life, so candidates never pay an engine start.

* :class:`HFEngine` (``transformers``): ``load(handle) -> (model, tokenizer)``. It gives the
  same scores as building the merged model afresh (tests compare them on tiny Llamas).
* :class:`VLLMEngine`: one ``vllm.LLM`` built from the seed; weights go in through the model's
  own ``load_weights`` (which maps Hugging Face names onto vLLM's fused tensors), reached with
  ``LLM.collective_rpc`` and a worker extension (vLLM >= 0.8), or for older versions through
  ``llm_engine.model_executor.driver_worker.model_runner.model``. The prefix cache is reset after
  each update (cached KV blocks were computed with the old weights). **This path has never
  run**: vLLM is not installed where this was written and no GPU was available.

Both give the device back between evaluation phases (``engine/device.py``: generation and DPO
take the GPU in turn): :meth:`HFEngine.offload` moves the model to CPU memory and
:meth:`HFEngine.restore` brings it back; :meth:`VLLMEngine.sleep` puts vLLM in sleep mode
(level 1: weights to CPU memory; level 2: weights dropped, and :meth:`VLLMEngine.wake` reloads
the seed's weights from disk before the next candidate's are loaded in place, as an RL trainer
reloads its policy into a sleeping vLLM) and :meth:`VLLMEngine.wake` wakes it. The in-place
state survives: a candidate's weights are never lost to a sleep.

``torch``, ``transformers`` and ``vllm`` are imported inside methods only.
"""
from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path
from typing import Any, Iterator

from selfdev import SelfdevError, free_device_memory, shutdown_engine
from selfdev.plugins.domains.lm.model import (LMModel, build_model, copy_in_place,
                                             load_tokenizer)
from selfdev.plugins.domains.lm.io import ModelDir


class HFEngine:
    """One ``transformers`` model kept warm; see the module docstring.

    ``builds`` counts the models built (a new base directory builds again; candidates of one
    seed never do); ``in_place`` counts the handles loaded by copying weights.
    """

    def __init__(self, device: str = "cpu", dtype: Any = None) -> None:
        self.device, self.dtype = device, dtype
        self.model: Any = None
        self.base: Path | None = None
        self.touched: set[str] = set()
        self.current: LMModel | None = None
        self.builds = 0
        self.in_place = 0
        self.offloaded = False
        self._lock = threading.Lock()

    def offload(self) -> None:
        """Move the model to CPU memory and free the accelerator (no-op on a CPU engine)."""
        with self._lock:
            if self.model is None or self.offloaded or str(self.device) == "cpu":
                return
            self.model.to("cpu")
            self.offloaded = True
        _free_cuda()

    def restore(self) -> None:
        """Move an offloaded model back to the engine's device."""
        with self._lock:
            self._restore()

    def _restore(self) -> None:
        if self.model is not None and self.offloaded:
            self.model.to(self.device)
            self.offloaded = False

    def load(self, handle: LMModel):
        """``(model, tokenizer)`` equal to ``handle``. The model is the engine's: the next
        ``load`` changes it, so finish with one handle before loading the next."""
        with self._lock:
            self._restore()
            base = handle.base_dir.resolve()
            if self.model is None or base != self.base:
                self.close()
                self.model = build_model(base, self.device, self.dtype)
                self.base, self.touched, self.current = base, set(), None
                self.builds += 1
            if handle is not self.current:  # dev then test of one handle: nothing to copy
                self.touched = copy_in_place(self.model, handle, self.touched)
                self.current = handle
                self.in_place += 1
            return self.model, load_tokenizer(base)

    def close(self) -> None:
        """Drop the model (and free its GPU memory)."""
        if self.model is None:
            return
        self.model, self.base, self.current, self.touched = None, None, None, set()
        self.offloaded = False
        _free_cuda()


def fresh_load(handle: LMModel, device: str = "cpu", dtype: Any = None):
    """What an evaluator without an engine does: build the model for this handle alone (from its
    merged directory, or the source plus overrides). For comparisons and benchmarks."""
    model = build_model(handle.source, device, dtype)
    if handle.base is None and handle.overrides:
        copy_in_place(model, handle, set())
    return model, load_tokenizer(handle.base_dir)


def _free_cuda() -> None:
    free_device_memory()  # gc, then torch.cuda.empty_cache() where torch is loaded


# ----------------------------------------------------------------------------------- vLLM
class VLLMWorkerExtension:
    """Mixed into vLLM's GPU worker (``worker_extension_cls``): one method that loads named
    tensors of a safetensors file into the worker's model. Runs inside vLLM's worker process."""

    def selfdev_load_weights(self, path: str, names: list[str] | None) -> int:
        return load_file_into(self.model_runner.model, path, names)


def load_file_into(model: Any, path: str, names: list[str] | None) -> int:
    """``model.load_weights`` with the tensors ``names`` (None: all) of the safetensors ``path``,
    read one at a time. vLLM's ``load_weights`` takes Hugging Face names and fills its fused
    tensors (qkv, gate_up) slice by slice. Returns the number of tensors loaded."""
    from safetensors import safe_open

    count = [0]

    def weights() -> Iterator[tuple[str, Any]]:
        with safe_open(path, framework="pt") as f:
            for name in (names if names is not None else list(f.keys())):
                count[0] += 1
                yield name, f.get_tensor(name)

    model.load_weights(weights())
    return count[0]


class VLLMEngine:
    """One ``vllm.LLM`` kept warm; each handle's changed tensors are loaded into it in place.

    Never run (see the module docstring). ``builds`` and ``in_place`` count as in HFEngine.
    """

    #: at most this many bytes of in-memory tensors per temporary safetensors file
    CHUNK_BYTES = 1 << 30

    def __init__(self, gpu_memory_utilization: float = 0.85, dtype: str = "auto",
                 sleep_level: int | None = 1, max_model_len: int | None = None) -> None:
        self.gmu, self.dtype = gpu_memory_utilization, dtype
        self.sleep_level, self.max_model_len = sleep_level, max_model_len
        self.can_sleep = False
        self.asleep = False
        self.llm: Any = None
        self.base: Path | None = None
        self.touched: set[str] = set()
        self.current: LMModel | None = None
        self.rpc = False
        self.builds = 0
        self.in_place = 0
        self._layouts: dict[str, dict[str, Any]] = {}

    def _layout(self, model_dir: Path) -> dict[str, Any]:
        """Tensor name -> (shape, dtype) of a model directory (headers only, cached)."""
        key = str(model_dir)
        if key not in self._layouts:
            d = ModelDir.open(model_dir, "model")
            try:
                self._layouts[key] = {n: (i.shape, i.dtype) for n, i in d.tensors.items()}
            finally:
                d.close()
        return self._layouts[key]

    def _build(self, base: Path) -> None:
        from vllm import LLM  # lazy: optional extra

        kwargs: dict[str, Any] = dict(model=str(base), dtype=self.dtype,
                                      gpu_memory_utilization=self.gmu, seed=0)
        if self.max_model_len:
            kwargs["max_model_len"] = self.max_model_len
        ext = f"{VLLMWorkerExtension.__module__}.{VLLMWorkerExtension.__qualname__}"
        sleep = {"enable_sleep_mode": True} if self.sleep_level else {}
        # newest first: worker extension + sleep mode, then without the newer arguments
        for extra, rpc in (({"worker_extension_cls": ext, **sleep}, True),
                           ({"worker_extension_cls": ext}, True), (sleep, False), ({}, False)):
            try:
                self.llm = LLM(**kwargs, **extra)
            except TypeError:
                continue
            self.rpc = rpc and hasattr(self.llm, "collective_rpc")
            self.can_sleep = "enable_sleep_mode" in extra
            break
        self.asleep = False
        self.base, self.touched, self.current = base, set(), None
        self.builds += 1

    def _load(self, path: str, names: list[str] | None) -> None:
        if self.rpc:
            self.llm.collective_rpc("selfdev_load_weights", args=(path, names))
            return
        try:
            model = self.llm.llm_engine.model_executor.driver_worker.model_runner.model
        except AttributeError:
            raise SelfdevError("gsm8k: this vLLM version offers neither collective_rpc nor a "
                               "driver worker to load merged weights into; use backend = "
                               "\"hf\" or a vLLM >= 0.8") from None
        load_file_into(model, path, names)

    def _push(self, handle: LMModel) -> None:
        """Load the handle's changed tensors and restore the ones the last handle changed.

        A handle on another checkpoint of the same layout (an expert, scored as a baseline) is
        loaded whole, in place: reading its weights costs far less than an engine start."""
        names = handle.changed_names()
        src = handle.base_dir.resolve()
        if src != self.base:
            every = sorted(self._layout(src))
            self._load_by_file(src, every)
            if handle.base is not None:
                self._load_by_file(handle.source, sorted(names))
            elif names:
                self._load_tensors(handle.changed_tensors())
            self.touched = set(every)
        else:
            restore = sorted(self.touched - names)
            if restore:
                self._load_by_file(handle.base_dir, restore)
            if handle.base is not None:  # a merged directory: its shards are read where they are
                self._load_by_file(handle.source, sorted(names))
            elif names:
                self._load_tensors(handle.changed_tensors())
            self.touched = names
        reset = getattr(self.llm, "reset_prefix_cache", None)
        if callable(reset):
            reset()  # cached KV blocks belong to the old weights

    def _load_by_file(self, model_dir: Path, names: list[str]) -> None:
        d = ModelDir.open(model_dir, "model")
        try:
            by_file: dict[str, list[str]] = {}
            for n in names:
                by_file.setdefault(d.tensors[n].file, []).append(n)
        finally:
            d.close()
        for fname, group in by_file.items():
            self._load(str(Path(model_dir) / fname), group)

    def _load_tensors(self, items) -> None:
        from safetensors.torch import save_file

        with tempfile.TemporaryDirectory(prefix="selfdev-weights-") as tmp:
            chunk: dict[str, Any] = {}
            size, part = 0, 0
            for name, t in list(items) + [(None, None)]:
                if name is not None:
                    chunk[name] = t.detach().contiguous().cpu()
                    size += t.numel() * t.element_size()
                if chunk and (name is None or size >= self.CHUNK_BYTES):
                    path = os.path.join(tmp, f"part-{part}.safetensors")
                    save_file(chunk, path)
                    self._load(path, None)
                    os.remove(path)
                    chunk, size, part = {}, 0, part + 1

    def generate(self, handle: LMModel, prompts: list[str], max_new_tokens: int,
                 stops: list[str]) -> list[str]:
        from vllm import SamplingParams

        base = handle.base_dir.resolve()
        if self.llm is None or (base != self.base and self._layout(base) != self._layout(self.base)):
            self.close()
            self._build(base)
        self.wake()
        if handle is not self.current:
            self._push(handle)
            self.current = handle
            self.in_place += 1
        params = SamplingParams(temperature=0.0, max_tokens=max_new_tokens, stop=stops)
        res = self.llm.generate(prompts, params, use_tqdm=False)
        return [r.outputs[0].text for r in res]

    def sleep(self) -> None:
        """Give the GPU back: vLLM's sleep mode at ``sleep_level``, or (a vLLM without it, or
        ``sleep_level`` None) an engine shutdown; the next ``generate`` starts it again."""
        if self.llm is None or self.asleep:
            return
        if not self.can_sleep:
            self.close()
            return
        self.llm.sleep(level=self.sleep_level)
        self.asleep = True
        _free_cuda()

    def wake(self) -> None:
        """Wake a sleeping engine. After level 2 its weights are gone: the seed's are loaded
        again from disk (the weights alone awake first, so the KV cache is not allocated
        beside a second copy), and the next handle is loaded in place as after a build."""
        if self.llm is None or not self.asleep:
            return
        if self.sleep_level == 2:
            try:
                self.llm.wake_up(tags=["weights"])
                staged = True
            except TypeError:  # a vLLM that wakes everything at once
                self.llm.wake_up()
                staged = False
            d = ModelDir.open(self.base, "model")
            try:
                names = sorted(d.tensors)
            finally:
                d.close()
            self._load_by_file(self.base, names)
            self.touched, self.current = set(), None
            if staged:
                self.llm.wake_up(tags=["kv_cache"])
        else:
            self.llm.wake_up()
        self.asleep = False
        reset = getattr(self.llm, "reset_prefix_cache", None)
        if callable(reset):
            reset()

    def close(self) -> None:
        if self.llm is not None:
            llm, self.llm, self.base, self.current, self.touched = self.llm, None, None, None, set()
            self.asleep = False
            shutdown_engine(llm)
