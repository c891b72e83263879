"""The ``hf`` generator on a local model directory (the test-size tiny factory, copied without
its manifest so that it is just a Hugging Face model): prompt formats, adapters, seeding."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from selfdev.engine.api import ConfigError, Context, NullProgress

CHAT = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}assistant:{% endif %}")


@pytest.fixture(scope="session")
def tiny_factory(tmp_path_factory) -> Path:
    from selfdev.plugins.generators.tiny import ensure_factory

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return ensure_factory(tmp_path_factory.getbasetemp() / "tiny-factory-home", "test", threads=1)


@pytest.fixture(scope="session")
def hf_model(tiny_factory, tmp_path_factory) -> Path:
    """A plain Hugging Face model directory (no selfdev manifest)."""
    dest = tmp_path_factory.mktemp("hf") / "model"
    shutil.copytree(tiny_factory, dest, ignore=shutil.ignore_patterns("selfdev_factory.json"))
    return dest


@pytest.fixture(scope="session")
def chat_model(hf_model, tmp_path_factory) -> Path:
    """The same model with a chat template (an 'instruction model')."""
    from transformers import AutoTokenizer

    dest = tmp_path_factory.mktemp("hf-chat") / "model"
    shutil.copytree(hf_model, dest)
    tok = AutoTokenizer.from_pretrained(str(dest))
    tok.chat_template = CHAT
    tok.save_pretrained(str(dest))
    return dest


@pytest.fixture
def ctx(tmp_path) -> Context:
    return Context(run_id="t", seed=0, home=tmp_path, artifacts=tmp_path / "art",
                   progress=NullProgress())


def test_plain_model_reads_the_prompt(ctx, hf_model):
    from selfdev.plugins.generators.hf import HFGenerator

    gen = HFGenerator(ctx, model=str(hf_model), max_new_tokens=24, threads=1, top_p=1.0)
    assert gen.initial_checkpoint() == hf_model
    assert gen.format_prompt("def merge_models(") == "def merge_models("
    a = gen.generate(["import torch\n"], 3, 1.0, seed=4)
    b = gen.generate(["import torch\n"], 3, 1.0, seed=4)
    c = gen.generate(["# something else entirely\n"], 3, 1.0, seed=4)
    assert [x.text for x in a] == [x.text for x in b]
    assert [x.text for x in a] != [x.text for x in c]  # unlike tiny, the prompt is read
    assert all(x.meta["prompt_mode"] == "plain" and x.meta["tokens"] <= 24 for x in a)


def test_chat_template_is_applied(ctx, chat_model):
    from selfdev.plugins.generators.hf import HFGenerator

    gen = HFGenerator(ctx, model=str(chat_model), system="Be brief.", max_new_tokens=8, threads=1)
    assert gen.format_prompt("Write merge_models.") == (
        "system: Be brief.\nuser: Write merge_models.\nassistant:")
    out = gen.generate(["Write merge_models."], 2, 0.7, seed=1)
    assert [x.meta["prompt_mode"] for x in out] == ["chat", "chat"]
    off = HFGenerator(ctx, model=str(chat_model), chat_template=False, threads=1)
    assert off.format_prompt("Write merge_models.") == "Write merge_models."


def test_adapter_is_applied(ctx, hf_model, tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from selfdev.plugins.factory.checkpoints import adapter_base, is_adapter
    from selfdev.plugins.generators.hf import HFGenerator

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(str(hf_model))
    lora = get_peft_model(base, LoraConfig(r=4, lora_alpha=64, target_modules="all-linear",
                                           init_lora_weights=False, task_type="CAUSAL_LM"))
    adapter = tmp_path / "adapter"
    lora.save_pretrained(str(adapter))

    plain = HFGenerator(ctx, model=str(hf_model), max_new_tokens=16, threads=1)
    tuned = HFGenerator(ctx, model=str(hf_model), adapter=str(adapter), max_new_tokens=16,
                        threads=1)
    view = tuned.initial_checkpoint()
    assert is_adapter(view) and adapter_base(view) == hf_model.resolve()
    a = plain.generate(["import torch\n"], 2, 1.0, seed=3)
    b = tuned.generate(["import torch\n"], 2, 1.0, seed=3)
    assert [x.text for x in a] != [x.text for x in b]
    # an adapter checkpoint passed by the engine is applied the same way
    c = plain.generate(["import torch\n"], 2, 1.0, seed=3, checkpoint=view)
    assert [x.text for x in c] == [x.text for x in b]


def test_config_errors(ctx, tmp_path):
    from selfdev.plugins.generators.hf import HFGenerator

    with pytest.raises(ConfigError, match="needs model"):
        HFGenerator(ctx)
    with pytest.raises(ConfigError, match="config.json"):
        HFGenerator(ctx, model=str(tmp_path))
    with pytest.raises(ConfigError, match="chat_template"):
        HFGenerator(ctx, model=str(tmp_path), chat_template="maybe")
