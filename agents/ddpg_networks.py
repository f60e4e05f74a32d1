"""DDPG's and TD3's networks: the deterministic actor mu(s; theta) and the critic q(s, a; w), both for Box actions."""

from __future__ import annotations

from collections.abc import Callable

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from rl.errors import UserError
from rl.networks import ObservationEncoder, mlp

DISCRETE_HINT = "use dqn (or another agent for Discrete actions), or pick an env with Box actions"


def action_bounds(space: gym.Space, agent: str, env_id: str) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) of a Box action space with finite bounds; a UserError for any other space."""
    if not isinstance(space, gym.spaces.Box):
        raise UserError(f"{agent} needs a Box (continuous) action space, but {env_id} has {space}; {DISCRETE_HINT}.")
    if not (np.isfinite(space.low).all() and np.isfinite(space.high).all()):
        raise UserError(
            f"{agent} scales its actions into the Box's bounds, but {env_id} has unbounded actions {space}; "
            "wrap the env so that it declares finite bounds."
        )
    return space.low.astype(np.float32), space.high.astype(np.float32)


def register_action_scale(module: nn.Module, action_space: gym.spaces.Box) -> None:
    """Gives `module` the tensors half_range = (high - low) / 2 and middle = (high + low) / 2 of the Box.

    They are buffers that follow `.to(device)` but are derived from the env, not learned: non-persistent, so they
    stay out of state dicts and checkpoints."""
    low, high = (torch.as_tensor(bound, dtype=torch.float32) for bound in (action_space.low, action_space.high))
    module.register_buffer("half_range", (high - low) / 2, persistent=False)
    module.register_buffer("middle", (high + low) / 2, persistent=False)


class Actor(nn.Module):
    """mu(s; theta): tanh squashes the output into [-1, 1], then it is scaled into [low, high]."""

    def __init__(
        self,
        observation_space: gym.Space,
        action_space: gym.spaces.Box,
        hidden_sizes: tuple[int, ...],
        normalize: bool = False,
    ) -> None:
        super().__init__()
        self.encoder = ObservationEncoder(observation_space, normalize)
        self.action_shape = action_space.shape
        self.body = mlp(self.encoder.out_features, hidden_sizes, int(np.prod(action_space.shape)))
        register_action_scale(self, action_space)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        squashed = torch.tanh(self.body(self.encoder(obs))).reshape(-1, *self.action_shape)  # (B, *A) in [-1, 1]
        return self.middle + self.half_range * squashed


class Critic(nn.Module):
    """q(s, a; w): the observation and the action, scaled to [-1, 1], concatenated at the input."""

    def __init__(
        self,
        observation_space: gym.Space,
        action_space: gym.spaces.Box,
        hidden_sizes: tuple[int, ...],
        normalize: bool = False,
    ) -> None:
        super().__init__()
        self.encoder = ObservationEncoder(observation_space, normalize)
        self.body = mlp(self.encoder.out_features + int(np.prod(action_space.shape)), hidden_sizes, 1)
        register_action_scale(self, action_space)

    def forward(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        scaled = ((actions - self.middle) / self.half_range).reshape(len(actions), -1)  # (B, A)
        return self.body(torch.cat([self.encoder(obs), scaled], dim=1)).squeeze(1)  # (B,)


def deterministic_policy(actor: Actor, device: torch.device) -> Callable[[np.ndarray], np.ndarray]:
    """act(obs) -> mu(obs), noise-free, for a single (unbatched) observation."""

    def act(obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return actor(torch.as_tensor(np.asarray(obs)[None], device=device))[0].cpu().numpy()

    return act
