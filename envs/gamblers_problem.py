"""Sutton & Barto's gambler's problem (Example 4.3, Figure 4.3).

A gambler with capital s (1 ... goal - 1) stakes a whole number of dollars on a coin flip: heads (probability
`p_heads`, 0.4 in the book) wins the stake, tails loses it. Reaching the goal ($100) pays +1 and ends the episode;
losing everything ends it with nothing; every other flip pays 0. Undiscounted, a state's optimal value is the chance
of reaching the goal from it, which value iteration finds (`rl plan --env GamblersProblem-v0 --gamma 1`).

The observation is the capital. Action a stakes a + 1 dollars, capped at min(s, goal - s), the most the book allows
(more cannot be staked, and winning more than the goal gains nothing): the actions above the cap repeat it, so every
state has the same goal // 2 actions. Episodes start from a capital drawn uniformly from 1 ... goal - 1 (the book sets
no start), or from `reset(options={"state": s})`.

Deviation from the book: stakes start at 1. The book also allows staking 0, which changes nothing; undiscounted, a
policy that stakes 0 never ends, so its values solve no linear system and policy iteration could not start from it.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from scipy import sparse

from envs.random_walk import finite_number
from rl.mdp import TabularModel


class GamblersProblem(gym.Env):
    metadata = {"render_modes": []}

    def __init__(self, p_heads: float = 0.4, goal: int = 100) -> None:
        if not 0.0 < finite_number("p_heads", p_heads) < 1.0:
            raise ValueError(f"p_heads must be a probability strictly between 0 and 1, not {p_heads!r}")
        if not isinstance(goal, int) or isinstance(goal, bool) or goal < 2:
            raise ValueError(f"goal must be an integer of at least 2 dollars, not {goal!r}")
        self.p_heads = float(p_heads)
        self.goal = goal
        self.observation_space = gym.spaces.Discrete(goal + 1)
        self.action_space = gym.spaces.Discrete(goal // 2)
        self.s = goal // 2

    def stake(self, state: int, action: int) -> int:
        """Dollars action `action` stakes with capital `state`."""
        return min(action + 1, state, self.goal - state)

    def model(self) -> TabularModel:
        """Two outcomes per stake; reaching 0 or the goal carries no probability mass (the episode ends), and both
        are absorbing with reward 0."""
        n_states, n_actions = self.goal + 1, self.goal // 2
        rows, cols, probs = [], [], []
        rewards = np.zeros((n_states, n_actions))
        for state in range(1, self.goal):
            for action in range(n_actions):
                stake = self.stake(state, action)
                win, lose = state + stake, state - stake
                rewards[state, action] = self.p_heads * (win == self.goal)
                for nxt, prob in ((win, self.p_heads), (lose, 1.0 - self.p_heads)):
                    if 0 < nxt < self.goal:
                        rows.append(state * n_actions + action)
                        cols.append(nxt)
                        probs.append(prob)
        transitions = sparse.csr_array((probs, (rows, cols)), shape=(n_states * n_actions, n_states))
        return TabularModel(transitions, rewards)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[int, dict]:
        super().reset(seed=seed)
        state = (options or {}).get("state")
        self.s = int(self.np_random.integers(1, self.goal)) if state is None else int(state)
        return self.s, {}

    def step(self, action: int) -> tuple[int, float, bool, bool, dict]:
        if self.s in (0, self.goal):  # an episode started in a terminal state has nothing left to do
            return self.s, 0.0, True, False, {}
        stake = self.stake(self.s, int(action))
        self.s += stake if self.np_random.random() < self.p_heads else -stake
        reached_goal = self.s == self.goal
        return self.s, float(reached_goal), reached_goal or self.s == 0, False, {}

    def format_values(self, values: np.ndarray) -> str:
        """Ten capitals per line, as `capital: value`."""
        return tabulate([f"{s:3d}: {v:.4f}" for s, v in enumerate(values)])

    def format_policy(self, policy: np.ndarray) -> str:
        """The stake of each capital from 1 to goal - 1, ten per line (the book's Figure 4.3, lower panel)."""
        return tabulate([f"{s:3d}: {self.stake(s, int(a)):2d}" for s, a in enumerate(policy) if 0 < s < self.goal])


def tabulate(cells: list[str], per_line: int = 10) -> str:
    return "\n".join("  ".join(cells[i : i + per_line]) for i in range(0, len(cells), per_line))
