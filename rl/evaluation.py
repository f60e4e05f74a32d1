"""Greedy evaluation: run a deterministic policy for whole episodes on a fresh env, and film it if asked."""

from __future__ import annotations

import ctypes.util
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.wrappers import RecordVideo

from rl.environments import make_env
from rl.errors import UserError, one_line


def evaluate_policy(
    env: gym.Env,
    act: Callable[[Any], Any],
    episodes: int,
    seed: int,
    max_steps: int = 10_000,
    stop: Callable[[], bool] | None = None,
) -> np.ndarray:
    """Undiscounted returns of `episodes` episodes of `act`; episode i starts from `reset(seed=seed + i)`.

    An episode is cut after `max_steps` steps: a greedy policy can circle forever on an env without a time limit
    (CliffWalking-v1 has none). Once `stop()` is true no further episode starts, and only the finished episodes'
    returns come back.
    """
    returns = np.zeros(episodes)
    for i in range(episodes):
        if stop is not None and stop():
            return returns[:i]
        obs, _ = env.reset(seed=seed + i)
        for _ in range(max_steps):
            obs, reward, terminated, truncated, _ = env.step(act(obs))
            returns[i] += float(reward)
            if terminated or truncated:
                break
    return returns


def filmed_env(env_id: str, env_kwargs: dict | None, folder: str | Path, name_prefix: str) -> gym.Env:
    """The env, drawing RGB frames, wrapped in Gymnasium's RecordVideo: each episode becomes
    `folder/<name_prefix>-episode-<i>.mp4` (moviepy writes it) when the next one starts or the env closes."""
    # Frames are drawn off screen, so no window opens and no display is needed: pygame's dummy video driver, and
    # MuJoCo through EGL (which Mesa provides without a GPU) where there is no display, no backend chosen already, and
    # an EGL library to load (`import mujoco` fails outright on a backend it cannot load).
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    if not os.environ.get("DISPLAY") and ctypes.util.find_library("EGL"):
        os.environ.setdefault("MUJOCO_GL", "egl")
    plain = make_env(env_id, env_kwargs)
    modes = plain.metadata.get("render_modes", [])
    plain.close()
    if "rgb_array" not in modes:
        drawn = ", ".join(modes) if modes else "none"
        raise UserError(f"{env_id} draws no RGB frames (its render modes: {drawn}), so there is no video to record; "
                        "drop --video.")  # fmt: skip
    if Path(folder).exists() and not Path(folder).is_dir():
        raise UserError(f"--video {folder} is a file; pass a directory (it is created if missing).")
    env = make_env(env_id, env_kwargs, render_mode="rgb_array")
    check_draws_frames(env, env_id)
    try:
        with warnings.catch_warnings():  # a second `rl eval --video` of a run overwrites its videos, as it should
            warnings.filterwarnings("ignore", message=".*Overwriting existing videos")
            return RecordVideo(env, str(folder), episode_trigger=lambda episode: True, name_prefix=name_prefix)
    except gym.error.DependencyNotInstalled:
        env.close()
        raise UserError('recording videos needs moviepy: pip install -e ".[video]" (or pip install moviepy).') from None


def check_draws_frames(env: gym.Env, env_id: str) -> None:
    """Draws one frame before any video starts: a renderer that cannot run here (MuJoCo without an OpenGL library)
    fails with its own exception type, which becomes one UserError."""
    try:
        env.reset(seed=0)
        frame = env.render()
    except Exception as error:  # renderers raise their own types: mujoco.FatalError, OpenGL's errors
        env.close()
        raise UserError(
            f"{env_id} could not draw a frame here ({type(error).__name__}: {one_line(error)}); MuJoCo without a "
            "display draws through MUJOCO_GL=egl (libegl1) or MUJOCO_GL=osmesa (libosmesa6): install one and set it."
        ) from None
    if not isinstance(frame, np.ndarray) or frame.ndim != 3:
        env.close()
        raise UserError(f"{env_id}'s rgb_array render gave {type(frame).__name__}, not an image; drop --video.")
