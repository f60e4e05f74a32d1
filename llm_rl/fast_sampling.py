"""Rollouts at GPU speed: a static per-row KV cache, a decode step captured as a CUDA graph, continuous refilling.

The same distributions as `sampling.generate` (temperature, top-k, top-p; log q and log pi recorded per token), with
the batch kept full: B rows decode together, and as soon as a row finishes (stop token or max_new_tokens) the next
waiting prompt is prefilled into it, so a batch never waits for its longest completion (the "continuous batching"
of Yu et al. 2022, "Orca", section 4.1, at the granularity of one decode step).

    cache row b: slots 0..S-1 (S = longest prompt + max_new_tokens), its own fill index f_b and position p_b;
    decode step: x_b = embed(token_b) at position p_b;  each layer writes k, v into slot f_b of row b and attends over
                 the row's filled slots;  f_b += 1, p_b += 1;  logits (B, V) in float32

Each step has the same shapes and writes in place, so on CUDA it is captured once with `torch.cuda.CUDAGraph` and
replayed: one launch per step instead of one per kernel (the CPU-side launch cost dominates a small model's decoding).

Choices:
1. A prompt's last token is fed by the first decode step rather than by the prefill, so every sampled token comes from
   the one decode path (the prefill writes prompt[:-1]); prefill runs eagerly with `Transformer.hidden_states`.
2. The decode step re-states model.py's attention on the static cache (per-row write index instead of one shared fill
   position); `tests/llm_rl/test_fast_sampling.py` checks it against `sampling.generate`.
3. With one generator per prompt, each prompt draws one uniform per generated token from its own generator, as
   `sampling.generate` does with per-row generators, so both samplers draw the same tokens whatever the schedule.
   With a single generator, the draws depend on which prompts share a step.
4. The host reads the finished flags after every step (one synchronisation) to refill rows; between refills nothing
   else leaves the device.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from llm_rl.model import KVCache, Transformer, apply_rotary, rotary_cos_sin
from llm_rl.sampling import Completions, SamplingConfig, draw_tokens, sampling_log_probs


@dataclass
class StaticCache:
    """Keys and values of B rows in S preallocated slots each, filled independently (one prompt per row at a time)."""

    keys: list[Tensor]  # per layer (B, H_kv, S, D)
    values: list[Tensor]  # per layer (B, H_kv, S, D)
    mask: Tensor  # (B, S) bool: slots that hold real tokens
    fill: Tensor  # (B,) long: the slot the next token goes into
    positions: Tensor  # (B,) long: the position id of the next token

    @classmethod
    def allocate(cls, model: Transformer, batch_size: int, slots: int) -> StaticCache:
        cfg, device = model.cfg, model.device
        shape = (batch_size, cfg.num_key_value_heads, slots, cfg.head_dim)
        zeros = lambda: torch.zeros(shape, device=device, dtype=model.dtype)  # noqa: E731
        long = lambda: torch.zeros(batch_size, device=device, dtype=torch.long)  # noqa: E731
        layers = range(cfg.num_hidden_layers)
        mask = torch.zeros(batch_size, slots, device=device, dtype=torch.bool)
        return cls([zeros() for _ in layers], [zeros() for _ in layers], mask, long(), long())


def decode_step(model: Transformer, tokens: Tensor, cache: StaticCache) -> Tensor:
    """Feeds one token per row (B,) at each row's fill slot; returns next-token logits (B, V) in float32."""
    cfg, B = model.cfg, tokens.shape[0]
    H, H_kv, D = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    rows = torch.arange(B, device=tokens.device)
    cache.mask[rows, cache.fill] = True
    attention_mask = cache.mask[:, None, None, :]  # (B, 1, 1, S): the row's real slots, this token included
    x = model.model["embed_tokens"](tokens[:, None])  # (B, 1, E)
    cos, sin = rotary_cos_sin(cache.positions[:, None], cfg, x.dtype)  # (B, 1, D)
    for i, block in enumerate(model.model["layers"]):
        attn, n = block.self_attn, block.input_layernorm(x)
        q = apply_rotary(attn.q_proj(n).view(B, 1, H, D).transpose(1, 2), cos, sin)  # (B, H, 1, D)
        k = apply_rotary(attn.k_proj(n).view(B, 1, H_kv, D).transpose(1, 2), cos, sin)  # (B, H_kv, 1, D)
        v = attn.v_proj(n).view(B, 1, H_kv, D).transpose(1, 2)
        cache.keys[i][rows, :, cache.fill] = k[:, :, 0]
        cache.values[i][rows, :, cache.fill] = v[:, :, 0]
        keys, values = cache.keys[i], cache.values[i]  # (B, H_kv, S, D)
        if H_kv < H:
            keys, values = keys.repeat_interleave(H // H_kv, dim=1), values.repeat_interleave(H // H_kv, dim=1)
        out = F.scaled_dot_product_attention(q, keys, values, attn_mask=attention_mask)  # (B, H, 1, D)
        x = x + attn.o_proj(out.transpose(1, 2).reshape(B, 1, H * D))
        x = x + block.mlp(block.post_attention_layernorm(x))
    cache.fill += 1
    cache.positions += 1
    return model.lm_head(model.model["norm"](x))[:, 0].float()


def prefill(model: Transformer, cache: StaticCache, rows: list[int], prefixes: list[list[int]]) -> None:
    """Empties `rows` and writes each prefix (a prompt without its last token, maybe empty) into its row's slots."""
    index = torch.tensor(rows, device=cache.mask.device)
    cache.mask[index] = False
    length = max(len(p) for p in prefixes)
    cache.fill[index], cache.positions[index] = length, torch.tensor([len(p) for p in prefixes], device=index.device)
    if length == 0:
        return
    ids = torch.zeros(len(rows), length, dtype=torch.long)
    real = torch.zeros(len(rows), length, dtype=torch.bool)
    for i, prefix in enumerate(prefixes):  # left-padded, so the prefix ends right before the fill slot
        ids[i, length - len(prefix) :], real[i, length - len(prefix) :] = torch.tensor(prefix, dtype=torch.long), True
    staging = KVCache.allocate(model.cfg, len(rows), length, model.device, model.dtype)
    model.hidden_states(ids.to(model.device), real.to(model.device), kv_cache=staging)
    cache.mask[index, :length] = staging.mask
    for layer in range(model.cfg.num_hidden_layers):
        cache.keys[layer][index, :, :length] = staging.keys[layer]
        cache.values[layer][index, :, :length] = staging.values[layer]


def graph_captured(step: Callable[[], Tensor]) -> Callable[[], Tensor]:
    """`step` (reading and writing only static tensors) captured as a CUDA graph; calling the result replays it."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm-up outside the graph: lazy initialisation, allocator pools
        for _ in range(2):
            step()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        logits = step()

    def replay() -> Tensor:
        graph.replay()
        return logits

    return replay


def next_tokens(logits: Tensor, cfg: SamplingConfig, generators: Sequence[torch.Generator]) -> tuple[Tensor, Tensor]:
    """(tokens (B,), log q of each (B,)) from logits (B, V): argmax at temperature 0, else the CDF draw."""
    if cfg.temperature == 0:
        return logits.argmax(-1), torch.zeros(logits.shape[0], device=logits.device)
    log_q = sampling_log_probs(logits, cfg.temperature, cfg.top_k, cfg.top_p)
    tokens = draw_tokens(log_q, generators)
    return tokens, log_q.gather(-1, tokens[:, None]).squeeze(-1)


@torch.no_grad()
def generate_continuous(
    model: Transformer,
    prompts: list[list[int]],
    cfg: SamplingConfig,
    generator: torch.Generator | Sequence[torch.Generator],
    batch_size: int = 64,
    pad_token_id: int = 0,
    cuda_graph: bool = True,
) -> Completions:
    """One completion per prompt (in prompt order, right-padded), decoding `batch_size` rows at a time with refills.

    `generator` is a CPU generator, or one per prompt (choice 3). `cuda_graph` replays a captured decode step on CUDA
    (ignored on the CPU).
    """
    if not prompts or min(len(p) for p in prompts) < 1:
        raise ValueError("every prompt needs at least one token")
    per_prompt = not isinstance(generator, torch.Generator)
    if per_prompt and len(generator) != len(prompts):
        raise ValueError(f"{len(generator)} per-prompt generators for {len(prompts)} prompts")
    B = min(batch_size, len(prompts))
    cache = StaticCache.allocate(model, B, max(len(p) for p in prompts) - 1 + cfg.max_new_tokens)
    tokens = torch.zeros(B, dtype=torch.long, device=model.device)  # static input of the decode step
    step = lambda: decode_step(model, tokens, cache)  # noqa: E731
    if cuda_graph and model.device.type == "cuda":
        step = graph_captured(step)
        cache.mask.zero_(), cache.fill.zero_(), cache.positions.zero_()  # undo the warm-up steps
    stop_ids = set(cfg.stop_token_ids)
    outputs: list[list[tuple[int, float, float]]] = [[] for _ in prompts]  # per prompt: (token, log q, log pi)
    stopped = [False] * len(prompts)
    row_prompt: list[int | None] = [None] * B
    waiting = iter(range(len(prompts)))

    def admit(rows: list[int]) -> None:
        """Gives each row the next waiting prompt (or leaves it idle and empty) and prefills it."""
        for row in rows:
            row_prompt[row] = next(waiting, None)
        prefill(model, cache, rows, [prompts[p][:-1] if p is not None else [] for p in (row_prompt[r] for r in rows)])
        last = [prompts[p][-1] if p is not None else pad_token_id for p in (row_prompt[r] for r in rows)]
        tokens[torch.tensor(rows, device=tokens.device)] = torch.tensor(last, device=tokens.device)

    admit(list(range(B)))
    idle = torch.Generator()
    while any(p is not None for p in row_prompt):
        logits = step()  # (B, V) float32
        row_generators = [generator[p] if per_prompt and p is not None else idle for p in row_prompt]
        sampled, log_q = next_tokens(logits, cfg, generator if not per_prompt else row_generators)
        log_pi = logits.log_softmax(-1).gather(-1, sampled[:, None]).squeeze(-1)
        tokens.copy_(sampled)
        finished = []
        for row, (token, lq, lp) in enumerate(zip(sampled.tolist(), log_q.tolist(), log_pi.tolist(), strict=True)):
            p = row_prompt[row]
            if p is None:
                continue
            outputs[p].append((token, lq, lp))
            stopped[p] = token in stop_ids
            if stopped[p] or len(outputs[p]) == cfg.max_new_tokens:
                finished.append(row)
        if finished:
            admit(finished)
    return completions(outputs, stopped, pad_token_id, model.device)


def completions(outputs: list[list[tuple[int, float, float]]], stopped: list[bool], pad_token_id: int,
                device: torch.device) -> Completions:  # fmt: skip
    """Per-prompt (token, log q, log pi) lists, right-padded into a `Completions` on `device`."""
    L = max(len(out) for out in outputs)
    token_ids = torch.full((len(outputs), L), pad_token_id, dtype=torch.long)
    mask = torch.zeros(len(outputs), L, dtype=torch.bool)
    log_q, log_pi = torch.zeros(len(outputs), L), torch.zeros(len(outputs), L)
    for i, out in enumerate(outputs):
        ids, qs, pis = zip(*out, strict=True)
        token_ids[i, : len(out)], mask[i, : len(out)] = torch.tensor(ids), True
        log_q[i, : len(out)], log_pi[i, : len(out)] = torch.tensor(qs), torch.tensor(pis)
    token_ids, mask, log_q, log_pi = (x.to(device) for x in (token_ids, mask, log_q, log_pi))
    return Completions(token_ids, mask, log_q, log_pi, ["stop" if s else "length" for s in stopped])
