"""Making Gymnasium envs from an id and keyword arguments, with errors a user can act on."""

from __future__ import annotations

import inspect
import math
import warnings

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from gymnasium.wrappers import FlattenObservation

from rl import atari
from rl.errors import UserError, one_line


def make_env(env_id: str, env_kwargs: dict | None = None, render_mode: str | None = None) -> gym.Env:
    """`gymnasium.make(env_id, **env_kwargs)`; an unknown id or keyword becomes one clear UserError.

    `env_id` is anything `gymnasium.make` accepts, `module:Name-v0` included. Atari games come with the standard
    preprocessing (`rl.atari`); composite observations come out as one Discrete state or one Box
    (`with_plain_observations`).
    """
    if env_kwargs is not None and not isinstance(env_kwargs, dict):
        raise UserError(f"env kwargs for {env_id!r} must be a mapping of names to values, not {env_kwargs!r}.")
    atari.register_games(env_id)
    kwargs, frame_skip = atari.split_kwargs(env_id, env_kwargs or {})
    if render_mode is not None:
        kwargs["render_mode"] = render_mode
    try:
        with warnings.catch_warnings(record=True) as caught:  # shown once the env is made; noise before an error
            warnings.simplefilter("default")
            env = gym.make(env_id, **kwargs)
    except UserError:
        raise
    except (gym.error.NameNotFound, gym.error.NamespaceNotFound, gym.error.VersionNotFound) as error:
        raise UserError(
            f"unknown env id {env_id!r} ({one_line(error)}); run `rl list` for this package's envs, or pass "
            "`module:Name-v0` to import the module that registers yours."
        ) from None
    except gym.error.DependencyNotInstalled as error:
        raise UserError(f"cannot make env {env_id!r}: {one_line(error)}{extra_hint(str(error))}.") from None
    except gym.error.Error as error:
        raise UserError(f"cannot make env {env_id!r}: {one_line(error)}.") from None
    except ModuleNotFoundError as error:
        raise UserError(
            f"cannot make env {env_id!r}: {error}; check the module part of `module:Name-v0`, and that its directory "
            "is on PYTHONPATH."
        ) from None
    except (TypeError, KeyError, ValueError, ArithmeticError, OSError) as error:  # MuJoCo: frame_skip=0, xml_file
        raise UserError(
            f"cannot make env {env_id!r} with env kwargs {kwargs}: {type(error).__name__}: {one_line(error)}; "
            "check the names and values given to --env-kwargs."
        ) from None
    try:
        check_env_kwargs(env, env_id, kwargs)
    except UserError:
        env.close()
        raise
    for warning in caught:
        warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    if frame_skip:
        env = atari.preprocess(env, frame_skip)
    return with_plain_observations(env)


EXTRAS = {"box2d": "box2d", "mujoco": "mujoco"}
"""The extras of this package that install a Gymnasium env family, by a word of Gymnasium's missing-package error."""


def extra_hint(message: str) -> str:
    """`; or pip install -e ".[box2d]"` when a missing-dependency message names a family one of our extras installs."""
    extra = next((extra for word, extra in EXTRAS.items() if word in message.lower()), None)
    return f'; or, in this package, pip install -e ".[{extra}]"' if extra else ""


MAX_INDEXED_STATES = 1_000_000
"""Composite discrete observations with at most this many combinations become one Discrete state."""


class IndexedObservation(gym.ObservationWrapper, gym.utils.RecordConstructorArgs):
    """A Tuple of Discrete spaces or a MultiDiscrete observation as one Discrete state: the row-major index of its
    parts, each counted from its space's start. Blackjack's (player's sum, dealer's card, usable ace) in
    Discrete(32) x Discrete(11) x Discrete(2) becomes one of 704 states, so tables and one-hot encoders can take it."""

    def __init__(self, env: gym.Env) -> None:
        gym.utils.RecordConstructorArgs.__init__(self)  # so that env.spec can make the wrapped env again
        gym.ObservationWrapper.__init__(self, env)
        self.sizes, self.starts = discrete_parts(env.observation_space)
        self.strides = [math.prod(self.sizes[i + 1 :]) for i in range(len(self.sizes))]
        self.observation_space = gym.spaces.Discrete(math.prod(self.sizes))

    def observation(self, observation: object) -> int:
        parts = np.asarray(observation).reshape(-1).tolist()
        return sum(
            (part - start) * stride for part, start, stride in zip(parts, self.starts, self.strides, strict=True)
        )


def discrete_parts(space: gym.Space) -> tuple[list[int], list[int]]:
    """(sizes, starts) of a Tuple of Discrete spaces or of a 1-D MultiDiscrete; ([], []) for any other space."""
    if (
        isinstance(space, gym.spaces.Tuple)
        and space.spaces
        and all(isinstance(part, gym.spaces.Discrete) for part in space.spaces)
    ):
        return [int(part.n) for part in space.spaces], [int(part.start) for part in space.spaces]
    if isinstance(space, gym.spaces.MultiDiscrete) and space.nvec.ndim == 1:
        return space.nvec.tolist(), space.start.tolist()
    return [], []


def with_plain_observations(env: gym.Env) -> gym.Env:
    """The env with observations every agent reads: a composite discrete observation of at most MAX_INDEXED_STATES
    combinations as one Discrete state (`IndexedObservation`); any other Tuple, Dict or MultiDiscrete, and MultiBinary,
    flattened into one Box by Gymnasium's FlattenObservation (Discrete parts one-hot); Box and Discrete as they are."""
    space = env.observation_space
    sizes, _ = discrete_parts(space)
    if sizes and math.prod(sizes) <= MAX_INDEXED_STATES:
        return IndexedObservation(env)
    composite = (gym.spaces.Tuple, gym.spaces.Dict, gym.spaces.MultiDiscrete, gym.spaces.MultiBinary)
    if isinstance(space, composite) and isinstance(gym.spaces.flatten_space(space), gym.spaces.Box):
        return FlattenObservation(env)
    return env  # a Sequence or Graph inside flattens to no Box: the agent's space check says what to do


def check_env_kwargs(env: gym.Env, env_id: str, kwargs: dict) -> None:
    """Env kwargs that `gymnasium.make` accepts but the env would trip on later (Pendulum's g="abc" at the first
    step, FrozenLake's is_slippery="maybe" read as True): each must have the type of the constructor's default, and a
    render_mode must be one the env lists."""
    inner = env.unwrapped
    modes = inner.metadata.get("render_modes", [])
    if kwargs.get("render_mode") is not None and modes and kwargs["render_mode"] not in modes:
        raise UserError(f"{env_id} has no render_mode {kwargs['render_mode']!r}; pick one of {', '.join(modes)}.")
    try:
        parameters = inspect.signature(type(inner).__init__).parameters
    except (TypeError, ValueError):
        return
    for name, value in kwargs.items():
        default = parameters[name].default if name in parameters else inspect.Parameter.empty
        if not fits_default(value, default):
            raise UserError(
                f"{env_id}'s {name} defaults to {default!r}, so {value!r} will not do; pass a "
                f"{type(default).__name__} to --env-kwargs {name}=..."
            )


def fits_default(value: object, default: object) -> bool:
    """Whether `value` has the kind of type the default has (bool, number, str); True when nothing is known."""
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, (int, float)):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, str):
        return isinstance(value, str)
    return True


def make_vector_env(env_id: str, num_envs: int, env_kwargs: dict | None = None) -> SyncVectorEnv:
    """N copies of an env in one process, autoresetting in the SAME_STEP mode that `Rollout` expects."""
    make_env(env_id, env_kwargs).close()  # surface a bad id or kwarg once, as a UserError, before the N copies.
    return SyncVectorEnv(
        [lambda: make_env(env_id, env_kwargs) for _ in range(num_envs)], autoreset_mode=AutoresetMode.SAME_STEP
    )


def frame_stack_size(env: gym.Env | SyncVectorEnv) -> int:
    """K when (each copy of) `env` ends in Gymnasium's FrameStackObservation of K frames, whose observations (K, ...)
    share K - 1 frames with the one before (`rl.frame_store` keeps each frame once); 1 otherwise."""
    inner = env.envs[0] if isinstance(env, SyncVectorEnv) else env
    shape = inner.observation_space.shape
    while isinstance(inner, gym.Wrapper):
        if isinstance(inner, gym.wrappers.FrameStackObservation):
            return inner.stack_size if shape and shape[0] == inner.stack_size else 1
        inner = inner.env
    return 1
