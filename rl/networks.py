"""Network building blocks shared by the deep agents."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
from torch import nn


def mlp(
    in_features: int, hidden_sizes: tuple[int, ...], out_features: int, activation: type[nn.Module] = nn.ReLU
) -> nn.Sequential:
    """Linear layers of the given widths with `activation` between them and none after the last."""
    sizes = [in_features, *hidden_sizes, out_features]
    layers: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(fan_in, fan_out))
        if i < len(sizes) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


class ObservationEncoder(nn.Module):
    """Turns raw observations into (B, D) float inputs: Box ones flattened, Discrete ones one-hot encoded."""

    def __init__(self, space: gym.Space) -> None:
        super().__init__()
        self.discrete_n = int(space.n) if isinstance(space, gym.spaces.Discrete) else None
        self.discrete_start = int(space.start) if isinstance(space, gym.spaces.Discrete) else 0
        self.out_features = self.discrete_n or int(np.prod(space.shape))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        if self.discrete_n is not None:
            return nn.functional.one_hot(obs.long() - self.discrete_start, self.discrete_n).float()
        return obs.float().reshape(obs.shape[0], -1)
