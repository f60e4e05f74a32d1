"""The random walk against Sutton & Barto's Example 6.2 (Figure 6.2) and the 19-state walk of Example 7.1."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs  # noqa: F401  (registers RandomWalk-v0)
from agents.planning import evaluate_policy_exactly, value_iteration
from agents.td import NStepTDConfig, TD0Config, train_mc_prediction, train_nstep_td, train_td0
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


@pytest.mark.parametrize(
    "kwargs",
    [{"n_states": 4}, {"n_states": 0}, {"n_states": 5.0}, {"left_reward": float("nan")}, {"left_reward": "nan"}],
)
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


def predicted_values(tmp_path, alpha: float, episodes: int, seed: int, n: int | None = 1, walk=None) -> np.ndarray:
    """n-step TD (TD(0) for n = 1, constant-alpha MC for n = None) on the book's walk: no discount, and every estimate
    0.5 at first (Example 6.2) or 0 (the 19-state walk of Example 7.1, `walk` its kwargs)."""
    spec = RunSpec("nstep_td", "RandomWalk-v0", walk or {}, seed, total_episodes=episodes, runs_dir=str(tmp_path),
                   quiet=True, eval_episodes=1)  # fmt: skip
    initial_value = 0.0 if walk else 0.5
    with Run(spec, {}) as run:
        if n is None:
            return train_mc_prediction(TD0Config(gamma=1.0, alpha=alpha, initial_value=initial_value), run).values
        if n == 1:
            return train_td0(TD0Config(gamma=1.0, alpha=alpha, initial_value=initial_value), run).values
        return train_nstep_td(NStepTDConfig(gamma=1.0, alpha=alpha, initial_value=initial_value, n=n), run).values


def td0_values(tmp_path, alpha: float, episodes: int, seed: int) -> np.ndarray:
    return predicted_values(tmp_path, alpha, episodes, seed)


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


def reference_rms_error(alpha: float, episodes: int, runs: int, n: int | None = 1, n_states: int = 5):
    """Mean and standard error of the RMS error after `episodes`, from a plain loop written from the book's n-step TD
    (S&B 7.1; n = None updates with the whole return, constant-alpha MC). The walk does not depend on the estimates,
    so each episode is drawn first and its updates then made in the order the online algorithm makes them."""
    rng = np.random.default_rng(123)
    walk19 = n_states == 19
    true_values, left_reward = (np.arange(-9, 10) / 10, -1.0) if walk19 else (TRUE_VALUES, 0.0)
    errors = []
    for _ in range(runs):
        v = np.full(n_states + 2, 0.0 if walk19 else 0.5)  # left terminal, the chain, right terminal
        v[0] = v[-1] = 0.0
        for _ in range(episodes):
            states, rewards = [n_states // 2 + 1], []  # S_0, S_1, ...; R_1, R_2, ...
            while 0 < states[-1] < n_states + 1:
                states.append(states[-1] + (1 if rng.random() < 0.5 else -1))
                rewards.append({0: left_reward, n_states + 1: 1.0}.get(states[-1], 0.0))
            big_t = len(rewards)
            for tau in range(big_t):
                end = big_t if n is None else min(tau + n, big_t)
                g = sum(rewards[tau:end]) + (v[states[end]] if end < big_t else 0.0)
                v[states[tau]] += alpha * (g - v[states[tau]])
        errors.append(np.sqrt(np.mean((v[1:-1] - true_values) ** 2)))
    return float(np.mean(errors)), float(np.std(errors) / np.sqrt(runs))


def mean_rms_error(tmp_path, alpha, episodes, n=1, walk=None, seeds=40) -> float:
    """Our mean RMS error over `seeds` runs, checked against 400 runs of the plain loop."""
    true_values = np.arange(-9, 10) / 10 if walk else TRUE_VALUES
    ours = [
        np.sqrt(np.mean((predicted_values(tmp_path, alpha, episodes, seed, n, walk) - true_values) ** 2))
        for seed in range(seeds)
    ]
    reference, reference_se = reference_rms_error(alpha, episodes, runs=400, n=n, n_states=len(true_values))
    standard_error = np.hypot(np.std(ours) / np.sqrt(len(ours)), reference_se)
    assert abs(np.mean(ours) - reference) < 4 * standard_error + 1e-3, (np.mean(ours), reference)
    return float(np.mean(ours))


@pytest.mark.parametrize("episodes", [10, 100])
def test_rms_error_curves_agree_with_a_plain_loop_and_figure_6_2(tmp_path, episodes):
    # Figure 6.2 (right), RMS error averaged over runs. TD: after 10 episodes the larger step size is ahead, after 100
    # the smaller one, which keeps falling while the larger one levels off; ours (seeds 0-39) were 0.175 and 0.097
    # after 10 episodes, 0.037 and 0.073 after 100. After 100, TD (alpha 0.05) is well below constant-alpha MC at
    # the figure's step sizes; ours 0.095 at alpha 0.01 and 0.094 at 0.03 (seeds 0-29).
    means = {alpha: mean_rms_error(tmp_path, alpha, episodes) for alpha in (0.05, 0.15)}
    faster, slower = (0.15, 0.05) if episodes == 10 else (0.05, 0.15)
    assert means[faster] < means[slower] - 0.02
    if episodes == 100:
        for alpha in (0.01, 0.03):
            assert means[0.05] < mean_rms_error(tmp_path, alpha, 100, n=None, seeds=30) - 0.03


def test_nstep_td_on_the_19_state_walk_agrees_with_a_plain_loop(tmp_path):
    # Example 7.1's walk (values start at 0), after 10 episodes over 20 seeds: n = 4 at alpha 0.2 gave 0.18, against
    # 0.21 for TD(0) at the best of the step sizes tried (0.8) and 0.27 for n = 16 (at 0.2).
    mean_rms_error(tmp_path, 0.2, 10, n=4, walk={"n_states": 19, "left_reward": -1.0}, seeds=20)


def test_nstep_td_with_n_equal_one_is_td0(tmp_path):
    spec = RunSpec("nstep_td", "RandomWalk-v0", seed=3, total_episodes=20, runs_dir=str(tmp_path), quiet=True,
                   eval_episodes=1)  # fmt: skip
    with Run(spec, {}) as run:
        values = train_nstep_td(NStepTDConfig(gamma=1.0, alpha=0.1, initial_value=0.5, n=1), run).values
    np.testing.assert_array_equal(values, predicted_values(tmp_path, 0.1, 20, seed=3, n=1))


def test_monte_carlo_moves_every_visit_towards_its_return(tmp_path):
    # After one episode each state visited m times holds 1 - 0.5 * 0.9^m if it ended on the right (every return 1),
    # 0.5 * 0.9^m if on the left (every return 0); the visited states are neighbours around C.
    for seed in range(4):
        values = predicted_values(tmp_path, 0.1, 1, seed, n=None)
        ended_right = values.max() > 0.5
        visits = np.log((1 - values if ended_right else values) / 0.5) / np.log(0.9)
        np.testing.assert_allclose(visits, np.round(visits), atol=1e-9)
        visited = np.flatnonzero(np.round(visits))
        assert 2 in visited and np.array_equal(visited, np.arange(visited[0], visited[-1] + 1))
