"""Greedy evaluation: run a deterministic policy for whole episodes on a fresh env."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np


def evaluate_policy(
    env: gym.Env,
    act: Callable[[Any], Any],
    episodes: int,
    seed: int,
    max_steps: int = 10_000,
    stop: Callable[[], bool] | None = None,
) -> np.ndarray:
    """Undiscounted returns of `episodes` episodes of `act`; episode i starts from `reset(seed=seed + i)`.

    An episode is cut after `max_steps` steps: a greedy policy can circle forever on an env without a time limit
    (CliffWalking-v1 has none). Once `stop()` is true no further episode starts, and only the finished episodes'
    returns come back.
    """
    returns = np.zeros(episodes)
    for i in range(episodes):
        if stop is not None and stop():
            return returns[:i]
        obs, _ = env.reset(seed=seed + i)
        for _ in range(max_steps):
            obs, reward, terminated, truncated, _ = env.step(act(obs))
            returns[i] += float(reward)
            if terminated or truncated:
                break
    return returns
