"""Partial rollouts, Kimi k1.5 (Kimi Team 2025), section 2.6.2: long responses generated a segment per iteration.

Each iteration every unfinished response may add at most `segment_tokens` tokens (its per-iteration budget). A
response that is still going when its budget runs out is stored, with its tokens, their log-probs and the iteration
that produced each token, and continued in a later iteration from where it stopped: the prompt and the partial
response are prefilled as one prompt, and sampling goes on. Finished responses (a stop token, the total cap
`max_tokens`, or repetition) go to training. Segments before a response's last one may be left out of the loss:

    loss_mask_t = mask_t and (segment_t == segment of the response's last token)   (exclude_earlier_segments)
    loss_mask_t = mask_t                                                             (otherwise)

Repeat detection (the paper's "repeat detection" stops a response that loops and may penalise it): a response
stops at the first token where its last tokens are one n-gram (n <= max_ngram) repeated at least
max(min_repeats, ceil(min_repeat_tokens / n)) times in a row; it ends with reason "repetition", and
`repetition_penalty` is what the trainer adds to its reward.

The trainer keeps the k responses to one problem together (`RolloutGroup`): the baselines compare the k rewards,
so a group is trained on in the iteration its last response finishes, and until then it waits in `UnfinishedGroups`
(the paper's replay buffer), which is saved with the checkpoint as arrays and JSON.

Choices and deviations:
1. Every rollout owns a CPU `torch.Generator` (seeded from the caller's generator) and draws exactly one uniform per
   token it generates, so a response continued over several iterations, in batches with other rows, gets the same
   tokens as one uninterrupted generation with the same seed (up to floating-point ties: the continued prefix is
   prefilled instead of decoded step by step, which changes logits by about 1e-6).
2. The log-probs kept for earlier segments are those of the policy that sampled them (older weights); the trainer
   should recompute them if it needs the current policy's.
3. "Earlier segments" are those before the segment that finished the response, not those before the current
   iteration: a short response that finished while the rest of its group was still going keeps its tokens in the
   loss (with the paper's rule it would be trained on not at all, a bias towards long responses).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
from torch import Tensor

from llm_rl.model import Transformer
from llm_rl.sampling import Completions, SamplingConfig, generate, left_pad, row_generators
from llm_rl.tasks import Problem

FINISH_REASONS = ("stop", "length", "repetition")


@dataclass(frozen=True)
class PartialRolloutConfig:
    """How responses are split into per-iteration segments and when a repeating one is stopped."""

    segment_tokens: int = 64
    """Tokens an unfinished response may add per iteration (its per-iteration budget)."""
    max_tokens: int = 1024
    """Longest response over all its segments; a response reaching it ends with reason "length"."""
    exclude_earlier_segments: bool = True
    """Count only the tokens generated in the current iteration in the loss."""
    max_ngram: int = 8
    """Longest repeating unit (in tokens) the repeat detection looks for; 0 turns the detection off."""
    min_repeats: int = 4
    """A unit must repeat at least this many times in a row at the end of a response to stop it."""
    min_repeat_tokens: int = 16
    """...and the repeating tail must span at least this many tokens (so "0000" in a number is not a loop)."""
    repetition_penalty: float = -1.0
    """Added to the reward of a response stopped for repeating itself; 0 turns the penalty off."""

    def __post_init__(self) -> None:
        if self.segment_tokens < 1 or self.max_tokens < 1:
            raise ValueError("segment_tokens and max_tokens must be >= 1")
        if self.max_ngram < 0 or self.min_repeats < 2 or self.min_repeat_tokens < 0:
            raise ValueError("max_ngram must be >= 0, min_repeats >= 2 and min_repeat_tokens >= 0")


@dataclass
class PartialRollout:
    """One response under construction: its prompt, the tokens so far, and the generator that continues it."""

    prompt_ids: list[int]
    """The prompt's token ids (<bos> included)."""
    generator: torch.Generator
    """This response's own CPU generator: one uniform per generated token."""
    problem: Problem | None = None
    """The problem the prompt asks, for the reward."""
    token_ids: list[int] = field(default_factory=list)
    """Generated tokens so far (the stop token included once finished)."""
    log_probs: list[float] = field(default_factory=list)
    """log q of each token under the distribution it was sampled from."""
    policy_log_probs: list[float] = field(default_factory=list)
    """log pi of each token under the raw policy that sampled it."""
    segments: list[int] = field(default_factory=list)
    """The iteration that generated each token."""
    finish_reason: str | None = None
    """None while unfinished; then "stop", "length" or "repetition"."""

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


@dataclass(frozen=True)
class RolloutBatch:
    """Finished rollouts as tensors for a policy-gradient update."""

    prompt_ids: Tensor  # (B, P) long, left-padded
    prompt_mask: Tensor  # (B, P) bool
    completions: Completions  # token_ids, mask, log_probs, policy_log_probs (B, L), right-padded
    segments: Tensor  # (B, L) long: iteration of each token, -1 at padding
    loss_mask: Tensor  # (B, L) bool: the tokens the loss counts


def new_rollouts(
    prompts: list[list[int]], generator: torch.Generator, problems: list[Problem] | None = None
) -> list[PartialRollout]:
    """Empty rollouts for the prompts, each with its own generator seeded by a draw from `generator`."""
    problems = problems if problems is not None else [None] * len(prompts)
    if len(problems) != len(prompts):
        raise ValueError(f"{len(problems)} problems for {len(prompts)} prompts")
    return [
        PartialRollout(list(prompt), row_generator, problem)
        for prompt, row_generator, problem in zip(
            prompts, row_generators(generator, len(prompts)), problems, strict=True
        )
    ]


def repetition_period(tokens: list[int], max_ngram: int, min_repeats: int, min_repeat_tokens: int) -> int:
    """The smallest n <= max_ngram such that `tokens` ends in an n-gram repeated max(min_repeats,
    ceil(min_repeat_tokens / n)) times in a row; 0 if there is none."""
    for n in range(1, max_ngram + 1):
        repeats = max(min_repeats, -(-min_repeat_tokens // n))
        span = n * repeats
        if span > len(tokens):
            continue
        tail = tokens[-span:]
        if all(tail[i] == tail[i - n] for i in range(n, span)):
            return n
    return 0


def first_repetition(tokens: list[int], start: int, cfg: PartialRolloutConfig) -> int | None:
    """The shortest length > start at which tokens[:length] ends in a repetition (see `repetition_period`)."""
    if cfg.max_ngram == 0:
        return None
    for length in range(start + 1, len(tokens) + 1):
        if repetition_period(tokens[:length], cfg.max_ngram, cfg.min_repeats, cfg.min_repeat_tokens):
            return length
    return None


def extend(
    rollout: PartialRollout, completions: Completions, row: int, iteration: int, cfg: PartialRolloutConfig
) -> None:
    """Appends one row of a segment's completions to the rollout, then decides whether it has finished."""
    generated = int(completions.mask[row].sum())
    room = cfg.max_tokens - len(rollout.token_ids)
    kept = min(generated, room)
    start = len(rollout.token_ids)
    rollout.token_ids += completions.token_ids[row, :kept].tolist()
    rollout.log_probs += completions.log_probs[row, :kept].tolist()
    rollout.policy_log_probs += completions.policy_log_probs[row, :kept].tolist()
    rollout.segments += [iteration] * kept
    cut = first_repetition(rollout.token_ids, start, cfg)
    if cut is not None:
        for tokens in (rollout.token_ids, rollout.log_probs, rollout.policy_log_probs, rollout.segments):
            del tokens[cut:]
        rollout.finish_reason = "repetition"
    elif generated <= room and completions.finish_reasons[row] == "stop":
        rollout.finish_reason = "stop"
    elif len(rollout.token_ids) >= cfg.max_tokens:
        rollout.finish_reason = "length"


@torch.no_grad()
def continue_rollouts(model: Transformer, rollouts: list[PartialRollout], sampling: SamplingConfig,
                      cfg: PartialRolloutConfig, iteration: int, pad_token_id: int = 0) -> None:  # fmt: skip
    """Generates one segment (at most cfg.segment_tokens tokens) for every unfinished rollout, in place.

    Each row is prefilled with its prompt and the response so far; sampling.max_new_tokens is replaced by the budget.
    """
    active = [rollout for rollout in rollouts if not rollout.finished]
    if not active:
        return
    budget = min(cfg.segment_tokens, max(cfg.max_tokens - len(rollout.token_ids) for rollout in active))
    prompt_ids, prompt_mask = left_pad([r.prompt_ids + r.token_ids for r in active], pad_token_id, model.device)
    segment = replace(sampling, max_new_tokens=budget)
    completions = generate(model, prompt_ids, prompt_mask, segment, [r.generator for r in active], pad_token_id)
    for row, rollout in enumerate(active):
        extend(rollout, completions, row, iteration, cfg)


def split_finished(rollouts: list[PartialRollout]) -> tuple[list[PartialRollout], list[PartialRollout]]:
    """(finished, unfinished), each in the original order."""
    return [r for r in rollouts if r.finished], [r for r in rollouts if not r.finished]


def segment_loss_mask(segments: Tensor, mask: Tensor, exclude_earlier_segments: bool) -> Tensor:
    """(B, L) bool: the generated tokens the loss counts (only each row's last segment when excluding earlier ones)."""
    if not exclude_earlier_segments:
        return mask.clone()
    last = torch.where(mask, segments, -1).max(dim=1, keepdim=True).values  # (B, 1) segment of the last token
    return mask & (segments == last)


def repetition_penalties(rollouts: list[PartialRollout], cfg: PartialRolloutConfig) -> list[float]:
    """What to add to each rollout's reward: cfg.repetition_penalty for those stopped for repeating, else 0."""
    return [cfg.repetition_penalty if r.finish_reason == "repetition" else 0.0 for r in rollouts]


def rollout_batch(rollouts: list[PartialRollout], cfg: PartialRolloutConfig, pad_token_id: int = 0,
                  device: torch.device | str = "cpu") -> RolloutBatch:  # fmt: skip
    """The rollouts (finished ones, usually) as left-padded prompts and right-padded completions."""
    if not rollouts or min(len(r.token_ids) for r in rollouts) < 1:
        raise ValueError("rollout_batch needs rollouts with at least one generated token each")
    prompt_ids, prompt_mask = left_pad([r.prompt_ids for r in rollouts], pad_token_id, device)
    B, L = len(rollouts), max(len(r.token_ids) for r in rollouts)
    token_ids = torch.full((B, L), pad_token_id, dtype=torch.long)
    mask = torch.zeros(B, L, dtype=torch.bool)
    log_probs, policy_log_probs = torch.zeros(B, L), torch.zeros(B, L)
    segments = torch.full((B, L), -1, dtype=torch.long)
    for row, r in enumerate(rollouts):
        n = len(r.token_ids)
        token_ids[row, :n], mask[row, :n], segments[row, :n] = torch.tensor(r.token_ids), True, torch.tensor(r.segments)
        log_probs[row, :n], policy_log_probs[row, :n] = torch.tensor(r.log_probs), torch.tensor(r.policy_log_probs)
    reasons = [r.finish_reason or "length" for r in rollouts]  # "repetition" passes through as a third reason
    loss_mask = segment_loss_mask(segments, mask, cfg.exclude_earlier_segments)
    tensors = (t.to(device) for t in (token_ids, mask, log_probs, policy_log_probs))
    return RolloutBatch(
        prompt_ids, prompt_mask, Completions(*tensors, reasons), segments.to(device), loss_mask.to(device)
    )


@dataclass
class RolloutGroup:
    """The k responses to one problem of the training pool; trained on once every one of them has finished."""

    index: int
    """The problem's index in the trainer's pool (for its sampler's success rates)."""
    rollouts: list[PartialRollout]
    """(G,) the responses."""

    @property
    def finished(self) -> bool:
        return all(r.finished for r in self.rollouts)


def rollout_state(rollout: PartialRollout) -> dict[str, Any]:
    """A rollout as tensors and JSON values (for `rl.checkpoint.flatten_state`); nothing is pickled."""
    return {
        "prompt_ids": torch.tensor(rollout.prompt_ids, dtype=torch.long),
        "generator": rollout.generator.get_state(),
        "problem": None if rollout.problem is None else asdict(rollout.problem),
        "token_ids": torch.tensor(rollout.token_ids, dtype=torch.long),
        "log_probs": torch.tensor(rollout.log_probs, dtype=torch.float32),
        "policy_log_probs": torch.tensor(rollout.policy_log_probs, dtype=torch.float32),
        "segments": torch.tensor(rollout.segments, dtype=torch.long),
        "finish_reason": rollout.finish_reason,
    }


def rollout_from_state(state: dict[str, Any]) -> PartialRollout:
    """The inverse of `rollout_state`."""
    generator = torch.Generator()
    generator.set_state(state["generator"])
    problem = None if state["problem"] is None else Problem(**state["problem"])
    return PartialRollout(
        state["prompt_ids"].tolist(), generator, problem, state["token_ids"].tolist(), state["log_probs"].tolist(),
        state["policy_log_probs"].tolist(), state["segments"].tolist(), state["finish_reason"],
    )  # fmt: skip


class UnfinishedGroups:
    """The groups still being generated (Kimi's replay buffer of unfinished rollouts), checkpointable."""

    def __init__(self) -> None:
        self.groups: list[RolloutGroup] = []

    def state_dict(self) -> dict[str, Any]:
        return {"groups": [{"index": g.index, "rollouts": [rollout_state(r) for r in g.rollouts]} for g in self.groups]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.groups = [
            RolloutGroup(int(g["index"]), [rollout_from_state(r) for r in g["rollouts"]]) for g in state["groups"]
        ]


def advance_groups(model: Transformer, unfinished: UnfinishedGroups, new_groups: list[RolloutGroup],
                   sampling: SamplingConfig, cfg: PartialRolloutConfig, iteration: int,
                   pad_token_id: int = 0) -> list[RolloutGroup]:  # fmt: skip
    """One segment for every unfinished response of the waiting and the new groups; returns the groups that have
    finished (waiting ones first) and keeps the rest waiting in `unfinished`."""
    groups = unfinished.groups + new_groups
    continue_rollouts(model, [r for g in groups for r in g.rollouts], sampling, cfg, iteration, pad_token_id)
    unfinished.groups = [g for g in groups if not g.finished]
    return [g for g in groups if g.finished]
