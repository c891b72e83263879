"""The ``replay`` generator: re-issues the completions recorded in an earlier run, so a run can be
re-executed (new sandbox, new evaluator, new seed for the baselines) with no model at all."""
from __future__ import annotations

from pathlib import Path

from selfdev import Completion, ConfigError, Context, Generator
from selfdev import hookimpl


class ReplayGenerator(Generator):
    name = "replay"

    def __init__(self, ctx: Context, run: str = "", db: str = "") -> None:
        super().__init__(ctx)
        if not run:
            raise ConfigError("config: [generator] replay needs run = \"RUN_ID\" (the run to replay)")
        self.run = run
        self.db = Path(db).expanduser() if db else ctx.db
        if self.db is None:
            raise ConfigError("config: [generator] replay needs db = \"PATH\" for an in-memory run")

    def generate(self, prompts, n, temperature, seed, checkpoint=None, iteration=1):
        from selfdev import EventStore

        with EventStore(self.db, readonly=True) as store:
            if self.run not in store.run_ids():
                raise ConfigError(f"config: [generator] replay: no run {self.run!r} in {self.db}")
            recorded = [e for e in store.iter_events(run_id=self.run, types=["candidate.generated"])
                        if e.payload["iteration"] == iteration]
            recorded.sort(key=lambda e: e.payload["index"])
            return [Completion(store.get_text(e.payload["completion"]),
                               meta={"replayed_from": self.run, "candidate_id": e.payload["candidate_id"]})
                    for e in recorded[:n]]


@hookimpl
def register_generators(register):
    register(ReplayGenerator)
