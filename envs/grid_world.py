"""The grid world of Shiyu Zhao, "Mathematical Foundations of Reinforcement Learning", chapters 1-4.

Cells are named (row, col), 1-based from the top-left, as in the book's figures; state index s = (row-1)*cols + (col-1).
Actions: 0 up, 1 right, 2 down, 3 left, 4 stay. The world is deterministic and the reward depends on where the move
leads (book chapter 1):

1. A move off the grid leaves the agent in place and gives r_boundary; this rule comes first.
2. Entering or staying in a forbidden cell is allowed and gives r_forbidden.
3. Entering or staying in the target gives r_target.
4. Any other move gives r_other.

As in the book the target does not end the episode: staying there keeps earning r_target, so v(target) =
r_target / (1 - gamma). With `terminal_target=True` (not in the book) entering the target ends the episode instead,
and the target becomes a terminal state of value 0: a random start never picks it, and an episode started there
through `reset(options={"state": s})` ends on its first step with reward 0. Episode length comes from the TimeLimit
wrapper added at registration (GridWorld-v0: 100 steps), never from the env itself.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from rl.errors import UserError
from rl.mdp import TabularModel, model_from_outcomes

Cell = tuple[int, int]
"""A cell as (row, col), 1-based from the top-left."""

MOVES: tuple[Cell, ...] = ((-1, 0), (0, 1), (1, 0), (0, -1), (0, 0))
"""(row, col) change for actions 0 up, 1 right, 2 down, 3 left, 4 stay."""
ARROWS = ("↑", "→", "↓", "←", "○")
"""How the book's figures draw each action."""

BOOK_TARGET: Cell = (4, 3)
BOOK_FORBIDDEN: tuple[Cell, ...] = ((2, 2), (2, 3), (3, 3), (4, 2), (4, 4), (5, 2))
BOOK_REWARDS = {"r_boundary": -1.0, "r_forbidden": -1.0, "r_target": 1.0, "r_other": 0.0}
"""The rewards of the book's grid world (chapter 2), the defaults below."""

CELL_PX = 32
WHITE, GREY, AMBER, CYAN, DARK = (255, 255, 255), (160, 160, 160), (255, 191, 0), (0, 200, 230), (30, 30, 30)


def is_int(x: Any) -> bool:
    """An integer, from Python or NumPy; not a bool, though bool subclasses int."""
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


class GridWorld(gym.Env):
    """The book's grid world; defaults give the 5x5 example used throughout chapters 2-4."""

    metadata = {"render_modes": ["ansi", "rgb_array"], "render_fps": 4}

    def __init__(
        self,
        rows: int = 5,
        cols: int = 5,
        target: Sequence[int] = BOOK_TARGET,
        forbidden: Sequence[Sequence[int]] = BOOK_FORBIDDEN,
        start: Sequence[int] | None = None,
        r_boundary: float = -1.0,
        r_forbidden: float = -1.0,
        r_target: float = 1.0,
        r_other: float = 0.0,
        terminal_target: bool = False,
        render_mode: str | None = None,
    ) -> None:
        for name, size in (("rows", rows), ("cols", cols)):
            if not is_int(size) or size < 1:
                raise UserError(f"GridWorld {name}={size!r} is not a positive integer; pass e.g. {name}=5.")
        self.rows, self.cols = int(rows), int(cols)
        self.target = self._cell(target, "target")
        self.forbidden = frozenset(self._cell(cell, "forbidden") for cell in self._cells(forbidden))
        if self.target in self.forbidden:
            raise UserError(f"GridWorld target {list(self.target)} is also in forbidden; move one of them.")
        self.start = None if start is None else self._cell(start, "start")
        if terminal_target and self.start == self.target:
            raise UserError("GridWorld start equals the terminal target; pick another start or start=None.")
        if terminal_target and self.rows * self.cols == 1:
            raise UserError("GridWorld with terminal_target needs a cell besides the target; make the grid bigger.")
        rewards = {"r_boundary": r_boundary, "r_forbidden": r_forbidden, "r_target": r_target, "r_other": r_other}
        for name, reward in rewards.items():
            if isinstance(reward, bool) or not isinstance(reward, (int, float)) or not math.isfinite(reward):
                book = BOOK_REWARDS[name]
                raise UserError(f"GridWorld {name}={reward!r} is not a finite number; pass one (the book's is {book}).")
        self.r_boundary, self.r_forbidden = float(r_boundary), float(r_forbidden)
        self.r_target, self.r_other = float(r_target), float(r_other)
        self.terminal_target = bool(terminal_target)
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise UserError(f"GridWorld render_mode={render_mode!r} is unknown; use 'ansi', 'rgb_array' or None.")
        self.render_mode = render_mode

        self.observation_space = gym.spaces.Discrete(self.rows * self.cols)
        self.action_space = gym.spaces.Discrete(len(MOVES))
        self.agent: Cell | None = None

    # ---- cells and state indices ----

    def _cells(self, cells: Any) -> list[Any]:
        if not isinstance(cells, (list, tuple)):
            raise UserError(f"GridWorld forbidden={cells!r} is not a list of cells; pass e.g. forbidden=[[2, 2]].")
        return list(cells)

    def _cell(self, cell: Any, name: str) -> Cell:
        """Checks a [row, col] pair (list or tuple, 1-based) and returns it as a tuple."""
        if not (isinstance(cell, (list, tuple)) and len(cell) == 2 and all(is_int(x) for x in cell)):
            raise UserError(f"GridWorld {name} cell {cell!r} is not a [row, col] pair of integers; pass e.g. [4, 3].")
        row, col = int(cell[0]), int(cell[1])
        if not (1 <= row <= self.rows and 1 <= col <= self.cols):
            raise UserError(
                f"GridWorld {name} cell [{row}, {col}] lies outside the {self.rows}x{self.cols} grid; "
                f"use rows 1..{self.rows} and columns 1..{self.cols}."
            )
        return row, col

    def state_of(self, cell: Cell) -> int:
        """The state index of a 1-based (row, col) cell."""
        return (cell[0] - 1) * self.cols + (cell[1] - 1)

    def cell_of(self, state: int) -> Cell:
        """The 1-based (row, col) cell of a state index."""
        return state // self.cols + 1, state % self.cols + 1

    # ---- dynamics ----

    def outcome(self, cell: Cell, action: int) -> tuple[Cell, float, bool]:
        """(next cell, reward, terminated) for taking `action` in `cell`: the rules in the module docstring."""
        if self.terminal_target and cell == self.target:
            return cell, 0.0, True  # a terminal state: whatever is done there is worth nothing more
        row, col = cell[0] + MOVES[action][0], cell[1] + MOVES[action][1]
        if not (1 <= row <= self.rows and 1 <= col <= self.cols):
            return cell, self.r_boundary, False
        if (row, col) in self.forbidden:
            return (row, col), self.r_forbidden, False
        if (row, col) == self.target:
            return (row, col), self.r_target, self.terminal_target
        return (row, col), self.r_other, False

    def model(self) -> TabularModel:
        """Exact transitions and rewards; a move that terminates carries no continuing mass (see rl.mdp)."""
        n_states, n_actions = self.observation_space.n, self.action_space.n
        rewards = np.zeros((n_states, n_actions))
        rows, next_states = [], []
        for s in range(n_states):
            for a in range(n_actions):
                next_cell, reward, terminated = self.outcome(self.cell_of(s), a)
                rewards[s, a] = reward
                if not terminated:
                    rows.append(s * n_actions + a)
                    next_states.append(self.state_of(next_cell))
        return model_from_outcomes(rewards, rows, next_states, [1.0] * len(rows))

    # ---- the Gymnasium API ----

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[int, dict]:
        super().reset(seed=seed)
        options = options or {}
        if set(options) - {"state"}:
            raise UserError(f"GridWorld reset options {sorted(options)} are unknown; the only option is 'state'.")
        if "state" in options:
            self.agent = self.cell_of(self._state_option(options["state"]))
        elif self.start is not None:
            self.agent = self.start
        else:
            # Uniform over all cells, except a terminal target: an episode starting there would have nothing to do.
            candidates = [s for s in range(self.observation_space.n) if not self._is_terminal_state(s)]
            self.agent = self.cell_of(int(self.np_random.choice(candidates)))
        return self.state_of(self.agent), {}

    def step(self, action: int) -> tuple[int, float, bool, bool, dict]:
        if self.agent is None:
            raise RuntimeError("GridWorld.step called before reset.")
        # A plain int in range skips Discrete.contains, which costs more than the rest of the step.
        if not (type(action) is int and 0 <= action < len(MOVES)) and not self.action_space.contains(action):
            raise ValueError(f"GridWorld action {action!r} is not one of 0 up, 1 right, 2 down, 3 left, 4 stay.")
        self.agent, reward, terminated = self.outcome(self.agent, int(action))
        return self.state_of(self.agent), reward, terminated, False, {}

    def render(self) -> str | np.ndarray | None:
        if self.render_mode == "ansi":
            return self._render_text()
        if self.render_mode == "rgb_array":
            return self._render_image()
        return None

    def _state_option(self, state: Any) -> int:
        if not (is_int(state) and 0 <= state < self.observation_space.n):
            raise UserError(
                f"GridWorld reset option state={state!r} is not a state index; "
                f"pass an integer in 0..{self.observation_space.n - 1}."
            )
        return int(state)

    def _is_terminal_state(self, state: int) -> bool:
        return self.terminal_target and self.cell_of(state) == self.target

    # ---- pictures ----

    def _render_text(self) -> str:
        """'A' agent, 'T' target, 'X' forbidden, '.' other cells."""

        def symbol(cell: Cell) -> str:
            if cell == self.agent:
                return "A"
            if cell == self.target:
                return "T"
            return "X" if cell in self.forbidden else "."

        lines = (" ".join(symbol((r, c)) for c in range(1, self.cols + 1)) for r in range(1, self.rows + 1))
        return "\n".join(lines) + "\n"

    def _render_image(self) -> np.ndarray:
        """An (rows*32, cols*32, 3) uint8 picture in the book's colours: amber forbidden, cyan target, agent a dot."""
        image = np.full((self.rows * CELL_PX, self.cols * CELL_PX, 3), WHITE, dtype=np.uint8)

        def cell_pixels(cell: Cell) -> tuple[slice, slice]:
            top, left = (cell[0] - 1) * CELL_PX, (cell[1] - 1) * CELL_PX
            return slice(top, top + CELL_PX), slice(left, left + CELL_PX)

        for cell in self.forbidden:
            image[cell_pixels(cell)] = AMBER
        image[cell_pixels(self.target)] = CYAN
        image[::CELL_PX, :] = GREY
        image[:, ::CELL_PX] = GREY
        image[-1, :] = GREY
        image[:, -1] = GREY
        if self.agent is not None:
            ys, xs = np.mgrid[0:CELL_PX, 0:CELL_PX]
            centre = (CELL_PX - 1) / 2
            dot = (ys - centre) ** 2 + (xs - centre) ** 2 <= (CELL_PX / 4) ** 2
            image[cell_pixels(self.agent)][dot] = DARK
        return image

    def format_values(self, values: np.ndarray) -> str:
        """State values laid out as the grid, one decimal, as in the book's figures."""
        return format_values(values, self.rows, self.cols)

    def format_policy(self, actions: np.ndarray) -> str:
        """Greedy actions laid out as the grid of arrows; [x] marks forbidden cells, (x) the target."""
        return format_policy(actions, self.rows, self.cols, self.target, self.forbidden, self.terminal_target)


def format_values(values: np.ndarray, rows: int, cols: int) -> str:
    """A (rows*cols,) array of values as aligned rows of numbers with one decimal."""
    values = np.asarray(values, dtype=float)
    if values.shape != (rows * cols,):
        raise ValueError(f"format_values needs {rows * cols} values, got shape {values.shape}.")
    # Adding 0.0 turns a rounded -0.0 into 0.0, so tiny negative noise does not print as "-0.0".
    texts = [f"{round(float(v), 1) + 0.0:.1f}" for v in values]
    width = max(len(t) for t in texts)
    return "\n".join(" ".join(t.rjust(width) for t in texts[r * cols : (r + 1) * cols]) for r in range(rows))


def format_policy(
    actions: np.ndarray,
    rows: int,
    cols: int,
    target: Cell | None = None,
    forbidden: Sequence[Cell] = (),
    terminal_target: bool = False,
) -> str:
    """A (rows*cols,) array of actions as rows of arrows (↑ → ↓ ← ○ for stay).

    Forbidden cells are bracketed [↓] and the target parenthesised (○), so the figure keeps the book's layout in
    plain text; a terminal target shows (T), since no action is taken there.
    """
    actions = np.asarray(actions)
    if actions.shape != (rows * cols,):
        raise ValueError(f"format_policy needs {rows * cols} actions, got shape {actions.shape}.")
    forbidden = {tuple(cell) for cell in forbidden}
    target = None if target is None else tuple(target)

    def symbol(state: int) -> str:
        cell = (state // cols + 1, state % cols + 1)
        if cell == target:
            return "(T)" if terminal_target else f"({ARROWS[actions[state]]})"
        return f"[{ARROWS[actions[state]]}]" if cell in forbidden else f" {ARROWS[actions[state]]} "

    return "\n".join("".join(symbol(r * cols + c) for c in range(cols)).rstrip() for r in range(rows))
