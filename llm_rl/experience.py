"""What one RL iteration trains on: k sampled responses per problem, their rewards, and pi_theta_i's log-probs.

Two ways to get them (`llm_rl.rl_trainer` picks one):
    collect          k whole responses to each sampled problem, generated in one go (at most max_new_tokens each).
    collect_partial  partial rollouts (Kimi k1.5, section 2.6.2, `llm_rl.partial_rollouts`): every unfinished
                     response gets one segment of at most segment_tokens; a group of k responses is trained on in
                     the iteration its last response finishes, and waits in `UnfinishedGroups` until then.

The reward of a response is 1 if the verifier accepts its final answer, else 0, plus `length_weight` times Kimi's
length reward of its group (section 2.3.3, `llm_rl.rewards.kimi_length_reward`), plus, for partial rollouts, the
repetition penalty of a response stopped for looping.

Choices:
1. pi_theta_i's log-probabilities are recomputed with one forward pass after sampling (the sampler's cached ones
   differ by float error), so the log-ratio is exactly 0 at the first gradient step.
2. With partial rollouts `completion_mask` holds the tokens the loss counts (only the finishing segment when earlier
   segments are excluded); `lengths` always counts every token of the response.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from llm_rl.evaluate import TextCodec
from llm_rl.model import Transformer
from llm_rl.partial_rollouts import (
    PartialRolloutConfig,
    RolloutGroup,
    UnfinishedGroups,
    advance_groups,
    new_rollouts,
    repetition_penalties,
    rollout_batch,
)
from llm_rl.rewards import kimi_length_reward
from llm_rl.sampling import SamplingConfig, generate, left_pad, sequence_log_probs
from llm_rl.tasks import Problem

Check = Callable[[Problem, str], bool]
"""check(problem, response_text) -> whether the response's final answer is right."""


@dataclass(frozen=True)
class Experience:
    """One iteration's sampled responses and what the objectives need; rows are problem-major (B = P * G)."""

    input_ids: Tensor  # (B, L) left-padded prompt, then the response right-padded
    attention_mask: Tensor  # (B, L) bool, real tokens
    completion_mask: Tensor  # (B, L) bool, response tokens the loss counts (the stop token included)
    rewards: Tensor  # (P, G) float, correctness plus the weighted length reward (and repetition penalty)
    correct: Tensor  # (P, G) bool
    old_log_probs: Tensor  # (B, L) log pi_theta_i at the counted response tokens, 0 elsewhere
    ref_log_probs: Tensor | None  # (B, L) log pi of the initial model (GRPO's KL), or None
    texts: list[str]  # (B,) decoded responses
    length_rewards: Tensor  # (P, G) Kimi's length reward before weighting
    lengths: Tensor  # (B,) response lengths in tokens (every segment)
    finish_reasons: list[str]  # (B,) "stop", "length" or "repetition"
    generated_tokens: int  # tokens sampled in this iteration (for the throughput)


def shaped_rewards(correct: Tensor, lengths: Tensor, weight: float) -> tuple[Tensor, Tensor]:
    """(correctness + weight * Kimi length reward, the length reward) from (P, G) correct flags and lengths."""
    length_rewards = torch.tensor(
        [kimi_length_reward(row_lengths, row_correct) for row_lengths, row_correct in
         zip(lengths.tolist(), correct.tolist(), strict=True)], dtype=torch.float32,
    )  # fmt: skip
    return correct.float() + weight * length_rewards, length_rewards


@dataclass(frozen=True)
class Responses:
    """Sampled responses before scoring: left-padded prompts, right-padded responses."""

    prompt_ids: Tensor  # (B, P) long
    prompt_mask: Tensor  # (B, P) bool
    token_ids: Tensor  # (B, L) long
    mask: Tensor  # (B, L) bool, every response token
    loss_mask: Tensor  # (B, L) bool, the response tokens the loss counts
    finish_reasons: list[str]  # (B,)


def scored(model: Transformer, reference: Transformer | None, responses: Responses, problems: list[Problem],
           codec: TextCodec, check: Check, extra_rewards: Tensor, length_weight: float,
           generated_tokens: int) -> Experience:  # fmt: skip
    """Decodes and scores the responses to `problems` (P,), k each, and records pi_theta_i's log-probs."""
    texts = [codec.decode([t for t, m in zip(ids, mask, strict=True) if m]) for ids, mask in
             zip(responses.token_ids.tolist(), responses.mask.tolist(), strict=True)]  # fmt: skip
    k = len(texts) // len(problems)
    rows = [problem for problem in problems for _ in range(k)]  # (B,) problem-major
    correct = torch.tensor([check(p, text) for p, text in zip(rows, texts, strict=True)]).reshape(-1, k)  # (P, G)
    lengths = responses.mask.sum(1).cpu()  # (B,)
    rewards, length_rewards = shaped_rewards(correct, lengths.reshape(-1, k), length_weight)
    rewards = rewards + extra_rewards.reshape(-1, k)
    input_ids = torch.cat([responses.prompt_ids, responses.token_ids], dim=1)  # (B, L)
    attention_mask = torch.cat([responses.prompt_mask, responses.mask], dim=1)
    completion_mask = torch.cat([torch.zeros_like(responses.prompt_mask), responses.loss_mask], dim=1)
    old_log_probs = sequence_log_probs(model, input_ids, attention_mask, completion_mask)
    ref_log_probs = None
    if reference is not None:
        ref_log_probs = sequence_log_probs(reference, input_ids, attention_mask, completion_mask)
    return Experience(input_ids, attention_mask, completion_mask, rewards.to(model.device), correct, old_log_probs,
                      ref_log_probs, texts, length_rewards, lengths, responses.finish_reasons,
                      generated_tokens)  # fmt: skip


@torch.no_grad()
def collect(model: Transformer, reference: Transformer | None, problems: list[Problem], codec: TextCodec,
            check: Check, k: int, sampling: SamplingConfig, length_weight: float,
            generator: torch.Generator) -> Experience:  # fmt: skip
    """Samples k whole responses per problem from the current policy and scores them."""
    rows = [problem for problem in problems for _ in range(k)]  # (B,) problem-major
    prompt_ids, prompt_mask = left_pad([codec.prompt_ids(p) for p in rows], codec.pad_id, model.device)
    out = generate(model, prompt_ids, prompt_mask, sampling, generator, codec.pad_id)
    responses = Responses(prompt_ids, prompt_mask, out.token_ids, out.mask, out.mask, out.finish_reasons)
    no_penalty = torch.zeros(len(rows))
    return scored(model, reference, responses, problems, codec, check, no_penalty, length_weight, int(out.mask.sum()))


def start_groups(
    indices: np.ndarray, pool: list[Problem], codec: TextCodec, k: int, generator: torch.Generator
) -> list[RolloutGroup]:
    """Empty groups of k responses to each sampled problem of the pool, every response with its own generator."""
    rows = [pool[i] for i in indices for _ in range(k)]
    rollouts = new_rollouts([codec.prompt_ids(p) for p in rows], generator, rows)
    return [RolloutGroup(int(i), rollouts[j * k : (j + 1) * k]) for j, i in enumerate(indices)]


@torch.no_grad()
def collect_partial(model: Transformer, reference: Transformer | None, unfinished: UnfinishedGroups,
                    new_groups: list[RolloutGroup], codec: TextCodec, check: Check, sampling: SamplingConfig,
                    partial: PartialRolloutConfig, length_weight: float,
                    iteration: int) -> tuple[Experience | None, list[int]]:  # fmt: skip
    """One segment for every unfinished response of the waiting and the new groups; the Experience of the groups that
    finished (None if none did) and their pool indices."""
    active = [r for g in unfinished.groups + new_groups for r in g.rollouts if not r.finished]
    before = sum(len(r.token_ids) for r in active)
    finished = advance_groups(model, unfinished, new_groups, sampling, partial, iteration, codec.pad_id)
    generated = sum(len(r.token_ids) for r in active) - before
    if not finished:
        return None, []
    rollouts = [r for g in finished for r in g.rollouts]  # (B,) problem-major
    batch = rollout_batch(rollouts, partial, codec.pad_id, model.device)
    completions = batch.completions
    responses = Responses(batch.prompt_ids, batch.prompt_mask, completions.token_ids, completions.mask,
                          batch.loss_mask, completions.finish_reasons)  # fmt: skip
    problems = [g.rollouts[0].problem for g in finished]
    penalties = torch.tensor(repetition_penalties(rollouts, partial))
    exp = scored(model, reference, responses, problems, codec, check, penalties, length_weight, generated)
    return exp, [g.index for g in finished]
