"""Making Gymnasium envs from an id and keyword arguments, with errors a user can act on."""

from __future__ import annotations

import warnings

import gymnasium as gym
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from rl.errors import UserError, one_line


def make_env(env_id: str, env_kwargs: dict | None = None, render_mode: str | None = None) -> gym.Env:
    """`gymnasium.make(env_id, **env_kwargs)`; an unknown id or keyword becomes one clear UserError.

    `env_id` is anything `gymnasium.make` accepts, `module:Name-v0` included.
    """
    kwargs = dict(env_kwargs or {})
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
    except gym.error.Error as error:
        raise UserError(f"cannot make env {env_id!r}: {one_line(error)}.") from None
    except ModuleNotFoundError as error:
        raise UserError(f"cannot make env {env_id!r}: {error}; check the module part of `module:Name-v0`.") from None
    except (TypeError, KeyError, ValueError) as error:
        raise UserError(
            f"cannot make env {env_id!r} with env kwargs {kwargs}: {type(error).__name__}: {one_line(error)}; "
            "check the names and values given to --env-kwargs."
        ) from None
    for warning in caught:
        warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    return env


def make_vector_env(env_id: str, num_envs: int, env_kwargs: dict | None = None) -> SyncVectorEnv:
    """N copies of an env in one process, autoresetting in the SAME_STEP mode that `Rollout` expects."""
    make_env(env_id, env_kwargs).close()  # surface a bad id or kwarg once, as a UserError, before the N copies.
    return SyncVectorEnv(
        [lambda: make_env(env_id, env_kwargs) for _ in range(num_envs)], autoreset_mode=AutoresetMode.SAME_STEP
    )
