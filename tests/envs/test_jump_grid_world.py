"""Sutton & Barto's grid world of Example 3.5 against the book's Figures 3.2 and 3.5."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs  # noqa: F401  (registers JumpGridWorld-v0)
from agents.planning import PLANNERS, evaluate_policy_exactly, policy_evaluation, tied_actions
from agents.td import TD0Config, train_td0
from envs.jump_grid_world import JumpGridWorld
from rl.mdp import model_of
from rl.run import Run, RunSpec

NORTH, SOUTH, EAST, WEST = range(4)

FIGURE_3_2 = [
    [3.3, 8.8, 4.4, 5.3, 1.5],
    [1.5, 3.0, 2.3, 1.9, 0.5],
    [0.1, 0.7, 0.7, 0.4, -0.4],
    [-1.0, -0.4, -0.4, -0.6, -1.2],
    [-1.9, -1.3, -1.2, -1.4, -2.0],
]
"""The equiprobable random policy's values at gamma = 0.9, as printed."""
FIGURE_3_5 = [
    [22.0, 24.4, 22.0, 19.4, 17.5],
    [19.8, 22.0, 19.8, 17.8, 16.0],
    [17.8, 19.8, 17.8, 16.0, 14.4],
    [16.0, 17.8, 16.0, 14.4, 13.0],
    [14.4, 16.0, 14.4, 13.0, 11.7],
]
"""The optimal values at gamma = 0.9, as printed."""


def test_moves_and_jumps_by_hand_and_gymnasiums_checks():
    env = JumpGridWorld()
    assert env.outcome(1, SOUTH) == env.outcome(1, WEST) == (21, 10.0)  # A -> A', whatever the action
    assert env.outcome(3, NORTH) == (13, 5.0)  # B -> B'
    assert env.outcome(0, NORTH) == (0, -1.0) and env.outcome(24, EAST) == (24, -1.0)  # off the grid: stay, -1
    assert env.outcome(12, EAST) == (13, 0.0)
    check_env(JumpGridWorld(), skip_render_check=True)


def test_the_uniform_policys_values_are_figure_3_2():
    model, uniform = model_of(gym.make("JumpGridWorld-v0")), np.full((25, 4), 0.25)
    for values in (evaluate_policy_exactly(model, uniform, 0.9), policy_evaluation(model, uniform, 0.9)):
        np.testing.assert_array_equal(np.round(values, 1).reshape(5, 5), FIGURE_3_2)


@pytest.mark.parametrize("name", sorted(PLANNERS))
def test_the_optimal_values_are_figure_3_5(name):
    result = PLANNERS[name](model_of(gym.make("JumpGridWorld-v0")), 0.9)
    np.testing.assert_array_equal(np.round(result.values, 1).reshape(5, 5), FIGURE_3_5)
    tied = tied_actions(result.q_values)
    assert tied[1].all() and tied[3].all()  # in A and B every action jumps
    assert tied[0].tolist() == [False, False, True, False]  # east from the corner, towards A (Figure 3.5)


def test_td0_learns_figure_3_2(tmp_path):
    # Continuing values from 100-step episodes: the cut bootstraps, so TD(0) learns the endless task's values.
    # Seed 0, alpha 0.02: RMS error 2.65 at the start, 0.17-0.19 from 50,000 steps on.
    spec = RunSpec("td0", "JumpGridWorld-v0", total_steps=60_000, runs_dir=str(tmp_path), quiet=True, eval_episodes=1)
    with Run(spec, {}) as run:
        values = train_td0(TD0Config(alpha=0.02, eval_every=60_000), run).values
    assert np.sqrt(np.mean((values - np.ravel(FIGURE_3_2)) ** 2)) < 0.3
