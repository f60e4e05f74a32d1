"""`--model PATH` for any causal LM: a tiny Llama directory loads into our Transformer, a tiny GPT-2 one into
transformers behind the same interface (its logits against transformers' own with the same positions, cached greedy
decoding against full recomputes, differentiable log-probs, a save / load round trip, its context length bounding
max_new_tokens), and logit-rescaling architectures are refused."""

from __future__ import annotations

import pytest
import torch

from llm_rl.causal_lm import HFCausalLM, load_causal_lm, load_causal_lm_and_tokenizer, save_causal_lm
from llm_rl.model import Transformer
from llm_rl.sampling import SamplingConfig, check_context, generate, left_pad, sequence_log_probs
from rl.errors import UserError

transformers = pytest.importorskip("transformers")
VOCAB = 50
PROMPTS = [[5, 9, 11, 3, 7, 21, 8], [30, 2], [14, 4, 4, 19]]

pytestmark = pytest.mark.usefixtures("one_thread")


def randomize(model: torch.nn.Module, seed: int = 0) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.3)


def word_tokenizer():
    tokenizers = pytest.importorskip("tokenizers")
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2} | {f"w{i}": i for i in range(3, VOCAB)}
    tokenizer = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
    return tokenizer


def save_tiny(config, path) -> torch.nn.Module:
    """A random transformers model of `config` saved with a word-level tokenizer under `path`."""
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    randomize(model)
    model.save_pretrained(path)
    word_tokenizer().save(str(path / "tokenizer.json"))
    return model.eval()


def gpt2_config():
    return transformers.GPT2Config(
        vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=64, bos_token_id=1, eos_token_id=2
    )


def test_llama_loads_into_our_transformer_and_gpt2_into_transformers(tmp_path):
    llama = transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, bos_token_id=1, eos_token_id=2,
    )  # fmt: skip
    save_tiny(llama, tmp_path / "llama")
    save_tiny(gpt2_config(), tmp_path / "gpt2")
    assert isinstance(load_causal_lm(tmp_path / "llama"), Transformer)
    model, tokenizer = load_causal_lm_and_tokenizer(tmp_path / "gpt2")
    assert isinstance(model, HFCausalLM) and model.cfg.eos_token_ids == (2,) and model.cfg.bos_token_id == 1
    assert model.cfg.vocab_size == VOCAB and tokenizer.encode("w5 w7").ids == [5, 7]


def test_gpt2_logits_cached_decoding_and_log_probs(tmp_path):
    reference = save_tiny(gpt2_config(), tmp_path)
    model = load_causal_lm(tmp_path).eval()
    ids, mask = left_pad(PROMPTS, pad_token_id=0)
    positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        expected = reference(input_ids=ids, attention_mask=mask.long(), position_ids=positions).logits
        torch.testing.assert_close(model(ids, mask)[mask], expected[mask], atol=1e-5, rtol=0)
    out = generate(model, ids, mask, SamplingConfig(max_new_tokens=5, temperature=0.0), torch.Generator())
    for row, prompt in enumerate(PROMPTS):  # each prompt alone, no padding, no cache
        full = torch.tensor([prompt])
        with torch.no_grad():
            for _ in range(5):
                full = torch.cat([full, reference(input_ids=full).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
        assert out.token_ids[row].tolist() == full[0, len(prompt) :].tolist()
    sampled = generate(model, ids, mask, SamplingConfig(max_new_tokens=5), torch.Generator().manual_seed(0))
    input_ids = torch.cat([ids, sampled.token_ids], dim=1)
    completion_mask = torch.cat([torch.zeros_like(mask), sampled.mask], dim=1)
    log_pi = sequence_log_probs(model, input_ids, torch.cat([mask, sampled.mask], dim=1), completion_mask)
    torch.testing.assert_close(log_pi[:, ids.shape[1] :].detach(), sampled.policy_log_probs, atol=1e-5, rtol=0)
    log_pi.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_transformers_models_save_and_load_back(tmp_path):
    save_tiny(gpt2_config(), tmp_path / "gpt2")
    model, tokenizer = load_causal_lm_and_tokenizer(tmp_path / "gpt2")
    randomize(model, seed=3)
    save_causal_lm(model, tokenizer, tmp_path / "again", source=tmp_path / "gpt2")
    again = load_causal_lm(tmp_path / "again")
    ids, mask = left_pad(PROMPTS, pad_token_id=0)
    with torch.no_grad():
        torch.testing.assert_close(again(ids, mask), model(ids, mask))
    assert (tmp_path / "again" / "generation_config.json").is_file()


def test_logit_rescaling_architectures_are_refused(tmp_path):
    gemma2 = transformers.Gemma2Config(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=1, num_attention_heads=4,
        num_key_value_heads=2, head_dim=8,
    )  # fmt: skip
    gemma2.architectures = ["Gemma2ForCausalLM"]
    gemma2.save_pretrained(tmp_path)
    with pytest.raises(UserError, match="rescales its logits \\(final_logit_softcapping\\)"):
        load_causal_lm(tmp_path)


def test_a_transformers_models_positions_bound_max_new_tokens(tmp_path):
    save_tiny(gpt2_config(), tmp_path)  # n_positions=64: GPT-2's name for its context length
    model = load_causal_lm(tmp_path)
    assert model.cfg.max_position_embeddings == 64
    check_context(model, 7, 57)  # 64 positions: fits exactly
    with pytest.raises(
        UserError,
        match=r"max_new_tokens 58 plus the longest prompt \(7 tokens\) exceeds the model's "
        r"context of 64 tokens \(max_position_embeddings\); set max_new_tokens to 57 or less\.",
    ):
        check_context(model, 7, 58)
    with pytest.raises(UserError, match="use shorter problems"):  # no room left at all
        check_context(model, 64, 1)
