"""Registration through every hook, provenance stamps, duplicates and the allow-list."""
import json

import pytest
from click.testing import CliRunner

from selfdev.engine import hookimpl
from selfdev.engine.api import ConfigError, Domain, Evaluator, Executor, Generator, Optimizer
from selfdev.engine.plugins import DEFAULT_PLUGINS, get_registry, plugin_name, plugins_info, pm


class ThirdPartyGen(Generator):
    name = "third-party-gen"


class ThirdPartyDomain(Domain):
    name = "third-party-domain"


class ThirdPartyEval(Evaluator):
    name = "third-party-eval"


class ThirdPartyOpt(Optimizer):
    name = "third-party-opt"


class ThirdPartyExec(Executor):
    name = "third-party-exec"


class ThirdParty:
    __name__ = "third_party_plugin"

    @hookimpl
    def register_generators(self, register):
        register(ThirdPartyGen)

    @hookimpl
    def register_domains(self, register):
        register(ThirdPartyDomain)

    @hookimpl
    def register_evaluators(self, register):
        register(ThirdPartyEval)

    @hookimpl
    def register_optimizers(self, register):
        register(ThirdPartyOpt)

    @hookimpl
    def register_executors(self, register):
        register(ThirdPartyExec)


@pytest.fixture
def third_party():
    get_registry()  # built-ins first
    pm.register(ThirdParty(), name="third-party")
    try:
        yield
    finally:
        pm.unregister(name="third-party")


@pytest.mark.parametrize("kind, name", [
    ("generator", "third-party-gen"), ("domain", "third-party-domain"),
    ("evaluator", "third-party-eval"), ("optimizer", "third-party-opt"),
    ("executor", "third-party-exec"),
])
def test_each_hook_registers_and_stamps_the_plugin(third_party, kind, name):
    cls = get_registry().get(kind, name)
    assert cls.plugin == "third-party"


def test_builtins_are_registered_through_the_same_hooks():
    registry = get_registry()
    assert "replay" in registry.names("generator")
    assert "none" in registry.names("optimizer")
    assert "local" in registry.names("executor")
    assert registry.get("optimizer", "none").plugin == "selfdev.plugins.optimizers.none"
    assert all(m.startswith("selfdev.") for m in DEFAULT_PLUGINS)
    registered = {plugin_name(p) for p in pm.get_plugins()}
    assert set(DEFAULT_PLUGINS) <= registered


def test_duplicate_names_are_refused_naming_both_plugins():
    class Dup:
        @hookimpl
        def register_optimizers(self, register):
            class Again(Optimizer):
                name = "none"
            register(Again)

    pm.register(Dup(), name="dup-plugin")
    try:
        with pytest.raises(ConfigError) as exc:
            get_registry()
        assert "duplicate optimizer name 'none'" in str(exc.value)
        assert "selfdev.plugins.optimizers.none" in str(exc.value) and "dup-plugin" in str(exc.value)
    finally:
        pm.unregister(name="dup-plugin")


def test_wrong_kind_is_refused():
    class Wrong:
        @hookimpl
        def register_generators(self, register):
            register(ThirdPartyOpt)

    pm.register(Wrong(), name="wrong-plugin")
    try:
        with pytest.raises(ConfigError, match="not a subclass of selfdev.Generator"):
            get_registry()
    finally:
        pm.unregister(name="wrong-plugin")


def test_unknown_name_lists_the_allowed():
    with pytest.raises(ConfigError, match=r"unknown optimizer 'dpoo'; allowed: .*none"):
        get_registry().get("optimizer", "dpoo")


def test_plugins_json(third_party):
    from selfdev.engine.cli import cli

    result = CliRunner().invoke(cli, ["plugins", "--json"])
    assert result.exit_code == 0, result.output
    info = {p["name"]: p for p in json.loads(result.output)}
    assert info["third-party"]["components"]["generator"] == ["third-party-gen"]
    assert "register_domains" in info["third-party"]["hooks"]
    assert info["selfdev.plugins.optimizers.none"]["components"] == {"optimizer": ["none"]}


def test_plugins_info_matches_registry():
    names = {p["name"] for p in plugins_info()}
    assert "selfdev.plugins.executors.local" in names
