import pytest

from selfdev.engine.api import ConfigError
from selfdev.engine.config import TemperatureSection, check_options, from_dict, load
from selfdev.plugins.executors.local import LocalExecutor


def test_defaults_are_the_papers():
    cfg = from_dict({})
    assert (cfg.run.iterations, cfg.temperature.t1, cfg.temperature.beta) == (3, 1.2, 0.2)
    assert (cfg.pairs.p_w, cfg.pairs.p_l, cfg.pairs.elites, cfg.run.top_k) == (0.03, 0.10, 3, 15)
    assert cfg.domain.name == "digits" and cfg.optimizer.name == "none"


def test_temperature_schedule():
    t = TemperatureSection(1.2, 0.2)
    assert [round(t.at(i), 3) for i in (1, 2, 3)] == [1.2, 1.0, 0.857]


def test_component_options_are_kept_apart_from_the_name():
    cfg = from_dict({"domain": {"name": "digits", "seed": 3}, "executor": {"workers": 2}})
    assert cfg.domain.options == {"seed": 3}
    assert cfg.executor.name == "local" and cfg.executor.options == {"workers": 2}
    assert from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("data, message", [
    ({"runn": {}}, "unknown section [runn]; allowed: run, temperature"),
    ({"run": {"iteratons": 3}}, "unknown key 'iteratons' in [run]; allowed: seed, iterations"),
    ({"run": {"iterations": "3"}}, "[run] iterations must be an integer"),
    ({"run": {"candidates": 0}}, "[run] candidates must be at least 1"),
    ({"pairs": {"p_w": 1.5}}, "[pairs] p_w must be in (0, 1]"),
    ({"domain": {"name": 3}}, "[domain] name must be a string"),
])
def test_errors_name_the_key_and_the_allowed_values(data, message):
    with pytest.raises(ConfigError) as exc:
        from_dict(data)
    assert message in str(exc.value)


def test_malformed_toml_is_one_clear_line(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[run\nseed = 1\n")
    with pytest.raises(ConfigError) as exc:
        load(path)
    assert "is not valid TOML" in str(exc.value) and "\n" not in str(exc.value)


def test_unknown_component_option_lists_the_allowed_ones():
    with pytest.raises(ConfigError) as exc:
        check_options("executor", LocalExecutor, {"wokers": 2})
    assert "unknown option 'wokers' for executor 'local'; allowed: workers" in str(exc.value)
