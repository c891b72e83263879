"""The ``vllm`` generator: the same factory as ``hf``, served in-process by vLLM on a GPU.

Optional: ``pip install 'selfdev[vllm]'`` on a CUDA machine. Without vLLM the generator stops
the run with a one-line message before any work is done.

The engine is started once, on the initial checkpoint's base model, with LoRA enabled. Each
iteration's checkpoint is applied as follows:

* a LoRA adapter checkpoint (``dpo``/``sft`` with ``lora = true``, the paper's setting) is
  loaded per request as a ``LoRARequest`` (no restart);
* a full-weights checkpoint (full fine-tuning) restarts the engine on that directory.

Every completion is its own request with its own seed (``derive_seed(seed, prompt_index, i)``),
so completion ``i`` does not depend on the batch. Chat templates are applied as in ``hf``.

One GPU, three phases (``engine/device.py``): vLLM reserves ``gpu_memory_utilization`` of the
GPU while it is awake, so between generations the engine gives the device back when the loop
calls ``release()`` (evaluation and DPO run then): ``release = "sleep"`` (default) puts it in
vLLM's sleep mode level 1 (weights to CPU memory, KV cache dropped; ``wake_up()`` restores them
in about a second), ``"shutdown"`` stops the engine (the next generation starts it again),
``"keep"`` holds the device for the whole run (a GPU of its own). ``device_memory`` estimates
weights + a full context of KV cache + the LoRA slots for the start-up check.

    [generator]
    name = "vllm"
    model = "/models/openchat-3.5-1210"
    max_new_tokens = 768
    gpu_memory_utilization = 0.85
    max_lora_rank = 256
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Literal

from selfdev import (Completion, Context, DeviceNeed, Field, Generator, SelfdevError,
                     derive_seed, dtype_bytes, free_device_memory, model_shape,
                     shutdown_engine)
from selfdev import hookimpl
from selfdev.plugins.factory.checkpoints import (adapter_base, check_checkpoint, is_adapter,
                                                 load_tokenizer, read_manifest)
from selfdev.plugins.factory.options import (Adapter, ChatTemplate, MaxNewTokens, ModelDir, Stop,
                                             System, TopK, TopP)
from selfdev.plugins.factory.prompts import prompt_format

MISSING = ("the vllm generator needs vLLM, which is not installed here (it needs a CUDA GPU): "
           "pip install 'selfdev[vllm]' on a GPU machine, or use generator \"hf\"")


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


class VLLMGenerator(Generator):
    """A local model served by vLLM; LoRA adapters from the optimizer are loaded per iteration."""

    name = "vllm"

    class Options(Generator.Options):
        model: ModelDir
        adapter: Adapter = ""
        max_new_tokens: MaxNewTokens = 768
        top_p: TopP = 0.95
        top_k: TopK = 0
        dtype: str = Field("auto", description="vLLM's dtype: auto, bfloat16, float16, ...")
        gpu_memory_utilization: float = Field(0.85, ge=0.05, le=1,
                                              description="share of GPU memory vLLM may take")
        max_model_len: int = Field(4096, ge=16, description="context length (prompt + "
                                                            "completion) vLLM serves")
        max_lora_rank: int = Field(256, ge=1, description="largest LoRA rank vLLM accepts")
        tensor_parallel_size: int = Field(1, ge=1, description="GPUs the model is split over")
        enforce_eager: bool = Field(False, description="no CUDA graphs (less memory, slower)")
        chat_template: ChatTemplate = "auto"
        system: System = ""
        stop: Stop = []
        release: Literal["sleep", "shutdown", "keep"] = Field(
            "sleep", description="between generations: sleep (vLLM sleep mode: weights to CPU "
                                 "memory), shutdown (stop the engine) or keep (hold the GPU)")

    @classmethod
    def factory_model_dir(cls, options: Any) -> Path:
        """The model the factory (and so the optimizer) starts from, for the device check."""
        return Path(options.model).expanduser()

    @classmethod
    def device_memory(cls, options: Any, plan: Any) -> DeviceNeed | None:
        """Weights + KV cache for one ``max_model_len`` context (vLLM refuses to start without
        it) + ``max_loras`` (1) LoRA slots of rank ``max_lora_rank``; reserved as
        ``gpu_memory_utilization`` of the device."""
        shape = model_shape(options.model)
        if shape is None:
            return None
        b = dtype_bytes(options.dtype, shape, vllm=True)
        return DeviceNeed(
            parts={"weights": shape.params * b,
                   f"KV cache for {options.max_model_len} tokens":
                       shape.kv_bytes_per_token(b) * options.max_model_len,
                   f"LoRA r {options.max_lora_rank}": shape.lora_params(options.max_lora_rank) * b},
            budget=options.gpu_memory_utilization, resident=options.release == "keep",
            devices=options.tensor_parallel_size)

    def __init__(self, ctx: Context, **options: Any) -> None:
        super().__init__(ctx, **options)
        if not vllm_available():
            raise SelfdevError(MISSING)
        self.model_path = Path(self.options.model).expanduser()
        self.adapter = Path(self.options.adapter).expanduser() if self.options.adapter else None
        self._engine: Any = None
        self._engine_model: Path | None = None
        self._tokenizer: Any = None
        self._lora_ids: dict[str, int] = {}
        self._asleep = False
        self._can_sleep = False

    def initial_checkpoint(self) -> Path:
        if self.adapter is None:
            return self.model_path
        from selfdev.plugins.generators.hf import HFGenerator

        return HFGenerator(self.ctx, model=str(self.model_path),
                           adapter=str(self.adapter)).initial_checkpoint()

    # ---------------------------------------------------------------- the device, in turns

    def release(self) -> None:
        """Give the GPU back for the other phases (``release`` option; see the docstring)."""
        if self._engine is None or self._asleep or self.options.release == "keep":
            return
        sleep = getattr(self._engine, "sleep", None)
        if self._can_sleep and callable(sleep):
            sleep(level=1)
            self._asleep = True
        else:  # "shutdown", or a vLLM without sleep mode
            self._shutdown()
        free_device_memory()

    # no acquire(): the engine wakes in generate(), where the checkpoint is known (a
    # full-weights checkpoint restarts the engine instead: waking the old one would move its
    # weights onto the GPU for nothing)

    def _wake(self) -> None:
        """Wake the engine (weights back from CPU memory, a fresh KV cache)."""
        if self._engine is not None and self._asleep:
            self._engine.wake_up()
            self._asleep = False

    def _shutdown(self) -> None:
        engine, self._engine, self._engine_model, self._asleep = self._engine, None, None, False
        shutdown_engine(engine)

    def close(self) -> None:
        if self._engine is not None:
            self._shutdown()

    def _ensure_engine(self, model_dir: Path) -> Any:
        if self._engine is not None and self._engine_model == model_dir:
            self._wake()
            return self._engine
        try:
            from vllm import LLM
        except ImportError as exc:  # installed but broken (e.g. CUDA libraries missing)
            raise SelfdevError(f"vLLM is installed but failed to import: {exc}".splitlines()[0]) from None
        if self._engine is not None:  # a full-weights checkpoint: restart on it
            self._shutdown()
        o = self.options
        kwargs = dict(model=str(model_dir), dtype=o.dtype, enable_lora=True,
                      max_lora_rank=o.max_lora_rank, max_model_len=o.max_model_len,
                      gpu_memory_utilization=o.gpu_memory_utilization,
                      tensor_parallel_size=o.tensor_parallel_size,
                      enforce_eager=o.enforce_eager, seed=self.ctx.seed)
        self._can_sleep = o.release == "sleep"
        try:
            self._engine = LLM(**kwargs, **({"enable_sleep_mode": True} if self._can_sleep else {}))
        except TypeError:  # a vLLM without sleep mode: release shuts the engine down instead
            self._can_sleep = False
            self._engine = LLM(**kwargs)
        self._asleep = False
        self._engine_model = model_dir
        self._tokenizer = load_tokenizer(model_dir)
        return self._engine

    def _lora_request(self, checkpoint: Path) -> Any:
        from vllm.lora.request import LoRARequest

        key = str(checkpoint.resolve())
        if key not in self._lora_ids:
            self._lora_ids[key] = len(self._lora_ids) + 1
        return LoRARequest(f"factory-{self._lora_ids[key]}", self._lora_ids[key], key)

    def generate(self, prompts: list[str], n: int, temperature: float, seed: int,
                 checkpoint: Path | None = None, iteration: int = 1) -> list[Completion]:
        from vllm import SamplingParams

        path = check_checkpoint(Path(checkpoint) if checkpoint else self.initial_checkpoint(),
                                   f"generator {self.name!r}")
        lora = None
        if is_adapter(path):
            base = adapter_base(path)
            engine = self._ensure_engine(base)
            lora = self._lora_request(path)
        else:
            engine = self._ensure_engine(path)
        o = self.options
        fmt = prompt_format(self._tokenizer, read_manifest(path), o.chat_template, o.system)
        contexts = [fmt.ids(self._tokenizer, p) for p in prompts]
        requests, params = [], []
        for p, ids in enumerate(contexts):
            for i in range(n):
                requests.append({"prompt_token_ids": ids})
                params.append(SamplingParams(
                    n=1, temperature=float(temperature), top_p=o.top_p or 1.0,
                    top_k=o.top_k if o.top_k > 0 else -1, max_tokens=o.max_new_tokens,
                    seed=derive_seed(seed, p, i) % (2 ** 31), stop=list(o.stop) or None))
        outputs = engine.generate(requests, params, lora_request=lora, use_tqdm=False)
        completions = []
        for k, out in enumerate(outputs):
            choice = out.outputs[0]
            completions.append(Completion(
                text=choice.text, prompt_index=k // n,
                meta={"tokens": len(choice.token_ids), "finish": choice.finish_reason,
                      "temperature": round(float(temperature), 6), "prompt_mode": fmt.mode,
                      "lora": lora is not None}))
        return completions


@hookimpl
def register_generators(register):
    register(VLLMGenerator)
