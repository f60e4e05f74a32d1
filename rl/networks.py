"""Network building blocks shared by the deep agents."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Distribution

from rl.distributions import CategoricalHead, policy_head
from rl.errors import UserError
from rl.images import FEATURES, channels_first, convolutional_torso, image_layout, is_pixels
from rl.spaces import flat_size


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
    """Turns raw observations into (B, D) float inputs: Box ones flattened, Discrete ones one-hot encoded, and uint8
    images with bounds 0 to 255 scaled to [0, 1] (as image pipelines do; raw 0-255 inputs saturate tanh layers) and,
    when `rl.images.image_layout` reads the space as images, passed through a convolutional torso (D = 512).

    With `normalize` (Box observations), inputs become (x - mean) / sqrt(var + 1e-8), clipped to +-10, from a running
    mean and variance that `update_statistics` folds batches into; they start at 0 and 1 and are buffers, so the
    network's checkpoint carries them and evaluation and resume see the statistics training used.
    """

    def __init__(self, space: gym.Space, normalize: bool = False) -> None:
        super().__init__()
        self.discrete_n = int(space.n) if isinstance(space, gym.spaces.Discrete) else None
        self.discrete_start = int(space.start) if isinstance(space, gym.spaces.Discrete) else 0
        self.scale = 1.0 / 255.0 if is_pixels(space) else 1.0
        self.image = image_layout(space)
        self.torso = convolutional_torso(self.image) if self.image is not None else None
        self.out_features = FEATURES if self.image is not None else self.discrete_n or int(np.prod(space.shape))
        self.normalize = normalize
        if normalize:
            if self.discrete_n is not None or self.image is not None:
                raise ValueError("observation normalisation needs vector Box observations, not Discrete ones or images")
            self.register_buffer("obs_mean", torch.zeros(self.out_features, dtype=torch.float64))
            self.register_buffer("obs_var", torch.ones(self.out_features, dtype=torch.float64))
            self.register_buffer("obs_count", torch.zeros((), dtype=torch.float64))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        if self.discrete_n is not None:
            return nn.functional.one_hot(obs.long() - self.discrete_start, self.discrete_n).float()
        if self.torso is not None:
            return self.torso(channels_first(obs.float() * self.scale, self.image))
        x = obs.float().reshape(obs.shape[0], -1)
        x = x * self.scale if self.scale != 1.0 else x
        if self.normalize:
            x = ((x - self.obs_mean) / torch.sqrt(self.obs_var + 1e-8)).clamp(-10.0, 10.0).float()
        return x

    @torch.no_grad()
    def update_statistics(self, obs: torch.Tensor) -> None:
        """Folds a batch of observations (..., *O) into the running mean and variance (the pairwise update of Chan,
        Golub and LeVeque 1979: the result equals the mean and variance of every observation folded in so far)."""
        x = obs.to(self.obs_mean.device, torch.float64).reshape(-1, self.out_features) * self.scale
        moments = merge_moments(self.obs_mean, self.obs_var, self.obs_count, x.mean(0), x.var(0, correction=0), len(x))
        for buffer, value in zip((self.obs_mean, self.obs_var, self.obs_count), moments, strict=True):
            buffer.copy_(value)


Moment = float | torch.Tensor


def merge_moments(
    mean: Moment, var: Moment, count: Moment, batch_mean: Moment, batch_var: Moment, n: int
) -> tuple[Moment, Moment, Moment]:
    """The mean, variance and count of everything folded in so far and a batch of n values with `batch_mean` and
    (population) `batch_var`: the pairwise update of Chan, Golub and LeVeque (1979), exact for any split."""
    total = count + n
    delta = batch_mean - mean
    sum_squares = var * count + batch_var * n + delta**2 * count * n / total
    return mean + delta * n / total, sum_squares / total, total


def check_normalizable(observation_space: gym.Space, normalize_observation: bool, agent: str, env_id: str) -> None:
    """A UserError when observation normalisation is asked for on observations that are not a Box."""
    if normalize_observation and not isinstance(observation_space, gym.spaces.Box):
        raise UserError(
            f"{agent} normalize_observation=true needs Box observations, and {env_id}'s are "
            f"{type(observation_space).__name__}; leave it false."
        )
    if normalize_observation and image_layout(observation_space) is not None:
        raise UserError(
            f"{agent} normalize_observation=true is for vector observations, and {env_id}'s are images, which are "
            "scaled to [0, 1] for the convolutional torso; leave it false."
        )


@torch.no_grad()
def update_observation_statistics(modules: Iterable[nn.Module], obs: torch.Tensor) -> None:
    """Folds a batch of observations into every normalising `ObservationEncoder` inside `modules`: an agent's online
    and target networks get the same statistics, so they normalise alike. Nothing happens with normalisation off."""
    for module in modules:
        for encoder in module.modules():
            if isinstance(encoder, ObservationEncoder) and encoder.normalize:
                encoder.update_statistics(obs)


def adam(parameters: Iterable[nn.Parameter], lr: float, eps: float = 1e-8) -> torch.optim.Adam:
    """Adam (Kingma and Ba 2015) with PyTorch's fused kernel: one pass over all parameters per step instead of about
    ten small tensor operations per parameter; the same update up to float rounding."""
    return torch.optim.Adam(parameters, lr=lr, eps=eps, fused=True)


def clip_grad_norm(parameters: Iterable[nn.Parameter], max_norm: float) -> torch.Tensor:
    """Scales all gradients by min(1, max_norm / (||g|| + 1e-6)), ||g|| the 2-norm of all of them together; returns
    ||g||. The rule and the operations of torch.nn.utils.clip_grad_norm_ (per-tensor norms by one multi-tensor kernel,
    one in-place multi-tensor scaling), without its grouping of the tensors by device and dtype, which cost about as
    much again as the arithmetic for small networks. Parameters without a gradient are skipped."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return torch.tensor(0.0)
    total_norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
    torch._foreach_mul_(grads, torch.clamp(max_norm / (total_norm + 1e-6), max=1.0))
    return total_norm


@contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """Inside the block `module`'s parameters take no gradient: a graph built through it carries gradients back to
    its inputs only. An actor's loss through the critic needs d q / d a, not d q / d w: freezing the critic skips the
    weight gradients of its backward pass (about a third of it) and leaves its .grad untouched."""
    learning = [p for p in module.parameters() if p.requires_grad]
    for param in learning:
        param.requires_grad_(False)
    try:
        yield
    finally:
        for param in learning:
            param.requires_grad_(True)


def polyak_update(target: nn.Module, online: nn.Module, tau: float) -> None:
    """w_target <- tau w + (1 - tau) w_target for every parameter; tau = 1 is a hard copy."""
    with torch.no_grad():
        for target_param, param in zip(target.parameters(), online.parameters(), strict=True):
            target_param.lerp_(param, tau)


ACTIVATIONS: dict[str, tuple[type[nn.Module], Callable[[torch.Tensor], torch.Tensor]]] = {
    "tanh": (nn.Tanh, torch.tanh),
    "relu": (nn.ReLU, torch.relu),
}
"""The hidden-layer nonlinearities of `ActorCritic`: tanh (the PPO and TRPO papers' choice) or ReLU."""


def check_activation(activation: str) -> None:
    """A ValueError naming the choices when `activation` is not one of `ACTIVATIONS`."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {', '.join(map(repr, ACTIVATIONS))}, not {activation!r}")


def orthogonal_init_(layer: nn.Linear, gain: float) -> nn.Linear:
    """Orthogonal weights scaled by `gain` and zero biases, in place (Saxe et al. 2014; PPO implementations)."""
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.zeros_(layer.bias)
    return layer


class ActorCritic(nn.Module):
    """A policy pi(a|s) and a state value V(s) as two separate MLPs over one observation encoder. For images the
    encoder holds a learned convolutional torso: with `share_torso` (A2C and PPO, as Mnih et al. 2016 and Schulman et
    al. 2017 do on Atari) both heads read its features and both losses train it; without (TRPO, whose natural-gradient
    step must move only the policy's parameters) the value learns a torso of its own.

    actor:  obs -> encoder -> MLP (hidden_sizes, `activation` after each layer) -> Categorical or Gaussian head
    critic: obs -> encoder -> MLP (hidden_sizes, `activation` after each hidden layer) -> V(s)
    `activation` is tanh by default (the papers' choice) or relu (rl-baselines3-zoo's MuJoCo configs).
    With `orthogonal_init` (the PPO implementation-details choice): hidden layers gain sqrt(2), the policy's output
    layer 0.01 (so the first policy is close to uniform, or to a zero-mean Gaussian), the value output 1.
    A Box action space gets an unsquashed Gaussian with a state-independent log-std; the agent clips its samples
    to the Box when it steps the env. With `normalize_observation` both see running-normalised observations
    (`ObservationEncoder`); `rl.onpolicy.fold_observations` updates the statistics.
    """

    def __init__(
        self,
        observation_space: gym.Space,
        action_space: gym.Space,
        hidden_sizes: tuple[int, ...],
        agent: str,
        env_id: str,
        log_std_init: float = 0.0,
        orthogonal_init: bool = True,
        normalize_observation: bool = False,
        share_torso: bool = False,
        activation: str = "tanh",
    ) -> None:
        super().__init__()
        check_activation(activation)
        activation_module, self._activation = ACTIVATIONS[activation]
        flat_size(observation_space, "observation", agent, env_id)
        check_normalizable(observation_space, normalize_observation, agent, env_id)
        self.encoder = ObservationEncoder(observation_space, normalize_observation)
        # Vector encoders learn nothing, so one serves both heads; a learned torso is shared only with `share_torso`.
        own_torso = self.encoder.torso is not None and not share_torso
        self.critic_encoder = ObservationEncoder(observation_space) if own_torso else None
        in_features = self.encoder.out_features
        features = hidden_sizes[-1] if hidden_sizes else in_features
        self.actor_body = (
            nn.Sequential(mlp(in_features, hidden_sizes[:-1], features, activation_module), activation_module())
            if hidden_sizes
            else nn.Identity()
        )
        self.policy_head = policy_head(action_space, features, agent, env_id, log_std_init)
        self.critic = mlp(in_features, hidden_sizes, 1, activation_module)
        if orthogonal_init:
            for layer in [*self.actor_body.modules(), *self.critic.modules()]:
                if isinstance(layer, nn.Linear):
                    orthogonal_init_(layer, math.sqrt(2))
            head = self.policy_head
            orthogonal_init_(head.logits if isinstance(head, CategoricalHead) else head.mean, 0.01)
            orthogonal_init_(self.critic[-1], 1.0)

        # The bodies' Linear layers, applied directly by `_hidden_layers`: nn.Module.__call__ costs a few microseconds
        # per layer and activation, about a third of a 64-unit MLP's forward pass on 8 rows. The modules stay
        # registered above, so parameter names (checkpoints) and .to(device) are unchanged.
        self._actor_linears = [m for m in self.actor_body.modules() if isinstance(m, nn.Linear)]
        self._critic_linears = [m for m in self.critic.modules() if isinstance(m, nn.Linear)]

    def distribution(self, obs: torch.Tensor) -> Distribution:
        """pi(.|s) for a batch of observations (B, *O): a Categorical over (B,) or a diagonal Gaussian over (B, A)."""
        return self.policy_head(_hidden_layers(self.encoder(obs), self._actor_linears, self._activation))

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        """V(s) for a batch of observations (B, *O) -> (B,)."""
        return self._value_of((self.critic_encoder or self.encoder)(obs))

    def distribution_and_value(self, obs: torch.Tensor) -> tuple[Distribution, torch.Tensor]:
        """pi(.|s) and V(s) of one batch, encoding the observations once where the heads share an encoder (a shared
        torso's forward and backward pass are then done once for both losses)."""
        features = self.encoder(obs)
        distribution = self.policy_head(_hidden_layers(features, self._actor_linears, self._activation))
        return distribution, self._value_of(features if self.critic_encoder is None else self.critic_encoder(obs))

    def _value_of(self, features: torch.Tensor) -> torch.Tensor:
        *hidden, output = self._critic_linears
        return F.linear(_hidden_layers(features, hidden, self._activation), output.weight, output.bias).squeeze(-1)

    def actor_parameters(self) -> list[nn.Parameter]:
        """The parameters of pi (encoder, body and head), in a fixed order: TRPO's flat parameter vector. A shared
        torso is in both lists."""
        return [*self.encoder.parameters(), *self.actor_body.parameters(), *self.policy_head.parameters()]

    def critic_parameters(self) -> list[nn.Parameter]:
        """The parameters of V (its own encoder, if any, and its layers)."""
        own_encoder = list(self.critic_encoder.parameters()) if self.critic_encoder is not None else []
        return [*own_encoder, *self.critic.parameters()]


def _hidden_layers(
    x: torch.Tensor, layers: list[nn.Linear], activation: Callable[[torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """activation(W x + b) through each layer in turn, what nn.Sequential(Linear, Tanh, ...) computes."""
    for layer in layers:
        x = activation(F.linear(x, layer.weight, layer.bias))
    return x
