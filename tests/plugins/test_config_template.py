"""``selfdev config template``: the commented configuration parses, validates with the engine's
own loader and option checks for every built-in domain (and other components), lists every
declared option, and loads to exactly the defaults."""
from __future__ import annotations

import dataclasses
import json
import tomllib

import pytest
from click.testing import CliRunner

from selfdev.engine.cli import cli
from selfdev.engine.config import PLAIN, RunConfig, check_options, load
from selfdev.engine.config import describe_options
from selfdev.engine.plugins import get_registry
from selfdev.engine.template import SECTION_DOCS

DOMAINS = get_registry().names("domain")


def template(tmp_path, *args):
    out = tmp_path / "config.toml"
    result = CliRunner().invoke(cli, ["config", "template", *args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def validate(path):
    """What ``selfdev run`` checks before anything is built: the loader, then each named
    component's options (the evaluator defaulting to the domain's)."""
    cfg = load(path)
    registry = get_registry()
    if not cfg.evaluator.name:
        cfg.evaluator.name = registry.get("domain", cfg.domain.name).default_evaluator
    for kind in ("domain", "generator", "evaluator", "optimizer", "executor"):
        section = getattr(cfg, kind)
        check_options(kind, registry.get(kind, section.name), section.options)
    return cfg


@pytest.mark.parametrize("domain", DOMAINS)
def test_the_template_of_each_domain_parses_and_validates(tmp_path, domain):
    assert {"digits", "lm", "toymath"} <= set(DOMAINS)
    path = template(tmp_path, "--domain", domain)
    text = path.read_text()
    tomllib.loads(text)
    cfg = validate(path)
    assert cfg.domain.name == domain
    # the engine's sections load to exactly their defaults
    for section in PLAIN:
        assert getattr(cfg, section) == getattr(RunConfig(), section)
    # every option the domain declares is there: set, unset (commented) or REQUIRED
    cls = get_registry().get("domain", domain)
    for option in describe_options(cls):
        assert (f"\n{option['name']} = " in text or f"\n# {option['name']} = " in text), option
    for option in describe_options(cls):
        if option["required"]:
            line = next(l for l in text.splitlines() if l.startswith(f"{option['name']} = "))
            assert "REQUIRED" in line


def test_defaults_of_components_are_what_the_template_writes(tmp_path):
    path = template(tmp_path, "--generator", "tiny", "--optimizer", "dpo")
    cfg = validate(path)
    registry = get_registry()
    for kind, name in (("generator", "tiny"), ("optimizer", "dpo"), ("domain", "digits")):
        section = getattr(cfg, kind)
        assert section.name == name
        written = {o["name"]: o["default"] for o in describe_options(registry.get(kind, name))
                   if not o["required"] and o["default"] is not None}
        assert section.options == written
    # left unset, the evaluator follows the domain (named in a comment only)
    assert cfg.evaluator.name == "accuracy"
    assert "# name = \"accuracy\"" in path.read_text()


@pytest.mark.parametrize("generator", ["hf", "openai", "replay", "vllm"])
def test_required_options_get_a_placeholder_that_validates(tmp_path, generator):
    path = template(tmp_path, "--generator", generator)
    cfg = validate(path)
    assert cfg.generator.name == generator
    assert "REQUIRED" in path.read_text()


def test_a_domain_run_starts_from_its_template(tmp_path):
    """``selfdev run`` accepts it: run.started is written from the file as it is."""
    from selfdev.engine.loop import start_run
    from selfdev.store import EventStore

    path = template(tmp_path, "--domain", "digits")
    with EventStore(tmp_path / "runs.db") as store:
        run_id = start_run(store, load(path))
        started = store.read(run_id=run_id)[0]
    assert started.type == "run.started"
    assert started.payload["config"]["run"] == dataclasses.asdict(RunConfig().run)


def test_every_engine_key_is_described():
    for section, cls in PLAIN.items():
        assert [f.name for f in dataclasses.fields(cls)] == list(SECTION_DOCS[section])


def test_json_lists_sections_and_keys():
    result = CliRunner().invoke(cli, ["config", "template", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert [s["section"] for s in data] == ["run", "temperature", "pairs", "domain",
                                            "generator", "evaluator", "optimizer", "executor"]
    run = {k["name"]: k for k in data[0]["keys"]}
    assert run["iterations"]["default"] == 3 and run["iterations"]["accepts"] == "an integer >= 1"


@pytest.mark.parametrize("args, message", [
    (["--domain", "nope"], "error: unknown domain 'nope'; allowed: digits, lm, toymath"),
    (["--optimizer", "adam"], "error: unknown optimizer 'adam'; allowed: dpo, none, sft"),
])
def test_an_unknown_component_is_one_line(args, message):
    result = CliRunner().invoke(cli, ["config", "template", *args])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [message]


def test_out_is_not_overwritten_without_force(tmp_path):
    out = tmp_path / "mine.toml"
    out.write_text("# mine\n")
    result = CliRunner().invoke(cli, ["config", "template", "--out", str(out)])
    assert result.exit_code == 2
    assert "exists; pass --force" in result.output
    assert out.read_text() == "# mine\n"
    result = CliRunner().invoke(cli, ["config", "template", "--out", str(out), "--force"])
    assert result.exit_code == 0 and "[run]" in out.read_text()
