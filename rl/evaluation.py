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


VIDEO_FRAME_BYTES = 1_000_000_000
"""The frames RecordVideo holds in memory for one video before moviepy writes it: a longer episode's video is cut
(a greedy CliffWalking policy that circles for 10,000 steps would otherwise hold 6 GB)."""


def filmed_env(env_id: str, env_kwargs: dict | None, folder: str | Path, name_prefix: str) -> gym.Env:
    """The env, drawing RGB frames, wrapped in Gymnasium's RecordVideo: each episode becomes
    `folder/<name_prefix>-episode-<i>.mp4` (moviepy writes it) when the next one starts or the env closes."""
    if not str(folder):
        raise UserError("--video needs a directory to write the videos to; pass one (it is created if missing).")
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
    frame = first_frame(env, env_id)
    make_video_folder(env, folder)
    try:
        with warnings.catch_warnings():  # a second `rl eval --video` of a run overwrites its videos, as it should
            warnings.filterwarnings("ignore", message=".*Overwriting existing videos")
            return RecordVideo(env, str(folder), episode_trigger=lambda episode: True, name_prefix=name_prefix,
                               video_length=max(1, VIDEO_FRAME_BYTES // frame.nbytes))  # fmt: skip
    except gym.error.DependencyNotInstalled:
        env.close()
        raise UserError('recording videos needs moviepy: pip install -e ".[video]" (or pip install moviepy).') from None


def make_video_folder(env: gym.Env, folder: str | Path) -> None:
    """Makes `folder` (and its parents) or closes `env` and says why it cannot."""
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        if not os.access(folder, os.W_OK):
            raise PermissionError("not writable")
    except OSError as error:
        env.close()
        raise UserError(f"cannot write videos to {folder} ({one_line(error)}); pass another --video.") from None


def first_frame(env: gym.Env, env_id: str) -> np.ndarray:
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
    if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.size == 0:
        env.close()
        raise UserError(f"{env_id}'s rgb_array render gave no image ({getattr(frame, 'shape', frame)}); drop --video.")
    return frame


def filmed_evaluation(
    env: RecordVideo, act: Callable[[Any], Any], episodes: int, seed: int, folder: str | Path, name_prefix: str
) -> tuple[np.ndarray, list[Path]]:
    """`evaluate_policy` on a `filmed_env`, then the videos it wrote, each checked to be there: moviepy can let
    ffmpeg fail on a short clip without a word."""
    returns = evaluate_policy(env, act, episodes, seed=seed)
    try:
        env.close()  # RecordVideo writes the last episode's video now
    except OSError as error:
        raise UserError(f"could not write a video to {folder} ({one_line(error)}); pass another --video.") from None
    videos = [Path(folder) / f"{name_prefix}-episode-{i}.mp4" for i in range(len(returns))]
    for path in videos:
        if not path.is_file() or path.stat().st_size == 0:
            raise UserError(f"no video was written to {path}; check that {folder} can be written to, or pass another.")
    return returns, videos
