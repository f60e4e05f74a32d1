"""The textbook grid world: Gymnasium's contract, the book's reward rules by hand, and model() against step()."""

from __future__ import annotations

import importlib
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs
from envs.grid_world import GridWorld
from rl.errors import UserError

UP, RIGHT, DOWN, LEFT, STAY = range(5)
DISTINCT_REWARDS = {"r_boundary": -2.0, "r_forbidden": -3.0, "r_target": 5.0, "r_other": 0.5}
"""Rewards that differ from each other, so a test can tell which rule fired."""


def state(cell: tuple[int, int], cols: int = 5) -> int:
    return (cell[0] - 1) * cols + (cell[1] - 1)


@pytest.mark.parametrize("kwargs", [{}, {"terminal_target": True}])
def test_passes_gymnasium_env_checker(kwargs: dict) -> None:
    env = gym.make("GridWorld-v0", **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the checker reports problems as warnings
        check_env(env.unwrapped)  # through gym.make the env has a spec, so every render mode is checked too


def test_registered_with_a_time_limit_of_100_steps() -> None:
    assert "GridWorld-v0" in envs.REGISTERED_ENVS and "GridWorld-v0" in envs.ENV_DESCRIPTIONS
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        importlib.reload(envs)  # registering again would warn about overriding the id
    env = gym.make("GridWorld-v0")
    env.reset(seed=0)
    for step in range(1, 101):
        _, _, terminated, truncated, _ = env.step(STAY)
        assert not terminated and truncated == (step == 100)


@pytest.mark.parametrize(
    ("cell", "action", "next_cell", "reward"),
    [
        ((1, 1), UP, (1, 1), -1.0),  # off the grid: stay put
        ((1, 1), LEFT, (1, 1), -1.0),
        ((5, 5), RIGHT, (5, 5), -1.0),
        ((1, 2), DOWN, (2, 2), -1.0),  # into a forbidden cell: allowed, but punished
        ((2, 2), STAY, (2, 2), -1.0),  # staying in a forbidden cell is punished too
        ((2, 2), UP, (1, 2), 0.0),  # leaving it is an ordinary move
        ((1, 3), RIGHT, (1, 4), 0.0),
        ((5, 3), UP, (4, 3), 1.0),  # into the target
        ((4, 3), STAY, (4, 3), 1.0),  # staying at the target keeps paying
        ((4, 3), LEFT, (4, 2), -1.0),
    ],
)
def test_book_rules_by_hand(cell: tuple[int, int], action: int, next_cell: tuple[int, int], reward: float) -> None:
    env = GridWorld()
    env.reset(seed=0, options={"state": state(cell)})
    obs, r, terminated, truncated, _ = env.step(action)
    assert (obs, r, terminated, truncated) == (state(next_cell), reward, False, False)


def test_boundary_rule_comes_before_the_forbidden_rule() -> None:
    env = GridWorld(**DISTINCT_REWARDS)
    env.reset(options={"state": state((5, 2))})  # a forbidden cell on the bottom edge
    obs, reward, _, _, _ = env.step(DOWN)
    assert (obs, reward) == (state((5, 2)), -2.0)
    obs, reward, _, _, _ = env.step(STAY)
    assert (obs, reward) == (state((5, 2)), -3.0)


def test_terminal_target_ends_the_episode_on_entry() -> None:
    env = GridWorld(terminal_target=True)
    env.reset(options={"state": state((5, 3))})
    assert env.step(UP)[:3] == (state((4, 3)), 1.0, True)
    env.reset(options={"state": state((5, 3))})
    assert env.step(RIGHT)[:3] == (state((5, 4)), 0.0, False)
    env.reset(options={"state": state((4, 3))})  # started in the terminal state: nothing more to earn
    assert env.step(STAY)[:3] == (state((4, 3)), 0.0, True)


def test_observation_index_is_row_major_from_the_top_left() -> None:
    env = GridWorld(rows=3, cols=4, target=[1, 4], forbidden=[[2, 2]])
    assert env.observation_space.n == 12 and env.action_space.n == 5
    assert env.state_of((2, 3)) == 6 and env.cell_of(6) == (2, 3)
    assert env.reset(options={"state": 6})[0] == 6
    assert env.step(RIGHT)[0] == 7


def test_start_cells() -> None:
    assert GridWorld(start=[1, 2]).reset(seed=3)[0] == 1
    starts = {GridWorld().reset(seed=seed)[0] for seed in range(500)}
    assert starts == set(range(25))  # uniform over all cells; missing one has probability ~1e-8
    terminal_starts = {GridWorld(terminal_target=True).reset(seed=seed)[0] for seed in range(500)}
    assert terminal_starts == set(range(25)) - {state((4, 3))}
    assert GridWorld().reset(seed=7) == GridWorld().reset(seed=7)


def test_lists_and_tuples_name_the_same_cells() -> None:
    from_lists = GridWorld(target=[1, 1], forbidden=[[2, 2], [3, 1]], start=[5, 5])
    from_tuples = GridWorld(target=(1, 1), forbidden=((2, 2), (3, 1)), start=(5, 5))
    assert (from_lists.target, from_lists.forbidden, from_lists.start) == (
        from_tuples.target,
        from_tuples.forbidden,
        from_tuples.start,
    )


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"rows": 0}, "rows"),
        ({"cols": 2.5}, "cols"),
        ({"target": [6, 1]}, "target"),
        ({"target": [4]}, "target"),
        ({"target": "43"}, "target"),
        ({"target": [2, 2]}, "forbidden"),
        ({"forbidden": [[0, 1]]}, "forbidden"),
        ({"forbidden": [2, 2]}, "forbidden"),
        ({"start": [1, 6]}, "start"),
        ({"start": [4, 3], "terminal_target": True}, "start"),
        ({"rows": 3, "cols": 3}, "target"),  # the book's target (4, 3) does not fit a 3x3 grid
        ({"render_mode": "human"}, "render_mode"),
        ({"r_target": float("nan")}, "r_target=nan is not a finite number"),
        ({"r_other": float("-inf")}, "r_other=-inf is not a finite number"),
        ({"r_boundary": "1"}, "r_boundary='1' is not a finite number"),
    ],
)
def test_invalid_kwargs_raise_a_user_error_naming_them(kwargs: dict, named: str) -> None:
    with pytest.raises(UserError, match=named):
        GridWorld(**kwargs)


@pytest.mark.parametrize("options", [{"state": 25}, {"state": -1}, {"state": "3"}, {"start": 3}])
def test_invalid_reset_options_raise_a_user_error(options: dict) -> None:
    with pytest.raises(UserError, match="option"):
        GridWorld().reset(options=options)


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"terminal_target": True},
        {"rows": 3, "cols": 4, "target": [1, 4], "forbidden": [[2, 2], [2, 3]], **DISTINCT_REWARDS},
        {"rows": 3, "cols": 4, "target": [3, 1], "forbidden": [], "terminal_target": True, **DISTINCT_REWARDS},
    ],
)
def test_model_agrees_with_step_everywhere(kwargs: dict) -> None:
    env = GridWorld(**kwargs)
    model = env.model()
    n_states, n_actions = env.observation_space.n, env.action_space.n
    transitions = model.dense_transitions()
    assert transitions.shape == (n_states, n_actions, n_states) and model.rewards.shape == (n_states, n_actions)
    for s in range(n_states):
        for a in range(n_actions):
            env.reset(options={"state": s})
            obs, reward, terminated, _, _ = env.step(a)
            assert model.rewards[s, a] == reward
            continuing = np.zeros(n_states)
            if not terminated:
                continuing[obs] = 1.0  # terminating moves carry no continuing mass
            np.testing.assert_array_equal(transitions[s, a], continuing)


def test_ansi_render_shows_agent_target_and_forbidden_cells() -> None:
    env = GridWorld(render_mode="ansi")
    env.reset(options={"state": state((1, 2))})
    assert env.render() == ". A . . .\n. X X . .\n. . X . .\n. X T X .\n. X . . .\n"


def test_rgb_render_colours() -> None:
    env = GridWorld(render_mode="rgb_array")
    env.reset(options={"state": state((1, 1))})
    image = env.render()
    assert image.shape == (160, 160, 3) and image.dtype == np.uint8

    def pixel(cell: tuple[int, int], dy: int = 16, dx: int = 16) -> tuple[int, ...]:
        return tuple(image[(cell[0] - 1) * 32 + dy, (cell[1] - 1) * 32 + dx])

    assert pixel((1, 1)) == (30, 30, 30)  # the agent's dot
    assert pixel((1, 1), 4, 4) == (255, 255, 255)  # the rest of its cell
    assert pixel((2, 2)) == (255, 191, 0)  # forbidden: amber
    assert pixel((4, 3)) == (0, 200, 230)  # target: cyan


def test_formats_like_the_book_figures() -> None:
    env = GridWorld()
    values = np.array([5.8, 5.6, 6.2, 6.5, 5.8] + [10.0] + [6.5] * 18 + [-1e-12])
    lines = env.format_values(values).split("\n")
    assert lines[:2] == [" 5.8  5.6  6.2  6.5  5.8", "10.0  6.5  6.5  6.5  6.5"]
    assert lines[4] == " 6.5  6.5  6.5  6.5  0.0"  # noise below zero does not print as -0.0
    actions = np.array([UP, RIGHT, DOWN, LEFT, STAY] * 5)
    lines = env.format_policy(actions).split("\n")
    assert lines[1] == " ↑ [→][↓] ←  ○" and lines[3] == " ↑ [→](↓)[←] ○"
    assert GridWorld(terminal_target=True).format_policy(actions).split("\n")[3] == " ↑ [→](T)[←] ○"
