"""Decoder-only transformer of the Llama / Qwen2 family, with a preallocated KV cache.

References: Vaswani et al. (2017), "Attention is all you need"; Touvron et al. (2023), "LLaMA" (pre-norm with RMSNorm,
SwiGLU MLP, rotary positions); Su et al. (2021), "RoFormer" (RoPE); Ainslie et al. (2023), "GQA" (key/value heads
shared by groups of query heads); Qwen2 technical report (2024) (biases on the q/k/v projections); Meta's Llama 3.1
release (the "llama3" stretch of the rotary frequencies).

One block, with x (B, L, E):

    h   = x + W_o softmax(q k^T / sqrt(D) + causal/padding mask) v,   q, k, v = RoPE(W_q n), RoPE(W_k n), W_v n,
          n = RMSNorm(x)
    out = h + W_down (silu(W_gate m) * W_up m),   m = RMSNorm(h)

    RMSNorm(x) = w * x / sqrt(mean(x^2) + eps);   logits = W_lm RMSNorm(x_last_block)

Parameter names follow Hugging Face's LlamaForCausalLM / Qwen2ForCausalLM (`model.embed_tokens.weight`,
`model.layers.{i}.self_attn.q_proj.weight`, ..., `model.norm.weight`, `lm_head.weight`), so state dicts map one to one.
Qwen2 is Llama with biases on q/k/v; `attention_bias` is the only switch between the two.

Deviations and choices:
1. RoPE rotates the two halves of each head (HF's "rotate_half" layout), not RoFormer's interleaved pairs: the pairs
   are (i, i + D/2). Checkpoints are trained in this layout, so the weights match only with it.
2. Position ids default to the number of real tokens before each token, so left padding does not shift positions (as
   HF's `generate` does); HF's bare forward counts 0..L-1 unless it is given position_ids.
3. A padding query attends to itself only, so no softmax row is empty (its output is never used).
4. Rotary frequencies are recomputed in float32 on each call rather than stored, so casting the model to bfloat16 does
   not round them and the state dict holds weights only.
5. The KV cache has one fill position shared by all rows: prompts are left-padded, so the rows stay aligned, and a
   per-slot mask marks which slots hold real tokens.
6. `gradient_checkpointing = True` (training, no cache) keeps only each block's input and recomputes the block in the
   backward pass (Chen et al. 2016, "Training deep nets with sublinear memory cost"): same gradients, less memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from rl.errors import UserError


@dataclass(frozen=True)
class Llama3RopeScaling:
    """Llama 3.1's rotary stretch: long wavelengths slow down by `factor`, short ones stay, the middle band blends."""

    factor: float
    """How much the long wavelengths are stretched."""
    low_freq_factor: float
    """Wavelengths above original_max_position_embeddings / low_freq_factor are stretched fully."""
    high_freq_factor: float
    """Wavelengths below original_max_position_embeddings / high_freq_factor are left alone."""
    original_max_position_embeddings: int
    """Context length the model was pretrained with before the stretch."""


@dataclass(frozen=True)
class ModelConfig:
    """Shape of a Llama / Qwen2 transformer; the defaults are the `tiny` preset."""

    vocab_size: int = 256
    """Number of token ids (rows of the embedding and of the output layer)."""
    hidden_size: int = 64
    """Width E of the residual stream."""
    intermediate_size: int = 176
    """Width of the SwiGLU MLP's hidden layer."""
    num_hidden_layers: int = 2
    """Number of transformer blocks."""
    num_attention_heads: int = 4
    """Query heads H per block."""
    num_key_value_heads: int = 2
    """Key/value heads per block (grouped-query attention); divides num_attention_heads."""
    head_dim: int = 16
    """Width D of one attention head (usually hidden_size / num_attention_heads)."""
    rope_theta: float = 10_000.0
    """Base of the rotary position frequencies."""
    rope_scaling: Llama3RopeScaling | None = None
    """Llama 3.1 stretch of the rotary frequencies, or None for plain RoPE."""
    rms_norm_eps: float = 1e-6
    """Epsilon inside RMSNorm's square root."""
    max_position_embeddings: int = 2048
    """Longest sequence the model is meant for (recorded in config.json; nothing is preallocated for it)."""
    tie_word_embeddings: bool = True
    """Share one matrix between the input embedding and the output layer."""
    attention_bias: bool = False
    """Biases on the q/k/v projections: True is the Qwen2 layout, False the Llama one."""
    bos_token_id: int | None = None
    """Token id that starts a document, if the tokenizer has one."""
    eos_token_ids: tuple[int, ...] = ()
    """Token ids that end a completion; the natural stop ids for sampling."""

    def __post_init__(self) -> None:
        if min(self.vocab_size, self.hidden_size, self.intermediate_size, self.num_hidden_layers, self.head_dim) < 1:
            raise ValueError("vocab_size, hidden_size, intermediate_size, num_hidden_layers and head_dim must be >= 1")
        if self.num_key_value_heads < 1 or self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_key_value_heads={self.num_key_value_heads} must divide "
                f"num_attention_heads={self.num_attention_heads}"
            )
        if self.head_dim % 2:
            raise ValueError(f"head_dim={self.head_dim} must be even for rotary embeddings")

    @property
    def model_type(self) -> str:
        """Hugging Face family name: Qwen2 is the Llama block with q/k/v biases."""
        return "qwen2" if self.attention_bias else "llama"


PRESETS: dict[str, ModelConfig] = {
    "tiny": ModelConfig(),  # ~0.1M parameters: unit tests
    "small": ModelConfig(  # ~5M parameters: CPU experiments
        vocab_size=8192, hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=8,
        num_key_value_heads=4, head_dim=32,
    ),
    "100m": ModelConfig(  # ~100M parameters: GPU experiments
        vocab_size=32_000, hidden_size=768, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=12,
        num_key_value_heads=4, head_dim=64, max_position_embeddings=4096,
    ),
}  # fmt: skip


def preset(name: str, **overrides: object) -> ModelConfig:
    """A named configuration, with fields overridden (vocab_size to match a tokenizer, say)."""
    if name not in PRESETS:
        raise UserError(f"unknown model preset {name!r}; pick one of {', '.join(PRESETS)}.")
    return replace(PRESETS[name], **overrides)


@dataclass
class KVCache:
    """Keys and values of every layer for the tokens seen so far, in `max_length` preallocated slots.

    Slots fill left to right, the same number in every row; `mask` marks the slots that hold real tokens (False under
    left padding and for the tokens fed to rows that have finished). `Transformer.forward` writes into it in place.
    """

    keys: list[Tensor]  # per layer (B, H_kv, L_max, D)
    values: list[Tensor]  # per layer (B, H_kv, L_max, D)
    mask: Tensor  # (B, L_max) bool
    positions: Tensor  # (B,) long: real tokens per row so far, the position id of the next one
    length: int = 0  # slots filled so far, the same in every row

    @classmethod
    def allocate(
        cls, cfg: ModelConfig, batch_size: int, max_length: int, device: torch.device | str, dtype: torch.dtype
    ) -> KVCache:
        shape = (batch_size, cfg.num_key_value_heads, max_length, cfg.head_dim)
        return cls(
            keys=[torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.num_hidden_layers)],
            values=[torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.num_hidden_layers)],
            mask=torch.zeros(batch_size, max_length, device=device, dtype=torch.bool),
            positions=torch.zeros(batch_size, device=device, dtype=torch.long),
        )

    def write(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Stores the new keys/values (B, H_kv, L, D) after the filled slots; returns all of them (B, H_kv, L', D)."""
        end = self.length + k.shape[2]
        self.keys[layer][:, :, self.length : end] = k
        self.values[layer][:, :, self.length : end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]


def rotary_inv_freq(cfg: ModelConfig, device: torch.device) -> Tensor:
    """theta^(-2i/D) for i < D/2 (float32), stretched as Llama 3.1 does when `rope_scaling` is set."""
    inv_freq = cfg.rope_theta ** -(torch.arange(0, cfg.head_dim, 2, device=device, dtype=torch.float32) / cfg.head_dim)
    s = cfg.rope_scaling
    if s is None:
        return inv_freq
    wavelength = 2 * math.pi / inv_freq
    # 0 for long wavelengths (stretch fully), 1 for short ones (keep), linear in context/wavelength in between
    keep = (s.original_max_position_embeddings / wavelength - s.low_freq_factor) / (
        s.high_freq_factor - s.low_freq_factor
    )
    keep = keep.clamp(0.0, 1.0)
    return (1 - keep) * inv_freq / s.factor + keep * inv_freq


def rotary_cos_sin(position_ids: Tensor, cfg: ModelConfig, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """cos and sin of position * frequency, each (B, L, D), the D/2 frequencies repeated for the two halves."""
    angles = position_ids[..., None].float() * rotary_inv_freq(cfg, position_ids.device)  # (B, L, D/2)
    angles = torch.cat([angles, angles], dim=-1)  # (B, L, D)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotates each pair (x_i, x_{i+D/2}) of x (B, H, L, D) by its angle: x cos + rotate_half(x) sin."""
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos[:, None] + torch.cat([-x2, x1], dim=-1) * sin[:, None]


def attention_mask_4d(key_mask: Tensor, num_queries: int) -> Tensor:
    """(B, 1, L, L') bool: query i (the last L of L' slots) sees key j if j <= i and j is real; always itself."""
    num_keys = key_mask.shape[1]
    query_slots = torch.arange(num_keys - num_queries, num_keys, device=key_mask.device)[:, None]  # (L, 1)
    key_slots = torch.arange(num_keys, device=key_mask.device)[None, :]  # (1, L')
    allowed = (key_slots <= query_slots) & key_mask[:, None, :]  # (B, L, L')
    return (allowed | (key_slots == query_slots))[:, None]


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:  # (..., E)
        normed = x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + self.eps)  # in float32 for bf16
        return self.weight * normed.to(x.dtype)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        heads, kv_heads, d = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        self.q_proj = nn.Linear(cfg.hidden_size, heads * d, bias=cfg.attention_bias)
        self.k_proj = nn.Linear(cfg.hidden_size, kv_heads * d, bias=cfg.attention_bias)
        self.v_proj = nn.Linear(cfg.hidden_size, kv_heads * d, bias=cfg.attention_bias)
        self.o_proj = nn.Linear(heads * d, cfg.hidden_size, bias=False)

    def forward(
        self, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor | None, cache: KVCache | None, layer: int
    ) -> Tensor:
        B, L, _ = x.shape
        H, H_kv, D = self.cfg.num_attention_heads, self.cfg.num_key_value_heads, self.cfg.head_dim
        q = self.q_proj(x).view(B, L, H, D).transpose(1, 2)  # (B, H, L, D)
        k = self.k_proj(x).view(B, L, H_kv, D).transpose(1, 2)  # (B, H_kv, L, D)
        v = self.v_proj(x).view(B, L, H_kv, D).transpose(1, 2)  # (B, H_kv, L, D)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if cache is not None:
            k, v = cache.write(layer, k, v)  # (B, H_kv, L', D) with the earlier tokens
        if H_kv < H:  # query head h uses key/value head h // (H / H_kv)
            k, v = k.repeat_interleave(H // H_kv, dim=1), v.repeat_interleave(H // H_kv, dim=1)  # (B, H, L', D)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None)  # (B, H, L, D)
        return self.o_proj(out.transpose(1, 2).reshape(B, L, H * D))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x: Tensor) -> Tensor:  # (B, L, E)
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MLP(cfg)

    def forward(
        self, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor | None, cache: KVCache | None, layer: int
    ) -> Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, cache, layer)
        return x + self.mlp(self.post_attention_layernorm(x))


class Transformer(nn.Module):
    """The causal language model: token ids (B, L) -> next-token logits (B, L, V)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.model = nn.ModuleDict(
            {
                "embed_tokens": nn.Embedding(cfg.vocab_size, cfg.hidden_size),
                "layers": nn.ModuleList([Block(cfg) for _ in range(cfg.num_hidden_layers)]),
                "norm": RMSNorm(cfg.hidden_size, cfg.rms_norm_eps),
            }
        )
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.gradient_checkpointing = False  # recompute each block in backward (deviation 6)
        self.apply(init_weights)
        self.tie_weights()

    def tie_weights(self) -> None:
        """Makes lm_head use the embedding matrix when the config ties them (again after loading with assign)."""
        if self.cfg.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def hidden_states(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        position_ids: Tensor | None = None,
        kv_cache: KVCache | None = None,
    ) -> Tensor:
        """Final-norm hidden states (B, L, E); apply `lm_head` to the positions whose logits you need.

        attention_mask (B, L) marks real tokens (1) and padding (0) among the new tokens; position_ids (B, L) default
        to the count of real tokens before each one. With `kv_cache` the tokens continue what it holds, and it is
        updated in place.
        """
        B, L = input_ids.shape
        real = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
        seen = torch.zeros(B, 1, dtype=torch.long, device=input_ids.device)  # real tokens before this call
        mask = None if attention_mask is None and kv_cache is None else attention_mask_4d(real, L)  # None: causal
        if kv_cache is not None:
            end = kv_cache.length + L
            if end > kv_cache.mask.shape[1]:
                raise ValueError(f"KV cache holds {kv_cache.mask.shape[1]} slots; {end} were asked for")
            kv_cache.mask[:, kv_cache.length : end] = real
            seen = kv_cache.positions[:, None]
            mask = attention_mask_4d(kv_cache.mask[:, :end], L)  # (B, 1, L, L')
        if position_ids is None:
            position_ids = (seen + real.cumsum(-1) - 1).clamp(min=0)  # (B, L)
        x = self.model["embed_tokens"](input_ids)  # (B, L, E)
        cos, sin = rotary_cos_sin(position_ids, self.cfg, x.dtype)  # (B, L, D)
        recompute = self.gradient_checkpointing and kv_cache is None and torch.is_grad_enabled()
        for i, block in enumerate(self.model["layers"]):
            if recompute:
                x = checkpoint(block, x, cos, sin, mask, None, i, use_reentrant=False)
            else:
                x = block(x, cos, sin, mask, kv_cache, i)
        if kv_cache is not None:
            kv_cache.length += L
            kv_cache.positions += real.sum(-1)
        return self.model["norm"](x)

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        position_ids: Tensor | None = None,
        kv_cache: KVCache | None = None,
    ) -> Tensor:
        """Logits (B, L, V) of the next token at every position; see `hidden_states` for the arguments."""
        return self.lm_head(self.hidden_states(input_ids, attention_mask, position_ids, kv_cache))

    @property
    def device(self) -> torch.device:
        return self.lm_head.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.lm_head.weight.dtype


def init_weights(module: nn.Module) -> None:
    """GPT-2 / Llama initialisation for training from scratch: N(0, 0.02) weights, zero biases, unit norms."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)


def num_parameters(model: nn.Module) -> int:
    """Distinct parameters (a tied matrix counts once)."""
    return sum(p.numel() for p in model.parameters())
