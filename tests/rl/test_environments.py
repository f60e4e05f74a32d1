"""make_env's observation adapters: composite discrete observations as one state, other composites as one Box."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from agents.tabular import table_shape
from rl.environments import MAX_INDEXED_STATES, IndexedObservation, make_env, with_plain_observations
from rl.run import Run, RunSpec


class FixedObservationEnv(gym.Env):
    """One-step env whose observations are drawn from `space` (seeded), for checking the adapters."""

    def __init__(self, space: gym.Space) -> None:
        self.observation_space = space
        self.action_space = gym.spaces.Discrete(2)

    def reset(self, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.observation_space.seed(seed)
        return self.observation_space.sample(), {}

    def step(self, action):
        return self.observation_space.sample(), 0.0, True, False, {}


def test_blackjack_states_are_the_row_major_index_of_its_tuple():
    env = make_env("Blackjack-v1")
    assert env.observation_space == gym.spaces.Discrete(32 * 11 * 2)
    for seed in range(20):
        obs, _ = env.reset(seed=seed)
        player_sum, dealer_card, usable_ace = env.unwrapped._get_obs()
        assert obs == (player_sum * 11 + dealer_card) * 2 + usable_ace
        assert env.observation_space.contains(obs)


def test_the_indexed_env_keeps_the_env_contract():
    env = make_env("Blackjack-v1", {"sab": True})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the checker prefers unwrapped envs; the wrapper is what is checked here
        check_env(env, skip_render_check=True)
    assert env.spec.make().observation_space == gym.spaces.Discrete(704)  # the spec remakes the wrapper too


def test_multidiscrete_parts_count_from_their_starts():
    space = gym.spaces.MultiDiscrete([3, 4], start=[1, -2])
    env = IndexedObservation(FixedObservationEnv(space))
    assert env.observation_space == gym.spaces.Discrete(12)
    indices = {env.observation(np.array([a, b])) for a in range(1, 4) for b in range(-2, 2)}
    assert indices == set(range(12))  # a bijection onto the states
    assert env.observation(np.array([2, 1])) == (2 - 1) * 4 + (1 + 2)


def test_other_composites_are_flattened_into_one_box():
    dict_space = gym.spaces.Dict({"position": gym.spaces.Box(-1, 1, (2,)), "mode": gym.spaces.Discrete(3)})
    env = with_plain_observations(FixedObservationEnv(dict_space))
    assert isinstance(env.observation_space, gym.spaces.Box) and env.observation_space.shape == (5,)
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs) and obs[:3].sum() == 1  # the Discrete part one-hot ("mode" first)
    huge = gym.spaces.MultiDiscrete([1000, 1000, 2])  # 2,000,000 combinations: no table, the one-hots instead
    assert 1000 * 1000 * 2 > MAX_INDEXED_STATES
    assert with_plain_observations(FixedObservationEnv(huge)).observation_space.shape == (2002,)
    box = FixedObservationEnv(gym.spaces.Box(-1, 1, (3,)))
    assert with_plain_observations(box) is box


def test_tabular_agents_see_a_tuple_env_as_a_table(tmp_path):
    spec = RunSpec(agent="q_learning", env_id="Blackjack-v1", total_steps=10, runs_dir=str(tmp_path), quiet=True)
    with Run(spec, config=None) as run:
        assert table_shape(run) == (704, 2)


@pytest.mark.parametrize("space", [gym.spaces.Discrete(3), gym.spaces.Box(0, 1, (2,))])
def test_plain_spaces_are_left_alone(space):
    env = FixedObservationEnv(space)
    assert with_plain_observations(env) is env


def test_a_sequence_inside_a_dict_is_left_for_the_agents_to_refuse():
    space = gym.spaces.Dict({"tokens": gym.spaces.Sequence(gym.spaces.Discrete(2)), "mode": gym.spaces.Discrete(3)})
    env = FixedObservationEnv(space)
    assert with_plain_observations(env) is env


class DictCartPole(gym.ObservationWrapper):
    """CartPole observing {"cart": (x, x_dot), "pole": (theta, theta_dot), "side": x > 0 as MultiBinary(1)}."""

    def __init__(self) -> None:
        super().__init__(gym.make("CartPole-v1"))
        box = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
        self.observation_space = gym.spaces.Dict({"cart": box, "pole": box, "side": gym.spaces.MultiBinary(1)})

    def observation(self, obs):
        return {"cart": obs[:2], "pole": obs[2:], "side": np.array([obs[0] > 0], dtype=np.int8)}


if "DictCartPole-v0" not in gym.registry:
    gym.register("DictCartPole-v0", entry_point=DictCartPole)


@pytest.mark.parametrize("agent", ["dqn", "ppo", "reinforce"])
def test_deep_agents_train_and_replay_on_dict_observations(agent, cli, tmp_path):
    code, out, err = cli("train", agent, "--env", "DictCartPole-v0", "--total-steps", "300", "--runs-dir",
                         str(tmp_path), "--quiet", "--eval-episodes", "2")  # fmt: skip
    assert code == 0, err
    (run_dir,) = tmp_path.iterdir()
    code, out, err = cli("eval", str(run_dir), "--episodes", "2")
    assert code == 0 and '"episodes": 2' in out, err
