"""The losses `rl llm train` minimises; `llm_rl.rl_trainer` runs the loop (its docstring has the algorithms).

Each objective maps the policy's per-token log-probs (B, L) and one iteration's `Experience` to a scalar loss, built
from `rl.pg_losses` and `rl.advantages`:
    kimi  Kimi k1.5's squared mirror-descent surrogate (eq. 3) with tau log Z from each problem's k rewards;
    grpo  group-normalised advantages in PPO's clipped surrogate, plus kl_coef * k3 KL to a frozen reference;
    rloo  leave-one-out advantages in the importance-weighted REINFORCE surrogate.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from llm_rl.experience import Experience
from rl.advantages import group_relative_advantages, leave_one_out_advantages
from rl.pg_losses import clipped_surrogate_loss, kl_k3, mirror_descent_loss, sequence_mean, surrogate_loss, token_mean

if TYPE_CHECKING:
    from llm_rl.rl_config import RLConfig


def mean_reward_log_partition(rewards: Tensor, tau: float) -> Tensor:
    """tau log Z estimated by the group's mean reward (Kimi k1.5's choice); (P, G) -> (P, G)."""
    return rewards.mean(dim=1, keepdim=True).expand_as(rewards)


def soft_log_partition(rewards: Tensor, tau: float) -> Tensor:
    """tau log Z = tau log (1/k sum_j exp(r_j / tau)), the sample estimate of Z; (P, G) -> (P, G)."""
    log_mean_exp = torch.logsumexp(rewards / tau, dim=1, keepdim=True) - math.log(rewards.shape[1])
    return (tau * log_mean_exp).expand_as(rewards)


LOG_PARTITION: dict[str, Callable[[Tensor, float], Tensor]] = {
    "mean": mean_reward_log_partition,
    "soft": soft_log_partition,
}


def kimi_objective(log_probs: Tensor, exp: Experience, cfg: RLConfig) -> Tensor:
    """Eq. 3's squared loss with tau log Z from the k rewards of each problem."""
    baselines = LOG_PARTITION[cfg.log_z](exp.rewards, cfg.tau).reshape(-1)  # (B,)
    rewards = exp.rewards.reshape(-1)  # (B,)
    return mirror_descent_loss(log_probs, exp.old_log_probs, rewards, baselines, cfg.tau, exp.completion_mask)


def grpo_objective(log_probs: Tensor, exp: Experience, cfg: RLConfig) -> Tensor:
    """Clipped surrogate with group-normalised advantages, per-sequence means, plus kl_coef * k3 KL."""
    advantages = group_relative_advantages(exp.rewards).reshape(-1, 1)  # (B, 1)
    mask = exp.completion_mask
    loss = clipped_surrogate_loss(log_probs, exp.old_log_probs, advantages, cfg.clip_range, mask, sequence_mean).loss
    if exp.ref_log_probs is not None and cfg.kl_coef > 0:
        loss = loss + cfg.kl_coef * sequence_mean(kl_k3(log_probs, exp.ref_log_probs), mask)
    return loss


def rloo_objective(log_probs: Tensor, exp: Experience, cfg: RLConfig) -> Tensor:
    """REINFORCE with the leave-one-out baseline, importance-weighted after the first step, token mean."""
    advantages = leave_one_out_advantages(exp.rewards).reshape(-1, 1)  # (B, 1)
    return surrogate_loss(log_probs, exp.old_log_probs, advantages, exp.completion_mask, token_mean)


Objective = Callable[[Tensor, Experience, "RLConfig"], Tensor]
OBJECTIVES: dict[str, Objective] = {"kimi": kimi_objective, "grpo": grpo_objective, "rloo": rloo_objective}


LOSS_MEAN_OVER = {"kimi": "sequences", "grpo": "sequences", "rloo": "tokens"}
"""What each objective averages over; a token mean is rescaled on each rank (`llm_rl.distributed.token_share`)."""
