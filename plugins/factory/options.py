"""Options shared by the model-backed factories (``tiny``, ``hf``, ``vllm``) and their trainers
(``dpo``, ``sft``), declared once.

Reusable option types carry their bounds and description (``TopP``, ``MaxNewTokens``, ...), so
each generator states only its own default (``top_p: TopP = 0.95``). :class:`TrainerOptions` is
the one declaration of what ``dpo`` and ``sft`` share: the preset and the options that override
it, LoRA, where and how the policy is loaded, and the prompt format of the training rows.
"""
from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, Optional, Union

from pydantic import BeforeValidator

import selfdev
from selfdev import Field

CHAT_MUST_BE = '"auto", true or false'


def chat_template_value(value: Any) -> str:
    """``chat_template``: "auto" (use the tokenizer's template when it has one), true or false;
    stored as ``"auto"``, ``"on"`` or ``"off"``."""
    if value in (True, "on", "true", "yes"):
        return "on"
    if value in (False, "off", "false", "no"):
        return "off"
    if value in ("auto", None, ""):
        return "auto"
    raise ValueError(f"must be {CHAT_MUST_BE}")


ChatTemplate = Annotated[
    Literal["auto", "on", "off"], BeforeValidator(chat_template_value),
    Field(description="use the tokenizer's chat template: auto (when it has one), true or false",
          json_schema_extra={"must_be": CHAT_MUST_BE})]
System = Annotated[str, Field(description="an optional system turn before the prompt (chat "
                                          "template only)")]
MaxNewTokens = Annotated[int, Field(ge=1, description="most new tokens per completion")]
TopP = Annotated[float, Field(ge=0, le=1, description="nucleus sampling: keep the most likely "
                                                      "tokens up to this probability (1 = off)")]
TopK = Annotated[int, Field(ge=0, description="keep the k most likely tokens (0 = off)")]
BatchSize = Annotated[int, Field(ge=1, description="completions sampled together")]
Threads = Annotated[int, Field(ge=0, description="torch CPU threads (0 = automatic: 2, or 1 "
                                                 "on a busy machine)")]
CacheImplementation = Annotated[
    Literal["dynamic", "static"],
    Field(description="transformers' KV cache during sampling (decoder = generate)")]
Decoder = Annotated[
    Literal["auto", "generate"],
    Field(description="auto: selfdev's own sampling loop where the model is Llama-shaped "
                      "(same tokens, several times faster), else transformers' generate; "
                      "generate: always transformers' generate")]
Dtype = Annotated[
    Literal["auto", "float32", "fp32", "bfloat16", "bf16", "float16", "fp16"],
    Field(description="weights' dtype when loading the model")]
Device = Annotated[str, Field(description="auto (cuda when available), cpu, cuda:0, ...")]
Stop = Annotated[list[str], Field(description="strings that end a completion")]
ModelDir = Annotated[str, Field(min_length=1, description="a local Hugging Face model directory")]
Adapter = Annotated[str, Field(description="a LoRA adapter directory applied over model "
                                           "(empty: none)")]


class TrainerOptions(selfdev.Options):
    """What ``dpo`` and ``sft`` share. Every option left unset takes its preset's value
    (``preset = "auto"``: the ``tiny`` preset for the tiny factory, the trainer's large preset
    otherwise)."""

    preset: str = Field("auto", description="auto, or a preset named in the trainer's docstring")
    learning_rate: Optional[float] = Field(None, ge=0, description="learning rate (preset)")
    epochs: Optional[float] = Field(None, ge=0, description="passes over the data (preset)")
    batch_size: Optional[int] = Field(None, ge=1, description="rows per step (preset)")
    grad_accum: int = Field(1, ge=1, description="gradient accumulation steps")
    lora: Optional[bool] = Field(None, description="train a LoRA adapter instead of all weights "
                                                   "(preset)")
    lora_r: Optional[int] = Field(None, ge=1, description="LoRA rank (preset)")
    lora_alpha: Optional[int] = Field(None, ge=1, description="LoRA alpha (preset)")
    lora_dropout: float = Field(0.0, ge=0, le=1, description="LoRA dropout")
    target_modules: Union[str, list[str]] = Field(
        "all-linear", description='modules LoRA adapts: "all-linear" or a list of module names')
    max_length: Optional[int] = Field(None, ge=8, description="most tokens per row (preset)")
    device: Device = "auto"
    dtype: Dtype = "auto"
    threads: Threads = 0
    chat_template: Optional[ChatTemplate] = Field(
        None, description="as the generator's chat_template (unset: the run's [generator] value)")
    system: Optional[str] = Field(None, description="as the generator's system (unset: the run's "
                                                    "[generator] value)")
    measure_margin: bool = Field(True, description="record log p(chosen) - log p(rejected) on "
                                                   "the pairs before and after training")

    #: the options a preset fills when they are unset (the fields of the settings dataclass)
    PRESET_KEYS: ClassVar[tuple[str, ...]] = ("learning_rate", "epochs", "batch_size", "lora",
                                              "lora_r", "lora_alpha", "max_length")

    def overrides(self) -> dict[str, Any]:
        """The preset keys this configuration sets."""
        return {k: getattr(self, k) for k in self.PRESET_KEYS if getattr(self, k) is not None}
