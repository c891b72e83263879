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
from typing import Any

from selfdev import Completion, Context, Field, Generator, SelfdevError, derive_seed
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

    def initial_checkpoint(self) -> Path:
        if self.adapter is None:
            return self.model_path
        from selfdev.plugins.generators.hf import HFGenerator

        return HFGenerator(self.ctx, model=str(self.model_path),
                           adapter=str(self.adapter)).initial_checkpoint()

    # ----------------------------------------------------------------------------------------

    def _ensure_engine(self, model_dir: Path) -> Any:
        if self._engine is not None and self._engine_model == model_dir:
            return self._engine
        try:
            from vllm import LLM
        except ImportError as exc:  # installed but broken (e.g. CUDA libraries missing)
            raise SelfdevError(f"vLLM is installed but failed to import: {exc}".splitlines()[0]) from None
        if self._engine is not None:  # a full-weights checkpoint: restart on it
            import gc

            self._engine = None
            gc.collect()
            try:
                import torch

                torch.cuda.empty_cache()
            except Exception:  # noqa: BLE001 - best effort
                pass
        o = self.options
        self._engine = LLM(model=str(model_dir), dtype=o.dtype, enable_lora=True,
                           max_lora_rank=o.max_lora_rank, max_model_len=o.max_model_len,
                           gpu_memory_utilization=o.gpu_memory_utilization,
                           tensor_parallel_size=o.tensor_parallel_size,
                           enforce_eager=o.enforce_eager, seed=self.ctx.seed)
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
