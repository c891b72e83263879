"""The ``hf`` generator: any local Hugging Face causal LM directory as the algorithm factory.

Sampling is batched ``transformers`` generation with a KV cache; each completion has its own
seeded random stream (see ``selfdev.plugins.factory.sampling.sample``). The checkpoint the
engine passes (the factory after the last refinement: full weights, or a LoRA adapter over
``model``) is applied before sampling; the first iteration uses ``model`` itself (with
``adapter`` applied, if given).

Instruction models get their chat template (one user turn holding the domain prompt, after an
optional ``system`` turn); base models get the prompt text as is (``chat_template = false``
forces that). The ``dpo``/``sft`` optimizers format their training rows the same way.

    [generator]
    name = "hf"
    model = "/models/openchat-3.5-1210"   # a local directory (no downloads)
    max_new_tokens = 768
    batch_size = 8
    dtype = "bfloat16"                    # auto | float32 | bfloat16 | float16
    device = "auto"                       # auto (cuda when available) | cpu | cuda:0
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from selfdev import ConfigError, Context, Generator
from selfdev import hookimpl
from selfdev.plugins.factory.checkpoints import is_adapter, MANIFEST, write_manifest
from selfdev.plugins.factory.checks import chat_option, check_choice, check_number
from selfdev.plugins.factory.sampling import LocalModelGenerator, SampleSpec


class HFGenerator(LocalModelGenerator, Generator):
    """A local transformers model directory (optionally with a LoRA adapter) as the factory."""

    name = "hf"

    def __init__(self, ctx: Context, *, model: str = "", adapter: str = "",
                 max_new_tokens: int = 768, top_p: float = 0.95, top_k: int = 0,
                 batch_size: int = 8, dtype: str = "auto", device: str = "auto",
                 chat_template: Any = "auto", system: str = "", threads: int = 0,
                 cache_implementation: str = "dynamic", stop: list[str] | None = None) -> None:
        Generator.__init__(self, ctx)
        k = "generator"
        if not model:
            raise ConfigError("config: [generator] hf needs model = \"PATH\" (a local Hugging Face "
                              "model directory)")
        self.model_path = Path(model).expanduser()
        if not (self.model_path / "config.json").is_file():
            raise ConfigError(f"config: [generator] hf model {str(self.model_path)!r} is not a "
                              f"model directory (no config.json)")
        self.adapter = Path(adapter).expanduser() if adapter else None
        if self.adapter is not None and not is_adapter(self.adapter):
            raise ConfigError(f"config: [generator] hf adapter {str(self.adapter)!r} has no "
                              f"adapter_config.json")
        self.spec = SampleSpec(
            max_new_tokens=check_number(k, "max_new_tokens", max_new_tokens, lo=1, integer=True),
            top_p=check_number(k, "top_p", top_p, lo=0.0, hi=1.0),
            top_k=check_number(k, "top_k", top_k, lo=0, integer=True),
            batch_size=check_number(k, "batch_size", batch_size, lo=1, integer=True),
            cache_implementation=check_choice(k, "cache_implementation", cache_implementation,
                                                 ["dynamic", "static"]),
            stop_strings=list(stop or []))
        if self.spec.cache_implementation == "dynamic":
            self.spec.cache_implementation = None
        self.dtype = None if dtype in ("auto", "", None) else dtype
        if self.dtype not in (None, "float32", "fp32", "bfloat16", "bf16", "float16", "fp16"):
            raise ConfigError(f"config: [generator] dtype must be auto, float32, bfloat16 or "
                              f"float16; got {dtype!r}")
        self.device = device
        self.chat_template = chat_option(k, chat_template)
        self.system = system
        self.threads = check_number(k, "threads", threads, lo=0, integer=True)

    def initial_checkpoint(self) -> Path:
        """``model`` itself; with ``adapter``, a cached view of the adapter (links to its files)
        whose manifest names ``model`` as the base, whatever the adapter's own config says."""
        if self.adapter is None:
            return self.model_path
        import hashlib

        key = hashlib.blake2b(f"{self.model_path.resolve()}\0{self.adapter.resolve()}".encode(),
                              digest_size=8).hexdigest()
        view = Path(self.ctx.home) / "cache" / "factory" / f"hf-adapter-{key}"
        if not (view / MANIFEST).is_file():
            view.mkdir(parents=True, exist_ok=True)
            for file in self.adapter.iterdir():
                link = view / file.name
                if file.is_file() and not link.exists():
                    link.symlink_to(file.resolve())
            write_manifest(view, {"kind": "lora", "base": str(self.model_path.resolve()),
                                     "initial": str(self.model_path.resolve()),
                                     "adapter_source": str(self.adapter.resolve())})
        return view


@hookimpl
def register_generators(register):
    register(HFGenerator)
