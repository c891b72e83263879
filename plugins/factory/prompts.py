"""Prompt formats: how a domain prompt becomes the factory's context.

``header`` (the tiny factory: a fixed header token, the prompt text is not read), ``chat`` (the
tokenizer's chat template, one user turn with an optional system turn) and ``plain`` (the prompt
text as is). The generators and the optimizers format prompts through the same functions, so DPO
trains on exactly the context that sampling used.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from selfdev import ConfigError, Context
from selfdev.plugins.factory.options import chat_template_value

PROMPT_MODES = ("header", "chat", "plain")


@dataclass
class PromptFormat:
    """How a domain prompt becomes the factory's context (shared by sampling and training)."""

    mode: str = "plain"          # header | chat | plain
    header: str = ""             # the fixed context of ``header`` mode
    system: str = ""             # an optional system turn in ``chat`` mode

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mode": self.mode}
        if self.header:
            out["header"] = self.header
        if self.system:
            out["system"] = self.system
        return out

    # -- for sampling: token ids of the context ----------------------------------------------

    def messages(self, prompt: str) -> list[dict[str, str]]:
        msgs = [{"role": "system", "content": self.system}] if self.system else []
        return msgs + [{"role": "user", "content": prompt}]

    def text(self, tokenizer: Any, prompt: str) -> str:
        """The context as text (what ``selfdev prompt --generator`` shows)."""
        if self.mode == "header":
            return self.header
        if self.mode == "chat":
            return tokenizer.apply_chat_template(self.messages(prompt), tokenize=False,
                                                 add_generation_prompt=True)
        return prompt

    def ids(self, tokenizer: Any, prompt: str) -> list[int]:
        """Token ids exactly as trl tokenizes the prompt of a preference row."""
        if self.mode == "chat":
            out = tokenizer.apply_chat_template(self.messages(prompt), tokenize=True,
                                                add_generation_prompt=True, return_dict=True)
            return list(out["input_ids"])
        return list(tokenizer(self.text(tokenizer, prompt))["input_ids"])

    # -- for trl: preference / sft rows ------------------------------------------------------

    def row_prompt(self, prompt: str) -> Any:
        if self.mode == "chat":
            return self.messages(prompt)
        return self.header if self.mode == "header" else prompt

    def row_completion(self, text: str) -> Any:
        if self.mode == "chat":
            return [{"role": "assistant", "content": text}]
        return text


def prompt_format(tokenizer: Any, manifest: dict[str, Any], chat_template: str = "auto",
                  system: str = "") -> PromptFormat:
    """The format recorded in the manifest, else chat when the tokenizer has a template."""
    recorded = manifest.get("prompt") or {}
    if recorded.get("mode") in PROMPT_MODES:
        return PromptFormat(mode=recorded["mode"], header=recorded.get("header", ""),
                            system=system or recorded.get("system", ""))
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if chat_template == "on" and not has_template:
        raise ConfigError("chat_template = true, but the factory's tokenizer has no chat template")
    use_chat = chat_template == "on" or (chat_template == "auto" and has_template)
    return PromptFormat(mode="chat" if use_chat else "plain", system=system)


def prompt_options(ctx: Context, chat_template: str | None, system: str | None) -> tuple[str, str]:
    """``chat_template`` and ``system`` for training rows: the optimizer's own options, else
    the run's ``[generator]`` options (so training formats prompts as sampling did)."""
    gen = (ctx.options or {}).get("generator") or {}
    if not isinstance(gen, dict):
        gen = {}
    if chat_template is None:
        try:
            chat_template = chat_template_value(gen.get("chat_template", "auto"))
        except ValueError as exc:
            raise ConfigError(f"config: [generator] chat_template {exc}; "
                              f"got {gen['chat_template']!r}") from None
    if system is None:
        system = gen.get("system", "") or ""
    return chat_template, str(system)
