"""Sutton & Barto's random walk: the five-state chain of Example 6.2 and the 19-state one of Example 7.1.

States A, B, C, D, E (observed as 0 ... n_states - 1) lie in a row between two terminal states. Every episode starts
in the centre and moves one state left or right per step; leaving the right end pays +1 and ends the episode, leaving
the left end pays `left_reward` (0 in Example 6.2, -1 in the 19-state walk of Example 7.1) and ends it; every other
step pays 0. The book's walk goes left or right with probability 1/2 each: here that is the uniform policy over the
two actions, left (0) and right (1), which is what `td0` evaluates by default.

Undiscounted (gamma = 1), the uniform policy's value of state i of n is p_i + (1 - p_i) * left_reward, where
p_i = (i + 1) / (n + 1) is the chance of leaving on the right: 1/6, 2/6, ..., 5/6 in Example 6.2 and -0.9, -0.8,
..., 0.9 in Example 7.1. `model()` gives the exact dynamics, so `td0` logs `eval/value_rmse` against them, the
error Figure 6.2 plots (there averaged over 100 runs).

The terminal states are not observations: a step that ends the episode returns the state it left.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from rl.mdp import TabularModel

LEFT, RIGHT = 0, 1


class RandomWalk(gym.Env):
    metadata = {"render_modes": []}

    def __init__(self, n_states: int = 5, left_reward: float = 0.0) -> None:
        if not isinstance(n_states, int) or isinstance(n_states, bool) or n_states < 1 or n_states % 2 == 0:
            raise ValueError(f"n_states must be an odd positive integer (5 or 19 in the book), not {n_states!r}")
        self.left_reward = finite_number("left_reward", left_reward)
        self.n_states = n_states
        self.observation_space = gym.spaces.Discrete(n_states)
        self.action_space = gym.spaces.Discrete(2)
        self.start = n_states // 2
        self.s = self.start

    def outcome(self, state: int, action: int) -> tuple[int | None, float]:
        """(next state, reward) of one move; next state None when the move leaves the chain."""
        nxt = state + (1 if action == RIGHT else -1)
        if nxt < 0:
            return None, self.left_reward
        if nxt >= self.n_states:
            return None, 1.0
        return nxt, 0.0

    def model(self) -> TabularModel:
        """Deterministic moves; a move off either end carries no probability mass (the episode ends)."""
        n = self.n_states
        transitions = np.zeros((n, 2, n))
        rewards = np.zeros((n, 2))
        for state in range(n):
            for action in (LEFT, RIGHT):
                nxt, rewards[state, action] = self.outcome(state, action)
                if nxt is not None:
                    transitions[state, action, nxt] = 1.0
        return TabularModel(transitions, rewards)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[int, dict]:
        super().reset(seed=seed)
        state = (options or {}).get("state")
        self.s = self.start if state is None else int(state)
        return self.s, {}

    def step(self, action: int) -> tuple[int, float, bool, bool, dict]:
        nxt, reward = self.outcome(self.s, int(action))
        if nxt is None:
            return self.s, reward, True, False, {}
        self.s = nxt
        return self.s, reward, False, False, {}


def finite_number(name: str, value: Any) -> float:
    """`value` as a float; a ValueError naming `name` unless it is a finite number ("nan" from --env-kwargs is not)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, not {value!r}") from None
    if not np.isfinite(number):
        raise ValueError(f"{name} must be a finite number, not {value!r}")
    return number
