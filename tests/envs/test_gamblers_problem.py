"""The gambler's problem against Sutton & Barto's Example 4.3 (Figure 4.3) and two closed forms."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs  # noqa: F401  (registers GamblersProblem-v0)
from agents.planning import PLANNERS, value_iteration
from envs.gamblers_problem import GamblersProblem
from rl.evaluation import evaluate_policy
from rl.mdp import model_of


def test_flips_by_hand_and_gymnasiums_checks():
    env = GamblersProblem(goal=10)
    env.reset(seed=0, options={"state": 7})
    assert env.stake(7, 0) == 1 and env.stake(7, 2) == 3 and env.stake(7, 4) == 3  # capped at goal - s = 3
    assert env.stake(2, 4) == 2  # capped at the capital
    obs, reward, terminated, _, _ = env.step(4)
    assert (obs, reward, terminated) in ((10, 1.0, True), (4, 0.0, False))
    env.reset(options={"state": 1})
    obs, reward, terminated, _, _ = env.step(0)
    assert (obs, reward, terminated) in ((2, 0.0, False), (0, 0.0, True))
    check_env(GamblersProblem(), skip_render_check=True)


@pytest.mark.parametrize(
    "kwargs", [{"p_heads": 0.0}, {"p_heads": 1.0}, {"goal": 1}, {"goal": 10.5}, {"p_heads": "nan"}]
)
def test_bad_kwargs_are_refused(kwargs):
    with pytest.raises(ValueError, match="p_heads|goal"):
        GamblersProblem(**kwargs)


def bold_play_values(p: float, goal: int) -> np.ndarray:
    """Values of staking min(s, goal - s) every time, from the linear system v = r + P v, written out directly."""
    system, rewards = np.eye(goal + 1), np.zeros(goal + 1)
    for s in range(1, goal):
        stake = min(s, goal - s)
        for nxt, prob in ((s + stake, p), (s - stake, 1.0 - p)):
            if nxt == goal:
                rewards[s] += prob
            elif nxt > 0:
                system[s, nxt] -= prob
    return np.linalg.solve(system, rewards)


@pytest.mark.parametrize("planner", sorted(PLANNERS))
@pytest.mark.parametrize(("p", "goal"), [(0.4, 100), (0.25, 100), (0.4, 37)])
def test_subfair_optimum_is_bold_play(planner, p, goal):
    # Figure 4.3 (p = 0.4): v(25) = 0.4 * v(50) = 0.16, v(50) = 0.4, v(75) = 0.4 + 0.6 * v(50) = 0.64. Dubins and
    # Savage: against the odds (p < 1/2), staking as much as is useful is optimal, so the planners find its values.
    result = PLANNERS[planner](model_of(gym.make("GamblersProblem-v0", p_heads=p, goal=goal)), 1.0)
    np.testing.assert_allclose(result.values, bold_play_values(p, goal), atol=1e-9)
    if goal == 100 and p == 0.4:
        np.testing.assert_allclose(result.values[[25, 50, 75]], [0.16, 0.4, 0.64], atol=1e-9)
        assert GamblersProblem().stake(50, int(result.policy[50])) == 50  # 0.4 against 0.352 for staking 25


def test_superfair_optimum_is_timid_play():
    # Exercise 4.9's other side (p = 0.55): staking $1 at a time is optimal, and its values are the gambler's ruin
    # probabilities (1 - (q/p)^s) / (1 - (q/p)^goal).
    p, goal = 0.55, 100
    result = value_iteration(model_of(gym.make("GamblersProblem-v0", p_heads=p)), 1.0)
    ratio = (1 - p) / p
    np.testing.assert_allclose(result.values[1:goal], (1 - ratio ** np.arange(1, goal)) / (1 - ratio**goal), atol=1e-8)
    assert (result.policy[1:goal] == 0).all()  # action 0 stakes $1


def test_greedy_play_wins_as_often_as_the_planner_says():
    env = gym.make("GamblersProblem-v0")
    result = value_iteration(model_of(env), 1.0)
    returns = evaluate_policy(env, lambda obs: int(result.policy[obs]), episodes=4000, seed=0)
    # Starts are uniform over 1 ... 99, so the chance of winning is the mean of v over those states.
    expected = result.values[1:100].mean()
    assert abs(returns.mean() - expected) < 4 * np.sqrt(expected * (1 - expected) / 4000)
