"""``TensorDomain``: a reusable base for domains whose seed and experts fit in memory.

A subclass fills three attributes in ``prepare()`` and implements ``build_model``:

- ``self.base``: ``dict[str, Tensor]``, every parameter of the seed model;
- ``self.task_vectors``: ``dict[str, dict[str, Tensor]]``, expert name -> parameter name -> τ
  (expert − seed), for the mergeable parameters;
- ``self.mergeable``: ``list[str]``, the parameters a candidate merges (the others stay seed).

The base class then applies candidates through one warm ``sandbox.Sandbox`` per domain instance
(it forks a clean child per candidate) and trusted baseline functions in-process, both with the
per-tensor candidate contract ``merge_models(task_vectors, base, name) -> merged task vector``.
"""
from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any, Callable

from selfdev import Domain, MergeOutcome

if TYPE_CHECKING:  # pragma: no cover
    from torch import Tensor


class TensorDomain(Domain):
    """Seed + experts held as tensors; candidates merge them tensor by tensor."""

    def __init__(self, ctx, **options: Any) -> None:
        super().__init__(ctx, **options)
        self.base: dict[str, "Tensor"] = {}
        self.task_vectors: dict[str, dict[str, "Tensor"]] = {}
        self.mergeable: list[str] = []
        self._sandbox = None
        self._idle: list[Any] = []      # warm sandboxes no candidate is using (see ``apply``)
        self._extra: list[Any] = []     # the pool's sandboxes beyond the first
        self._sandbox_lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        """Pickle without the live sandboxes (a copy in another process starts its own)."""
        state = dict(self.__dict__)
        state["_sandbox"] = None
        state["_idle"], state["_extra"] = [], []
        state.pop("_sandbox_lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._sandbox_lock = threading.Lock()

    # -- to implement --------------------------------------------------------------------------

    def build_model(self, merged_tv: dict[str, "Tensor"]) -> Any:
        """The model handle for ``seed + merged_tv`` on the mergeable parameters (others seed)."""
        raise NotImplementedError

    # -- shared machinery ----------------------------------------------------------------------

    def expert_names(self) -> list[str]:
        return list(self.task_vectors)

    def merged_state(self, merged_tv: dict[str, "Tensor"]) -> dict[str, "Tensor"]:
        """The full parameter dict: ``base[k] + merged_tv[k]`` for mergeable ``k``, else ``base[k]``."""
        state = {}
        for key, value in self.base.items():
            if key in merged_tv:
                state[key] = value + merged_tv[key].to(value.dtype)
            else:
                state[key] = value
        return state

    def _tensors_for(self, name: str) -> dict[str, "Tensor"]:
        return {expert: tvs[name].clone() for expert, tvs in self.task_vectors.items()}

    def _check_result(self, name: str, value: Any) -> str | None:
        """Why ``value`` is not a valid merged task vector for ``name`` (None when it is)."""
        import torch

        base = self.base[name]
        if not isinstance(value, torch.Tensor):
            return f"merge_models returned {type(value).__name__} for {name!r}, expected a Tensor"
        if value.shape != base.shape:
            return (f"merge_models returned shape {tuple(value.shape)} for {name!r}, "
                    f"expected {tuple(base.shape)}")
        if value.dtype != base.dtype:
            return f"merge_models returned dtype {value.dtype} for {name!r}, expected {base.dtype}"
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            return f"merge_models returned non-finite values for {name!r}"
        return None

    def apply_function(self, fn: Callable[..., Any]) -> MergeOutcome:
        """Apply a **trusted** in-process merge function (a baseline), with the candidate contract.

        Each call gets copies of the task vectors and of the seed tensor, so an in-place
        operation cannot corrupt the domain. Failures become a non-ok outcome, as for candidates.
        """
        if not self.mergeable:
            self.prepare()
        start = time.perf_counter()
        merged: dict[str, Tensor] = {}
        try:
            for name in self.mergeable:
                value = fn(self._tensors_for(name), self.base[name].clone(), name)
                problem = self._check_result(name, value)
                if problem:
                    return MergeOutcome("error", problem,
                                        duration_ms=(time.perf_counter() - start) * 1000)
                merged[name] = value
        except Exception as exc:  # a trusted function can still be buggy
            return MergeOutcome("error", f"{type(exc).__name__}: {exc}",
                                duration_ms=(time.perf_counter() - start) * 1000)
        duration = (time.perf_counter() - start) * 1000
        return MergeOutcome("ok", model=self.build_model(merged), duration_ms=duration)

    def sandbox(self):
        """The warm sandbox of this domain instance (started on first use, reused after).

        ``sandbox.SandboxUnavailable`` propagates: without the isolation layers no candidate runs.
        """
        with self._sandbox_lock:
            if self._sandbox is None:
                if not self.mergeable:
                    self.prepare()
                from selfdev import Sandbox

                self._sandbox = Sandbox(self.base, self.task_vectors, names=list(self.mergeable))
                self._idle.append(self._sandbox)
            return self._sandbox

    def _checkout(self) -> Any:
        """A warm sandbox no other candidate is using: one runs one child at a time, so
        candidates applied from several executor threads at once each take their own (the
        pool grows to the number of concurrent callers; each sandbox is a warm parent with its
        own copy of the tensors, started once)."""
        self.sandbox()  # the first one (its start puts it in the pool)
        with self._sandbox_lock:
            if self._idle:
                return self._idle.pop()
        from selfdev import Sandbox

        extra = Sandbox(self.base, self.task_vectors, names=list(self.mergeable))
        with self._sandbox_lock:
            self._extra.append(extra)
        return extra

    def _checkin(self, sb: Any) -> None:
        with self._sandbox_lock:
            self._idle.append(sb)

    def apply(self, code: str, timeout: float) -> MergeOutcome:
        """Run candidate ``code`` in the sandbox for every mergeable parameter."""
        sb = self._checkout()
        try:
            res = sb.run(code, timeout=timeout)
        finally:
            self._checkin(sb)
        details = dict(res.details or {})
        if res.status != "ok":
            return MergeOutcome(res.status, res.reason, stdout=res.stdout or "",
                                duration_ms=res.duration_ms, details=details)
        model = self.build_model(dict(res.tensors))
        return MergeOutcome("ok", res.reason, model=model, stdout=res.stdout or "",
                            duration_ms=res.duration_ms, details=details)

    def close(self) -> None:
        with self._sandbox_lock:
            pool = [self._sandbox, *self._extra]
            self._sandbox, self._idle, self._extra = None, [], []
        for sb in pool:
            if sb is not None:
                sb.close()
