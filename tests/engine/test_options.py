"""Options declared once: validation with one-line errors, self.options, the legacy signature
check, and ``selfdev plugins --options``, with real components registered through the hooks."""
import json
from typing import Annotated, Literal, Optional

import pydantic
import pytest
from click.testing import CliRunner
from pydantic import field_validator, model_validator

import selfdev
from selfdev.engine import hookimpl
from selfdev.engine.api import (Completion, ConfigError, Generator, NullProgress, Optimizer,
                                validate_options)
from selfdev.engine.config import check_options, describe_options, from_dict, legacy_parameters
from selfdev.engine.options import component_doc, declared_options
from selfdev.engine.plugins import components_info, get_registry, pm
from selfdev.store import EventStore


class Sharpen(Optimizer):
    """Sharpens the factory (a test optimizer with declared options).

    This second paragraph is not shown by ``selfdev plugins --options``.
    """

    name = "test-sharpen"
    built = 0

    class Options(selfdev.Options):
        lr: float = selfdev.Field(0.5, ge=0, le=1, description="learning rate")
        epochs: int = selfdev.Field(1, ge=1, description="passes over the pairs")
        preset: Literal["auto", "tiny"] = selfdev.Field("auto", description="size preset")
        weights: list[float] = selfdev.Field([], description="one weight per epoch")
        target: Optional[str] = None

        @field_validator("target")
        @classmethod
        def _target(cls, value):
            if value is not None and not value.startswith("/"):
                raise ValueError("must be an absolute path")
            return value

        @model_validator(mode="after")
        def _weights(self):
            if self.weights and len(self.weights) != self.epochs:
                raise ValueError("weights needs one number per epoch")
            return self

    def __init__(self, ctx, **options):
        super().__init__(ctx, **options)
        type(self).built += 1


class NeedsModel(Generator):
    """A generator with a required option."""

    name = "test-needs-model"

    class Options(selfdev.Options):
        model: str = selfdev.Field(description="the served model")

    def generate(self, prompts, n, temperature, seed, checkpoint=None, iteration=1):
        return [Completion(self.options.model) for _ in range(n)]


class OldStyle(Optimizer):
    """Written before options were declared: keyword arguments of __init__."""

    name = "test-old-style"

    def __init__(self, ctx, epochs: int = 2, lr=0.1):
        super().__init__(ctx)
        self.epochs, self.lr = epochs, lr


class OldStyleAnything(Optimizer):
    name = "test-old-anything"

    def __init__(self, ctx, **kw):
        super().__init__(ctx)
        self.kw = kw


class NoOptions(Optimizer):
    name = "test-no-options"


class OptionsPlugin:
    @hookimpl
    def register_optimizers(self, register):
        for cls in (Sharpen, OldStyle, OldStyleAnything, NoOptions):
            register(cls)

    @hookimpl
    def register_generators(self, register):
        register(NeedsModel)


@pytest.fixture
def registered():
    get_registry()  # built-ins first
    pm.register(OptionsPlugin(), name="options-plugin")
    try:
        yield
    finally:
        pm.unregister(name="options-plugin")


def build(cls, **options):
    return cls(None, **options)


# ---- validation ------------------------------------------------------------------------------


def test_valid_options_are_stored_typed_on_the_component():
    opt = build(Sharpen, lr=1, epochs=2, weights=[1, 0.5], preset="tiny")
    assert isinstance(opt.options, Sharpen.Options)
    assert opt.options.lr == 1.0 and isinstance(opt.options.lr, float)  # TOML int -> float
    assert (opt.options.epochs, opt.options.preset, opt.options.weights) == (2, "tiny", [1.0, 0.5])
    assert build(Sharpen).options == Sharpen.Options()
    with pytest.raises(pydantic.ValidationError):  # the recorded configuration is read-only
        opt.options.lr = 0.1


@pytest.mark.parametrize("options, message", [
    ({"lr": "0.3"}, "config: [optimizer] lr must be a number in [0, 1]; got '0.3'"),
    ({"lr": 2}, "config: [optimizer] lr must be a number in [0, 1]; got 2"),
    ({"lr": True}, "config: [optimizer] lr must be a number in [0, 1]; got True"),
    ({"epochs": 0}, "config: [optimizer] epochs must be an integer >= 1; got 0"),
    ({"epochs": "3"}, "config: [optimizer] epochs must be an integer >= 1; got '3'"),
    ({"epochs": 1.5}, "config: [optimizer] epochs must be an integer >= 1; got 1.5"),
    ({"preset": "big"}, "config: [optimizer] preset must be one of 'auto', 'tiny'; got 'big'"),
    ({"weights": [1, "x"]}, "config: [optimizer] weights must be a list of numbers; got [1, 'x']"),
    ({"target": 3}, "config: [optimizer] target must be a string; got 3"),
    ({"target": "rel"}, "config: [optimizer] target must be an absolute path; got 'rel'"),
    ({"weights": [1.0, 2.0]}, "config: [optimizer] weights needs one number per epoch"),
    ({"weights": [1.0, 2.0, 3.0], "epochs": 2},
     "config: [optimizer] weights needs one number per epoch"),
    ({"lrr": 1, "lr": "x"},
     "config: unknown option 'lrr' for optimizer 'test-sharpen'; "
     "allowed: lr, epochs, preset, weights, target"),
])
def test_bad_options_are_one_line_naming_key_allowed_and_given(options, message):
    with pytest.raises(ConfigError) as exc:
        build(Sharpen, **options)
    assert str(exc.value) == message
    with pytest.raises(ConfigError) as again:  # the engine's pre-build check says the same
        check_options("optimizer", Sharpen, options)
    assert str(again.value) == message


def test_a_required_option_is_named_with_its_description():
    with pytest.raises(ConfigError) as exc:
        build(NeedsModel)
    assert str(exc.value) == "config: [generator] test-needs-model needs model (the served model)"
    assert build(NeedsModel, model="m").generate(["p"], 2, 1.0, 0)[0].text == "m"


def test_a_component_without_options_refuses_any():
    with pytest.raises(ConfigError, match="unknown option 'x' for optimizer 'test-no-options'; "
                                          r"allowed: \(none\)"):
        build(NoOptions, x=1)
    assert build(NoOptions).options == NoOptions.Options()


def test_validate_options_works_on_any_model():
    class Small(selfdev.Options):
        k: int = selfdev.Field(3, gt=0, lt=10)

    assert validate_options("executor", "x", Small, {"k": 4}).k == 4
    with pytest.raises(ConfigError, match=r"^config: \[executor\] k must be an integer in \(0, 10\); got 10$"):
        validate_options("executor", "x", Small, {"k": 10})


def test_a_value_that_may_be_a_secret_is_not_repeated():
    class Keyed(selfdev.Options):
        key_env: str = selfdev.Field("API_KEY", pattern=r"^[A-Z_]+$",
                                     json_schema_extra={"hide_value": True})

    with pytest.raises(ConfigError) as exc:
        validate_options("generator", "x", Keyed, {"key_env": "sk-123"})
    assert str(exc.value) == "config: [generator] key_env must be a string matching ^[A-Z_]+$"


# ---- components written before options were declared -------------------------------------------


def test_old_style_components_are_checked_against_their_signature():
    with pytest.raises(ConfigError) as exc:
        check_options("optimizer", OldStyle, {"epoch": 3})
    assert str(exc.value) == ("config: unknown option 'epoch' for optimizer 'test-old-style'; "
                              "allowed: epochs, lr")
    check_options("optimizer", OldStyle, {"epochs": 3, "lr": 0.2})
    assert build(OldStyle, epochs=3).epochs == 3
    check_options("optimizer", OldStyleAnything, {"whatever": 1})
    assert build(OldStyleAnything, whatever=1).kw == {"whatever": 1}
    described = describe_options(OldStyle)
    assert [(o["name"], o["type"], o["default"]) for o in described] == [("epochs", "int", 2),
                                                                          ("lr", "float", 0.1)]


# ---- the engine refuses a bad config before anything is built or recorded -----------------------


def test_bad_option_value_is_refused_before_the_run_starts(registered, tmp_path):
    from selfdev.engine.loop import run_config

    Sharpen.built = 0
    cfg = from_dict({"run": {"iterations": 1, "candidates": 2},
                     "optimizer": {"name": "test-sharpen", "lr": "fast"}})
    with EventStore(tmp_path / "runs.db") as store:
        with pytest.raises(ConfigError, match=r"\[optimizer\] lr must be a number in \[0, 1\]; got 'fast'"):
            run_config(store, cfg, progress=NullProgress())
        assert store.count() == 0
    assert Sharpen.built == 0


# ---- selfdev plugins --options ----------------------------------------------------------------


def test_components_info_lists_every_kind_with_docs_and_options(registered):
    comps = {(c["kind"], c["name"]): c for c in components_info()}
    registry = get_registry()
    assert set(comps) == {(k, n) for k in registry.components for n in registry.names(k)}
    sharpen = comps[("optimizer", "test-sharpen")]
    assert sharpen["plugin"] == "options-plugin"
    assert sharpen["doc"] == "Sharpens the factory (a test optimizer with declared options)."
    lr = sharpen["options"][0]
    assert lr == {"name": "lr", "type": "float", "required": False, "default": 0.5,
                  "bounds": {"ge": 0, "le": 1}, "choices": None, "must_be": "a number in [0, 1]",
                  "description": "learning rate"}
    preset = sharpen["options"][2]
    assert preset["choices"] == ["auto", "tiny"] and preset["default"] == "auto"
    model = comps[("generator", "test-needs-model")]["options"][0]
    assert model["required"] and model["description"] == "the served model"
    assert comps[("optimizer", "test-no-options")]["options"] == []
    assert comps[("optimizer", "test-no-options")]["doc"] == ""  # not the kind's docstring


def test_plugins_options_command_text_and_json(registered):
    from selfdev.engine.cli import cli

    result = CliRunner().invoke(cli, ["plugins", "--options"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    block = result.output.split("[optimizer] name = 'test-sharpen'")[1].split("\n\n")[0]
    assert "Sharpens the factory" in block and "second paragraph" not in block
    lines = [line.strip() for line in block.splitlines()]
    assert lines[1:6] == ["Sharpens the factory (a test optimizer with declared options).",
                         "lr = 0.5" + " " * 9 + "a number in [0, 1]", "learning rate",
                         "epochs = 1" + " " * 7 + "an integer >= 1", "passes over the pairs"]
    assert 'preset = "auto"  one of \'auto\', \'tiny\'' in lines
    assert "target (unset)   a string" in lines
    needs = result.output.split("[generator] name = 'test-needs-model'")[1].split("\n\n")[0]
    assert needs.splitlines()[2:] == ["  model (required)  a string", "      the served model"]
    old = result.output.split("[optimizer] name = 'test-old-style'")[1].split("\n\n")[0]
    assert old.splitlines()[2:] == ["  epochs = 2  int", "  lr = 0.1    float"]
    result = CliRunner().invoke(cli, ["plugins", "--options", "--json"], catch_exceptions=False)
    data = json.loads(result.output)
    assert {"kind": "optimizer", "name": "test-old-style"}.items() <= next(
        c for c in data if c["name"] == "test-old-style").items()
    assert [o["name"] for o in next(c for c in data if c["name"] == "test-sharpen")["options"]] == [
        "lr", "epochs", "preset", "weights", "target"]


def test_every_builtin_component_declares_described_options():
    """Built-ins declare Options (none relies on the signature), with a docstring, a description
    per option, and defaults that are themselves valid values (pydantic does not check them)."""
    registry = get_registry()
    seen = 0
    for kind, found in registry.components.items():
        for name, cls in found.items():
            if not cls.plugin.startswith("selfdev."):
                continue
            seen += 1
            assert legacy_parameters(cls) is None, (kind, name)
            assert component_doc(cls), (kind, name)
            assert all(o["description"] for o in describe_options(cls)), (kind, name)
            for key, field in declared_options(cls).model_fields.items():
                default = field.get_default(call_default_factory=True)
                if field.is_required() or default is None:
                    continue
                annotation = (Annotated[field.annotation, *field.metadata] if field.metadata
                              else field.annotation)
                adapter = pydantic.TypeAdapter(annotation)
                assert adapter.validate_python(default, strict=True) == default, (name, key)
    assert seen >= 16


def test_the_door_exports_options_and_field():
    from selfdev.engine.options import Options

    assert selfdev.Options is Options and selfdev.Field is pydantic.Field
    assert issubclass(selfdev.Component.Options, selfdev.Options)
