"""toymath's tokenizer: a closed vocabulary, one token per digit, exactly invertible.

Built with ``tokenizers`` from every token the problem families can produce (plus the names,
objects and pronouns on their own), so the same vocabulary comes out on every machine.
"""
from __future__ import annotations

import random
import re

from selfdev.plugins.domains.toymath.problems import FAMILIES, NAMES, OBJS, PRON, training_text

TOKEN_PATTERN = r"####|Question:|Answer:| ?<<|>>| ?[A-Za-z]+| ?\d| ?[^\sA-Za-z\d]|\n| "
SPECIAL = ["<pad>", "<bos>", "<eos>", "<unk>"]


def build_tokenizer():
    """A closed-vocabulary WordLevel tokenizer (one token per digit), as a transformers
    ``PreTrainedTokenizerFast`` that adds ``<bos>`` and decodes by plain concatenation."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    pat = re.compile(TOKEN_PATTERN)
    toks: set[str] = set()
    r = random.Random(0)
    for fam in FAMILIES:
        for _ in range(3000):
            q, s, a = FAMILIES[fam](r)
            toks.update(pat.findall(training_text({"question": q, "answer": f"{s}\n#### {a}"})))
    for w in NAMES + OBJS + list(PRON.values()) + [p.lower() for p in PRON.values()]:
        toks.update(pat.findall(" " + w))
        toks.update(pat.findall(w))
    for d in "0123456789":
        toks.update([d, " " + d])
    toks.update(["\n", " ", "-", " -", ".", ",", "$", " $"])
    itos = SPECIAL + sorted(toks - set(SPECIAL))
    vocab = {t: i for i, t in enumerate(itos)}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Split(Regex(TOKEN_PATTERN), behavior="isolated")
    tk.decoder = decoders.Fuse()
    tk.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", vocab["<bos>"])])
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<bos>", eos_token="<eos>",
                                   pad_token="<pad>", unk_token="<unk>",
                                   clean_up_tokenization_spaces=False, padding_side="left",
                                   model_max_length=4096)
