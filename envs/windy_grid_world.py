"""Sutton & Barto's windy grid world (Example 6.5), its king's moves (Exercise 6.9) and stochastic wind (6.10).

A 7 x 10 grid, rows counted from 0 at the top. Episodes start at (3, 0) and end on reaching the goal (3, 7); every
step costs -1. A crosswind blows up the middle columns: the wind of the column the agent leaves, 0 0 0 1 1 1 2 2 1 0
from left to right, is added to its upward move, and the grid's edges hold it in. Actions are up, down, right, left,
or with `king_moves` the eight king's moves. The shortest path takes 15 steps (7 with king's moves). With
`stochastic_wind`, wherever there is wind it blows one more, one less or as given, a third of the time each.

The observation is the state index row * 10 + col; `reset(options={"state": s})` starts from a chosen state, and
`model()` gives the exact dynamics the planners use. Registered with a 10,000-step limit, so that a greedy policy
stuck against an edge ends its evaluation episode (the book has no limit; Sarsa's first episode takes hundreds).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from scipy import sparse

from rl.mdp import TabularModel

ROWS, COLS = 7, 10
WIND = (0, 0, 0, 1, 1, 1, 2, 2, 1, 0)
"""Upward push of each column."""
START, GOAL = (3, 0), (3, 7)
ROOK_MOVES = ((-1, 0), (1, 0), (0, 1), (0, -1))
"""(row, col) steps of up, down, right, left."""
KING_MOVES = ROOK_MOVES + ((-1, 1), (1, 1), (1, -1), (-1, -1))
"""...and the diagonals up-right, down-right, down-left, up-left."""


class WindyGridWorld(gym.Env):
    metadata = {"render_modes": []}

    def __init__(self, king_moves: bool = False, stochastic_wind: bool = False) -> None:
        self.moves = KING_MOVES if king_moves else ROOK_MOVES
        self.stochastic_wind = stochastic_wind
        self.observation_space = gym.spaces.Discrete(ROWS * COLS)
        self.action_space = gym.spaces.Discrete(len(self.moves))
        self.s = START[0] * COLS + START[1]

    def winds(self, col: int) -> tuple[int, ...]:
        """The equally likely upward pushes in column `col`."""
        wind = WIND[col]
        return (wind - 1, wind, wind + 1) if self.stochastic_wind and wind else (wind,)

    def next_state(self, state: int, action: int, wind: int | None = None) -> int:
        """The state one move leads to: the move plus the wind (the column's own if not given), clipped to the grid."""
        row, col = divmod(state, COLS)
        d_row, d_col = self.moves[action]
        wind = WIND[col] if wind is None else wind
        row = min(max(row + d_row - wind, 0), ROWS - 1)
        col = min(max(col + d_col, 0), COLS - 1)
        return row * COLS + col

    def model(self) -> TabularModel:
        """The transitions (one next state, or three with stochastic wind); reaching the goal ends the episode (no
        mass), and the goal itself is absorbing with reward 0."""
        n_states, n_actions = ROWS * COLS, len(self.moves)
        goal = GOAL[0] * COLS + GOAL[1]
        rows, cols, probs = [], [], []
        rewards = np.full((n_states, n_actions), -1.0)
        rewards[goal] = 0.0
        for state in range(n_states):
            winds = self.winds(state % COLS)
            for action in range(n_actions):
                for wind in winds:
                    nxt = self.next_state(state, action, wind)
                    if state != goal and nxt != goal:
                        rows.append(state * n_actions + action)
                        cols.append(nxt)
                        probs.append(1.0 / len(winds))
        # Duplicate (row, col) entries (two winds clipped to one cell) are summed by the sparse constructor.
        transitions = sparse.csr_array((probs, (rows, cols)), shape=(n_states * n_actions, n_states))
        return TabularModel(transitions, rewards)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[int, dict]:
        super().reset(seed=seed)
        state = (options or {}).get("state")
        self.s = START[0] * COLS + START[1] if state is None else int(state)
        return self.s, {}

    def step(self, action: int) -> tuple[int, float, bool, bool, dict]:
        goal = GOAL[0] * COLS + GOAL[1]
        if self.s == goal:  # an episode started at the goal (an exploring start) has nothing left to do
            return self.s, 0.0, True, False, {}
        winds = self.winds(self.s % COLS)
        wind = winds[int(self.np_random.integers(len(winds)))] if len(winds) > 1 else winds[0]
        self.s = self.next_state(self.s, int(action), wind)
        return self.s, -1.0, self.s == goal, False, {}
