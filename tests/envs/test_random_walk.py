"""The random walk against Sutton & Barto's Example 6.2 (Figure 6.2) and the 19-state walk of Example 7.1."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs  # noqa: F401  (registers RandomWalk-v0)
from agents.planning import evaluate_policy_exactly, value_iteration
from agents.td import TD0Config, train_td0
from envs.random_walk import LEFT, RIGHT, RandomWalk
from rl.mdp import model_of
from rl.run import Run, RunSpec

TRUE_VALUES = np.arange(1, 6) / 6
"""Example 6.2: the chance of leaving A, B, C, D, E on the right, 1/6 ... 5/6."""


def test_moves_by_hand_and_gymnasiums_checks():
    env = RandomWalk()
    assert env.reset(seed=0) == (2, {})  # C
    assert env.step(RIGHT) == (3, 0.0, False, False, {})
    assert env.step(RIGHT) == (4, 0.0, False, False, {})
    assert env.step(RIGHT) == (4, 1.0, True, False, {})  # off the right end from E: +1
    env.reset(options={"state": 0})
    assert env.step(LEFT) == (0, 0.0, True, False, {})  # off the left end from A: 0
    assert RandomWalk(n_states=19, left_reward=-1.0).outcome(0, LEFT) == (None, -1.0)
    check_env(RandomWalk(), skip_render_check=True)


@pytest.mark.parametrize("kwargs", [{"n_states": 4}, {"n_states": 0}, {"n_states": 5.0}, {"left_reward": float("nan")}])
def test_bad_kwargs_are_refused(kwargs):
    with pytest.raises(ValueError, match="n_states|left_reward"):
        RandomWalk(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [({}, TRUE_VALUES), ({"n_states": 19, "left_reward": -1.0}, np.arange(-9, 10) / 10)],  # Examples 6.2 and 7.1
)
def test_the_uniform_policys_values_are_the_books(kwargs, expected):
    model = model_of(gym.make("RandomWalk-v0", **kwargs))
    uniform = np.full((model.n_states, 2), 0.5)
    np.testing.assert_allclose(evaluate_policy_exactly(model, uniform, gamma=1.0), expected, atol=1e-12)
    optimal = value_iteration(model, gamma=0.9)  # undiscounted, a step left costs nothing and ties with right
    np.testing.assert_allclose(optimal.values, 0.9 ** np.arange(model.n_states)[::-1])
    assert (optimal.policy == RIGHT).all()


def td0_values(tmp_path, alpha: float, episodes: int, seed: int) -> np.ndarray:
    """TD(0) of the book's Example 6.2: no discount, every estimate 0.5 at first."""
    spec = RunSpec("td0", "RandomWalk-v0", seed=seed, total_episodes=episodes, runs_dir=str(tmp_path), quiet=True,
                   eval_episodes=1)  # fmt: skip
    with Run(spec, {}) as run:
        return train_td0(TD0Config(gamma=1.0, alpha=alpha, initial_value=0.5), run).values


def test_one_episode_changes_only_the_state_it_left_from(tmp_path):
    # The book's reading of Figure 6.2 (left): after the first episode, which ended on the left, only V(A) changed,
    # by alpha * (0 + 0 - 0.5) = -0.05; an episode that ends on the right moves V(E) by alpha * (1 - 0.5) = +0.05.
    ends = set()
    for seed in range(6):
        values = td0_values(tmp_path, alpha=0.1, episodes=1, seed=seed)
        if values[0] != 0.5:
            np.testing.assert_array_equal(values, [0.45, 0.5, 0.5, 0.5, 0.5])
            ends.add("left")
        else:
            np.testing.assert_array_equal(values, [0.5, 0.5, 0.5, 0.5, 0.55])
            ends.add("right")
    assert ends == {"left", "right"}


def reference_rms_error(alpha: float, episodes: int, runs: int) -> tuple[float, float]:
    """Mean and standard error of TD(0)'s RMS error after `episodes`, from a plain loop written from the book."""
    rng = np.random.default_rng(123)
    errors = []
    for _ in range(runs):
        v = np.array([0.0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.0])  # terminal, A ... E, terminal
        for _ in range(episodes):
            s = 3
            while s not in (0, 6):
                s_next = s + (1 if rng.random() < 0.5 else -1)
                v[s] += alpha * (float(s_next == 6) + v[s_next] - v[s])
                s = s_next
        errors.append(np.sqrt(np.mean((v[1:6] - TRUE_VALUES) ** 2)))
    return float(np.mean(errors)), float(np.std(errors) / np.sqrt(runs))


@pytest.mark.parametrize("episodes", [10, 100])
def test_rms_error_curves_agree_with_a_plain_loop_and_figure_6_2(tmp_path, episodes):
    # Figure 6.2 (right), TD's RMS error averaged over runs: after 10 episodes the larger step size is ahead, after 100
    # the smaller one, which keeps falling while the larger one levels off. Means over 40 runs of ours against 400 of
    # the plain loop; ours (seeds 0-39) were 0.175 and 0.097 after 10 episodes, 0.037 and 0.073 after 100.
    means = {}
    for alpha in (0.05, 0.15):
        ours = [
            np.sqrt(np.mean((td0_values(tmp_path, alpha, episodes, seed) - TRUE_VALUES) ** 2)) for seed in range(40)
        ]
        reference, reference_se = reference_rms_error(alpha, episodes, runs=400)
        standard_error = np.hypot(np.std(ours) / np.sqrt(len(ours)), reference_se)
        assert abs(np.mean(ours) - reference) < 4 * standard_error + 1e-3
        means[alpha] = np.mean(ours)
    faster, slower = (0.15, 0.05) if episodes == 10 else (0.05, 0.15)
    assert means[faster] < means[slower] - 0.02
