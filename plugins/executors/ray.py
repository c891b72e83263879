"""The ``ray`` executor: candidate work on a Ray cluster, the driver still the log's one writer.

Why it looks like this:

- The engine's domain owns a live sandbox (processes, sockets), which cannot travel. Each Ray
  worker is a long-lived actor that builds the domain and the evaluator itself, from the same
  registry with the same options (``WorkSpec``), keeps its own warm sandbox, and is handed each
  candidate by value (``CandidateWork``). The engine's prepared state (seed, experts, data:
  ``Domain.export_state()``) is put in Ray's object store once per ``run_candidates`` call (once
  per iteration) and reaches each actor once, by reference; candidates never carry it.
- Before it takes work an actor runs the sandbox doctor on its node and refuses (raises) when a
  required isolation layer is missing: a candidate never runs unguarded on a worker.
- Results come back as they finish (``ray.wait``) but are released to the engine in the order of
  ``works``, so the log is the one ``local`` (one worker) writes, whatever finished first; work
  in flight (submitted, or finished and waiting for its turn) is bounded by ``max_in_flight``.
- A task lost with its actor (a killed worker process, a lost node) is run again on a fresh
  actor, up to ``max_retries`` times; each loss travels with the result (``retries``) and the
  engine records it as ``candidate.retried``. Past the limit the candidate is recorded as
  ``error`` with the reason, so no candidate is lost or recorded twice.
- Closing (the run ends, fails or is interrupted) cancels in-flight tasks and kills the actors;
  a cluster this executor started (``address = "local"``) is shut down.

``import ray`` happens inside methods only, so ``selfdev --help`` does not pay for it; without
ray installed the executor says in one line how to get it.
"""
from __future__ import annotations

import os
import socket
from typing import Any, Callable, Iterator

from pydantic import field_validator

from selfdev import (CandidateResult, CandidateWork, Context, Executor, Field,
                     NullProgress, SelfdevError, WorkSpec, doctor, execute_candidate,
                     get_registry, hookimpl, selfdev_home)

INSTALL_HINT = "the ray executor needs Ray: pip install 'selfdev[ray]'"


def import_ray() -> Any:
    """``ray``, or one line saying how to install it."""
    try:
        import ray
    except ImportError:
        raise SelfdevError(INSTALL_HINT) from None
    return ray


def check_address(value: str) -> str:
    if value in ("local", "auto") or value.startswith("ray://"):
        return value
    raise ValueError("must be 'local' (start a cluster on this machine), 'auto' (join the "
                     "cluster this machine belongs to) or 'ray://HOST:PORT'")


def missing_layers(required: list[str] | None) -> tuple[list[str], dict[str, Any]]:
    """The required sandbox layers this node lacks (default: the sandbox's own defaults)."""
    report = doctor()
    if required is None:
        return list(report.get("missing_for_default", [])), report
    layers = report.get("layers", {})
    return [k for k in required if not layers.get(k)], report


class CandidateWorker:
    """One Ray actor: the domain and evaluator rebuilt from the run's config, a warm sandbox.

    A plain class (``ray.remote`` wraps it at run time), so importing this module needs no Ray.
    """

    def __init__(self, spec: WorkSpec, require_layers: list[str] | None) -> None:
        missing, report = missing_layers(require_layers)
        if missing:  # refuse rather than run candidates unguarded
            from selfdev import SandboxUnavailable  # (imports torch: only on a worker)

            raise SandboxUnavailable(
                f"worker on {socket.gethostname()} refuses candidate work: the sandbox layers "
                f"{', '.join(missing)} are missing on this node (`selfdev sandbox doctor`)")
        self.layers = sorted(k for k, v in report.get("layers", {}).items() if v)
        registry = get_registry()
        artifacts = selfdev_home() / "artifacts" / spec.run_id
        artifacts.mkdir(parents=True, exist_ok=True)
        ctx = Context(run_id=spec.run_id, seed=spec.seed, home=selfdev_home(),
                      artifacts=artifacts, progress=NullProgress(), options=dict(spec.config))
        dom = dict(spec.domain)
        self.domain = registry.get("domain", dom.pop("name"))(ctx, **dom)
        ev = dict(spec.evaluator)
        self.evaluator = registry.get("evaluator", ev.pop("name"))(ctx, **ev)
        self.state_key: str | None = None

    def ready(self) -> dict[str, Any]:
        """Who this worker is (its pid lets a fault test kill it)."""
        return {"pid": os.getpid(), "host": socket.gethostname(), "layers": self.layers}

    def run(self, state: list[Any], key: str, work: CandidateWork) -> CandidateResult:
        """Do one candidate. ``state`` wraps the object-store reference of the engine's domain
        state (wrapped, so Ray does not fetch it for every call); it is fetched when ``key``
        changes, i.e. once per iteration per worker."""
        if key != self.state_key:
            import ray

            self.domain.import_state(ray.get(state[0]))
            self.state_key = key
        return execute_candidate(self.domain, self.evaluator, work)

    def evaluator_stats(self) -> dict[str, Any]:
        """The evaluator's warm-engine counters (``gsm8k``: models built, handles loaded in
        place), so a test or an operator can see that candidates did not rebuild the model."""
        stats = getattr(self.evaluator, "engine_stats", None)
        return dict(stats()) if callable(stats) else {}

    def close(self) -> None:
        self.domain.close()
        close = getattr(self.evaluator, "close", None)
        if callable(close):  # frees the warm engine (its GPU memory) before the actor dies
            close()


class RayExecutor(Executor):
    """Candidates on a Ray cluster: one long-lived actor per worker (per GPU when ``num_gpus``)."""

    name = "ray"

    class Options(Executor.Options):
        address: str = Field("local", description="'local' starts a cluster on this machine; "
                                                  "'auto' joins this machine's cluster; "
                                                  "'ray://HOST:PORT' joins a remote one")
        workers: int = Field(2, ge=1, description="actors (each holds a domain, an evaluator "
                                                  "and a warm sandbox)")
        num_cpus: float = Field(1.0, ge=0, description="CPUs each actor reserves")
        num_gpus: float = Field(0.0, ge=0, description="GPUs each actor reserves (1: one actor "
                                                       "per GPU holds the evaluation engine)")
        memory_mb: int = Field(0, ge=0, description="memory each actor reserves, MiB (0: none)")
        max_in_flight: int = Field(0, ge=0, description="candidates submitted or waiting to be "
                                                        "recorded at once (0: 2 x workers)")
        max_retries: int = Field(1, ge=0, description="times a candidate lost with its worker "
                                                      "or node is run again")
        require_layers: list[str] | None = Field(
            None, description="sandbox layers a worker must have to take work (default: the "
                              "sandbox's default-required layers)")

        @field_validator("address")
        @classmethod
        def _address(cls, value: str) -> str:
            return check_address(value)

    def __init__(self, ctx: Any, **options: Any) -> None:
        super().__init__(ctx, **options)
        self.started_cluster = False
        self.actor_class: Any = None
        self.actors: list[Any] = []
        self.worker_info: list[dict[str, Any]] = []
        self.spec: WorkSpec | None = None
        self.results_seen = 0

    # ---- cluster and actors ----------------------------------------------------------------

    def ray(self) -> Any:
        """Ray, connected: start a local cluster or join the configured one (once)."""
        ray = import_ray()
        if not ray.is_initialized():
            os.environ.setdefault("RAY_AUTH_MODE", "disabled")
            if self.options.address == "local":
                need = max(1.0, self.options.workers * self.options.num_cpus)
                ray.init(num_cpus=max(int(need + 0.999), os.cpu_count() or 1),
                         include_dashboard=False, log_to_driver=False)
                self.started_cluster = True
            else:
                ray.init(address=self.options.address, log_to_driver=False)
        return ray

    def new_actor(self, spec: WorkSpec) -> tuple[Any, dict[str, Any]]:
        """Start one worker actor and wait until it is ready (or has refused)."""
        ray = self.ray()
        o = self.options
        resources: dict[str, Any] = {"num_cpus": o.num_cpus, "num_gpus": o.num_gpus}
        if o.memory_mb:
            resources["memory"] = o.memory_mb * 1024 * 1024
        if self.actor_class is None:
            self.actor_class = ray.remote(**resources)(CandidateWorker)
        actor = self.actor_class.remote(spec, o.require_layers)
        try:
            info = ray.get(actor.ready.remote())
        except ray.exceptions.RayActorError as exc:
            cause = getattr(exc, "cause", None) or exc
            text = str(cause).strip().splitlines()
            raise SelfdevError(f"ray executor: a worker could not start: "
                               f"{text[-1] if text else type(cause).__name__}") from None
        return actor, info

    def ensure_actors(self, spec: WorkSpec) -> None:
        if self.spec != spec:
            self.kill_actors()
            self.spec = spec
        while len(self.actors) < self.options.workers:
            actor, info = self.new_actor(spec)
            self.actors.append(actor)
            self.worker_info.append(info)

    def kill_actors(self) -> None:
        if not self.actors:
            return
        import ray

        for actor in self.actors:
            try:
                ray.kill(actor, no_restart=True)
            except Exception:  # noqa: BLE001 - already dead
                pass
        self.actors, self.worker_info = [], []

    # ---- the work ----------------------------------------------------------------------------

    def map(self, fn: Callable[[Any], Any], items: list[Any]) -> Iterator[tuple[int, Any]]:
        raise SelfdevError("the ray executor runs candidate work only (run_candidates): a "
                           "closure over this process cannot travel to other machines")

    def run_candidates(self, spec: WorkSpec, domain: Any, works: list[CandidateWork],
                       run: Callable[[CandidateWork], CandidateResult]
                       ) -> Iterator[tuple[int, CandidateResult]]:
        ray = self.ray()
        self.ensure_actors(spec)
        state_ref = ray.put(domain.export_state())  # once per iteration, shared by every actor
        box, key = [state_ref], state_ref.hex()
        limit = self.options.max_in_flight or 2 * self.options.workers
        queue = list(range(len(works)))[::-1]  # pop() takes the next in order
        retries: dict[int, list[str]] = {}
        pending: dict[Any, tuple[int, int, Any, dict]] = {}  # ref -> (index, slot, actor, info)
        load = [0] * len(self.actors)
        done: dict[int, CandidateResult] = {}
        following = 0  # the next index to hand to the engine
        try:
            while following < len(works):
                while queue and len(pending) + len(done) < limit:
                    i = queue.pop()
                    slot = min(range(len(self.actors)), key=load.__getitem__)
                    ref = self.actors[slot].run.remote(box, key, works[i])
                    pending[ref] = (i, slot, self.actors[slot], self.worker_info[slot])
                    load[slot] += 1
                if following not in done:
                    ready, _ = ray.wait(list(pending), num_returns=1)
                    for ref in ready:
                        i, slot, actor, info = pending.pop(ref)
                        load[slot] -= 1
                        try:
                            result = ray.get(ref)
                        except (ray.exceptions.RayActorError,
                                ray.exceptions.WorkerCrashedError,
                                ray.exceptions.ObjectLostError) as exc:
                            self.lost(i, slot, actor, info, works[i], exc, retries, queue,
                                      done, spec)
                            continue
                        except ray.exceptions.RayTaskError as exc:
                            raise SelfdevError(f"ray executor: candidate {works[i].candidate_id}"
                                               f" failed on its worker: {exc.cause!r}") from None
                        result.retries = retries.pop(i, [])
                        done[i] = result
                while following in done:
                    self.results_seen += 1
                    yield following, done.pop(following)
                    following += 1
        finally:
            for ref in pending:  # shutdown (or a failure) cancels what is still in flight
                try:
                    ray.cancel(ref)
                except Exception:  # noqa: BLE001 - finished or gone meanwhile
                    pass

    def lost(self, i: int, slot: int, actor: Any, info: dict[str, Any], work: CandidateWork,
             exc: BaseException, retries: dict[int, list[str]], queue: list[int],
             done: dict[int, CandidateResult], spec: WorkSpec) -> None:
        """A task died with its worker: replace the worker, run the task again (or give up)."""
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        why = f"worker pid {info.get('pid')} on {info.get('host')} lost ({type(exc).__name__}: {first})"
        if self.actors[slot] is actor:  # the first of its lost tasks replaces it
            import ray

            try:
                ray.kill(actor, no_restart=True)
            except Exception:  # noqa: BLE001
                pass
            self.actors[slot], self.worker_info[slot] = self.new_actor(spec)
        history = retries.setdefault(i, [])
        history.append(why)
        if len(history) <= self.options.max_retries:
            queue.append(i)  # next to submit: it keeps its place in the log anyway
            return
        done[i] = CandidateResult(work.candidate_id, "error",
                                  f"lost with its worker {len(history)} times (max_retries = "
                                  f"{self.options.max_retries}): {why}",
                                  metrics={"error": f"lost with its worker: {why}"},
                                  retries=history[:-1])
        retries.pop(i, None)

    def close(self) -> None:
        if self.actors:
            import ray

            for actor in self.actors:
                try:
                    ray.get(actor.close.remote(), timeout=10)
                except Exception:  # noqa: BLE001 - a dead actor has nothing to close
                    pass
        self.kill_actors()
        if self.started_cluster:
            import ray

            ray.shutdown()
            self.started_cluster = False


@hookimpl
def register_executors(register):
    register(RayExecutor)
