"""The rollout core: terminated and truncated kept apart, the final observation handed over, episodes counted."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import envs  # noqa: F401
from rl.environments import make_env, make_vector_env
from rl.errors import UserError
from rl.rollout import Rollout

RIGHT, DOWN = 1, 2


def test_truncation_hands_over_the_final_observation_and_resets():
    env = gym.make("GridWorld-v0", start=[1, 1], max_episode_steps=3)
    rollout = Rollout(env, seed=0)
    transitions = [rollout.step(RIGHT) for _ in range(3)]
    assert [t.next_obs for t in transitions] == [1, 2, 3]
    last = transitions[-1]
    assert last.truncated and not last.terminated
    assert rollout.obs == 0  # the next episode's first observation, not the final one
    assert rollout.pop_finished()[0].length == 3
    assert rollout.global_step == 3 and rollout.episodes == 1


def test_termination_is_not_truncation():
    # From (3,3) moving down enters the target (4,3), which ends the episode when terminal_target is set.
    env = gym.make("GridWorld-v0", start=[3, 3], terminal_target=True, r_target=5.0, r_forbidden=0.0)
    rollout = Rollout(env, seed=0)
    t = rollout.step(DOWN)
    assert t.terminated and not t.truncated
    assert t.next_obs == 3 * 5 + 2 and t.rewards == 5.0
    (episode,) = rollout.pop_finished()
    assert episode.episode_return == 5.0 and episode.length == 1


def test_end_episode_records_a_cut_episode_and_reset_does_not():
    env = gym.make("GridWorld-v0", start=[1, 1], r_boundary=-1.0)
    rollout = Rollout(env, seed=0)
    rollout.step(RIGHT), rollout.step(0)  # right (reward 0), then up into the boundary (reward -1)
    assert rollout.end_episode() == 0 and rollout.obs == 0
    (cut,) = rollout.pop_finished()
    assert (cut.episode_return, cut.length, rollout.episodes) == (-1.0, 2, 1)
    rollout.step(RIGHT)
    rollout.reset()  # abandoned: not counted
    assert rollout.pop_finished() == [] and rollout.episodes == 1 and rollout.global_step == 3


def test_vector_env_final_observation_and_counters():
    envs_ = make_vector_env("GridWorld-v0", 2, {"start": [1, 1]})
    rollout = Rollout(envs_, seed=0)
    assert rollout.num_envs == 2
    # The registered limit is 100 steps; walk right into the wall until it truncates.
    for _ in range(99):
        t = rollout.step(np.array([RIGHT, RIGHT]))
        assert not t.truncated.any()
    t = rollout.step(np.array([RIGHT, RIGHT]))
    assert t.truncated.all() and not t.terminated.any()
    np.testing.assert_array_equal(t.next_obs, [4, 4])  # the final cell (1,5), not the reset cell (1,1)
    np.testing.assert_array_equal(rollout.obs, [0, 0])
    assert rollout.global_step == 200 and rollout.episodes == 2
    assert [e.length for e in rollout.pop_finished()] == [100, 100]


def test_next_step_autoreset_is_refused():
    vector = gym.vector.SyncVectorEnv([lambda: gym.make("CartPole-v1")])
    with pytest.raises(ValueError, match="SAME_STEP"):
        Rollout(vector, seed=0)


def test_same_seed_same_stream():
    def observations(seed):
        rollout = Rollout(gym.make("FrozenLake-v1"), seed=seed)
        return [rollout.step(i % 4).next_obs for i in range(200)]

    assert observations(1) == observations(1)
    assert observations(1) != observations(2)


def test_unknown_env_id_and_kwarg_are_user_errors():
    with pytest.raises(UserError, match="unknown env id 'NoSuchEnv-v0'"):
        make_env("NoSuchEnv-v0")
    with pytest.raises(UserError, match="--env-kwargs"):
        make_env("GridWorld-v0", {"no_such_kwarg": 1})
    with pytest.raises(UserError, match="module"):
        make_env("no_such_module:Thing-v0")


class LargeRewardEnv(gym.Env):
    """Three steps with rewards 3, -2 and 0.5, then the episode ends."""

    observation_space = gym.spaces.Discrete(4)
    action_space = gym.spaces.Discrete(1)
    REWARDS = (3.0, -2.0, 0.5)

    def reset(self, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.t = 0
        return 0, {}

    def step(self, action):
        self.t += 1
        return self.t, self.REWARDS[self.t - 1], self.t == len(self.REWARDS), False, {}


@pytest.mark.parametrize("vector", [False, True])
def test_clip_reward_clips_what_the_learner_sees_and_logs_the_game_score(vector):
    same_step = gym.vector.AutoresetMode.SAME_STEP
    env = gym.vector.SyncVectorEnv([LargeRewardEnv] * 2, autoreset_mode=same_step) if vector else LargeRewardEnv()
    rollout = Rollout(env, seed=0, clip_reward=1.0)
    seen = [np.asarray(rollout.step(np.zeros(2, dtype=np.int64) if vector else 0).rewards) for _ in range(3)]
    np.testing.assert_array_equal(np.array(seen).reshape(3, -1)[:, 0], [1.0, -1.0, 0.5])
    assert [e.episode_return for e in rollout.pop_finished()] == [1.5] * rollout.num_envs
    plain = Rollout(LargeRewardEnv(), seed=0)
    assert [plain.step(0).rewards for _ in range(3)] == [3.0, -2.0, 0.5]
    with pytest.raises(ValueError, match="clip_reward"):
        Rollout(LargeRewardEnv(), seed=0, clip_reward=-1.0)


class NonFiniteRewardEnv(LargeRewardEnv):
    REWARDS = (1.0, float("nan"), 0.5)


@pytest.mark.parametrize("vector", [False, True])
def test_a_non_finite_reward_stops_the_rollout_naming_the_env(vector):
    same_step = gym.vector.AutoresetMode.SAME_STEP
    env = (
        gym.vector.SyncVectorEnv([NonFiniteRewardEnv] * 2, autoreset_mode=same_step) if vector else NonFiniteRewardEnv()
    )
    rollout = Rollout(env, seed=0)
    rollout.step(np.zeros(2, dtype=np.int64) if vector else 0)
    with pytest.raises(UserError, match=r"NonFiniteRewardEnv returned a reward that is not one finite number \(nan\) "):
        rollout.step(np.zeros(2, dtype=np.int64) if vector else 0)


class ArrayRewardEnv(LargeRewardEnv):
    REWARDS = (1.0, np.array([1.0, 2.0]), 0.5)


class ResetWithoutInfoEnv(LargeRewardEnv):
    def reset(self, seed=None, options=None):
        return super().reset(seed=seed)[0]


@pytest.mark.parametrize("vector", [False, True])
def test_a_reward_that_is_not_one_number_stops_the_rollout_naming_the_env(vector):
    same_step = gym.vector.AutoresetMode.SAME_STEP
    env = gym.vector.SyncVectorEnv([ArrayRewardEnv] * 2, autoreset_mode=same_step) if vector else ArrayRewardEnv()
    rollout = Rollout(env, seed=0)
    rollout.step(np.zeros(2, dtype=np.int64) if vector else 0)
    with pytest.raises(UserError, match="ArrayRewardEnv returned a reward that is not one finite number"):
        rollout.step(np.zeros(2, dtype=np.int64) if vector else 0)


def test_a_reset_that_returns_no_info_is_one_user_error():
    with pytest.raises(UserError, match=r"ResetWithoutInfoEnv's reset\(\) returned int, not the \(obs, info\) pair"):
        Rollout(ResetWithoutInfoEnv(), seed=0)


def test_a_nan_reward_from_the_cli_is_one_error_line(cli, tmp_path):
    code, _, err = cli("train", "sarsa", "--env", "GridWorld-v0", "--total-steps", "100", "--runs-dir", str(tmp_path),
                       "--env-kwargs", "r_target=NaN")  # fmt: skip
    assert code == 2 and err == "error: GridWorld r_target=nan is not a finite number; pass one (the book's is 1.0).\n"
