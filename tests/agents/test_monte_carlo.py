"""Monte Carlo control: returns and visit counting by hand, exploring starts, and learning outcomes against the
planner's optimum on the book's grid world and deterministic FrozenLake."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import envs  # noqa: F401  (registers GridWorld-v0)
from agents import monte_carlo as mc
from agents.planning import one_hot_policy, policy_evaluation, value_iteration
from envs.grid_world import GridWorld
from rl.config import build_config
from rl.errors import UserError
from rl.mdp import TabularModel, model_of
from rl.run import Run, RunSpec

FROZEN_LAKE = {"is_slippery": False}
LEFT, DOWN, RIGHT, UP = range(4)
"""FrozenLake's actions."""


def make_spec(agent: str, env_id: str, tmp_path, seed=0, steps=None, episodes=None, env_kwargs=None) -> RunSpec:
    return RunSpec(
        agent=agent,
        env_id=env_id,
        env_kwargs=env_kwargs or {},
        seed=seed,
        total_steps=steps,
        total_episodes=episodes,
        runs_dir=str(tmp_path),
        quiet=True,
    )


def train(fn, cfg, env_id, tmp_path, seed=0, steps=None, episodes=None, env_kwargs=None, run_dir=None):
    spec = make_spec(fn.__name__.removeprefix("train_"), env_id, tmp_path, seed, steps, episodes, env_kwargs)
    with Run(spec, {}, run_dir=run_dir) as run:
        return fn(cfg, run), run


def optimality_gap(model: TabularModel, greedy_actions: np.ndarray, gamma: float) -> np.ndarray:
    """(S,) v*(s) - v_pi(s) for the deterministic policy `greedy_actions`; zero where it is optimal."""
    optimum = value_iteration(model, gamma)
    values = policy_evaluation(model, one_hot_policy(greedy_actions, model.n_actions), gamma)
    return optimum.values - values


# ---- the math by hand ----


def test_discounted_returns_by_hand():
    # g_2 = 2, g_1 = 0 + 0.5 * 2 = 1, g_0 = 1 + 0.5 * 1 = 1.5
    np.testing.assert_allclose(mc.discounted_returns(np.array([1.0, 0.0, 2.0]), 0.5), [1.5, 1.0, 2.0])
    np.testing.assert_allclose(mc.discounted_returns(np.array([1.0, 1.0, 1.0]), 1.0), [3.0, 2.0, 1.0])
    assert mc.discounted_returns(np.array([]), 0.9).shape == (0,)


def hand_made_episode() -> mc.Episode:
    # (s, a) = (0, 1) is visited at t = 0 and t = 2; (1, 0) once at t = 1. Returns at gamma 0.5:
    # g_2 = 3, g_1 = 2 + 0.5 * 3 = 3.5, g_0 = 1 + 0.5 * 3.5 = 2.75.
    return mc.Episode(states=np.array([0, 1, 0]), actions=np.array([1, 0, 1]), rewards=np.array([1.0, 2.0, 3.0]))


@pytest.mark.parametrize("first_visit, expected_q01, expected_count01", [(True, 2.75, 1), (False, 2.875, 2)])
def test_first_visit_and_every_visit_averages(first_visit, expected_q01, expected_count01):
    q, returns_sum, returns_count = np.zeros((2, 2)), np.zeros((2, 2)), np.zeros((2, 2), dtype=np.int64)
    mc.add_episode_returns(q, returns_sum, returns_count, hand_made_episode(), 0.5, first_visit)
    assert q[0, 1] == pytest.approx(expected_q01)  # every visit: (2.75 + 3) / 2
    assert returns_count[0, 1] == expected_count01
    assert q[1, 0] == pytest.approx(3.5) and returns_count[1, 0] == 1
    assert q[0, 0] == 0.0 and q[1, 1] == 0.0 and returns_count.sum() == expected_count01 + 1

    # A second episode averages with the first: (1, 0) gets returns 3.5 and 1.0.
    second = mc.Episode(states=np.array([1]), actions=np.array([0]), rewards=np.array([1.0]))
    mc.add_episode_returns(q, returns_sum, returns_count, second, 0.5, first_visit)
    assert q[1, 0] == pytest.approx(2.25) and returns_count[1, 0] == 2


def test_first_visits_marks_each_pair_once():
    states, actions = np.array([3, 3, 3, 4, 3]), np.array([0, 1, 0, 0, 1])
    np.testing.assert_array_equal(mc.first_visits(states, actions), [True, True, False, True, False])


# ---- episodes and exploring starts ----


def test_generate_episode_stops_at_termination_and_cuts_at_max_steps(tmp_path):
    spec = make_spec("mc_basic", "FrozenLake-v1", tmp_path, steps=1_000, env_kwargs=FROZEN_LAKE)
    with Run(spec, {}) as run:
        # From the start, right then down falls into the hole at state 5: the env ends the episode after 2 steps.
        episode = mc.generate_episode(run, lambda s: DOWN, max_steps=10, first_action=RIGHT)
        np.testing.assert_array_equal(episode.states, [0, 1])
        np.testing.assert_array_equal(episode.actions, [RIGHT, DOWN])
        np.testing.assert_array_equal(episode.rewards, [0.0, 0.0])
        # Walking left into the wall never ends an episode; the cut counts it as finished and starts afresh.
        mc.start_from(run, 4)
        cut = mc.generate_episode(run, lambda s: LEFT, max_steps=3)
        np.testing.assert_array_equal(cut.states, [4, 4, 4])
        assert run.rollout.episodes == 2 and int(run.rollout.obs) == 0 and run.rollout.global_step == 5
        assert [e.length for e in run.rollout.pop_finished()] == [2, 3]


def test_start_from_uses_the_reset_option_or_the_toy_text_state(tmp_path):
    with Run(make_spec("mc_basic", "GridWorld-v0", tmp_path, steps=10), {}) as run:
        assert mc.start_from(run, 17) == 17 and run.rollout.obs == 17
        assert int(run.rollout.step(4).next_obs) == 17  # stay
    with Run(make_spec("mc_basic", "FrozenLake-v1", tmp_path, steps=10, env_kwargs=FROZEN_LAKE), {}) as run:
        assert mc.start_from(run, 10) == 10 and run.rollout.obs == 10
        assert int(run.rollout.step(DOWN).next_obs) == 14  # down from (2, 2) is (3, 2): the env really is in state 10


class NoChosenStarts(gym.Env):
    """Three states in a row, always starting at 0; ignores reset options and keeps its state in `position`."""

    observation_space = gym.spaces.Discrete(3)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.position = 0
        return 0, {}

    def step(self, action):
        self.position = min(self.position + int(action), 2)
        return self.position, float(self.position == 2), self.position == 2, False, {}


if "MCNoChosenStarts-v0" not in gym.registry:
    gym.register(id="MCNoChosenStarts-v0", entry_point=NoChosenStarts, max_episode_steps=20)


@pytest.mark.parametrize(
    "fn, cfg", [(mc.train_mc_basic, mc.MCBasicConfig()), (mc.train_mc_exploring_starts, mc.MCExploringStartsConfig())]
)
def test_exploring_starts_need_an_env_that_starts_from_a_chosen_state(tmp_path, fn, cfg):
    with pytest.raises(UserError, match="start from a chosen state.*use mc_epsilon_greedy"):
        train(fn, cfg, "MCNoChosenStarts-v0", tmp_path, steps=5_000)
    # The epsilon-greedy agent needs no exploring starts, and learns to walk right.
    result, _ = train(
        mc.train_mc_epsilon_greedy, mc.MCEpsilonGreedyConfig(), "MCNoChosenStarts-v0", tmp_path, steps=500
    )
    assert result.eval_returns.mean() == 1.0


@pytest.mark.parametrize(
    "fn, cfg", [(mc.train_mc_basic, mc.MCBasicConfig()), (mc.train_mc_epsilon_greedy, mc.MCEpsilonGreedyConfig())]
)
def test_a_continuous_observation_space_is_a_user_error(tmp_path, fn, cfg):
    with pytest.raises(UserError, match="needs a Discrete observation space"):
        train(fn, cfg, "CartPole-v1", tmp_path, steps=100)


def test_bad_config_values_are_user_errors():
    with pytest.raises(UserError, match="episode_length must be at least 1"):
        build_config(mc.MCBasicConfig, {"episode_length": 0}, "mc_basic")
    with pytest.raises(UserError, match="epsilon must be in"):
        build_config(mc.MCEpsilonGreedyConfig, {"epsilon": 1.5}, "mc_epsilon_greedy")


# ---- learning outcomes ----


def truncated_q_values(model: TabularModel, actions: np.ndarray, gamma: float, length: int) -> np.ndarray:
    """(S, A) the expected return of `length`-step episodes that take a in s and then follow `actions`."""
    policy = one_hot_policy(actions, model.n_actions)
    r_pi = (policy * model.rewards).sum(axis=1)
    p_pi = np.einsum("sa,sat->st", policy, model.dense_transitions())  # written out apart from rl.mdp
    values = np.zeros(model.n_states)
    for _ in range(length - 1):
        values = r_pi + gamma * p_pi @ values
    return model.q_from_v(values, gamma)


def test_mc_basic_finds_the_grid_world_optimum_and_its_truncated_q_values(tmp_path):
    model = GridWorld().model()
    cfg = mc.MCBasicConfig()
    sweeps = 8  # the policy stops changing after 6; the budget ends exactly at the end of a sweep
    result, run = train(mc.train_mc_basic, cfg, "GridWorld-v0", tmp_path, episodes=sweeps * 25 * 5)
    np.testing.assert_allclose(optimality_gap(model, result.greedy_actions, cfg.gamma), 0.0, atol=1e-9)
    # Deterministic env and policy: one episode per pair is the exact episode_length-step return of pi*.
    optimal_actions = value_iteration(model, cfg.gamma).policy
    expected = truncated_q_values(model, optimal_actions, cfg.gamma, cfg.episode_length)
    np.testing.assert_allclose(result.q_values, expected, atol=1e-9)
    assert run.rollout.global_step == sweeps * 25 * 5 * cfg.episode_length


def test_mc_basic_finds_the_frozen_lake_optimum(tmp_path):
    cfg = mc.MCBasicConfig()
    result, run = train(mc.train_mc_basic, cfg, "FrozenLake-v1", tmp_path, steps=3_000, env_kwargs=FROZEN_LAKE)
    np.testing.assert_allclose(optimality_gap(model_of(run.env), result.greedy_actions, cfg.gamma), 0.0, atol=1e-9)
    assert result.eval_returns.mean() == 1.0


@pytest.mark.parametrize("first_visit", [True, False])
def test_mc_exploring_starts_finds_the_frozen_lake_optimum(tmp_path, first_visit):
    cfg = mc.MCExploringStartsConfig(first_visit=first_visit)
    result, run = train(
        mc.train_mc_exploring_starts, cfg, "FrozenLake-v1", tmp_path, steps=8_000, env_kwargs=FROZEN_LAKE
    )
    np.testing.assert_allclose(optimality_gap(model_of(run.env), result.greedy_actions, cfg.gamma), 0.0, atol=1e-9)


def test_mc_exploring_starts_nearly_finds_the_grid_world_optimum(tmp_path):
    # Sample averages keep the returns of early, poor policies, so a rarely started pair is slow to forget them; over
    # seeds 0-7 this budget leaves 0 to 4 states whose greedy path is worth up to 1.0 less than the optimal one.
    model = GridWorld().model()
    cfg = mc.MCExploringStartsConfig(episode_length=10)
    result, _ = train(mc.train_mc_exploring_starts, cfg, "GridWorld-v0", tmp_path, steps=60_000)
    gap = optimality_gap(model, result.greedy_actions, cfg.gamma)
    assert (gap < 1e-9).sum() >= 20
    assert gap.max() <= 1.0 + 1e-9


def test_mc_epsilon_greedy_reaches_the_frozen_lake_goal(tmp_path):
    result, _ = train(
        mc.train_mc_epsilon_greedy,
        mc.MCEpsilonGreedyConfig(),
        "FrozenLake-v1",
        tmp_path,
        steps=10_000,
        env_kwargs=FROZEN_LAKE,
    )
    assert result.eval_returns.mean() == 1.0
    np.testing.assert_allclose(result.policy.sum(axis=1), 1.0)
    assert result.policy.max() == pytest.approx(1.0 - 0.1 + 0.1 / 4)  # epsilon-greedy, not greedy


def test_mc_epsilon_greedy_greedy_policy_reaches_the_grid_world_target_from_every_cell(tmp_path):
    # The greedy policy of q_pi for an epsilon-greedy pi may go round forbidden cells that v* crosses (book 5.4),
    # so the check is that it reaches the target from everywhere, not that it is optimal.
    env = GridWorld()
    result, _ = train(mc.train_mc_epsilon_greedy, mc.MCEpsilonGreedyConfig(), "GridWorld-v0", tmp_path, steps=60_000)
    for start in range(25):
        cell = env.cell_of(start)
        for _ in range(25):
            cell, _, _ = env.outcome(cell, int(result.greedy_actions[env.state_of(cell)]))
        assert cell == env.target, f"the greedy policy from {env.cell_of(start)} never reaches the target"


def test_epsilon_decays_linearly_over_steps(tmp_path):
    cfg = mc.MCEpsilonGreedyConfig(epsilon=1.0, epsilon_end=0.0, epsilon_decay_steps=1_000)
    result, _ = train(mc.train_mc_epsilon_greedy, cfg, "GridWorld-v0", tmp_path, steps=2_000)
    np.testing.assert_allclose(result.policy.max(axis=1), 1.0)  # epsilon reached 0: the final policy is greedy


# ---- resume ----


def test_resumed_exploring_starts_run_ends_where_an_uninterrupted_one_does(tmp_path):
    cfg = mc.MCExploringStartsConfig()
    whole, _ = train(mc.train_mc_exploring_starts, cfg, "GridWorld-v0", tmp_path / "whole", episodes=400)
    first, first_run = train(mc.train_mc_exploring_starts, cfg, "GridWorld-v0", tmp_path / "split", episodes=200)
    spec = make_spec("mc_exploring_starts", "GridWorld-v0", tmp_path / "split", episodes=400)
    with Run(spec, {}, run_dir=first_run.run_dir) as run:
        np.testing.assert_array_equal(run.state("q", np.zeros((25, 5))), first.q_values)  # restored before training
        assert run.rollout.episodes == 200
        resumed = mc.train_mc_exploring_starts(cfg, run)
        assert run.rollout.episodes == 400
    assert not np.array_equal(first.q_values, whole.q_values)
    np.testing.assert_array_equal(resumed.q_values, whole.q_values)
