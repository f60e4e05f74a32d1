"""Exploration noise for deterministic policies with Box actions (`agents.ddpg`: DDPG and TD3).

A noise process is sampled once per environment step for all N envs together, (N, *A), and `reset` is told which
envs' episodes ended. Widths are in units of the action's half-range (high - low) / 2; `noisy_actions` scales them.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np


class ExplorationNoise(Protocol):
    def sample(self, rng: np.random.Generator) -> np.ndarray: ...

    def reset(self, done: np.ndarray) -> None: ...


class GaussianNoise:
    """x_t ~ N(0, std^2), independent at every step."""

    def __init__(self, shape: tuple[int, ...], std: float) -> None:
        self.shape, self.std = shape, std

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        return self.std * rng.standard_normal(self.shape)

    def reset(self, done: np.ndarray) -> None:
        """Nothing to forget: the noise has no state."""


class OrnsteinUhlenbeckNoise:
    """x_{t+1} = x_t - theta x_t + std eps_t, eps_t ~ N(0, 1), x_0 = 0 (Uhlenbeck & Ornstein 1930, dt = 1).

    Temporally correlated noise that reverts to 0: E[x_{t+k} | x_t] = (1 - theta)^k x_t, and the stationary std is
    std / sqrt(theta (2 - theta)).
    """

    def __init__(self, shape: tuple[int, ...], std: float, theta: float) -> None:
        self.std, self.theta = std, theta
        self.state = np.zeros(shape)  # (N, *A)

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        self.state = self.state - self.theta * self.state + self.std * rng.standard_normal(self.state.shape)
        return self.state.copy()

    def reset(self, done: np.ndarray) -> None:
        """Restarts the process at 0 for the envs whose episode ended."""
        self.state[done] = 0.0


def noisy_actions(actions: np.ndarray, noise: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """(N, *A) behaviour actions clip(mu(s) + noise (high - low) / 2, low, high); noise is in half-range units."""
    return np.clip(actions + noise * (high - low) / 2, low, high).astype(np.float32)
