"""Atari games through make_env: the standard preprocessing, its opt-out, and reward clipping kept out of the scores."""

from __future__ import annotations

import sys

import gymnasium as gym
import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from rl import atari
from rl.checkpoint import load_checkpoint
from rl.cli import main
from rl.environments import frame_stack_size, make_env, make_vector_env
from rl.errors import UserError

pytest.importorskip("ale_py", reason="the atari extra is not installed")
pytest.importorskip("cv2", reason="the atari extra is not installed")


def frame_number(env: gym.Env) -> int:
    return env.unwrapped.ale.getEpisodeFrameNumber()


def test_atari_games_come_as_stacks_of_four_grey_84x84_frames_four_frames_apart():
    env = make_env("ALE/Pong-v5")
    assert env.observation_space == gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)
    obs, _ = env.reset(seed=0)
    start = frame_number(env)
    assert 0 <= start <= atari.NOOP_MAX  # the no-op starts
    for t in range(1, 6):
        next_obs, *_ = env.step(env.action_space.sample())
        assert frame_number(env) == start + 4 * t
        np.testing.assert_array_equal(next_obs[:3], obs[1:])  # the stack moves on by one frame
        obs = next_obs
    assert obs[-1].std() > 0  # a picture, not a blank frame
    env.close()


def test_replay_buffers_keep_the_frames_of_frame_stacks_only():
    assert frame_stack_size(make_env("ALE/Pong-v5")) == frame_stack_size(make_vector_env("ALE/Pong-v5", 2)) == 4
    assert frame_stack_size(make_env("ALE/Pong-v5", {"atari_preprocessing": False})) == 1  # (210, 160, 3) colour
    assert frame_stack_size(make_env("CartPole-v1")) == 1
    stacked = gym.wrappers.FrameStackObservation(gym.make("CartPole-v1"), 3)  # any env under Gymnasium's wrapper
    assert frame_stack_size(stacked) == 3
    assert frame_stack_size(gym.wrappers.FlattenObservation(stacked)) == 1  # no longer (3, ...) stacks


def test_frameskip_and_the_opt_out():
    env = make_env("ale_py:ALE/Breakout-v5", {"frameskip": 2})
    env.reset(seed=0)
    start = frame_number(env)
    env.step(0)
    assert frame_number(env) == start + 2 and env.observation_space.shape == (4, 84, 84)
    raw = make_env("ALE/Breakout-v5", {"atari_preprocessing": False})
    assert raw.observation_space.shape == (210, 160, 3)
    raw.reset(seed=0)
    start = frame_number(raw)
    raw.step(0)
    assert frame_number(raw) == start + 4  # the v5 env's own frame skip
    assert make_env("BreakoutNoFrameskip-v4").observation_space.shape == (4, 84, 84)


@pytest.mark.parametrize(
    ("env_id", "kwargs", "message"),
    [
        ("CartPole-v1", {"atari_preprocessing": False}, "Atari games .* only"),
        ("ALE/Pong-v5", {"atari_preprocessing": "no"}, "true or false"),
        ("ALE/Pong-v5", {"frameskip": 0}, "whole number of frames"),
        ("ALE/Pong-v5", {"obs_type": "ram"}, "obs_type=ram gives the 128 RAM bytes.*atari_preprocessing=false"),
    ],
)
def test_bad_atari_options_are_user_errors(env_id, kwargs, message):
    with pytest.raises(UserError, match=message):
        make_env(env_id, kwargs)


def test_a_missing_ale_py_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ale_py", None)  # import ale_py now raises ImportError
    with pytest.raises(UserError, match=r"needs ale-py; install it with `pip install -e \"\.\[atari\]\"`"):
        atari.register_games("ALE/NotRegisteredYet-v5")
    atari.register_games("NotAnAtariId-v0")  # ids outside the ALE namespace are left to gymnasium.make


def test_dqn_learns_from_clipped_rewards_and_logs_game_scores(tmp_path, capsys):
    # Space Invaders pays 5 to 30 points an invader: a random policy scores well above 1 per episode.
    args = ["train", "dqn", "--env", "ALE/SpaceInvaders-v5", "--total-steps", "1500", "--runs-dir", str(tmp_path),
            "--eval-episodes", "1", "--config", "configs/dqn_atari.toml",
            "--set", "learning_starts=1000", "buffer_size=1500", "train_frequency=16"]  # fmt: skip
    assert main(args) == 0
    (run_dir,) = tmp_path.iterdir()
    arrays, _ = load_checkpoint(run_dir)
    rewards = arrays["buffer.0.storage.rewards"]
    assert rewards.max() == 1.0 and set(np.unique(rewards)) <= {0.0, 1.0}
    # Each 84x84 frame is stored once, as uint8 (rl.frame_store): one per step, plus a stack of 4 per episode start;
    # a row refers to its observations' 4 frames each.
    ring, side = arrays["buffer.0.frames.ring"], arrays["buffer.0.frames.side"]
    assert ring.dtype == side.dtype == np.uint8 and ring.shape == (1500, 84, 84) and side.shape[1:] == (84, 84)
    assert 4 <= len(side) <= 20 and len(side) % 4 == 0 and arrays["buffer.0.storage.obs"].shape == (1500, 4)
    events = EventAccumulator(str(run_dir))
    events.Reload()
    scores = [e.value for e in events.Scalars("charts/episodic_return")]
    assert scores and max(scores) > 1 and all(score % 5 == 0 for score in scores)
    assert events.Scalars("eval/episodic_return")[0].value % 5 == 0
