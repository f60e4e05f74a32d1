"""Greedy evaluation: run a deterministic policy for whole episodes on a fresh env."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np


def evaluate_policy(env: gym.Env, act: Callable[[Any], Any], episodes: int, seed: int) -> np.ndarray:
    """Undiscounted returns of `episodes` episodes of `act`; episode i starts from `reset(seed=seed + i)`."""
    returns = np.zeros(episodes)
    for i in range(episodes):
        obs, _ = env.reset(seed=seed + i)
        done = False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(act(obs))
            returns[i] += float(reward)
            done = terminated or truncated
    return returns
