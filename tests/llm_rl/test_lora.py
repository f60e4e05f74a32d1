"""LoRA through peft: on our transformer and on a transformers GPT-2 only the adapters train, the update sits in the
targeted block linears only, the merged weights equal W0 + (alpha / r) B A by hand, and the merged checkpoint loads
in transformers' AutoModelForCausalLM (and our loader) with the logits of the merged model."""

from __future__ import annotations

import pytest
import torch

from llm_rl.causal_lm import HFCausalLM, load_causal_lm
from llm_rl.hf_io import load_model
from llm_rl.lora import BLOCK_LINEARS, LoRAConfig, merged, save_merged, trainable_parameters, with_lora
from llm_rl.model import ModelConfig, Transformer
from llm_rl.sampling import left_pad, sequence_log_probs

peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")
PROMPTS = [[5, 9, 11, 3, 7, 21, 8], [30, 2], [14, 4, 4, 19]]

pytestmark = pytest.mark.usefixtures("one_thread")


def batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Left-padded prompts with 4 completion tokens each: input ids, attention mask, completion mask."""
    ids, mask = left_pad(PROMPTS, pad_token_id=0)
    completion = torch.randint(3, 40, (3, 4), generator=torch.Generator().manual_seed(0))
    ones = torch.ones(3, 4, dtype=torch.bool)
    return torch.cat([ids, completion], 1), torch.cat([mask, ones], 1), torch.cat([torch.zeros_like(mask), ones], 1)


def train_steps(model: torch.nn.Module, steps: int = 3) -> None:
    """A few Adam steps raising the log-likelihood of the completions."""
    optimizer = torch.optim.Adam(trainable_parameters(model), lr=1e-2)
    ids, attention_mask, completion_mask = batch()
    for _ in range(steps):
        loss = -sequence_log_probs(model, ids, attention_mask, completion_mask).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def logits(model: torch.nn.Module) -> torch.Tensor:
    ids, attention_mask, _ = batch()
    with torch.no_grad():
        return model(ids, attention_mask)[attention_mask]


def test_lora_on_our_transformer_trains_adapters_only_and_merges_into_a_transformers_checkpoint(tmp_path):
    base = Transformer(ModelConfig(vocab_size=40, eos_token_ids=(2,)))
    before = {name: w.clone() for name, w in base.state_dict().items()}
    model = with_lora(base, LoRAConfig(rank=4, alpha=8.0))
    names = {name for name, p in model.named_parameters() if p.requires_grad}
    assert names and all("lora_" in name for name in names)
    assert {name.split(".")[-4] for name in names} == set(BLOCK_LINEARS)  # ...<linear>.lora_A.default.weight
    untrained = logits(model)
    train_steps(model)
    trained = logits(model)
    assert not torch.allclose(trained, untrained)  # B starts at 0: only training moves the output
    # W = W0 + (alpha / r) B A, by hand for one layer
    q_proj = model.base_model.model.model["layers"][0].self_attn.q_proj
    A, B = q_proj.lora_A["default"].weight, q_proj.lora_B["default"].weight
    expected_q = before["model.layers.0.self_attn.q_proj.weight"] + (8.0 / 4) * B.detach() @ A.detach()
    out = save_merged(model, None, tmp_path)
    plain = merged(model)
    assert isinstance(plain, Transformer) and not any("lora" in name for name in plain.state_dict())
    torch.testing.assert_close(plain.state_dict()["model.layers.0.self_attn.q_proj.weight"], expected_q)
    for name in ("model.embed_tokens.weight", "model.norm.weight", "model.layers.1.input_layernorm.weight"):
        assert torch.equal(plain.state_dict()[name], before[name])  # frozen outside the block linears
    torch.testing.assert_close(logits(plain), trained, atol=1e-5, rtol=0)
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    ids, attention_mask, _ = batch()
    positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        theirs = reloaded(input_ids=ids, attention_mask=attention_mask.long(), position_ids=positions).logits
    torch.testing.assert_close(theirs[attention_mask], trained, atol=1e-4, rtol=0)
    torch.testing.assert_close(logits(load_model(out)), trained, atol=1e-5, rtol=0)


def test_lora_on_a_transformers_model_merges_and_saves(tmp_path):
    config = transformers.GPT2Config(vocab_size=40, n_embd=32, n_layer=2, n_head=4, n_positions=64, eos_token_id=2)
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path / "base")
    base = load_causal_lm(tmp_path / "base")
    frozen = {name: w.clone() for name, w in base.hf.state_dict().items()}
    model = with_lora(base, LoRAConfig(rank=2))
    assert isinstance(model, HFCausalLM)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name for name in trainable)
    assert not any("lm_head" in name or "wte" in name for name in trainable)
    untrained = logits(model)
    train_steps(model)
    trained = logits(model)
    assert not torch.allclose(trained, untrained)
    save_merged(model, None, tmp_path / "merged")
    assert set(model.hf.state_dict()) == set(frozen)  # merged: the original parameter names, no adapters
    changed = [name for name, w in model.hf.state_dict().items() if not torch.equal(w, frozen[name])]
    assert changed and all(name.endswith(".weight") and ".h." in name for name in changed)
    torch.testing.assert_close(logits(model), trained, atol=1e-5, rtol=0)
    torch.testing.assert_close(logits(load_causal_lm(tmp_path / "merged")), trained, atol=1e-5, rtol=0)


def test_bad_lora_configs_are_refused():
    with pytest.raises(ValueError, match="rank must be >= 1"):
        LoRAConfig(rank=0)
