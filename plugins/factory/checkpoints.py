"""Factory checkpoints: directories, their manifest, and loading them with transformers.

A factory checkpoint is a directory holding either a full Hugging Face causal LM
(``config.json`` + weights + tokenizer) or a LoRA adapter (``adapter_config.json``) over a base
model. selfdev writes ``selfdev_factory.json`` next to it (the *manifest*): its kind, its base,
the initial checkpoint it descends from, and how prompts are formatted for it. A plain Hugging
Face directory without a manifest works too.

torch, transformers and peft are imported inside the functions that need them.
"""
from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from selfdev import ConfigError, SelfdevError

MANIFEST = "selfdev_factory.json"
FORMAT = "selfdev-factory/1"


def read_manifest(path: Path | str | None) -> dict[str, Any]:
    if path is None:
        return {}
    file = Path(path) / MANIFEST
    if not file.is_file():
        return {}
    try:
        return json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        raise SelfdevError(f"unreadable factory manifest {file}: {exc}") from None


def write_manifest(path: Path, data: dict[str, Any]) -> None:
    data = {"format": FORMAT, **data}
    (Path(path) / MANIFEST).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def is_adapter(path: Path) -> bool:
    return (Path(path) / "adapter_config.json").is_file()


def adapter_base(path: Path) -> Path:
    """The base model directory a LoRA adapter checkpoint applies to."""
    manifest = read_manifest(path)
    base = manifest.get("base")
    if not base:
        try:
            base = json.loads((Path(path) / "adapter_config.json").read_text()).get(
                "base_model_name_or_path")
        except (OSError, ValueError):
            base = None
    if not base:
        raise SelfdevError(f"factory checkpoint {path} is a LoRA adapter without a base model")
    return Path(base)


def check_checkpoint(path: Path | str | None, who: str) -> Path:
    if path is None:
        raise ConfigError(f"{who} needs a local factory checkpoint (a model directory); "
                          f"use the tiny or hf generator")
    path = Path(path)
    if not path.is_dir():
        raise SelfdevError(f"{who}: factory checkpoint {path} is not a directory")
    if not (path / "config.json").is_file() and not is_adapter(path):
        raise SelfdevError(f"{who}: {path} holds neither a model (config.json) nor a LoRA adapter "
                           f"(adapter_config.json)")
    return path


def checkpoint_stamp(path: Path) -> tuple:
    """Identifies a checkpoint's current content cheaply (path + name/size/mtime of its files),
    so a directory rewritten in place is reloaded."""
    files = []
    for file in sorted(Path(path).iterdir()):
        if file.is_file():
            st = file.stat()
            files.append((file.name, st.st_size, st.st_mtime_ns))
    return (str(Path(path).resolve()), tuple(files))


def initial_of(path: Path) -> Path:
    """The initial checkpoint a (refined) checkpoint descends from (itself for an initial one)."""
    manifest = read_manifest(path)
    if manifest.get("initial"):
        return Path(manifest["initial"])
    if is_adapter(path):
        return adapter_base(path)
    return Path(path)


@dataclass
class LoadedFactory:
    path: Path
    model: Any
    tokenizer: Any
    manifest: dict[str, Any]
    adapter: bool = False


def load_tokenizer(path: Path) -> Any:
    from transformers import AutoTokenizer

    src = Path(path)
    if not (src / "tokenizer_config.json").is_file() and not (src / "tokenizer.json").is_file():
        if is_adapter(src):
            src = adapter_base(src)
    tok = AutoTokenizer.from_pretrained(str(src))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


@contextmanager
def quiet_hf():
    """Silence transformers/datasets progress bars and info logs (the console draws its own)."""
    import transformers

    hf_log = transformers.utils.logging
    verbosity = hf_log.get_verbosity()
    bars = hf_log.is_progress_bar_enabled()
    ds_bars = None
    try:
        import datasets

        ds_bars = datasets.utils.logging.is_progress_bar_enabled()
        datasets.utils.logging.disable_progress_bar()
    except ImportError:
        datasets = None  # type: ignore[assignment]
    hf_log.set_verbosity_error()
    hf_log.disable_progress_bar()
    try:
        yield
    finally:
        hf_log.set_verbosity(verbosity)
        if bars:
            hf_log.enable_progress_bar()
        if datasets is not None and ds_bars:
            datasets.utils.logging.enable_progress_bar()


def torch_dtype(name: str | None) -> Any:
    import torch

    if name in (None, "", "auto"):
        return "auto"
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
             "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    if name not in table:
        raise ConfigError(f"config: dtype must be auto, float32, bfloat16 or float16; got {name!r}")
    return table[name]


def pick_device(device: str | None) -> str:
    import torch

    if device in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def load_factory(path: Path | str, *, device: str = "cpu", dtype: str | None = None,
                 trainable: bool = False, merge_adapter: bool = True) -> LoadedFactory:
    """Load a checkpoint: a full model, or a base model with the LoRA adapter applied.

    For sampling (``trainable=False``) an adapter is merged into the weights (faster); for
    training it stays a ``PeftModel`` whose adapter is trainable.
    """
    path = Path(path)
    manifest = read_manifest(path)
    tok = load_tokenizer(path)
    kwargs: dict[str, Any] = {"dtype": torch_dtype(dtype)}
    with quiet_hf():
        model, adapter = _load_model(path, kwargs, trainable, merge_adapter)
    model.to(device)
    if not trainable:
        model.eval()
    return LoadedFactory(path=path, model=model, tokenizer=tok, manifest=manifest, adapter=adapter)


def _load_model(path: Path, kwargs: dict[str, Any], trainable: bool, merge_adapter: bool) -> Any:
    from transformers import AutoModelForCausalLM

    if is_adapter(path):
        from peft import PeftModel

        base = AutoModelForCausalLM.from_pretrained(str(adapter_base(path)), **kwargs)
        model = PeftModel.from_pretrained(base, str(path), is_trainable=trainable)
        if not trainable and merge_adapter:
            model = model.merge_and_unload()
        adapter = True
    else:
        model = AutoModelForCausalLM.from_pretrained(str(path), **kwargs)
        adapter = False
    return model, adapter
