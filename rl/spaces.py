"""Checks that an env's spaces suit an agent, failing with a sentence that says what to do instead."""

from __future__ import annotations

import gymnasium as gym

from rl.errors import UserError


def discrete_size(space: gym.Space, role: str, agent: str, env_id: str) -> int:
    """The number of elements of a Discrete space; a UserError for any other space.

    role is "observation" or "action".
    """
    if isinstance(space, gym.spaces.Discrete):
        if space.start != 0:
            raise UserError(
                f"{agent} needs a Discrete {role} space starting at 0, but {env_id} starts at {space.start}; "
                "wrap the env to shift it."
            )
        return int(space.n)
    raise UserError(
        f"{agent} is a tabular agent and needs a Discrete {role} space, but {env_id} has {space}; "
        "pick an env with discrete states and actions (GridWorld-v0, CliffWalking-v1, FrozenLake-v1, Taxi-v4) "
        "or an agent that handles this space."
    )
