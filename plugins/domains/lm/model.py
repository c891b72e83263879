"""The model handle the ``lm``/``toymath`` domains hand to evaluators.

An :class:`LMModel` is a Hugging Face causal-LM directory (``source``: config, tokenizer and
weights) plus optional in-memory ``overrides`` (tensor name -> merged tensor). Small models are
merged in memory (no disk round trip per candidate); big models are streamed to a merged
directory on disk and the handle has no overrides. Either way evaluators call:

* ``handle.load(device, dtype) -> (model, tokenizer)``: a ready ``transformers`` model in eval
  mode; loaded instances are cached per (source, device, dtype) and overrides are copied in
  place, so scoring many candidates of a small model does not reload anything;
* ``handle.save(out_dir)``: a normal HF directory that ``AutoModelForCausalLM.from_pretrained``
  loads as is (used by the vLLM path and by ``selfdev apply --out``);
* ``handle.fingerprint``: a short content hash (for caching and events).

A handle also says how it differs from a model an engine may already hold: ``base_dir`` (the
directory the rest of its weights equal) and ``changed_names()`` / ``changed_tensors()``. An
in-memory handle differs from its ``source`` by its overrides; a streamed merge directory
(``base`` = the seed, ``changed`` = the mergeable names) differs from the seed by those tensors
only. A warm engine (``selfdev.plugins.domains.lm.engine``) copies just these into the model it
keeps, instead of building a model per candidate.
"""
from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from selfdev import SelfdevError
from selfdev.plugins.domains.lm.io import ModelDir, ShardWriter, copy_model_files, torch_dtype


@dataclass(eq=False)
class LMModel:
    source: Path
    overrides: dict[str, Any] | None = None
    label: str = ""
    info: dict[str, Any] = field(default_factory=dict)
    #: the directory whose weights equal this model's except ``changed`` (None: ``source``)
    base: Path | None = None
    #: the tensors of ``source`` that differ from ``base`` (only with ``base``)
    changed: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        self.source = Path(self.source)
        if self.base is not None:
            self.base = Path(self.base)
            if self.changed is None:
                raise SelfdevError("an LMModel with a base must name its changed tensors")
        self._fp: str | None = None

    # ------------------------------------------------------------------ difference to a base
    @property
    def base_dir(self) -> Path:
        """The directory an engine builds its model from; this model is it plus the changes."""
        return self.base if self.base is not None else self.source

    def changed_names(self) -> set[str]:
        """The tensors that differ from ``base_dir`` (every other tensor equals it)."""
        if self.base is not None:
            return set(self.changed or ())
        return set(self.overrides or {})

    def changed_tensors(self):
        """``(name, tensor)`` for every changed tensor, read lazily (one at a time from disk
        for a merged directory, so a 7B merge is never in host memory at once)."""
        if self.base is None:
            yield from (self.overrides or {}).items()
            return
        src = ModelDir.open(self.source, "merged model")
        try:
            for name in self.changed or ():
                yield name, src.get(name)
        finally:
            src.close()

    def __repr__(self) -> str:  # keep tensors out of logs
        n = len(self.overrides) if self.overrides else 0
        return f"LMModel({self.label or self.source.name!r}, source={str(self.source)!r}, overrides={n})"

    @property
    def fingerprint(self) -> str:
        if self._fp is None:
            h = hashlib.blake2b(digest_size=8)
            h.update(str(self.source.resolve()).encode())
            for name in sorted(self.overrides or {}):
                t = self.overrides[name].detach().contiguous().cpu()
                h.update(name.encode())
                h.update(t.view(-1).view(dtype=__import__("torch").uint8).numpy().tobytes()
                         if t.numel() else b"")
            self._fp = h.hexdigest()
        return self._fp

    # ------------------------------------------------------------------ loading
    def tokenizer(self):
        return load_tokenizer(self.source)

    def load(self, device: str = "cpu", dtype: Any = None):
        """Return ``(model, tokenizer)``. The model is shared: do not modify it."""
        model = _cached_model(self.base_dir, device, dtype)
        _apply_overrides(model, self)
        return model, load_tokenizer(self.base_dir)

    def save(self, out_dir: str | Path, max_shard_bytes: int = 2 * 1024**3) -> Path:
        """Write a normal HF model directory (config, tokenizer, safetensors)."""
        out = Path(out_dir)
        if out.resolve() == self.source.resolve():
            raise SelfdevError(f"refusing to overwrite the source model {self.source}")
        src = ModelDir.open(self.source, "source")
        copy_model_files(self.source, out)
        writer = ShardWriter(out, max_shard_bytes)
        over = self.overrides or {}
        for name, info in src.tensors.items():
            t = over.get(name)
            if t is None:
                t = src.get(name)
            else:
                t = t.to(_st_to_torch(info.dtype))
            writer.add(name, t)
        writer.close()
        src.close()
        return out


def _st_to_torch(st: str):
    return torch_dtype(st)


# ---------------------------------------------------------------------- caches
_lock = threading.RLock()
_tok_cache: dict[str, Any] = {}
_model_cache: dict[tuple, dict[str, Any]] = {}
MAX_CACHED_MODELS = 2


def load_tokenizer(source: Path):
    key = str(Path(source).resolve())
    with _lock:
        tok = _tok_cache.get(key)
        if tok is None:
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(key)
            if tok.pad_token_id is None:
                tok.pad_token = tok.eos_token if tok.eos_token is not None else tok.unk_token
            tok.padding_side = "left"
            _tok_cache[key] = tok
        return tok


#: models built from a directory in this process (a test counts them: a warm engine builds one)
BUILD_COUNT = {"models": 0}


def build_model(source: Path, device: str, dtype: Any):
    """A fresh ``transformers`` model from ``source`` on ``device``, in eval mode."""
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    kwargs: dict[str, Any] = {}
    if dtype is not None:
        kwargs["dtype"] = dtype if not isinstance(dtype, str) or dtype == "auto" else getattr(torch, dtype)
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model = AutoModelForCausalLM.from_pretrained(str(source), **kwargs)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    model.to(device)
    model.eval()
    with _lock:
        BUILD_COUNT["models"] += 1
    return model


def _cached_model(source: Path, device: str, dtype: Any):
    key = (str(Path(source).resolve()), str(device), str(dtype))
    with _lock:
        entry = _model_cache.get(key)
        if entry is None:
            model = build_model(Path(key[0]), device, dtype)
            while len(_model_cache) >= MAX_CACHED_MODELS:
                _model_cache.pop(next(iter(_model_cache)))
            entry = {"model": model, "applied": None, "touched": set()}
            _model_cache[key] = entry
        else:  # LRU order
            _model_cache.pop(key)
            _model_cache[key] = entry
        return entry["model"]


def _entry_for(model) -> dict[str, Any]:
    for entry in _model_cache.values():
        if entry["model"] is model:
            return entry
    raise KeyError("model not cached")


def copy_in_place(model, handle: "LMModel", touched: set[str]) -> set[str]:
    """Make ``model`` (built from ``handle.base_dir``) equal ``handle``: copy the handle's
    changed tensors in, and restore from ``base_dir`` the ``touched`` ones (changed by an
    earlier handle) it does not change. Returns the names now differing from ``base_dir``.
    Only those tensors move; the model object, its buffers and everything else stay."""
    import torch

    names = handle.changed_names()
    params = dict(model.named_parameters())
    params.update(dict(model.named_buffers()))
    restore = sorted(n for n in touched if n not in names)
    with torch.no_grad():
        if restore:
            src = ModelDir.open(handle.base_dir, "base model")
            try:
                for name in restore:
                    params[name].copy_(src.get(name).to(params[name].device, params[name].dtype))
            finally:
                src.close()
        for name, value in handle.changed_tensors():
            p = params.get(name)
            if p is None:
                raise SelfdevError(f"merged tensor {name!r} is not a parameter of the model loaded "
                                   f"from {handle.base_dir}")
            if tuple(p.shape) != tuple(value.shape):
                raise SelfdevError(f"merged tensor {name!r} has shape {list(value.shape)}, "
                                   f"the model expects {list(p.shape)}")
            p.copy_(value.to(p.device, p.dtype))
    return names


def _apply_overrides(model, handle: "LMModel") -> None:
    """Make the cached ``model`` equal ``handle`` (skipped when it already holds that handle)."""
    with _lock:
        entry = _entry_for(model)
        if entry.get("ref") is handle or (handle.overrides is not None and
                                          entry.get("ref_overrides") is handle.overrides):
            return
        entry["touched"] = copy_in_place(model, handle, entry["touched"])
        entry["ref"] = handle
        entry["ref_overrides"] = handle.overrides


def as_handle(model: Any) -> LMModel:
    """Accept an LMModel or a path to a model directory."""
    if isinstance(model, LMModel):
        return model
    if isinstance(model, (str, Path)):
        return LMModel(Path(model))
    raise SelfdevError(f"expected an LMModel handle or a model directory, got {type(model).__name__}")
