"""Atari 2600 games (`pip install -e ".[atari]"`: ale-py, which ships the ROMs, and OpenCV for the resizing).

`make_env` gives every ALE env, `ALE/Pong-v5` or `PongNoFrameskip-v4` alike, the preprocessing of Mnih et al.
(2015) as Gymnasium's wrappers implement it (Machado et al. 2018 for the choices left open):
- up to 30 no-op actions after each reset, so that episodes start from different states;
- each action repeated for 4 frames (the env's `frameskip` if given: the env itself then steps single frames), the
  reward summed, the last two frames max-pooled against flicker;
- frames turned grey and resized to 84x84, the last 4 stacked into a (4, 84, 84) uint8 observation, which the
  network agents read with their convolutional torso (`rl.images`);
- a lost life is not the end of an episode (the v5 envs' sticky actions, probability 0.25, stay as they are).
Reward clipping to [-1, 1] belongs to the learner, not to the env, so that logged and evaluated returns stay game
scores: it is the `clip_reward` option of DQN, A2C, PPO and TRPO (`configs/dqn_atari.toml`, `configs/ppo_atari.toml`).
`--env-kwargs atari_preprocessing=false` gives the raw (210, 160, 3) frames instead.
"""

from __future__ import annotations

import importlib

import gymnasium as gym
from gymnasium.wrappers import AtariPreprocessing, FrameStackObservation

from rl.errors import UserError

ENTRY_POINT = "ale_py.env:AtariEnv"
NAMESPACE = "ALE"
OPTION = "atari_preprocessing"
"""The env kwarg that turns the preprocessing off (`--env-kwargs atari_preprocessing=false`)."""
FRAME_SKIP = 4
FRAME_STACK = 4
SCREEN_SIZE = 84
NOOP_MAX = 30
INSTALL_HINT = 'pip install -e ".[atari]"'


def register_games(env_id: str) -> None:
    """Registers ale-py's games for an id not registered yet (Gymnasium 1.x no longer does it itself): `ALE/Pong-v5`
    needs ale-py, `PongNoFrameskip-v4` is found when it is installed."""
    if ":" in env_id or env_id in gym.registry:
        return
    try:
        import ale_py
    except ImportError:
        if env_id.startswith(f"{NAMESPACE}/"):
            raise UserError(f"{env_id} is an Atari game and needs ale-py; install it with `{INSTALL_HINT}`.") from None
        return
    gym.register_envs(ale_py)


def is_atari(env_id: str) -> bool:
    """Whether `env_id` (a registered id, `module:` prefix allowed) makes an ale-py AtariEnv."""
    module, _, name = env_id.rpartition(":")
    try:
        if module:
            importlib.import_module(module)
        return gym.spec(name).entry_point == ENTRY_POINT
    except (ImportError, gym.error.Error):
        return False  # gymnasium.make says what is wrong with the id


def split_kwargs(env_id: str, kwargs: dict) -> tuple[dict, int]:
    """(the kwargs for `gymnasium.make`, the frames per action for AtariPreprocessing, 0 for no preprocessing).

    With the preprocessing on, the env steps single frames and the wrapper repeats each action `frameskip` times.
    """
    kwargs, given = dict(kwargs), OPTION in kwargs
    preprocess = kwargs.pop(OPTION, True)
    if not isinstance(preprocess, bool):
        raise UserError(f"{OPTION} must be true or false, not {preprocess!r} (--env-kwargs {OPTION}=false).")
    if not is_atari(env_id):
        if given:
            raise UserError(f"{OPTION} applies to Atari games (ale-py envs) only, and {env_id} is not one.")
        return kwargs, 0
    if not preprocess:
        return kwargs, 0
    if kwargs.get("obs_type") == "ram":
        raise UserError(f"obs_type=ram gives the 128 RAM bytes, not frames to preprocess; add {OPTION}=false.")
    frame_skip = kwargs.get("frameskip", FRAME_SKIP)
    if not isinstance(frame_skip, int) or isinstance(frame_skip, bool) or frame_skip < 1:
        raise UserError(f"frameskip must be a whole number of frames, not {frame_skip!r}.")
    return kwargs | {"frameskip": 1}, frame_skip


def preprocess(env: gym.Env, frame_skip: int) -> gym.Env:
    """`env` (stepping single frames) behind the no-op starts, frame skipping and max-pooling, grey 84x84 frames and
    the stack of 4."""
    try:
        env = AtariPreprocessing(
            env, noop_max=NOOP_MAX, frame_skip=frame_skip, screen_size=SCREEN_SIZE, terminal_on_life_loss=False
        )
    except gym.error.DependencyNotInstalled:
        env.close()
        hint = f"the Atari preprocessing resizes frames with OpenCV; install it with `{INSTALL_HINT}`."
        raise UserError(hint) from None
    return FrameStackObservation(env, FRAME_STACK)
