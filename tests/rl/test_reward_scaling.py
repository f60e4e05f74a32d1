"""Reward scaling (`rl.reward_scaling`, the on-policy agents' `normalize_reward`): the scaled rewards by hand, the
running returns restarting at episode ends, statistics in the checkpoint, and a badly scaled task it rescues."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.wrappers import TransformReward
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from agents import ppo
from rl.checkpoint import load_checkpoint
from rl.reward_scaling import RewardScaler
from rl.run import Run, RunSpec

pytestmark = pytest.mark.usefixtures("one_thread")


def test_rewards_are_divided_by_the_std_of_every_discounted_return_so_far():
    scaler = RewardScaler(num_envs=2, gamma=0.5)
    steps = [([1.0, 2.0], [False, False]), ([3.0, -1.0], [False, True]), ([2.0, 4.0], [False, False])]
    # By hand: env 0's returns 1, 0.5 + 3 = 3.5, 1.75 + 2 = 3.75; env 1's 2, 1 - 1 = 0, then 4 (restarted at the end).
    seen, expected = [], [[1.0, 2.0], [3.5, 0.0], [3.75, 4.0]]
    for (rewards, done), returns in zip(steps, expected, strict=True):
        seen += returns
        scaled = scaler(np.array(rewards), np.array(done))
        np.testing.assert_allclose(scaled, np.clip(np.array(rewards) / np.sqrt(np.var(seen) + 1e-8), -10, 10))
        assert scaled.dtype == np.float32
    assert float(scaler.return_count) == 6 and float(scaler.return_mean) == pytest.approx(np.mean(seen))


def test_a_first_step_without_spread_is_clipped_not_infinite():
    scaled = RewardScaler(num_envs=3, gamma=0.99)(np.ones(3), np.zeros(3, bool))
    np.testing.assert_array_equal(scaled, [10.0, 10.0, 10.0])  # var 0: 1 / 1e-4, clipped to 10


def big_reward_cartpole(**kwargs) -> gym.Env:
    """CartPole paying 1,000 a step: value targets in the hundreds of thousands."""
    return TransformReward(gym.make("CartPole-v1", **kwargs), lambda reward: 1000.0 * reward)


if "BigRewardCartPole-v0" not in gym.registry:
    gym.register("BigRewardCartPole-v0", entry_point=big_reward_cartpole)


def train(tmp_path, normalize_reward: bool, steps: int = 10_000, run_dir=None):
    spec = RunSpec("ppo", "BigRewardCartPole-v0", {}, 0, total_steps=steps, runs_dir=str(tmp_path), quiet=True,
                   eval_episodes=10)  # fmt: skip
    with Run(spec, {}, run_dir=run_dir) as run:
        return ppo.train(ppo.Config(normalize_reward=normalize_reward), run), run


def test_the_statistics_resume_from_the_checkpoint(tmp_path):
    _, run = train(tmp_path, True, steps=512)
    before, _ = load_checkpoint(run.run_dir)
    _, resumed = train(tmp_path, True, steps=1024, run_dir=run.run_dir)
    after, _ = load_checkpoint(resumed.run_dir)
    assert before["reward_scaler.return_count"] == 512 and after["reward_scaler.return_count"] == 1024


@pytest.mark.slow
def test_scaling_rescues_ppo_on_rewards_a_thousand_times_too_large(tmp_path):
    # 10,000 steps, seeds 0-2: greedy episodes of 270, 197, 102 steps scaled and 64, 74, 66 unscaled.
    scaled, run = train(tmp_path, normalize_reward=True)
    raw, _ = train(tmp_path, normalize_reward=False)
    assert scaled.mean() >= 200_000 and raw.mean() <= 100_000  # returns stay the env's: 1,000 a step
    arrays, _ = load_checkpoint(run.run_dir)
    assert arrays["reward_scaler.return_count"] == 10_000  # one return per env step, the running returns not saved
    assert "reward_scaler.returns" not in arrays
    events = EventAccumulator(str(run.run_dir)).Reload()
    assert all(e.value % 1000 == 0 for e in events.Scalars("charts/episodic_return"))
