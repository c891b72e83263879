"""selfdev's own sampling loop (``plugins/factory/decoding.py``) against transformers."""
from __future__ import annotations

import pytest

from tests.plugins.test_tiny_factory import factory_home, tiny_factory  # noqa: F401  (fixtures)


def _llama(**overrides):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = dict(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
               num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
               tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    cfg.update(overrides)
    return LlamaForCausalLM(LlamaConfig(**cfg)).eval()


def test_decoder_logits_equal_the_model_step_by_step():
    """Prefill of a 7-token context, then 5 single-token steps: each position's logits equal
    the model's own forward over the whole sequence (grouped-query attention, untied head)."""
    import torch

    from selfdev.plugins.factory.decoding import LlamaDecoder, unsupported_reason

    model = _llama()
    assert unsupported_reason(model) is None
    decoder = LlamaDecoder(model)
    seq = torch.tensor([[1, 5, 9, 33, 4, 60, 7, 11, 12, 13, 14, 15]])
    cache = decoder.new_cache(1, seq.shape[1])
    with torch.inference_mode():
        mine = [decoder.forward(seq[:, :7], cache, 0)]
        for pos in range(7, seq.shape[1]):
            mine.append(decoder.forward(seq[:, pos:pos + 1], cache, pos))
        ref = model(input_ids=seq).logits[0, 6:]
    assert torch.allclose(torch.cat(mine), ref, atol=1e-5), (torch.cat(mine) - ref).abs().max()


def test_other_architectures_fall_back_to_generate():
    from transformers import GPT2Config, GPT2LMHeadModel

    from selfdev.plugins.factory.decoding import unsupported_reason

    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=50))
    assert unsupported_reason(gpt2) == "not a Llama model"
    assert unsupported_reason(_llama(attention_bias=True)) == "biases"


@pytest.mark.parametrize("top_p,top_k", [(1.0, 0), (0.9, 20)])
def test_own_loop_samples_the_same_tokens_as_generate(tiny_factory, top_p, top_k):
    """Same checkpoint, seed and temperature: the same completions, whatever the batch size
    of either path (rows have their own random streams)."""
    from selfdev.plugins.factory.checkpoints import load_factory
    from selfdev.plugins.factory.sampling import SampleSpec, sample

    loaded = load_factory(tiny_factory, device="cpu", dtype="auto")
    contexts = [[loaded.tokenizer.bos_token_id, loaded.tokenizer.convert_tokens_to_ids("<merge_models>")]]
    own = sample(loaded.model, loaded.tokenizer, contexts, 12, 1.1, 3,
                 SampleSpec(max_new_tokens=120, top_p=top_p, top_k=top_k, batch_size=5))
    ref = sample(loaded.model, loaded.tokenizer, contexts, 12, 1.1, 3,
                 SampleSpec(max_new_tokens=120, top_p=top_p, top_k=top_k, batch_size=4,
                            decoder="generate"))
    assert [text for _, text, _ in own] == [text for _, text, _ in ref]
    assert [m["tokens"] for _, _, m in own] == [m["tokens"] for _, _, m in ref]
    assert [m["finish"] for _, _, m in own] == [m["finish"] for _, _, m in ref]
    assert len({text for _, text, _ in own}) > 6


def test_rows_longer_than_the_first_cache_give_the_same_tokens_as_generate():
    """The cache starts at 128 new positions and grows: rows of an untrained model (which
    seldom stops) run past it and match transformers' ``generate`` token for token."""
    import torch

    from selfdev.plugins.factory.decoding import LlamaDecoder, decode
    from selfdev.plugins.factory.sampling import RowSampler, _gumbel_processor

    model = _llama(max_position_embeddings=512)
    context = [1, 5, 9, 33]

    def streams():
        return [torch.Generator().manual_seed(s) for s in range(11, 17)]

    own = decode(LlamaDecoder(model), context, RowSampler(streams(), 97, 1.0, 1.0, 0),
                 max_new_tokens=300, eos={2})
    assert max(len(tokens) for tokens, _ in own) > 128
    with torch.no_grad():
        ref = model.generate(input_ids=torch.tensor([context] * 6), do_sample=False, num_beams=1,
                             max_new_tokens=300, eos_token_id=2, pad_token_id=0,
                             logits_processor=[_gumbel_processor(streams(), 1.0, 1.0, 0)])
    for (tokens, finish), row in zip(own, ref[:, len(context):].tolist()):
        expected = row[:row.index(2)] if 2 in row else row
        assert tokens == expected
        assert finish == ("stop" if 2 in row else "length")
