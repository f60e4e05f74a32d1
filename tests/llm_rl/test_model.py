"""The transformer against Hugging Face transformers (load theirs, save ours, same fp32 logits), RoPE / RMSNorm / the
Llama 3.1 frequency stretch by hand, the KV cache against a full recompute, and the loader's errors."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
import torch

from llm_rl import load_pretrained, save_pretrained
from llm_rl.hf_io import config_from_hf, load_model
from llm_rl.model import (
    KVCache,
    Llama3RopeScaling,
    ModelConfig,
    RMSNorm,
    Transformer,
    apply_rotary,
    num_parameters,
    preset,
    rotary_cos_sin,
    rotary_inv_freq,
)
from rl.errors import UserError

VOCAB = 61
SHAPE = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4)
LLAMA3_8 = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1,
    "high_freq_factor": 4,
    "original_max_position_embeddings": 8,
}
CASES = {  # architecture, extra config fields
    "llama-untied-gqa": ("llama", dict(num_key_value_heads=2, tie_word_embeddings=False)),
    "llama-tied-mha": ("llama", dict(num_key_value_heads=4, tie_word_embeddings=True)),
    "qwen2-untied-gqa": ("qwen2", dict(num_key_value_heads=2, tie_word_embeddings=False)),
    "qwen2-tied-mqa": ("qwen2", dict(num_key_value_heads=1, tie_word_embeddings=True, rope_theta=1e6)),
    "llama3-rope-scaling": ("llama", dict(num_key_value_heads=2, rope_scaling=LLAMA3_8)),
}  # fmt: skip


pytestmark = pytest.mark.usefixtures("one_thread")


def randomize(model: torch.nn.Module, seed: int) -> None:
    """Random weights everywhere, norms and biases included (fresh models start them at 1 and 0)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.3)


def hf_model(arch: str, extra: dict, seed: int = 0):
    transformers = pytest.importorskip("transformers")
    extra = dict(extra)
    new_layout = int(transformers.__version__.split(".")[0]) >= 5
    if new_layout and ("rope_scaling" in extra or "rope_theta" in extra):  # transformers 5: one rope_parameters dict
        extra["rope_parameters"] = {"rope_type": "default", "rope_theta": extra.pop("rope_theta", 10_000.0)}
        extra["rope_parameters"] |= extra.pop("rope_scaling", {})
    config_class = transformers.LlamaConfig if arch == "llama" else transformers.Qwen2Config
    model = transformers.AutoModelForCausalLM.from_config(config_class(**SHAPE, **extra), dtype=torch.float32)
    randomize(model, seed)
    return model.eval()


def word_tokenizer():
    tokenizers = pytest.importorskip("tokenizers")
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2} | {f"w{i}": i for i in range(3, VOCAB)}
    tokenizer = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
    return tokenizer


def left_padded_batch(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ids (3, 12) with 0, 4 and 9 padding columns on the left, the mask, and HF-style position ids."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (3, 12), generator=generator)
    mask = torch.ones(3, 12, dtype=torch.long)
    mask[1, :4] = 0
    mask[2, :9] = 0
    return ids, mask, (mask.cumsum(-1) - 1).clamp(min=0)


@pytest.mark.parametrize("case", CASES)
def test_loads_transformers_checkpoints_with_the_same_logits(case, tmp_path):
    arch, extra = CASES[case]
    reference = hf_model(arch, extra)
    reference.save_pretrained(tmp_path)
    word_tokenizer().save(str(tmp_path / "tokenizer.json"))
    model, tokenizer = load_pretrained(tmp_path)
    ids, mask, positions = left_padded_batch()
    with torch.no_grad():
        expected = reference(input_ids=ids, attention_mask=mask, position_ids=positions).logits
        logits = model(ids, mask)  # our default positions skip the padding, as the explicit ones do for HF
    real = mask.bool()
    torch.testing.assert_close(logits[real], expected[real], atol=1e-4, rtol=0)
    assert model.cfg.attention_bias == (arch == "qwen2")
    assert model.cfg.num_key_value_heads == extra["num_key_value_heads"]
    assert (model.lm_head.weight is model.model["embed_tokens"].weight) == extra.get("tie_word_embeddings", False)
    assert tokenizer.encode("w5 w7 </s>").ids == [5, 7, 2]


@pytest.mark.parametrize("case", CASES)
def test_saved_checkpoints_load_in_transformers(case, tmp_path):
    transformers = pytest.importorskip("transformers")
    reference = hf_model(*CASES[case])
    reference.save_pretrained(tmp_path / "hf")
    cfg = load_model(tmp_path / "hf").cfg
    cfg = ModelConfig(**(cfg.__dict__ | {"bos_token_id": 1, "eos_token_ids": (2,)}))
    model = Transformer(cfg)
    randomize(model, seed=5)
    save_pretrained(model, word_tokenizer(), tmp_path / "ours")
    loaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "ours", dtype=torch.float32).eval()
    ids, mask, positions = left_padded_batch(seed=2)
    with torch.no_grad():
        expected = loaded(input_ids=ids, attention_mask=mask, position_ids=positions).logits
        logits = model(ids, mask)
    torch.testing.assert_close(logits[mask.bool()], expected[mask.bool()], atol=1e-4, rtol=0)
    # transformers 5 forces its BPE Qwen2Tokenizer on model_type qwen2, which cannot hold this toy word-level vocabulary
    wrapper = transformers.AutoTokenizer if cfg.model_type == "llama" else transformers.PreTrainedTokenizerFast
    hf_tokenizer = wrapper.from_pretrained(tmp_path / "ours")
    assert hf_tokenizer("w9 w3").input_ids == [9, 3] and hf_tokenizer.eos_token_id == 2
    again = load_model(tmp_path / "ours")  # and our own round trip is exact
    assert again.cfg == cfg
    assert all(torch.equal(again.state_dict()[n], w) for n, w in model.state_dict().items())
    assert json.loads((tmp_path / "ours" / "config.json").read_text())["torch_dtype"] == "float32"


def test_sharded_checkpoints_load(tmp_path):
    reference = hf_model("qwen2", CASES["qwen2-untied-gqa"][1])
    reference.save_pretrained(tmp_path, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").is_file() and not (tmp_path / "model.safetensors").exists()
    model = load_model(tmp_path)
    ids, _, _ = left_padded_batch()
    with torch.no_grad():
        torch.testing.assert_close(model(ids), reference(input_ids=ids).logits, atol=1e-4, rtol=0)


def test_hub_config_json_is_read_field_by_field():
    # the layout of Qwen2.5-0.5B-Instruct's config.json and generation_config.json on the Hub
    hub = {
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_act": "silu", "hidden_size": 896,
        "intermediate_size": 4864, "num_attention_heads": 14, "num_hidden_layers": 24, "num_key_value_heads": 2,
        "max_position_embeddings": 32768, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "rope_scaling": None,
        "tie_word_embeddings": True, "use_sliding_window": False, "vocab_size": 151936, "bos_token_id": 151643,
        "eos_token_id": 151645, "torch_dtype": "bfloat16",
    }  # fmt: skip
    cfg = config_from_hf(hub, {"eos_token_id": [151645, 151643]})
    assert config_from_hf({k: v for k, v in hub.items() if k != "architectures"}) == replace(
        cfg, eos_token_ids=(151645,)
    )
    assert (cfg.head_dim, cfg.num_key_value_heads, cfg.rope_theta, cfg.rope_scaling) == (64, 2, 1e6, None)
    assert cfg.tie_word_embeddings and cfg.attention_bias and cfg.eos_token_ids == (151645, 151643)
    with torch.device("meta"):
        assert 490e6 < num_parameters(Transformer(cfg)) < 500e6  # "0.49B" on its model card


def test_unsupported_and_broken_directories_are_user_errors(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["MistralForCausalLM"]}))
    with pytest.raises(UserError, match="'MistralForCausalLM' is not supported.*LlamaForCausalLM and Qwen2ForCausal"):
        load_model(tmp_path)
    hf_model("llama", CASES["llama-untied-gqa"][1]).save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").rename(tmp_path / "other.safetensors")
    with pytest.raises(UserError, match="reads safetensors only"):
        load_model(tmp_path)
    (tmp_path / "other.safetensors").rename(tmp_path / "model.safetensors")
    with pytest.raises(UserError, match="tokenizer.json is missing"):
        load_pretrained(tmp_path)
    with pytest.raises(UserError, match="missing"):
        load_model(tmp_path / "nowhere")


def test_kv_cache_matches_a_full_recompute():
    model = Transformer(ModelConfig(vocab_size=VOCAB))
    randomize(model, seed=3)
    ids, mask, _ = left_padded_batch()
    prompt = 6  # row 2 is still all padding here: its queries see only themselves
    with torch.no_grad():
        full = model(ids, mask)  # (3, 12, V)
        cache = KVCache.allocate(model.cfg, 3, 12, "cpu", torch.float32)
        pieces = [model(ids[:, :prompt], mask[:, :prompt], kv_cache=cache)]
        pieces.append(model(ids[:, prompt : prompt + 3], mask[:, prompt : prompt + 3], kv_cache=cache))  # a chunk
        pieces += [model(ids[:, t : t + 1], mask[:, t : t + 1], kv_cache=cache) for t in range(prompt + 3, 12)]
    incremental = torch.cat(pieces, dim=1)
    torch.testing.assert_close(incremental[mask.bool()], full[mask.bool()], atol=1e-5, rtol=0)
    assert cache.length == 12 and cache.positions.tolist() == [12, 8, 3]
    with pytest.raises(ValueError, match="KV cache holds 12 slots"):
        model(ids[:, :1], kv_cache=cache)


def test_rotary_embedding_by_hand():
    cfg = ModelConfig(head_dim=8, rope_theta=10_000.0)
    torch.testing.assert_close(rotary_inv_freq(cfg, torch.device("cpu")), torch.tensor([1.0, 0.1, 0.01, 0.001]))
    # position 3 turns the pair (x_0, x_4) by 3 radians and (x_1, x_5) by 0.3
    x = torch.zeros(1, 1, 1, 8)
    x[..., 0], x[..., 5] = 1.0, 2.0
    cos, sin = rotary_cos_sin(torch.tensor([[3]]), cfg, torch.float32)
    turned = apply_rotary(x, cos, sin).flatten()
    expected = torch.zeros(8)
    expected[0], expected[4] = math.cos(3), math.sin(3)
    expected[1], expected[5] = -2 * math.sin(0.3), 2 * math.cos(0.3)
    torch.testing.assert_close(turned, expected)
    # attention scores depend only on the distance between positions: <R_m q, R_n k> = <R_{m+5} q, R_{n+5} k>
    q, k = torch.randn(2, 1, 1, 1, 8, generator=torch.Generator().manual_seed(0))
    scores = []
    for m, n in [(7, 2), (12, 7)]:
        cos, sin = rotary_cos_sin(torch.tensor([[m, n]]), cfg, torch.float32)
        scores.append((apply_rotary(q, cos[:, :1], sin[:, :1]) * apply_rotary(k, cos[:, 1:], sin[:, 1:])).sum())
    torch.testing.assert_close(scores[0], scores[1])


def test_llama3_frequency_stretch_by_hand():
    scaling = Llama3RopeScaling(
        factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=1000
    )
    inv_freq = rotary_inv_freq(ModelConfig(head_dim=8, rope_scaling=scaling), torch.device("cpu"))
    # wavelengths 2 pi / f = 6.3, 63, 628, 6283; below 1000 / 4 kept, above 1000 / 1 divided by 8, 628 blended
    blend = (1000 / (2 * math.pi / 0.01) - 1.0) / (4.0 - 1.0)
    expected = [1.0, 0.1, (1 - blend) * 0.01 / 8 + blend * 0.01, 0.001 / 8]
    torch.testing.assert_close(inv_freq, torch.tensor(expected))


def test_rms_norm_by_hand():
    norm = RMSNorm(2, eps=0.0)
    with torch.no_grad():
        norm.weight.copy_(torch.tensor([1.0, 2.0]))
    # rms of (3, 4) is sqrt(12.5)
    torch.testing.assert_close(norm(torch.tensor([3.0, 4.0])), torch.tensor([3.0, 8.0]) / math.sqrt(12.5))


def test_parameter_names_and_presets():
    names = set(
        Transformer(ModelConfig(num_hidden_layers=1, attention_bias=True, tie_word_embeddings=False)).state_dict()
    )
    layer = "model.layers.0."
    assert names == {"model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"} | {
        layer + name
        for name in [
            "input_layernorm.weight", "post_attention_layernorm.weight", "self_attn.q_proj.weight",
            "self_attn.q_proj.bias", "self_attn.k_proj.weight", "self_attn.k_proj.bias", "self_attn.v_proj.weight",
            "self_attn.v_proj.bias", "self_attn.o_proj.weight", "mlp.gate_proj.weight", "mlp.up_proj.weight",
            "mlp.down_proj.weight",
        ]
    }  # fmt: skip
    with torch.device("meta"):
        assert 95e6 < num_parameters(Transformer(preset("100m"))) < 105e6
        assert num_parameters(Transformer(preset("small"))) < 10e6
    assert preset("tiny", vocab_size=300).vocab_size == 300
    with pytest.raises(UserError, match="unknown model preset 'huge'; pick one of tiny, small, 100m"):
        preset("huge")
    with pytest.raises(ValueError, match="must divide"):
        ModelConfig(num_attention_heads=4, num_key_value_heads=3)


def test_gradient_checkpointing_gives_the_same_loss_and_gradients():
    model = Transformer(ModelConfig(vocab_size=VOCAB, num_hidden_layers=3, attention_bias=True))
    randomize(model, seed=4)
    ids, mask, _ = left_padded_batch(seed=3)

    def loss_and_grads(recompute: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        model.zero_grad(set_to_none=True)
        model.gradient_checkpointing = recompute
        loss = model(ids, mask).log_softmax(-1)[..., 7][mask.bool()].mean()
        loss.backward()
        return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters()}

    loss, grads = loss_and_grads(False)
    loss_recomputed, grads_recomputed = loss_and_grads(True)
    torch.testing.assert_close(loss_recomputed, loss, atol=1e-6, rtol=0)
    assert grads.keys() == grads_recomputed.keys()
    for name, grad in grads.items():
        assert grad.abs().sum() > 0, name
        torch.testing.assert_close(grads_recomputed[name], grad, atol=1e-6, rtol=0, msg=name)
    # the tensors kept for backward: every block's activations without recomputation, only block inputs with it
    model.gradient_checkpointing = False
    kept = saved_elements(model, ids, mask)
    model.gradient_checkpointing = True
    assert saved_elements(model, ids, mask) < 0.5 * kept


def saved_elements(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> int:
    """Elements of the distinct non-parameter tensors autograd saves for the backward pass of one forward pass."""
    parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in parameters:
            storages[storage.data_ptr()] = storage.nbytes() // tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model(ids, mask).sum()
    return sum(storages.values())
