"""Streaming I/O for Hugging Face causal-LM directories (safetensors, sharded or not).

Trusted helpers used by the ``lm`` and ``toymath`` domains and by ``selfdev apply``:

* :class:`ModelDir` indexes a model directory (``model.safetensors`` or
  ``model.safetensors.index.json`` + shards) and reads one tensor at a time with positioned
  reads (:func:`read_header` parses and checks each file's header; nothing is memory-mapped,
  nothing is loaded up front);
* :func:`check_same_architecture` refuses experts that do not match the seed, naming the first
  differing tensor;
* :class:`ShardWriter` writes tensors incrementally into ``model-0000i-of-0000n.safetensors``
  shards (plus the index) so a merged 7B model never has to sit in memory;
  :class:`PlannedShardWriter` does the same with the layout fixed up front, writing each
  tensor straight to its place (memory: one tensor, not one shard);
* :func:`copy_model_files` copies config, generation config and tokenizer files.

Heavy imports (torch, safetensors) happen inside functions: importing this module is cheap.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from selfdev import ConfigError, SelfdevError

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
#: files that hold weights (never copied from the seed into a merged directory)
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".ckpt", ".h5", ".msgpack")
_WEIGHT_NAMES = {INDEX_FILE, "pytorch_model.bin.index.json"}

# safetensors dtype strings -> bytes per element
_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
                "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "U32": 4, "U64": 8}
_FLOAT_DTYPES = {"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"}


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    dtype: str  # safetensors spelling: F32, BF16, ...
    file: str

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    @property
    def nbytes(self) -> int:
        return self.numel * _DTYPE_BYTES.get(self.dtype, 4)

    @property
    def is_float(self) -> bool:
        return self.dtype in _FLOAT_DTYPES


@dataclass
class ModelDir:
    """A Hugging Face model directory whose weights are safetensors (one file or shards)."""

    path: Path
    tensors: dict[str, TensorInfo]
    config: dict[str, Any] = field(default_factory=dict)
    _handles: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def open(cls, path: str | os.PathLike, role: str = "model") -> "ModelDir":
        p = Path(path).expanduser()
        if not p.is_dir():
            raise ConfigError(f"{role} directory not found: {p}")
        files: list[str]
        if (p / INDEX_FILE).is_file():
            index = json.loads((p / INDEX_FILE).read_text())
            weight_map = index.get("weight_map") or {}
            files = sorted(set(weight_map.values()))
        elif (p / SINGLE_FILE).is_file():
            files = [SINGLE_FILE]
        else:
            others = sorted(f.name for f in p.iterdir() if f.suffix in (".bin", ".pt", ".pth", ".gguf"))
            if others:
                raise ConfigError(
                    f"{role} {p} has no safetensors weights (found {', '.join(others[:3])}); "
                    "convert it with `AutoModelForCausalLM.from_pretrained(...).save_pretrained(dir)`")
            raise ConfigError(f"{role} {p} has no {SINGLE_FILE} or {INDEX_FILE}")
        tensors: dict[str, TensorInfo] = {}
        for fname in files:
            fpath = p / fname
            if not fpath.is_file():
                raise ConfigError(f"{role} {p}: shard {fname} named in {INDEX_FILE} is missing")
            entries, _, _ = read_header(fpath)
            for key, (dtype, shape, _, _) in entries.items():
                tensors[key] = TensorInfo(key, shape, dtype, fname)
        config = {}
        if (p / "config.json").is_file():
            config = json.loads((p / "config.json").read_text())
        return cls(p, dict(sorted(tensors.items())), config)

    # ---------------------------------------------------------------- reading
    def _handle(self, fname: str):
        """(fd, {name: (dtype, shape, absolute offset, nbytes)}) of one file, opened once."""
        h = self._handles.get(fname)
        if h is None:
            path = self.path / fname
            entries, start, _ = read_header(path)
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            # tensors are read whole, mostly in file order: a larger kernel read-ahead window
            # keeps the disk busy while a tensor is copied (cold reads as fast as mmap's)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
            h = (fd, {k: (d, sh, start + b, e - b) for k, (d, sh, b, e) in entries.items()})
            self._handles[fname] = h
        return h

    def get(self, name: str):
        """One tensor (a fresh CPU tensor in the stored dtype), read with ``os.preadv`` into its
        own storage.

        Why not ``safe_open``: it memory-maps the whole shard, and every page a read touches
        stays mapped, so the process's RSS grows to the sum of the input files over a merge
        (1.83x mergekit's peak RSS on three 1.1B models, issue 11). A positioned read into a
        preallocated tensor keeps resident memory at the tensors alive now; the bytes are the
        file's, so results are bit-identical."""
        info = self.tensors[name]
        fd, where = self._handle(info.file)
        dtype, shape, off, nbytes = where[name]
        return _pread_tensor(fd, self.path / info.file, name, dtype, shape, off, nbytes)

    def __del__(self) -> None:  # a caller that forgot close() leaks no descriptors
        self.close()

    def close(self) -> None:
        handles, self._handles = getattr(self, "_handles", {}), {}
        for fd, _ in handles.values():
            try:
                os.close(fd)
            except OSError:
                pass

    @property
    def names(self) -> list[str]:
        return list(self.tensors)

    @property
    def total_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors.values())

    @property
    def num_params(self) -> int:
        return sum(t.numel for t in self.tensors.values())

    @property
    def tied_embeddings(self) -> bool:
        return bool(self.config.get("tie_word_embeddings", False))


#: a header larger than this is refused as corrupt (safetensors' own limit is 100 MB)
_MAX_HEADER = 100_000_000


def read_header(path: str | os.PathLike) -> tuple[dict[str, tuple[str, tuple[int, ...], int, int]], int, int]:
    """Parse and check a safetensors file's header without mapping or reading its data.

    Layout: an 8-byte little-endian header length N, N bytes of JSON
    ``{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}``, then
    the data; offsets are relative to the data start (8 + N). Returns
    ``({name: (dtype, shape, begin, end)}, data_start, file_size)``. Why strict: a truncated
    download or a corrupt header must stop the run with one line naming the file and what is
    wrong before any candidate runs, never a short read, a reshape traceback or garbage
    weights later. Raises ConfigError."""
    path = Path(path)

    def bad(what: str) -> ConfigError:
        return ConfigError(f"corrupt safetensors file {path}: {what}")

    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(8)
            if len(head) < 8:
                raise bad(f"{size} bytes, shorter than the 8-byte header length")
            n = int.from_bytes(head, "little")
            if n > min(_MAX_HEADER, size - 8):
                raise bad(f"header length {n} exceeds the file ({size} bytes)"
                          if n <= _MAX_HEADER else f"header length {n} exceeds {_MAX_HEADER} bytes")
            raw = f.read(n)
    except OSError as exc:
        raise ConfigError(f"cannot read safetensors file {path}: {exc.strerror or exc}") from None
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise bad(f"header is not valid JSON ({exc})") from None
    if not isinstance(header, dict):
        raise bad("header is not a JSON object")
    start = 8 + n
    entries: dict[str, tuple[str, tuple[int, ...], int, int]] = {}
    for name, v in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(v, dict):
            raise bad(f"tensor {name!r}: entry is not an object")
        dtype, shape, offs = v.get("dtype"), v.get("shape"), v.get("data_offsets")
        if dtype not in _DTYPE_BYTES:
            raise bad(f"tensor {name!r}: unknown dtype {dtype!r} (known: {', '.join(_DTYPE_BYTES)})")
        if (not isinstance(shape, list)
                or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
            raise bad(f"tensor {name!r}: shape {shape!r} is not a list of non-negative integers")
        if (not isinstance(offs, list) or len(offs) != 2
                or not all(isinstance(o, int) and not isinstance(o, bool) for o in offs)
                or not 0 <= offs[0] <= offs[1]):
            raise bad(f"tensor {name!r}: data_offsets {offs!r} is not [begin, end] with 0 <= begin <= end")
        numel = 1
        for d in shape:
            numel *= d
        if offs[1] - offs[0] != numel * _DTYPE_BYTES[dtype]:
            raise bad(f"tensor {name!r}: {dtype} {shape} needs {numel * _DTYPE_BYTES[dtype]} bytes, "
                      f"data_offsets {offs} span {offs[1] - offs[0]}")
        if start + offs[1] > size:
            raise bad(f"tensor {name!r} ends at byte {start + offs[1]} but the file has {size} "
                      "bytes (truncated?)")
        entries[name] = (dtype, tuple(shape), offs[0], offs[1])
    return entries, start, size


_TORCH_ALL = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64",
              "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool",
              "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2", "U16": "uint16", "U32": "uint32",
              "U64": "uint64"}


def _pread_tensor(fd: int, path: Path, name: str, dtype: str, shape: tuple[int, ...], off: int, nbytes: int):
    """A new tensor filled from ``nbytes`` at ``off`` of ``fd`` (safetensors data is
    little-endian, as are the machines torch runs on here)."""
    import torch

    tdt = getattr(torch, _TORCH_ALL[dtype], None)
    if tdt is None:
        raise SelfdevError(f"{path}: tensor {name!r} has dtype {dtype}, which this torch build lacks")
    t = torch.empty(shape, dtype=tdt)
    if nbytes:
        buf = memoryview(t.reshape(-1).view(torch.uint8).numpy())
        done = 0
        while done < nbytes:
            got = os.preadv(fd, [buf[done:]], off + done)
            if got <= 0:
                raise ConfigError(f"corrupt safetensors file {path}: tensor {name!r} is cut short "
                                  f"at byte {off + done} (file changed or truncated while reading)")
            done += got
    return t


def check_same_architecture(seed: ModelDir, expert: ModelDir, expert_name: str) -> list[str]:
    """Raise ConfigError naming the first differing tensor; return warnings (dtype differences)."""
    for key in ("model_type", "architectures"):
        a, b = seed.config.get(key), expert.config.get(key)
        if a is not None and b is not None and a != b:
            raise ConfigError(f"expert {expert_name!r} ({expert.path}) has {key} {b!r} but the seed "
                              f"({seed.path}) has {a!r}: experts must share the seed's architecture")
    warnings: list[str] = []
    for name in sorted(set(seed.tensors) | set(expert.tensors)):
        s, e = seed.tensors.get(name), expert.tensors.get(name)
        if e is None:
            raise ConfigError(f"expert {expert_name!r} does not match the seed: tensor {name!r} is missing "
                              f"from the expert ({expert.path})")
        if s is None:
            raise ConfigError(f"expert {expert_name!r} does not match the seed: tensor {name!r} is in the "
                              f"expert ({expert.path}) but not in the seed ({seed.path})")
        if s.shape != e.shape:
            raise ConfigError(f"expert {expert_name!r} does not match the seed at tensor {name!r}: shape "
                              f"{list(e.shape)} vs the seed's {list(s.shape)}")
        if s.dtype != e.dtype:
            if s.is_float != e.is_float:
                raise ConfigError(f"expert {expert_name!r} does not match the seed at tensor {name!r}: "
                                  f"dtype {e.dtype} vs the seed's {s.dtype}")
            warnings.append(f"{expert_name}: {name} is {e.dtype}, seed is {s.dtype} (cast)")
    return warnings


# -------------------------------------------------------------------- mergeable selection
MLP_PATTERN = re.compile(r"(^|\.)(mlp|feed_forward|ffn)\.")


def mergeable_filter(spec: str):
    """``all`` | ``mlp`` | ``re:<regex>`` -> predicate over (name, TensorInfo); anything else is
    the domain's ``mergeable`` option gone wrong, refused with one line."""
    if spec == "all":
        return lambda name, info: info.is_float
    if spec == "mlp":
        return lambda name, info: info.is_float and bool(MLP_PATTERN.search(name))
    if spec.startswith("re:"):
        try:
            rx = re.compile(spec[3:])
        except re.error as exc:
            raise ConfigError(f"config: [domain] mergeable must be 're:' and a valid regex "
                              f"({exc}); got {spec!r}") from None
        return lambda name, info: info.is_float and bool(rx.search(name))
    raise ConfigError(f"config: [domain] mergeable must be 'all', 'mlp' or 're:<regex>'; "
                      f"got {spec!r}")


def chunk_names(infos: Iterable[TensorInfo], budget_bytes: int, factor: int = 1) -> Iterator[list[str]]:
    """Group tensors (in the given order) so that ``factor * fp32 size`` of each group stays under
    ``budget_bytes`` (a single larger tensor makes its own group)."""
    group: list[str] = []
    size = 0
    for info in infos:
        b = info.numel * 4 * factor
        if group and size + b > budget_bytes:
            yield group
            group, size = [], 0
        group.append(info.name)
        size += b
    if group:
        yield group


# -------------------------------------------------------------------- writing
class ShardWriter:
    """Write tensors one by one into safetensors shards of at most ``max_shard_bytes``.

    ``close()`` renames the shards to ``model-0000i-of-0000n.safetensors`` and writes the index, or
    names a single shard ``model.safetensors`` (what ``save_pretrained`` does).
    """

    def __init__(self, out_dir: str | os.PathLike, max_shard_bytes: int = 2 * 1024**3) -> None:
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        for old in list(self.out.glob("*.safetensors")) + [self.out / INDEX_FILE]:
            if old.exists():
                old.unlink()
        self.max = max_shard_bytes
        self._buf: dict[str, Any] = {}
        self._buf_bytes = 0
        self._shards: list[tuple[str, list[str]]] = []
        self.total_bytes = 0

    def add(self, name: str, tensor) -> None:
        t = tensor.detach().contiguous()
        nbytes = t.numel() * t.element_size()
        if self._buf and self._buf_bytes + nbytes > self.max:
            self._flush()
        self._buf[name] = t
        self._buf_bytes += nbytes
        self.total_bytes += nbytes

    def _flush(self) -> None:
        if not self._buf:
            return
        from safetensors.torch import save_file

        tmp = f"shard-{len(self._shards):05d}.tmp.safetensors"
        save_file(self._buf, str(self.out / tmp), metadata={"format": "pt"})
        self._shards.append((tmp, list(self._buf)))
        self._buf, self._buf_bytes = {}, 0

    def close(self) -> Path:
        self._flush()
        n = len(self._shards)
        if n == 0:
            raise SelfdevError("no tensors were written")
        if n == 1:
            os.replace(self.out / self._shards[0][0], self.out / SINGLE_FILE)
            return self.out
        weight_map = {}
        for i, (tmp, names) in enumerate(self._shards, 1):
            final = f"model-{i:05d}-of-{n:05d}.safetensors"
            os.replace(self.out / tmp, self.out / final)
            weight_map.update({k: final for k in names})
        index = {"metadata": {"total_size": self.total_bytes}, "weight_map": dict(sorted(weight_map.items()))}
        (self.out / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
        return self.out


def _st_names() -> dict:
    """torch dtype -> safetensors dtype string (the ones this torch build has)."""
    import torch

    names = {"float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16", "int64": "I64",
             "int32": "I32", "int16": "I16", "int8": "I8", "uint8": "U8", "bool": "BOOL",
             "float8_e4m3fn": "F8_E4M3", "float8_e5m2": "F8_E5M2", "uint16": "U16", "uint32": "U32",
             "uint64": "U64"}
    return {getattr(torch, k): v for k, v in names.items() if hasattr(torch, k)}


class PlannedShardWriter:
    """Safetensors shards whose layout is fixed before any tensor arrives.

    Why: ``ShardWriter`` holds a whole shard (2 GB by default) in memory before saving it. When
    every name, dtype and shape is known up front (a merge of a seed: the seed's index says
    them all), each shard's header can be written first and each tensor's bytes go straight to
    their place in the file as they come, in any order: memory holds the one tensor being
    written. ``plan``: ``(name, torch dtype, shape)`` in file order. ``close()`` checks that
    every planned tensor was written, then names the files as ``save_pretrained`` does
    (``model.safetensors``, or ``model-0000i-of-0000n.safetensors`` and the index).
    """

    def __init__(self, out_dir: str | os.PathLike, plan: list[tuple[str, Any, tuple[int, ...]]],
                 max_shard_bytes: int = 2 * 1024**3) -> None:
        st = _st_names()
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        for old in list(self.out.glob("*.safetensors")) + [self.out / INDEX_FILE]:
            if old.exists():
                old.unlink()
        shards: list[list[tuple[str, str, list[int], int]]] = [[]]
        size = 0
        for name, dtype, shape in plan:
            if dtype not in st:
                raise SelfdevError(f"tensor {name!r}: dtype {dtype} has no safetensors name")
            n = 1
            for d in shape:
                n *= int(d)
            nbytes = n * dtype.itemsize
            if shards[-1] and size + nbytes > max_shard_bytes:
                shards.append([])
                size = 0
            shards[-1].append((name, st[dtype], [int(d) for d in shape], nbytes))
            size += nbytes
        self._st = st
        self._where: dict[str, tuple[int, int, int, str, tuple[int, ...]]] = {}
        self._files: list[tuple[str, int, list[str]]] = []
        self.total_bytes = 0
        try:
            for i, shard in enumerate(shards):
                if not shard:
                    continue
                header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
                off = 0
                for name, sd, shape, nbytes in shard:
                    header[name] = {"dtype": sd, "shape": shape, "data_offsets": [off, off + nbytes]}
                    off += nbytes
                data = json.dumps(header, separators=(",", ":")).encode()
                data += b" " * (-len(data) % 8)
                tmp = f"shard-{i:05d}.tmp.safetensors"
                fd = os.open(self.out / tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
                self._files.append((tmp, fd, [x[0] for x in shard]))
                os.pwrite(fd, len(data).to_bytes(8, "little") + data, 0)
                os.ftruncate(fd, 8 + len(data) + off)
                start = 8 + len(data)
                for name, sd, shape, nbytes in shard:
                    self._where[name] = (fd, start + header[name]["data_offsets"][0], nbytes, sd, tuple(shape))
                self.total_bytes += off
        except BaseException:
            self.abort()
            raise
        self._written: set[str] = set()

    def write(self, name: str, tensor) -> None:
        """Put ``tensor`` (the planned dtype and shape) in its place."""
        import torch

        where = self._where.get(name)
        if where is None:
            raise SelfdevError(f"tensor {name!r} is not in the planned shards")
        fd, off, nbytes, sd, shape = where
        t = tensor.detach().contiguous()
        if self._st.get(t.dtype) != sd or tuple(t.shape) != shape:
            raise SelfdevError(f"tensor {name!r} is {t.dtype} {list(t.shape)}; planned {sd} {list(shape)}")
        if nbytes:
            view = memoryview(t.reshape(-1).view(torch.uint8).numpy())
            done = 0
            while done < nbytes:
                done += os.pwrite(fd, view[done:], off + done)
        self._written.add(name)

    def close(self) -> Path:
        missing = [n for n in self._where if n not in self._written]
        if missing:
            self.abort()
            raise SelfdevError(f"{len(missing)} planned tensor(s) were never written, e.g. {missing[0]!r}")
        if not self._files:
            raise SelfdevError("no tensors were written")
        n = len(self._files)
        for _, fd, _ in self._files:
            os.close(fd)
        if n == 1:
            os.replace(self.out / self._files[0][0], self.out / SINGLE_FILE)
        else:
            weight_map = {}
            for i, (tmp, _, names) in enumerate(self._files, 1):
                final = f"model-{i:05d}-of-{n:05d}.safetensors"
                os.replace(self.out / tmp, self.out / final)
                weight_map.update({k: final for k in names})
            index = {"metadata": {"total_size": self.total_bytes}, "weight_map": dict(sorted(weight_map.items()))}
            (self.out / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
        self._files = []
        return self.out

    def abort(self) -> None:
        """Close the files (the caller removes the directory)."""
        for _, fd, _ in self._files:
            try:
                os.close(fd)
            except OSError:
                pass
        self._files = []


def copy_model_files(src: str | os.PathLike, dst: str | os.PathLike) -> list[str]:
    """Copy every top-level non-weight file (config, generation config, tokenizer, chat template...)."""
    src, dst = Path(src), Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    copied = []
    for f in sorted(src.iterdir()):
        if not f.is_file() or f.name in _WEIGHT_NAMES or f.name.endswith(_WEIGHT_SUFFIXES):
            continue
        shutil.copy2(f, dst / f.name)
        copied.append(f.name)
    return copied


_TORCH_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16"}


def torch_dtype(st_dtype: str):
    import torch

    return getattr(torch, _TORCH_DTYPES.get(st_dtype, "float32"))
