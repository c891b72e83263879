"""The embedded ``tiny`` factory: deterministic cached build, seeded sampling, measurements."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from selfdev.engine.api import ConfigError, Context, NullProgress

ROOT = Path(__file__).resolve().parents[2]


def tiny_home(tmp_path_factory) -> Path:
    """One SELFDEV_HOME per session for the test-size factory (every test file that needs it
    asks for the same directory; the disk cache makes the build happen once)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return tmp_path_factory.getbasetemp() / "tiny-factory-home"


@pytest.fixture(scope="session")
def factory_home(tmp_path_factory) -> Path:
    return tiny_home(tmp_path_factory)


@pytest.fixture(scope="session")
def tiny_factory(factory_home) -> Path:
    from selfdev.plugins.generators.tiny import ensure_factory

    return ensure_factory(factory_home, "test", threads=1)


@pytest.fixture
def ctx(factory_home) -> Context:
    return Context(run_id="t", seed=0, home=factory_home, artifacts=factory_home / "art",
                   progress=NullProgress())


@pytest.fixture
def gen(ctx, tiny_factory):
    from selfdev.plugins.generators.tiny import TinyGenerator

    return TinyGenerator(ctx, size="test", threads=1, max_new_tokens=200)


def test_build_report_and_manifest(tiny_factory):
    report = json.loads((tiny_factory / "build.json").read_text())
    manifest = json.loads((tiny_factory / "selfdev_factory.json").read_text())
    assert report["steps"] == report["spec"]["steps"]
    assert report["loss_last"] < report["loss_first"]  # it learned something
    assert report["corpus_used"] > 0.8 * report["corpus_programs"]
    assert manifest["kind"] == "full" and manifest["factory"] == "tiny"
    assert manifest["prompt"] == {"mode": "header", "header": "<merge_models>"}
    assert Path(manifest["initial"]) == tiny_factory.resolve()
    assert (tiny_factory / "model.safetensors").is_file()
    assert (tiny_factory / "tokenizer.json").is_file()


def test_cached_build_is_reused(factory_home, tiny_factory, ctx):
    from selfdev.plugins.generators.tiny import TinyGenerator, ensure_factory

    stamp = (tiny_factory / "model.safetensors").stat().st_mtime_ns
    started = time.perf_counter()
    again = ensure_factory(factory_home, "test", threads=1)
    assert again == tiny_factory
    assert time.perf_counter() - started < 10  # corpus + cache key only, no training
    assert (tiny_factory / "model.safetensors").stat().st_mtime_ns == stamp
    assert TinyGenerator(ctx, size="test").initial_checkpoint() == tiny_factory


def test_cache_key_depends_on_spec_and_corpus():
    from selfdev.plugins.generators.tiny import cache_key, spec_for

    a = spec_for("test")
    assert cache_key(a, ["p1", "p2"]) == cache_key(a, ["p1", "p2"])
    assert cache_key(a, ["p1", "p2"]) != cache_key(a, ["p1", "p3"])
    assert cache_key(a, ["p1"]) != cache_key(spec_for("test", steps=a.steps + 1), ["p1"])


def test_sampling_is_seeded_per_completion(gen):
    a = gen.generate(["prompt"], 6, 1.0, seed=7)
    b = gen.generate(["prompt"], 6, 1.0, seed=7)
    c = gen.generate(["prompt"], 6, 1.0, seed=8)
    assert [x.text for x in a] == [x.text for x in b]
    assert [x.text for x in a] != [x.text for x in c]
    assert len({x.text for x in a}) > 1  # rows have their own streams
    # completion i does not depend on how many others are sampled with it
    first3 = gen.generate(["prompt"], 3, 1.0, seed=7)
    assert [x.text for x in first3] == [x.text for x in a[:3]]
    for x in a:
        assert x.prompt_index == 0
        assert x.meta["finish"] in ("stop", "length") and x.meta["tokens"] > 0
        assert x.meta["prompt_mode"] == "header"


def test_the_tiny_factory_does_not_read_the_prompt(gen):
    a = gen.generate(["one prompt"], 3, 0.8, seed=1)
    b = gen.generate(["a completely different prompt"], 3, 0.8, seed=1)
    assert [x.text for x in a] == [x.text for x in b]
    assert gen.format_prompt("anything at all") == "<merge_models>"


def test_two_prompts_are_indexed(gen):
    out = gen.generate(["a", "b"], 2, 0.8, seed=3)
    assert [c.prompt_index for c in out] == [0, 0, 1, 1]


def test_measure_reports_novelty_and_screen(gen):
    from selfdev.plugins.commands.factory_stats import measure

    report = measure(gen, samples=12, temperature=0.8, seed=2)
    for key in ("parsed_rate", "screen_pass_rate", "novel_rate", "novel_structure_rate",
                "distinct_programs", "gen_tokens_per_second"):
        assert key in report
    assert 0 <= report["screen_pass_rate"] <= report["parsed_rate"] <= 1
    assert report["novel_structure_rate"] <= report["novel_rate"] + 1e-9
    assert report["samples"] == 12


def test_program_keys_ignore_formatting_and_abstract_names():
    from selfdev.plugins.factory.programs import program_keys

    a = "import torch\ndef merge_models(task_vectors, base, name):\n    x = 0.5\n    return x * base\n"
    b = ("import torch\n\ndef merge_models(task_vectors, base, name):\n    \"\"\"Doc.\"\"\"\n"
         "    # comment\n    x = 0.5\n\n    return x * base\n")
    c = "import torch\ndef merge_models(task_vectors, base, name):\n    y = 0.25\n    return y * base\n"
    assert program_keys(a) == program_keys(b)
    assert program_keys(a)[0] != program_keys(c)[0]      # a new program exactly ...
    assert program_keys(a)[1] == program_keys(c)[1]      # ... but not a new structure
    assert program_keys("def (") is None


def test_options_are_validated(ctx):
    from selfdev.plugins.generators.tiny import TinyGenerator

    with pytest.raises(ConfigError, match="size"):
        TinyGenerator(ctx, size="huge")
    with pytest.raises(ConfigError, match="top_p"):
        TinyGenerator(ctx, top_p=2.0)
    with pytest.raises(ConfigError, match="batch_size"):
        TinyGenerator(ctx, batch_size=0)


def test_plugins_are_registered_and_cheap_to_import():
    code = (
        "import sys\n"
        "import importlib\n"
        "from selfdev.engine.plugins import DEFAULT_PLUGINS\n"
        "for name in DEFAULT_PLUGINS + tuple('selfdev.plugins.factory.' + m for m in (\n"
        "        'checkpoints', 'options', 'programs', 'prompts', 'sampling', 'threads', 'training')):\n"
        "    importlib.import_module(name)\n"
        "heavy = [m for m in ('torch', 'transformers', 'trl', 'peft', 'datasets', 'vllm')\n"
        "         if m in sys.modules]\n"
        "from selfdev.engine.plugins import get_registry\n"
        "r = get_registry()\n"
        "print(heavy, r.names('generator'), r.names('optimizer'))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    heavy, *_ = out.stdout.split("]")
    assert heavy == "["  # none of the heavy libraries imported at module import
    for name in ("tiny", "hf", "vllm", "openai", "'dpo'", "'sft'"):
        assert name in out.stdout


def test_prompt_command_shows_domain_prompt_and_factory_context(factory_home, tiny_factory,
                                                                monkeypatch):
    from click.testing import CliRunner

    from selfdev.engine.cli import cli

    monkeypatch.setenv("SELFDEV_HOME", str(factory_home))
    result = CliRunner().invoke(cli, ["prompt", "digits", "--generator", "tiny",
                                      "-g", "size=\"test\"", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert "def merge_models" in data["prompt"] and "Constraints" in data["prompt"]
    assert data["factory_context"] == "<merge_models>"


def test_factory_key_is_the_corpus_key_and_computed_once_a_process(monkeypatch):
    from selfdev.plugins.generators import tiny
    spec = tiny.spec_for("test", corpus_size=40)
    key = tiny._factory_key(spec)
    assert key == tiny.cache_key(spec, tiny.corpus_programs(spec))
    monkeypatch.setattr(tiny, "corpus_programs", lambda s: pytest.fail("corpus regenerated"))
    assert tiny._factory_key(spec) == key


def test_strip_docstring_reaches_nested_definitions():
    from selfdev.plugins.generators.tiny import strip_docstring
    code = ('def merge_models(task_vectors, base, name):\n    """Doc."""\n'
            '    if True:\n        def f(x):\n            """Inner."""\n            return x\n'
            '    try:\n        pass\n    except Exception:\n        def g():\n            "G."\n            return 1\n'
            '    return base  # kept\n')
    out = strip_docstring(code)
    assert '"""' not in out and '"G."' not in out and "# kept" in out and "return x" in out
