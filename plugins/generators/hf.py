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

from selfdev import ConfigError, Context, Generator
from selfdev import hookimpl
from selfdev.plugins.factory.checkpoints import is_adapter, MANIFEST, write_manifest
from selfdev.plugins.factory.options import (Adapter, BatchSize, CacheImplementation,
                                             ChatTemplate, Decoder, Device, Dtype, MaxNewTokens,
                                             ModelDir, Stop, System, Threads, TopK, TopP)
from selfdev.plugins.factory.sampling import LocalModelGenerator


class HFGenerator(LocalModelGenerator, Generator):
    """A local transformers model directory (optionally with a LoRA adapter) as the factory."""

    name = "hf"

    class Options(Generator.Options):
        model: ModelDir
        adapter: Adapter = ""
        max_new_tokens: MaxNewTokens = 768
        top_p: TopP = 0.95
        top_k: TopK = 0
        batch_size: BatchSize = 8
        dtype: Dtype = "auto"
        device: Device = "auto"
        chat_template: ChatTemplate = "auto"
        system: System = ""
        threads: Threads = 0
        cache_implementation: CacheImplementation = "dynamic"
        decoder: Decoder = "auto"
        stop: Stop = []

    def __init__(self, ctx: Context, **options) -> None:
        super().__init__(ctx, **options)
        self.model_path = Path(self.options.model).expanduser()
        if not (self.model_path / "config.json").is_file():
            raise ConfigError(f"config: [generator] hf model {str(self.model_path)!r} is not a "
                              f"model directory (no config.json)")
        self.adapter = Path(self.options.adapter).expanduser() if self.options.adapter else None
        if self.adapter is not None and not is_adapter(self.adapter):
            raise ConfigError(f"config: [generator] hf adapter {str(self.adapter)!r} has no "
                              f"adapter_config.json")

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
