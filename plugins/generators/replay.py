"""The ``replay`` generator: re-issues the completions recorded in an earlier run, so a run can be
re-executed (new sandbox, new evaluator, new seed for the baselines) with no model at all."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from selfdev import Completion, ConfigError, Context, Field, Generator
from selfdev import hookimpl


class ReplayGenerator(Generator):
    """Re-issues the completions recorded in an earlier run (no model at all)."""

    name = "replay"

    class Options(Generator.Options):
        run: str = Field(min_length=1, description="the run whose completions are replayed")
        db: str = Field("", description="the database holding it (empty: this run's)")

    def __init__(self, ctx: Context, **options: Any) -> None:
        super().__init__(ctx, **options)
        self.db = Path(self.options.db).expanduser() if self.options.db else ctx.db
        if self.db is None:
            raise ConfigError("config: [generator] replay needs db = \"PATH\" for an in-memory run")

    def generate(self, prompts, n, temperature, seed, checkpoint=None, iteration=1):
        from selfdev import EventStore

        run = self.options.run
        with EventStore(self.db, readonly=True) as store:
            if run not in store.run_ids():
                raise ConfigError(f"config: [generator] replay: no run {run!r} in {self.db}")
            recorded = [e for e in store.iter_events(run_id=run, types=["candidate.generated"])
                        if e.payload["iteration"] == iteration]
            recorded.sort(key=lambda e: e.payload["index"])
            return [Completion(store.get_text(e.payload["completion"]),
                               meta={"replayed_from": run, "candidate_id": e.payload["candidate_id"]})
                    for e in recorded[:n]]


@hookimpl
def register_generators(register):
    register(ReplayGenerator)
