"""Sutton & Barto's 5 x 5 grid world of Example 3.5 (Figures 3.2 and 3.5), a continuing task.

Cells are numbered row * 5 + col from 0 at the top left. Actions north, south, east and west move one cell; a move
off the grid leaves the agent in place and pays -1, any other move pays 0, except that every action in A = (0, 1)
jumps to A' = (4, 1) and pays +10, and every action in B = (0, 3) jumps to B' = (2, 3) and pays +5. Nothing ends:
episodes start in a cell drawn uniformly (or `reset(options={"state": s})`) and are cut at 100 steps by the
registration, as the book's values are of the endless task. With gamma = 0.9 the uniform policy's values are the
book's Figure 3.2 and the optimal ones its Figure 3.5 (`rl plan --env JumpGridWorld-v0`).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from rl.mdp import TabularModel

SIDE = 5
MOVES = ((-1, 0), (1, 0), (0, 1), (0, -1))
"""(row, col) steps of north, south, east, west."""
JUMPS = {(0, 1): ((4, 1), 10.0), (0, 3): ((2, 3), 5.0)}
"""A -> A' paying 10, B -> B' paying 5, whatever the action."""


class JumpGridWorld(gym.Env):
    metadata = {"render_modes": []}

    def __init__(self) -> None:
        self.observation_space = gym.spaces.Discrete(SIDE * SIDE)
        self.action_space = gym.spaces.Discrete(len(MOVES))
        self.s = 0

    @staticmethod
    def outcome(state: int, action: int) -> tuple[int, float]:
        """(next state, reward) of one action."""
        cell = divmod(state, SIDE)
        if cell in JUMPS:
            (row, col), reward = JUMPS[cell]
            return row * SIDE + col, reward
        row, col = cell[0] + MOVES[action][0], cell[1] + MOVES[action][1]
        if not (0 <= row < SIDE and 0 <= col < SIDE):
            return state, -1.0
        return row * SIDE + col, 0.0

    def model(self) -> TabularModel:
        """Deterministic moves; nothing ends."""
        n_states, n_actions = SIDE * SIDE, len(MOVES)
        transitions, rewards = np.zeros((n_states, n_actions, n_states)), np.zeros((n_states, n_actions))
        for state in range(n_states):
            for action in range(n_actions):
                nxt, rewards[state, action] = self.outcome(state, action)
                transitions[state, action, nxt] = 1.0
        return TabularModel(transitions, rewards)

    def format_values(self, values: np.ndarray) -> str:
        """Five rows of five, one decimal, as the book prints them."""
        return "\n".join(" ".join(f"{v:5.1f}" for v in values[row * SIDE : (row + 1) * SIDE]) for row in range(SIDE))

    def format_policy(self, policy: np.ndarray) -> str:
        """Five rows of the greedy actions' initials (N, S, E, W)."""
        return "\n".join(" ".join("NSEW"[a] for a in policy[row * SIDE : (row + 1) * SIDE]) for row in range(SIDE))

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[int, dict]:
        super().reset(seed=seed)
        state = (options or {}).get("state")
        self.s = int(self.np_random.integers(SIDE * SIDE)) if state is None else int(state)
        return self.s, {}

    def step(self, action: int) -> tuple[int, float, bool, bool, dict]:
        self.s, reward = self.outcome(self.s, int(action))
        return self.s, reward, False, False, {}
