"""Returns and advantages for policy-gradient methods, from vector-env rollouts and from groups of LLM samples.

Rollout quantities are (T, N) tensors: T steps of N environments, step t of env n being the transition
(obs, action, rewards[t, n], next_obs, terminated[t, n], truncated[t, n]) as `rl.rollout` hands it over, so that
`next_obs` is the true final observation when the episode ended at step t.

The bootstrap rule, written once in `_backward_discounted_sum` and its callers (the idea of Spinning Up's
`finish_path(last_val)`): what follows step t in a return is
- nothing (0) if the episode terminated at t: the true value of a terminal state is zero;
- V(next_obs[t]) if the episode was truncated at t, or if t is the last step of the rollout (T - 1) and the episode
  goes on: the return is cut there but the episode is not over, so the critic stands in for the rest;
- the return from step t + 1 otherwise.
The recursion never runs across an episode end, so an episode's return never sees the next episode's rewards.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor


def _as_float(flags: Tensor, like: Tensor) -> Tensor:
    """Boolean or 0/1 flags as floats with the dtype and device of `like`."""
    return torch.as_tensor(flags, device=like.device).to(like.dtype)


def _backward_discounted_sum(x: Tensor, continues: Tensor, discount: float) -> Tensor:
    """y[t] = x[t] + discount * continues[t] * y[t + 1], with y[T] = 0; (T, ...) in and out."""
    y = torch.zeros_like(x)
    running = torch.zeros_like(x[0])
    for t in reversed(range(x.shape[0])):
        running = x[t] + discount * continues[t] * running
        y[t] = running
    return y


def discounted_returns(
    rewards: Tensor, terminated: Tensor, truncated: Tensor, bootstrap_values: Tensor, gamma: float
) -> Tensor:
    """G[t] = r[t] + gamma * (what follows step t, by the bootstrap rule in the module docstring); (T, N) -> (T, N).

    `bootstrap_values[t]` is V(next_obs[t]) (T, N); only its entries at truncations and at the last step are read.
    Pass zeros for pure Monte Carlo returns of complete episodes (REINFORCE), and V(next_obs) for A2C: on a rollout
    segment of T steps this is the n-step return of A3C (step t looks T - t steps ahead, or to its episode's end).
    """
    terminated, truncated = _as_float(terminated, rewards), _as_float(truncated, rewards)
    segment_end = torch.clamp(terminated + truncated, max=1.0)
    segment_end[-1] = 1.0
    # Bootstrap where the segment is cut but the episode is not over: truncation or the end of the rollout.
    bootstrap = segment_end * (1.0 - terminated)
    x = rewards + gamma * bootstrap * bootstrap_values
    return _backward_discounted_sum(x, 1.0 - segment_end, gamma)


def td_errors(rewards: Tensor, values: Tensor, next_values: Tensor, terminated: Tensor, gamma: float) -> Tensor:
    """delta = r + gamma * (1 - terminated) * V(next_obs) - V(obs), elementwise over any shape ((T, N) or (B,)).

    Truncation does not appear: a truncated step bootstraps from V(next_obs) like any step whose episode goes on.
    """
    return rewards + gamma * (1.0 - _as_float(terminated, rewards)) * next_values - values


class AdvantageEstimate(NamedTuple):
    """Advantages and the critic's regression targets (returns = advantages + values), both (T, N)."""

    advantages: Tensor
    returns: Tensor


def gae(
    rewards: Tensor,
    values: Tensor,
    next_values: Tensor,
    terminated: Tensor,
    truncated: Tensor,
    gamma: float,
    gae_lambda: float,
) -> AdvantageEstimate:
    """Generalized advantage estimation (Schulman et al. 2016, eq. 16) over a (T, N) rollout.

    A[t] = delta[t] + gamma * gae_lambda * (1 - episode_end[t]) * A[t + 1], A[T] = 0, with delta from `td_errors`.
    `values` are V(obs[t]) and `next_values` V(next_obs[t]), so a truncated step bootstraps from the true final
    observation; the recursion is cut at every episode end, terminated or truncated.
    gae_lambda = 0 gives the one-step TD errors; gae_lambda = 1 gives `discounted_returns` minus values.
    """
    terminated, truncated = _as_float(terminated, rewards), _as_float(truncated, rewards)
    deltas = td_errors(rewards, values, next_values, terminated, gamma)  # (T, N)
    episode_goes_on = 1.0 - torch.clamp(terminated + truncated, max=1.0)
    advantages = _backward_discounted_sum(deltas, episode_goes_on, gamma * gae_lambda)
    return AdvantageEstimate(advantages, advantages + values)


def _check_groups(rewards: Tensor) -> None:
    if rewards.ndim != 2 or rewards.shape[1] < 2:
        raise ValueError(
            f"group baselines need (P, G) rewards with G >= 2 samples per prompt, got {tuple(rewards.shape)}"
        )


def group_relative_advantages(rewards: Tensor, normalize_std: bool = True, eps: float = 1e-6) -> Tensor:
    """GRPO (Shao et al. 2024, DeepSeekMath section 4.1): (r - group mean) / (group std + eps); (P, G) -> (P, G).

    The std is the sample std (Bessel-corrected, torch's default). normalize_std=False keeps r - mean only, as in
    Dr. GRPO (Liu et al. 2025) and Kimi k1.5's mean-reward baseline.
    """
    _check_groups(rewards)
    centred = rewards - rewards.mean(dim=1, keepdim=True)
    if not normalize_std:
        return centred
    return centred / (rewards.std(dim=1, keepdim=True) + eps)


def leave_one_out_baseline(rewards: Tensor) -> Tensor:
    """RLOO (Kool et al. 2019; Ahmadian et al. 2024): each sample's baseline is the mean reward of the other G - 1
    samples of its prompt; (P, G) -> (P, G)."""
    _check_groups(rewards)
    group_size = rewards.shape[1]
    return (rewards.sum(dim=1, keepdim=True) - rewards) / (group_size - 1)


def leave_one_out_advantages(rewards: Tensor) -> Tensor:
    """RLOO advantages: reward minus the leave-one-out baseline; (P, G) -> (P, G)."""
    return rewards - leave_one_out_baseline(rewards)


def normalize(x: Tensor, eps: float = 1e-8, mask: Tensor | None = None) -> Tensor:
    """(x - mean) / (std + eps) over all entries (the per-batch advantage normalisation of PPO implementations).

    With a 0/1 `mask` of x's shape the mean and the (Bessel-corrected) std come from the masked-in entries only and
    masked-out entries come back as 0.
    """
    if mask is None:
        return (x - x.mean()) / (x.std() + eps)
    mask = _as_float(mask, x)
    count = mask.sum()
    mean = (x * mask).sum() / count
    var = ((x - mean) ** 2 * mask).sum() / (count - 1)
    return (x - mean) / (var.sqrt() + eps) * mask
