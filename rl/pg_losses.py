"""Policy-gradient loss building blocks: small pure functions shared by the deep agents and the LLM trainer.

Inputs are per-sample (B,) tensors for environment agents or per-token (B, L) tensors for sequences, with an
optional 0/1 `mask` of the same shape marking real tokens (padding is 0). Every loss is reduced by `reduce`:
- `token_mean` (the default): the sum over all real tokens divided by their number, so long sequences weigh more
  (DAPO, Dr. GRPO); with no mask it is the plain mean, what environment agents want;
- `sequence_mean`: each sequence's mean over its tokens, then the mean over sequences (GRPO as published).
Advantages broadcast against log_probs: a per-sequence advantage (B,) is passed as advantages[:, None] (B, 1).
Advantages, old and reference log-probs and returns are treated as constants (detached); gradients flow through
log_probs and values only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

Reduction = Callable[[Tensor, Tensor | None], Tensor]
"""reduce(x, mask) -> scalar: `token_mean` or `sequence_mean`."""


def masked_mean(x: Tensor, mask: Tensor | None = None, dim: int | None = None) -> Tensor:
    """sum(x * mask) / sum(mask) over `dim` (all entries if None); the plain mean without a mask."""
    if mask is None:
        return x.mean() if dim is None else x.mean(dim=dim)
    mask = mask.to(x.dtype)
    if dim is None:
        return (x * mask).sum() / mask.sum()
    return (x * mask).sum(dim=dim) / mask.sum(dim=dim)


def token_mean(x: Tensor, mask: Tensor | None = None) -> Tensor:
    """Sum over all real tokens / number of real tokens; (B, L) or (B,) -> scalar."""
    return masked_mean(x, mask)


def sequence_mean(x: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean over sequences of each sequence's mean over its real tokens; (B, L) -> scalar."""
    return masked_mean(x, mask, dim=-1).mean()


def policy_gradient_loss(
    log_probs: Tensor, advantages: Tensor, mask: Tensor | None = None, reduce: Reduction = token_mean
) -> Tensor:
    """REINFORCE / actor-critic: -mean(log pi(a|s) * A); its gradient is -mean(A * grad log pi)."""
    return reduce(-log_probs * advantages.detach(), mask)


def importance_weights(log_probs: Tensor, old_log_probs: Tensor, clip: float | None = None) -> Tensor:
    """rho = pi(a|s) / mu(a|s) = exp(log_probs - old_log_probs), truncated to min(rho, clip) if `clip` is given.

    Elementwise and differentiable through log_probs. Off-policy actor-critic (Degris et al. 2012) weighs the score
    by a constant weight: loss = -mean(rho.detach() * A * log_probs); note min(rho, c) has zero gradient where
    it truncates.
    """
    rho = torch.exp(log_probs - old_log_probs.detach())
    return rho if clip is None else torch.clamp(rho, max=clip)


def surrogate_loss(
    log_probs: Tensor,
    old_log_probs: Tensor,
    advantages: Tensor,
    mask: Tensor | None = None,
    reduce: Reduction = token_mean,
) -> Tensor:
    """TRPO's surrogate (Schulman et al. 2015, eq. 14), negated to minimise: -mean(pi / pi_old * A)."""
    ratio = importance_weights(log_probs, old_log_probs)
    return reduce(-ratio * advantages.detach(), mask)


class ClippedSurrogate(NamedTuple):
    """PPO's loss and two diagnostics, all scalars; the diagnostics carry no gradient."""

    loss: Tensor
    clip_fraction: Tensor
    """Fraction of samples (tokens) whose ratio lies outside [1 - clip_range, 1 + clip_range]."""
    approx_kl: Tensor
    """KL(pi_old || pi) estimated by k3 = (ratio - 1) - log ratio on the samples from pi_old."""


def clipped_surrogate_loss(
    log_probs: Tensor,
    old_log_probs: Tensor,
    advantages: Tensor,
    clip_range: float,
    mask: Tensor | None = None,
    reduce: Reduction = token_mean,
) -> ClippedSurrogate:
    """PPO (Schulman et al. 2017, eq. 7), negated: -mean(min(ratio * A, clip(ratio, 1 - eps, 1 + eps) * A)).

    The min makes the clip one-sided: a sample whose ratio has moved past the clip in the direction its advantage
    favours (ratio > 1 + eps with A > 0, ratio < 1 - eps with A < 0) contributes no gradient.
    """
    advantages = advantages.detach()
    log_ratio = log_probs - old_log_probs.detach()
    ratio = torch.exp(log_ratio)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range) * advantages
    loss = reduce(-torch.min(unclipped, clipped), mask)
    with torch.no_grad():
        clip_fraction = reduce(((ratio - 1.0).abs() > clip_range).to(ratio.dtype), mask)
        approx_kl = reduce((ratio - 1.0) - log_ratio, mask)
    return ClippedSurrogate(loss, clip_fraction, approx_kl)


def value_loss(
    values: Tensor,
    returns: Tensor,
    old_values: Tensor | None = None,
    clip_range: float | None = None,
    mask: Tensor | None = None,
    reduce: Reduction = token_mean,
) -> Tensor:
    """0.5 * mean((V - R)^2), so its gradient is mean(V - R).

    With `old_values` and `clip_range` (PPO implementations' value clipping): 0.5 * mean(max((V - R)^2,
    (V_clipped - R)^2)) with V_clipped = old_V + clip(V - old_V, -clip_range, clip_range).
    """
    if (old_values is None) != (clip_range is None):
        raise ValueError("value clipping needs both old_values and clip_range, or neither")
    returns = returns.detach()
    squared_error = (values - returns) ** 2
    if old_values is not None:
        old_values = old_values.detach()
        clipped_values = old_values + torch.clamp(values - old_values, -clip_range, clip_range)
        squared_error = torch.max(squared_error, (clipped_values - returns) ** 2)
    return 0.5 * reduce(squared_error, mask)


def kl_k1(log_probs: Tensor, ref_log_probs: Tensor) -> Tensor:
    """Schulman's k1 estimator of KL(pi || pi_ref) per sample (token) drawn from pi: log pi - log pi_ref.

    Unbiased, high variance, can be negative. Elementwise; reduce with `token_mean` or `sequence_mean` and a mask.
    """
    return log_probs - ref_log_probs.detach()


def kl_k3(log_probs: Tensor, ref_log_probs: Tensor) -> Tensor:
    """Schulman's k3 estimator of KL(pi || pi_ref) per sample (token) drawn from pi: (r - 1) - log r, r = pi_ref / pi.

    Unbiased, low variance, never negative (log r <= r - 1); the per-token KL penalty of GRPO. Elementwise.
    """
    log_r = ref_log_probs.detach() - log_probs
    return torch.expm1(log_r) - log_r


def entropy_bonus(entropy: Tensor, mask: Tensor | None = None, reduce: Reduction = token_mean) -> Tensor:
    """The mean policy entropy; a loss subtracts ent_coef times it to reward exploration."""
    return reduce(entropy, mask)


def mirror_descent_loss(
    log_probs: Tensor,
    old_log_probs: Tensor,
    rewards: Tensor,
    baselines: Tensor,
    tau: float,
    mask: Tensor | None = None,
) -> Tensor:
    """Kimi k1.5's online mirror descent surrogate (Kimi Team 2025, section 2.3.2), one term per sequence:

        mean_b (r_b - tau log Z - tau * sum_t m_{b,t} (log pi(y_{b,t}) - log pi_old(y_{b,t})))^2

    log_probs, old_log_probs and mask are (B, L) per token (or (B,) per sequence); rewards and baselines
    (= tau log Z of each sequence's prompt) are (B,). At pi = pi_old its gradient is -2 tau mean_b (r_b - tau log Z)
    grad log pi(y_b): REINFORCE with the baseline tau log Z, scaled by 2 tau.
    """
    log_ratio = log_probs - old_log_probs.detach()
    if mask is not None:
        log_ratio = log_ratio * mask.to(log_ratio.dtype)
    if log_ratio.ndim == 2:
        log_ratio = log_ratio.sum(dim=-1)  # (B,): log pi(y|x) - log pi_old(y|x) of the whole sequence
    return ((rewards.detach() - baselines.detach() - tau * log_ratio) ** 2).mean()
