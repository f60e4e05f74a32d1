"""Batched autoregressive sampling with a KV cache, and the log-probabilities of given completions.

Generation (Holtzman et al. 2020 for top-p): the prompt batch (B, P), left-padded so every row's last prompt token sits
in the last column, is run through the model once (the prefill, filling the KV cache); then each step turns the
logits of the last position into a distribution, draws one token per row, and feeds it back as a single new column.

    q(y_t | x, y_<t) = softmax(z_t / temperature), cut to the top_k largest, then to the smallest set of mass >= top_p,
    renormalised;   pi(y_t | x, y_<t) = softmax(z_t)   (the raw policy, what RL differentiates)

A row ends at a stop token (kept in the completion, so the policy learns to stop; reason "stop") or after
max_new_tokens tokens (reason "length"). `Completions` carries both log q (the distribution sampled from) and log pi.

Choices:
1. Tokens are drawn by inverting the CDF with one uniform per row from an explicit CPU `torch.Generator`, so a seed
   gives the same uniforms on CPU and CUDA, and the code path is the same on both. A list of generators, one per
   row, makes each row's draws independent of the rest of the batch (partial rollouts continue a row later, in
   another batch, and must draw what it would have drawn uninterrupted).
2. temperature 0 is greedy decoding: the sampling distribution is a point mass, so its log-prob is 0.
3. The sampled log-probs come from the incremental (cached) forward pass; they equal `sequence_log_probs` up to
   floating-point error (about 1e-6 in float32, more in bfloat16), so an RL trainer should recompute old log-probs
   when it needs them exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from llm_rl.model import KVCache, Transformer
from rl.errors import UserError


@dataclass(frozen=True)
class SamplingConfig:
    """How completions are sampled."""

    max_new_tokens: int = 256
    """Most tokens generated per completion."""
    temperature: float = 1.0
    """Divides the logits; 0 is greedy decoding."""
    top_k: int = 0
    """Sample among the k most likely tokens only; 0 keeps all."""
    top_p: float = 1.0
    """Sample among the smallest set of most likely tokens whose probability reaches top_p; 1 keeps all."""
    stop_token_ids: tuple[int, ...] = ()
    """Token ids that end a completion (usually the model's eos ids); the stop token is kept in the completion."""

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens={self.max_new_tokens} must be >= 1")
        if self.temperature < 0:
            raise ValueError(f"temperature={self.temperature} must be >= 0")
        if self.top_k < 0:
            raise ValueError(f"top_k={self.top_k} must be >= 0")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p={self.top_p} must be in (0, 1]")


def check_context(model: Transformer, longest_prompt: int, max_new_tokens: int, origin: str = "") -> None:
    """A UserError unless the longest prompt and max_new_tokens more fit the model's context (its
    max_position_embeddings): positions beyond it are ones the model was never trained on (GPT-2's position table
    ends there), and the KV cache `generate` allocates for a huge max_new_tokens alone exhausts memory. `origin` names
    the longest prompt's row in a data file ("data.jsonl line 3")."""
    limit = model.cfg.max_position_embeddings
    if longest_prompt + max_new_tokens <= limit:
        return
    room = limit - longest_prompt
    shorter = f"shorten or drop {origin}" if origin else "use shorter problems"
    fix = f"set max_new_tokens to {room} or less" if room >= 1 else f"{shorter} or use a longer-context model"
    raise UserError(
        f"max_new_tokens {max_new_tokens} plus the longest prompt ({longest_prompt} tokens{', ' if origin else ''}"
        f"{origin}) exceeds the model's context of {limit} tokens (max_position_embeddings); {fix}."
    )


@dataclass
class Completions:
    """Sampled completions of a batch of prompts, right-padded to the longest."""

    token_ids: Tensor  # (B, L) long; pad_token_id after a row has ended
    mask: Tensor  # (B, L) bool; True for generated tokens, the stop token included
    log_probs: Tensor  # (B, L) float32; log q of each token under the distribution sampled from; 0 where mask is False
    policy_log_probs: Tensor  # (B, L) float32; log pi of each token under the raw model (temperature 1, nothing cut)
    finish_reasons: list[str]  # per row: "stop" or "length"


def sampling_log_probs(logits: Tensor, temperature: float, top_k: int, top_p: float) -> Tensor:
    """log q (B, V) of the distribution sampled from: temperature, then top-k, then top-p; -inf outside the kept set.

    temperature must be > 0. Ties at the k-th largest logit are all kept.
    """
    scaled = logits.float() / temperature  # (B, V)
    if 0 < top_k < scaled.shape[-1]:
        kth_largest = scaled.topk(top_k, dim=-1).values[:, -1:]  # (B, 1)
        scaled = scaled.masked_fill(scaled < kth_largest, float("-inf"))
    log_q = scaled.log_softmax(-1)
    if top_p < 1:
        sorted_log_q, order = log_q.sort(-1, descending=True)  # (B, V)
        sorted_q = sorted_log_q.exp()
        mass_before = sorted_q.cumsum(-1) - sorted_q  # probability of the more likely tokens
        drop = torch.zeros_like(mass_before, dtype=torch.bool).scatter(-1, order, mass_before >= top_p)
        log_q = log_q.masked_fill(drop, float("-inf")).log_softmax(-1)
    return log_q


def uniforms(batch_size: int, generator: torch.Generator | Sequence[torch.Generator]) -> Tensor:
    """(B, 1) uniforms in [0, 1) on the CPU: B from one generator, or one from each of B per-row generators."""
    if isinstance(generator, torch.Generator):
        return torch.rand(batch_size, 1, generator=generator)
    if len(generator) != batch_size:
        raise ValueError(f"{len(generator)} per-row generators for a batch of {batch_size} rows")
    return torch.cat([torch.rand(1, 1, generator=row) for row in generator])


def row_generators(generator: torch.Generator, count: int) -> list[torch.Generator]:
    """`count` CPU generators, each seeded by a draw from `generator`: one per row, so a row draws the same tokens
    whichever batch it is sampled in (partial rollouts, and data-parallel ranks that each sample a slice)."""
    seeds = torch.randint(2**62, (count,), generator=generator).tolist()
    return [torch.Generator().manual_seed(seed) for seed in seeds]


def draw_tokens(log_q: Tensor, generator: torch.Generator | Sequence[torch.Generator]) -> Tensor:
    """One token per row (B,) from log q (B, V), by inverting the CDF at a uniform from the CPU `generator`(s)."""
    q = log_q.exp()
    cdf = q.cumsum(-1)  # (B, V)
    u = uniforms(q.shape[0], generator).to(q.device) * cdf[:, -1:]  # (B, 1), in [0, total)
    tokens = torch.searchsorted(cdf, u, right=True).squeeze(-1)  # first token whose cdf exceeds u: never q = 0
    last_possible = (q > 0).cumsum(-1).argmax(-1)  # guards u * total rounding up to total
    return torch.minimum(tokens, last_possible)


def left_pad(prompts: list[list[int]], pad_token_id: int, device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
    """Token id lists -> (ids (B, P), mask (B, P) bool), padded on the left to the longest prompt."""
    if not prompts or min(len(p) for p in prompts) < 1:
        raise ValueError("every prompt needs at least one token")
    length = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), length), pad_token_id, dtype=torch.long)
    mask = torch.zeros(len(prompts), length, dtype=torch.bool)
    for row, prompt in enumerate(prompts):
        ids[row, length - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
        mask[row, length - len(prompt) :] = True
    return ids.to(device), mask.to(device)


@torch.no_grad()
def generate(
    model: Transformer,
    prompt_ids: Tensor,
    prompt_mask: Tensor,
    cfg: SamplingConfig,
    generator: torch.Generator | Sequence[torch.Generator],
    pad_token_id: int = 0,
) -> Completions:
    """Samples one completion per row of the left-padded prompts (B, P) (see `left_pad`); `generator` is on the CPU.

    `generator` may also be a list of B CPU generators, one per row: each row then draws one uniform from its own
    generator at every step (finished rows too, while the batch runs), whatever else is in the batch.

    `pad_token_id` fills rows after they end; make it a real token id if the ids go back into the model (as in
    `sequence_log_probs`, where `Completions.mask` keeps those positions out).
    """
    prompt_mask = prompt_mask.bool()
    if not bool((prompt_mask[:, 1:] >= prompt_mask[:, :-1]).all() and prompt_mask[:, -1].all()):
        raise ValueError("prompts must be left-padded with at least one token each (see llm_rl.sampling.left_pad)")
    B, P = prompt_ids.shape
    cache = KVCache.allocate(model.cfg, B, P + cfg.max_new_tokens, model.device, model.dtype)
    hidden = model.hidden_states(prompt_ids, prompt_mask, kv_cache=cache)[:, -1]  # (B, E)
    stop_ids = torch.tensor(cfg.stop_token_ids, dtype=torch.long, device=model.device)
    finished = torch.zeros(B, dtype=torch.bool, device=model.device)
    stopped = torch.zeros_like(finished)
    steps: list[tuple[Tensor, Tensor, Tensor, Tensor]] = []  # per step: tokens, active, log q, log pi, each (B,)
    for step in range(cfg.max_new_tokens):
        logits = model.lm_head(hidden).float()  # (B, V)
        log_pi = logits.log_softmax(-1)
        if cfg.temperature == 0:
            tokens = logits.argmax(-1)
            log_q = torch.zeros(B, device=model.device)  # a point mass
        else:
            log_q_all = sampling_log_probs(logits, cfg.temperature, cfg.top_k, cfg.top_p)
            tokens = draw_tokens(log_q_all, generator)
            log_q = log_q_all.gather(-1, tokens[:, None]).squeeze(-1)
        active = ~finished
        log_pi = log_pi.gather(-1, tokens[:, None]).squeeze(-1)
        zero = torch.zeros_like(log_q)
        padded = torch.where(active, tokens, pad_token_id)
        steps.append((padded, active, torch.where(active, log_q, zero), torch.where(active, log_pi, zero)))
        stopped |= active & torch.isin(tokens, stop_ids)
        finished |= stopped
        if step == cfg.max_new_tokens - 1 or bool(finished.all()):
            break
        # finished rows go on computing (on a masked token) so the batch stays rectangular
        hidden = model.hidden_states(tokens[:, None], active[:, None], kv_cache=cache)[:, -1]
    tokens, mask, log_q, log_pi = (torch.stack(column, dim=1) for column in zip(*steps, strict=True))  # each (B, L)
    return Completions(tokens, mask, log_q, log_pi, ["stop" if s else "length" for s in stopped.tolist()])


def sequence_log_probs(
    model: Transformer, input_ids: Tensor, attention_mask: Tensor, completion_mask: Tensor, temperature: float = 1.0
) -> Tensor:
    """log pi(token_t | tokens_<t) (B, L) at the completion positions, 0 elsewhere, from one differentiable pass.

    input_ids (B, L) is prompt then completion (e.g. left-padded prompts concatenated with `Completions.token_ids`),
    attention_mask (B, L) marks real tokens and completion_mask (B, L) the tokens to score. Logits are computed only
    from the first completion column on, which saves memory when prompts are long. `temperature` divides the logits
    (1 gives the raw policy, as RL needs).
    """
    completion_mask = completion_mask.bool()
    columns = completion_mask.any(0).nonzero()
    if len(columns) == 0:
        return torch.zeros(input_ids.shape, device=input_ids.device)
    start = int(columns[0])
    if start == 0:
        raise ValueError("a completion cannot start at the first position: nothing precedes it to condition on")
    hidden = model.hidden_states(input_ids, attention_mask)  # (B, L, E)
    logits = model.lm_head(hidden[:, start - 1 : -1]).float() / temperature  # (B, L - start, V): predicts start..L-1
    targets = input_ids[:, start:, None]  # (B, L - start, 1)
    log_probs = logits.gather(-1, targets).squeeze(-1) - logits.logsumexp(-1)  # (B, L - start)
    log_probs = torch.cat([log_probs.new_zeros(input_ids.shape[0], start), log_probs], dim=1)  # (B, L)
    return torch.where(completion_mask, log_probs, torch.zeros_like(log_probs))
