"""Checks that an env's spaces suit an agent, failing with a sentence that says what to do instead."""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from rl.errors import UserError

TABULAR_HINT = (
    "pick an env with discrete states and actions (GridWorld-v0, CliffWalking-v1, FrozenLake-v1, Taxi-v4) "
    "or an agent that handles this space"
)


def discrete_size(space: gym.Space, role: str, agent: str, env_id: str, hint: str = TABULAR_HINT) -> int:
    """The number of elements of a Discrete space; a UserError for any other space.

    role is "observation" or "action"; `hint` is the fix the error suggests.
    """
    if isinstance(space, gym.spaces.Discrete):
        if space.start != 0:
            raise UserError(
                f"{agent} needs a Discrete {role} space starting at 0, but {env_id} starts at {space.start}; "
                "wrap the env to shift it."
            )
        return int(space.n)
    raise UserError(f"{agent} needs a Discrete {role} space, but {env_id} has {space}; {hint}.")


def flat_size(space: gym.Space, role: str, agent: str, env_id: str) -> int:
    """The input width a network needs for a Box (flattened) or Discrete (one-hot) space; a UserError otherwise."""
    if isinstance(space, gym.spaces.Box):
        return int(np.prod(space.shape))
    if isinstance(space, gym.spaces.Discrete):
        return int(space.n)
    raise UserError(
        f"{agent} needs a Box or Discrete {role} space, but {env_id} has {space}; "
        "wrap the env so that it observes an array of numbers, in a module:Name-v0 env of your own."
    )
