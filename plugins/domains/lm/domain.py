"""The ``lm`` domain: merge Hugging Face causal-LM experts into a seed model, tensor by tensor.

Seed and experts are model directories with safetensors weights (one file or shards) and the
same architecture; a mismatch is refused with a message naming the first differing tensor. For
every *mergeable* parameter (``mergeable = "all"``, ``"mlp"`` as in the paper, or
``"re:<regex>"``) the candidate ``merge_models(task_vectors, base, name)`` gets the experts'
task vectors τ_i = θ_i − θ_0 and the seed value θ_0 (float32) and returns the merged task vector;
the merged model is θ_0 + result for mergeable parameters and θ_0 for every other tensor.

Two modes, chosen from the size of the mergeable tensors (``in_memory_mb``):

* **memory** (small models, e.g. toymath): seed values and task vectors are loaded once; one
  warm ``selfdev.Sandbox`` over all mergeable tensors is reused for every candidate, and the
  merged model is an in-memory :class:`~selfdev.plugins.domains.lm.model.LMModel` (the seed
  directory plus the merged tensors) that evaluators load without touching the disk;
* **stream** (big models): one warm ``selfdev.StreamSandbox`` per run and ONE jailed child per
  candidate, whatever the model size: tensors are read one at a time with positioned reads
  (``ModelDir.get``: nothing is memory-mapped, so RSS stays a few tensors), the float32 seed
  value and task vectors go straight into the child's sealed input buffer, the merged task
  vector comes back validated, and ``(seed + it)`` in the seed's dtype goes straight to its
  place in a new HF directory under the run's artifacts
  (``lm-merged/<hash>``, the ``keep_merged`` newest are kept). Peak memory is a few tensors. The
  candidate's clock counts its own compute only: ``tensor_timeout`` per tensor and a total of
  the run's timeout + ``timeout_per_gparam`` per billion mergeable parameters (docs/lm-domain.md).

Candidates run only in the sandbox; trusted baselines (``apply_function``) run in-process with
the same per-tensor contract and the same streaming.
"""
from __future__ import annotations

import hashlib
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Union

from pydantic import field_validator

from selfdev import ConfigError, Domain, Field, MergeOutcome, SelfdevError, parse_kv
from selfdev import hookimpl
from selfdev.plugins.domains.baselines import baseline_grid
from selfdev.plugins.domains.lm.baselines import lm_baseline_grid
from selfdev.plugins.domains.lm.io import (ModelDir, PlannedShardWriter, check_same_architecture,
                                          copy_model_files, mergeable_filter, torch_dtype)
from selfdev.plugins.domains.lm.model import LMModel

EXAMPLE = '''\
import torch


def merge_models(task_vectors: dict[str, torch.Tensor], base: torch.Tensor, name: str) -> torch.Tensor:
    """Average the experts' task vectors."""
    merged = torch.zeros_like(base)
    for tau in task_vectors.values():
        merged = merged + tau
    return merged / max(len(task_vectors), 1)
'''

PROMPT = '''\
You are an expert in machine learning and model merging. Write a new algorithm that merges
several fine-tuned language models into one better model.

Setting: a seed language model ({arch}, {params} parameters) was fine-tuned into {n_experts}
experts: {experts}. The merged model is scored on {task}. For every parameter, the task vector
of an expert is (expert parameter - seed parameter). Your function combines the task vectors of
one parameter into one merged task vector; the merged model is seed + merged task vector.
{scope}

Write a Python function with exactly this signature:

def merge_models(task_vectors: dict[str, torch.Tensor], base: torch.Tensor, name: str) -> torch.Tensor:
    """task_vectors: expert name -> this parameter's task vector (same shape as base).
    base: the seed model's value of this parameter. name: the parameter's name.
    Return the merged task vector for this parameter (same shape and dtype as base)."""

It is called once per parameter ({n_mergeable} parameters), for example with
{examples}.

Constraints:
- import only torch and math; no other modules, no files, no network, no printing of large data;
- return a tensor with the same shape and dtype as base, with finite values;
- keep it fast and deterministic (seed any torch.Generator you use);
- do not use names that start with an underscore, eval/exec/open/getattr, or global state.

Here is an example (a simple average of the task vectors):

```python
{example}```

Write a new, better merge_models function. Answer with one ```python code block.
'''


EXPERTS_MUST_BE = "a table name -> model directory (or a list of NAME=DIR items)"
DEFAULT_TASK = "GSM8k grade-school math word problems (exact match of the final number, 5-shot)"


def parse_experts(experts: dict[str, str] | list[str]) -> dict[str, str]:
    """``{"a": DIR}`` or ``["a=DIR", ...]`` -> ``{"a": DIR}``; a malformed item raises
    ``ValueError``."""
    if isinstance(experts, dict):
        return {str(k): str(v) for k, v in experts.items()}
    try:
        return parse_kv(experts)
    except SelfdevError:
        raise ValueError(f"must be {EXPERTS_MUST_BE}") from None


class MergeOptions(Domain.Options):
    """How candidates are applied to the models: the options ``lm`` and ``toymath`` share."""

    mergeable: str = Field("all", description="the tensors candidates merge: all, mlp (as in the "
                                              "paper) or re:<regex>")
    seed: int = Field(0, description="seed of the baselines")
    in_memory_mb: int = Field(1024, ge=0, description="mergeable tensors up to this size (MB, "
                                                      "float32, seed + experts) are held in memory; "
                                                      "larger models stream")
    chunk_mb: int = Field(2048, ge=0, description="unused (stream mode once grouped tensors "
                                                  "per sandbox; it now feeds one child tensor by "
                                                  "tensor); accepted so older configs still load")
    tensor_timeout: float = Field(0.0, ge=0, description="stream mode: seconds one merge_models call "
                                                         "(or the candidate's module start-up) may "
                                                         "take; 0: the run's timeout")
    timeout_per_gparam: float = Field(0.0, ge=0, description="seconds of candidate compute added to "
                                                             "the run's timeout per billion mergeable "
                                                             "parameters (the total budget)")
    threads: int = Field(1, ge=1, description="CPU threads of a candidate's sandbox child")
    out_shard_mb: int = Field(2048, ge=0, description="stream mode: shard size (MB) of merged "
                                                      "model directories (at least 1)")
    keep_merged: int = Field(4, ge=0, description="stream mode: the newest merged model "
                                                  "directories kept")

    @field_validator("mergeable")
    @classmethod
    def _mergeable(cls, value: str) -> str:
        mergeable_filter(value)  # raises the one-line ConfigError
        return value


def _short_hash(*parts: Any) -> str:
    h = hashlib.blake2b(digest_size=8)
    for p in parts:
        h.update(str(p).encode())
        h.update(b"\0")
    return h.hexdigest()


class LMDomain(Domain):
    """Merge Hugging Face causal LMs (safetensors) per tensor; see the module docstring."""

    name = "lm"
    default_evaluator = "gsm8k"

    class Options(MergeOptions):
        seed_model: str = Field(min_length=1, description="the seed model: a Hugging Face "
                                                          "model directory with safetensors")
        experts: Union[dict[str, str], list[str]] = Field(
            description="the experts: a table name -> model directory, at least one expert",
            json_schema_extra={"must_be": EXPERTS_MUST_BE})
        eval_data: Union[str, dict[str, Any], None] = Field(
            None, description="the evaluator's data: a GSM8k-format jsonl, a directory holding "
                              "test.jsonl (train.jsonl, dev.jsonl), or a table of its options")
        task: str = Field(DEFAULT_TASK, description="what the merged model is scored on (in the "
                                                    "factory prompt)")

        @field_validator("experts")
        @classmethod
        def _experts(cls, value: Any) -> Any:
            if not parse_experts(value):
                raise ValueError("needs at least one expert")
            return value

    def __init__(self, ctx, **options: Any) -> None:
        super().__init__(ctx, **options)
        o = self.options
        self.seed_dir, self.expert_dirs = self._model_dirs()
        self._is_mergeable = mergeable_filter(o.mergeable)
        self.in_memory_bytes = o.in_memory_mb * 1024**2
        self.chunk_bytes = max(1, o.chunk_mb) * 1024**2
        self.out_shard_bytes = max(1, o.out_shard_mb) * 1024**2
        self._prepared: dict[str, Any] | None = None
        self._seed = None
        self._experts: dict[str, Any] = {}
        self.mergeable: list[str] = []
        self.mode = "memory"
        self.base: dict[str, Any] = {}
        self.task_vectors: dict[str, dict[str, Any]] = {}
        self._sandbox = None
        self._stream_sandbox = None
        self._tied_skip: set[str] = set()
        self._merged_dirs: list[Path] = []
        self._tmp: tempfile.TemporaryDirectory | None = None

    # ------------------------------------------------------------------ setup
    @property
    def task(self) -> str:
        """What the merged model is scored on, as the factory prompt says it."""
        return self.options.task

    @classmethod
    def preflight(cls, options: Any) -> None:
        """Open the seed and expert directories' safetensors headers (no weights are read) and
        check ``eval_data`` exists, before ``run.started``: a typo in a path is refused with one
        line and an empty log, not a started-then-failed run. (toymath builds its models, so
        it has no ``seed_model`` and nothing to check here.)"""
        seed = getattr(options, "seed_model", None)
        if seed is None:
            return
        ModelDir.open(Path(seed).expanduser(), "seed_model")
        for name, path in parse_experts(options.experts).items():
            ModelDir.open(Path(path).expanduser(), f"expert {name!r}")
        ed = options.eval_data
        if isinstance(ed, str) and not Path(ed).expanduser().exists():
            raise ConfigError(f"config: [domain] eval_data {ed} does not exist; give a GSM8k-format "
                              "jsonl or a directory holding test.jsonl")

    def _model_dirs(self) -> tuple[Path | None, dict[str, Path]]:
        """Seed and expert directories, from the options."""
        o = self.options
        return (Path(o.seed_model).expanduser(),
                {k: Path(v).expanduser() for k, v in parse_experts(o.experts).items()})

    def _resolve_models(self) -> None:
        """Subclasses (toymath) fill ``seed_dir``/``expert_dirs`` here (e.g. build a family)."""

    def prepare(self) -> dict[str, Any]:
        if self._prepared is not None:
            return self._prepared
        self._resolve_models()
        seed = ModelDir.open(self.seed_dir, "seed_model")
        warnings: list[str] = []
        experts = {}
        for name, path in self.expert_dirs.items():
            exp = ModelDir.open(path, f"expert {name!r}")
            warnings += check_same_architecture(seed, exp, name)
            experts[name] = exp
        self._seed, self._experts = seed, experts
        tied_skip = set()
        if seed.tied_embeddings and "lm_head.weight" in seed.tensors and any(
                n.endswith("embed_tokens.weight") for n in seed.tensors):
            tied_skip.add("lm_head.weight")  # tied to the embeddings: transformers re-ties on load
        self._tied_skip = tied_skip
        self.mergeable = [n for n, info in seed.tensors.items()
                          if self._is_mergeable(n, info) and n not in tied_skip]
        if not self.mergeable:
            raise ConfigError(f"lm: mergeable={self.options.mergeable!r} selects no tensor of "
                              f"{self.seed_dir}")
        n_merge = sum(seed.tensors[n].numel for n in self.mergeable)
        working = n_merge * 4 * (1 + len(experts))
        self.mode = "memory" if working <= self.in_memory_bytes else "stream"
        if self.mode == "memory":
            self._load_in_memory()
        self._prepared = {
            "seed_model": str(self.seed_dir),
            "experts": {k: str(v) for k, v in self.expert_dirs.items()},
            "architecture": (seed.config.get("architectures") or [seed.config.get("model_type")])[0],
            "num_params": seed.num_params,
            "num_tensors": len(seed.tensors),
            "mergeable": self.options.mergeable,
            "num_mergeable_tensors": len(self.mergeable),
            "num_mergeable_params": n_merge,
            "mode": self.mode,
            "warnings": warnings,
        }
        return self._prepared

    def _load_in_memory(self) -> None:
        import torch

        seed = self._seed
        task = self._progress("loading task vectors", len(self.mergeable))
        self.base = {}
        self.task_vectors = {e: {} for e in self._experts}
        for name in self.mergeable:
            b = seed.get(name).to(torch.float32)
            self.base[name] = b
            for e, exp in self._experts.items():
                self.task_vectors[e][name] = exp.get(name).to(torch.float32) - b
            task.advance()
        task.close()

    def _progress(self, desc: str, total: int | None):
        prog = getattr(self.ctx, "progress", None)
        if prog is None:
            from selfdev import NullProgress

            prog = NullProgress()
        return prog.task(desc, total=total)

    def export_state(self) -> Any:
        """None: a worker prepares from the model paths itself. The prepared state holds open
        safetensors files and a live sandbox, and for a 7B model it is the model: shipping it
        through an object store per iteration would cost more than reading the files."""
        return None

    # ------------------------------------------------------------------ handles
    def expert_names(self) -> list[str]:
        self.prepare()
        return list(self._experts)

    def seed_model(self):
        self.prepare()
        return LMModel(self.seed_dir, label="seed")

    def expert_model(self, name: str):
        self.prepare()
        if name not in self.expert_dirs:
            raise ConfigError(f"{self.name} has no expert {name!r}; allowed: {', '.join(self.expert_dirs)}")
        return LMModel(self.expert_dirs[name], label=name)

    @classmethod
    def supplies_eval_data(cls, options: Any) -> bool:
        """Whether ``eval_spec`` will name the evaluator's data (``eval_data`` is set)."""
        return getattr(options, "eval_data", None) is not None

    def eval_spec(self) -> dict[str, Any]:
        """Defaults for the evaluator (its explicit options win): data files of ``eval_data``."""
        ed = self.options.eval_data
        if ed is None:
            return {}
        if isinstance(ed, dict):
            return {k: v for k, v in ed.items()}
        p = Path(str(ed)).expanduser()
        if p.is_dir():
            spec = {"test_file": str(p / "test.jsonl")}
            if (p / "train.jsonl").is_file():
                spec["train_file"] = str(p / "train.jsonl")
            if (p / "dev.jsonl").is_file():
                spec["dev_file"] = str(p / "dev.jsonl")
            return spec
        return {"test_file": str(p)}

    def baselines(self):
        return baseline_grid(self.options.seed) + lm_baseline_grid(len(self.expert_names()))

    def prompt(self) -> str:
        info = self.prepare()
        seed = self._seed
        ex = self.mergeable[:: max(1, len(self.mergeable) // 4)][:4]
        examples = ", ".join(f"name={n!r} (shape {list(seed.tensors[n].shape)})" for n in ex)
        scope = ("Only the MLP (feed-forward) weights are merged; all other weights keep the seed's values."
                 if self.options.mergeable == "mlp" else
                 "Every floating-point weight is merged (embeddings, attention, MLP, norms).")
        return PROMPT.format(arch=info["architecture"], params=f"{info['num_params']:,}",
                             n_experts=len(self._experts), experts=", ".join(self._experts),
                             task=self.task, scope=scope, n_mergeable=len(self.mergeable),
                             examples=examples, example=EXAMPLE)

    # ------------------------------------------------------------------ merging
    def apply(self, code: str, timeout: float, out_dir: str | Path | None = None) -> MergeOutcome:
        """Run candidate ``code`` in the sandbox for every mergeable tensor.

        ``out_dir`` (optional) also writes the merged model there as a HF directory.
        """
        self.prepare()
        budget = self.budget(timeout)
        if self.mode == "memory":
            res = self.sandbox().run(code, timeout=budget)
            details = dict(res.details or {})
            if res.status != "ok":
                return MergeOutcome(res.status, res.reason, stdout=res.stdout or "",
                                    duration_ms=res.duration_ms, details=details)
            t0 = time.perf_counter()
            model = self._memory_handle(dict(res.tensors), label=f"candidate {_short_hash(code)}")
            if out_dir is not None:
                model.save(out_dir, self.out_shard_bytes)
            return MergeOutcome("ok", res.reason, model=model, stdout=res.stdout or "",
                                duration_ms=res.duration_ms + (time.perf_counter() - t0) * 1000,
                                details=details)
        tensor_timeout = self.options.tensor_timeout or float(timeout)
        session = self.stream_sandbox().session(code, tensor_timeout=tensor_timeout, total_timeout=budget)
        try:  # one child for the whole model
            return self._stream(_SandboxMerger(session), _short_hash("code", code), out_dir)
        finally:
            session.close()

    def budget(self, timeout: float) -> float:
        """A candidate's total compute budget: the run's ``timeout`` plus
        ``timeout_per_gparam`` seconds per billion mergeable parameters (docs/lm-domain.md)."""
        n = (self._prepared or {}).get("num_mergeable_params", 0)
        return float(timeout) + self.options.timeout_per_gparam * n / 1e9

    def apply_function(self, fn: Callable[..., Any], out_dir: str | Path | None = None) -> MergeOutcome:
        """Apply a trusted in-process merge function (a baseline) with the candidate contract."""
        self.prepare()
        if self.mode == "memory":
            t0 = time.perf_counter()
            try:
                merged = _run_function(fn, self.base, self.task_vectors, self.mergeable)
            except _MergeFailure as exc:
                return MergeOutcome(exc.status, str(exc), duration_ms=(time.perf_counter() - t0) * 1000)
            model = self._memory_handle(merged, label=getattr(fn, "__name__", "function"))
            if out_dir is not None:
                model.save(out_dir, self.out_shard_bytes)
            return MergeOutcome("ok", model=model, duration_ms=(time.perf_counter() - t0) * 1000)
        tag = _short_hash("fn", repr(fn), time.time_ns())
        return self._stream(_FunctionMerger(fn), tag, out_dir)

    def _memory_handle(self, merged_tv: dict[str, Any], label: str):

        infos = self._seed.tensors
        overrides = {n: (self.base[n] + merged_tv[n].to(self.base[n].dtype)).to(torch_dtype(infos[n].dtype))
                     for n in self.mergeable}
        return LMModel(self.seed_dir, overrides=overrides, label=label)

    def sandbox(self):
        """The warm sandbox over all mergeable tensors (memory mode; started on first use)."""
        if self._sandbox is None:
            from selfdev import Sandbox

            self._sandbox = Sandbox(self.base, self.task_vectors, names=list(self.mergeable),
                                    memory_mb=_sandbox_memory_mb(self.base, self.task_vectors))
        return self._sandbox

    def stream_sandbox(self):
        """The warm streaming sandbox (stream mode; started on first use): it holds no
        tensors, and each candidate gets one child fed tensor by tensor."""
        if self._stream_sandbox is None:
            from selfdev import StreamSandbox

            max_numel = max(self._seed.tensors[n].numel for n in self.mergeable)
            self._stream_sandbox = StreamSandbox(list(self._experts), max_numel, threads=self.options.threads)
        return self._stream_sandbox

    def _merged_root(self) -> Path:
        art = getattr(self.ctx, "artifacts", None)
        if art is None:
            if self._tmp is None:
                self._tmp = tempfile.TemporaryDirectory(prefix="selfdev-lm-")
            art = Path(self._tmp.name)
        root = Path(art) / "lm-merged"
        root.mkdir(parents=True, exist_ok=True)
        return root

    def _stream(self, merger, tag: str, out_dir: str | Path | None) -> MergeOutcome:
        """Merge tensor by tensor into ``out_dir`` (or a fresh dir under the artifacts).

        One tensor at a time: the seed value and the experts' task vectors are read (positioned
        reads, no mapping) and converted to float32, handed to ``merger`` (the candidate's one
        sandbox child, or a trusted function), and the merged tensor, cast back to the seed's dtype,
        goes straight to its place in the output shards (``PlannedShardWriter``). Peak memory
        is a few tensors, whatever the model size. The sandbox's clock runs only while the
        child has a tensor: these reads and writes are not the candidate's time."""
        import torch

        t0 = time.perf_counter()
        details: dict[str, Any] = {"tensors": len(self.mergeable)}
        early = merger.early()
        if early is not None:  # screened out, or its module failed: nothing to read or write
            return self._outcome(early, t0, details)
        seed, experts = self._seed, self._experts
        target = Path(out_dir) if out_dir is not None else self._merged_root() / tag
        work = target.with_name(target.name + ".partial")
        if work.exists():
            shutil.rmtree(work)
        copy_model_files(self.seed_dir, work)
        merged_set = set(self.mergeable)
        # tied embeddings: the tied copy is not written (transformers and vLLM tie it on load)
        rest = [n for n in seed.tensors if n not in merged_set and n not in self._tied_skip]
        plan = [(n, torch_dtype(seed.tensors[n].dtype), seed.tensors[n].shape) for n in self.mergeable]
        plan += [(n, None, seed.tensors[n].shape) for n in rest]
        task = self._progress(f"merging {len(self.mergeable)} tensors", len(self.mergeable))
        writer = None
        try:
            plan = [(n, dt if dt is not None else _stored_dtype(seed, n), shape) for n, dt, shape in plan]
            writer = PlannedShardWriter(work, plan, self.out_shard_bytes)
            for n in self.mergeable:
                base = seed.get(n).to(torch.float32)
                merged = merger.merge(n, base, experts)
                if merged is None:
                    break
                writer.write(n, (base + merged).to(torch_dtype(seed.tensors[n].dtype)))
                del base, merged
                task.advance()
            res = merger.finish()
            if res.status != "ok":
                writer.abort()
                shutil.rmtree(work, ignore_errors=True)
                return self._outcome(res, t0, details)
            for n in rest:
                writer.write(n, seed.get(n))
            writer.close()
        except BaseException:
            merger.close()
            if writer is not None:
                writer.abort()
            shutil.rmtree(work, ignore_errors=True)
            raise
        finally:
            task.close()
        if target.exists():
            shutil.rmtree(target)
        work.rename(target)
        if out_dir is None:
            self._merged_dirs.append(target)
            keep = self.options.keep_merged
            while keep > 0 and len(self._merged_dirs) > keep:
                shutil.rmtree(self._merged_dirs.pop(0), ignore_errors=True)
        # the directory equals the seed but for the mergeable tensors: a warm engine copies
        # just those into the model it keeps (plugins/domains/lm/engine.py)
        model = LMModel(target, label=tag, base=self.seed_dir, changed=tuple(self.mergeable))
        return self._outcome(res, t0, details, model)

    @staticmethod
    def _outcome(res, t0: float, details: dict, model=None) -> MergeOutcome:
        """A MergeOutcome from a merger's verdict (``duration_ms``: wall time, I/O included;
        the candidate's own compute is ``details["compute_ms"]`` for sandboxed ones)."""
        details = {**details, **(res.details or {})}
        return MergeOutcome(res.status, res.reason, model=model, stdout=(res.stdout or "")[-4000:],
                            duration_ms=(time.perf_counter() - t0) * 1000, details=details)

    def close(self) -> None:
        sb, self._sandbox = self._sandbox, None
        if sb is not None:
            sb.close()
        sb, self._stream_sandbox = self._stream_sandbox, None
        if sb is not None:
            sb.close()
        if self._seed is not None:
            self._seed.close()
        for e in self._experts.values():
            e.close()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


# ---------------------------------------------------------------------- runners
class _MergeFailure(Exception):
    """``status`` follows the sandbox: ``error`` (raised) or ``rejected`` (invalid result)."""

    def __init__(self, status: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status


def check_result(name: str, value: Any, base) -> str | None:
    """Why ``value`` is not a valid merged task vector for ``name`` (None when it is)."""
    import torch

    if not isinstance(value, torch.Tensor):
        return f"merge_models returned {type(value).__name__} for {name!r}, expected a Tensor"
    if value.shape != base.shape:
        return f"merge_models returned shape {tuple(value.shape)} for {name!r}, expected {tuple(base.shape)}"
    if value.dtype != base.dtype:
        return f"merge_models returned dtype {value.dtype} for {name!r}, expected {base.dtype}"
    if value.is_floating_point() and value.numel():
        lo, hi = torch.aminmax(value)  # one pass; NaN and inf show in the extremes
        finite = bool(torch.isfinite(lo)) and bool(torch.isfinite(hi))
    else:
        finite = bool(torch.isfinite(value).all())
    if not finite:
        return f"merge_models returned non-finite values for {name!r}"
    return None


def _run_function(fn, base: dict, tvs: dict, names: list[str]) -> dict:
    merged = {}
    for n in names:
        try:
            value = fn({e: tv[n].clone() for e, tv in tvs.items()}, base[n].clone(), n)
        except Exception as exc:  # a trusted function can still be buggy
            raise _MergeFailure("error", f"{type(exc).__name__} at {n!r}: {exc}") from None
        problem = check_result(n, value, base[n])
        if problem:
            raise _MergeFailure("rejected", problem)
        merged[n] = value
    return merged


def _sandbox_memory_mb(base: dict, tvs: dict) -> int:
    """Address-space limit for a candidate child: its inputs (mapped), room for a few
    tensor-sized temporaries and the result, plus torch itself; at least the sandbox's 4 GiB."""
    nbytes = sum(t.numel() * t.element_size() for t in base.values())
    nbytes += sum(t.numel() * t.element_size() for tv in tvs.values() for t in tv.values())
    return max(4096, int(nbytes * 3 / 2**20) + 2048)


def _stored_dtype(seed: ModelDir, name: str):
    """The torch dtype ``seed.get(name)`` returns (what a copied tensor is written as)."""
    import torch

    st = seed.tensors[name].dtype
    names = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
             "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
             "U8": torch.uint8, "BOOL": torch.bool}
    if st in names:
        return names[st]
    return seed.get(name).dtype  # rare dtypes (float8...): ask the reader once


class _Verdict:
    """A merger's verdict, shaped like a SandboxResult (status, reason, stdout, details)."""

    def __init__(self, status: str, reason: str | None = None, stdout: str = "", details: dict | None = None):
        self.status, self.reason, self.stdout, self.details = status, reason, stdout, details or {}


class _FunctionMerger:
    """A trusted in-process function (a baseline), with the candidate contract per tensor."""

    def __init__(self, fn) -> None:
        self.fn = fn
        self.failure: _Verdict | None = None

    def early(self):
        return None

    def merge(self, name: str, base, experts: dict):
        import torch

        tvs = {e: exp.get(name).to(torch.float32) - base for e, exp in experts.items()}
        try:
            return _run_function(self.fn, {name: base}, {e: {name: t} for e, t in tvs.items()}, [name])[name]
        except _MergeFailure as exc:
            self.failure = _Verdict(exc.status, str(exc))
            return None

    def finish(self):
        return self.failure or _Verdict("ok")

    def close(self) -> None:
        pass


class _SandboxMerger:
    """A candidate in its one sandbox child (``StreamSandbox.session``): the task vectors are
    computed straight into the child's shared input buffers, the merged tensor comes back
    validated (shape, dtype, finite) or the session ends with the verdict."""

    def __init__(self, session) -> None:
        self.session = session

    def early(self):
        return self.session.result  # set when screening or the module's start-up failed

    def merge(self, name: str, base, experts: dict):
        import torch

        b, tvs = self.session.buffers(base.shape)
        b.copy_(base)
        for view, exp in zip(tvs, experts.values()):
            torch.sub(exp.get(name).to(torch.float32), base, out=view)
        return self.session.merge(name)

    def finish(self):
        return self.session.finish()

    def close(self) -> None:
        self.session.close()


@hookimpl
def register_domains(register):
    register(LMDomain)
