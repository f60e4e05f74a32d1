"""Reward scaling for the on-policy agents: rewards divided by the running standard deviation of a discounted return.

Engstrom et al. (2020, "Implementation Matters in Deep Policy Gradients") found this scaling behind much of PPO's
edge on MuJoCo; Stable-Baselines3's `VecNormalize` and rl-baselines3-zoo's `normalize: true` apply it. For each env a
discounted return of the rewards seen so far is kept,

    R_t = gamma R_{t-1} + r_t        (R starts at 0 and restarts at 0 after an episode ends),

every R_t is folded into a running mean and variance, and the learner sees

    r_t / sqrt(var(R) + 1e-8), clipped to +-10.

Only the learner's rewards change: logged and evaluated returns stay the env's. The statistics travel in the agent's
checkpoint (buffers of this module); the running returns do not, since a resumed run starts fresh episodes.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from rl.networks import merge_moments

EPSILON = 1e-8
CLIP = 10.0


class RewardScaler(nn.Module):
    """Scales the rewards of N envs step by step (see the module doc)."""

    def __init__(self, num_envs: int, gamma: float) -> None:
        super().__init__()
        self.gamma = gamma
        self.register_buffer("return_mean", torch.zeros((), dtype=torch.float64))
        self.register_buffer("return_var", torch.ones((), dtype=torch.float64))
        self.register_buffer("return_count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("returns", torch.zeros(num_envs, dtype=torch.float64), persistent=False)

    def forward(self, rewards: np.ndarray, done: np.ndarray) -> np.ndarray:
        """The (N,) rewards of one step scaled; `done` (N,) marks the envs whose episode ended at this step."""
        returns = self.returns.numpy()  # the buffers' memory: updated in place
        returns *= self.gamma
        returns += rewards
        self._fold(returns)
        scaled = np.clip(rewards / np.sqrt(float(self.return_var) + EPSILON), -CLIP, CLIP)
        returns[np.asarray(done, dtype=bool)] = 0.0
        return scaled.astype(np.float32)

    def _fold(self, values: np.ndarray) -> None:
        """Adds a batch of returns to the running mean and variance (`rl.networks.merge_moments`)."""
        stats = (self.return_mean, self.return_var, self.return_count)
        moments = merge_moments(*(float(x) for x in stats), values.mean(), values.var(), values.size)
        for buffer, value in zip(stats, moments, strict=True):
            buffer.fill_(value)
