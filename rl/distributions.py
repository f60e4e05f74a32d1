"""Policy distributions for policy-gradient agents, built on `torch.distributions`.

- Discrete actions: a Categorical over logits (B, K); actions (B,) are indices 0..K-1.
- Continuous actions: a diagonal Gaussian, `Independent(Normal(mean, std), 1)` over (B, A), so `log_prob` and
  `entropy` sum over the A action dimensions and return (B,). Its log-std is a state-independent parameter (the usual
  choice for REINFORCE, A2C, TRPO and PPO) or the output of a layer (SAC-style).
- Tanh-squashed Gaussian (Haarnoja et al. 2018, appendix C): a = loc + scale * tanh(u), u ~ N(mean, std), mapping
  onto a Box's bounds [low, high] with loc = (high + low) / 2, scale = (high - low) / 2. Its log-density is the
  Gaussian's minus the log-determinant of the change of variables, sum_i log(scale_i * (1 - tanh(u_i)^2)).

Argument validation is off (`validate_args=False`): the parameters come from networks, and checking their
constraints on every construction costs more than the rest of a small policy's forward pass. For the same reason
the Categorical is `PolicyCategorical`, torch's with cheaper construction (logits normalised by one log_softmax),
log_prob (one gather) and mode (the argmax of the logits); it samples with torch's own `torch.multinomial`, so a
seed draws the actions it drew before. (An inverse-CDF sampler from one uniform per row saved another 5-15% of an
A2C run, but changed the random stream, and A2C's defaults, chosen on the old one, then reached their bar on fewer
seeds: 9 of 30 against 16 of 30; kept out until that is understood.)

Every distribution here offers `sample()`, `log_prob(actions)`, `entropy()` and `mode` (the deterministic action:
argmax, mean, or the squashed mean); `kl(p, q)` is the KL divergence between two of the same family.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor, nn
from torch.distributions import (
    AffineTransform,
    Categorical,
    Distribution,
    Independent,
    Normal,
    TanhTransform,
    TransformedDistribution,
    kl_divergence,
)

from rl.errors import UserError
from rl.spaces import discrete_size

LOG_STD_MIN = -20.0
"""Lower clamp for a state-dependent log-std, as in SAC implementations: keeps std away from 0."""
LOG_STD_MAX = 2.0
"""Upper clamp for a state-dependent log-std."""
SQUASH_EPS = 1e-6
"""Actions are kept this fraction of the half-range inside a Box's bounds before inverting tanh (atanh(1) = inf)."""


class PolicyCategorical(Categorical):
    """torch's Categorical over the last axis of `logits`, with cheaper construction, `log_prob` and `mode`.

    At a policy's sizes ((8, 2) for eight CartPoles) each torch call costs more than its arithmetic, and torch's
    versions take several: logsumexp then a subtraction to normalise, a broadcast before the gather in `log_prob`,
    the probabilities before the argmax in `mode`. Everything else (sample, probs, entropy, KL) is torch's.
    """

    def __init__(self, logits: Tensor) -> None:
        self.logits = torch.log_softmax(logits, dim=-1)  # log pi(k|s), normalised as Categorical's own logits are
        self._param = self.logits
        self._num_events = logits.shape[-1]
        Distribution.__init__(self, logits.shape[:-1], validate_args=False)

    def log_prob(self, actions: Tensor) -> Tensor:
        if actions.shape != self.batch_shape:  # broadcasting, as torch's log_prob allows
            return super().log_prob(actions)
        return self.logits.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)

    @property
    def mode(self) -> Tensor:
        return self.logits.argmax(dim=-1)  # the most probable action, without computing the probabilities


def categorical(logits: Tensor) -> PolicyCategorical:
    """A categorical policy over the last axis of `logits` ((B, K), or (B, L, V) for token sequences)."""
    return PolicyCategorical(logits)


def diagonal_gaussian(mean: Tensor, log_std: Tensor) -> Independent:
    """N(mean, diag(exp(log_std))^2) over (B, A); `log_std` is (A,) (state-independent) or (B, A)."""
    std = log_std.exp().expand_as(mean)
    return Independent(Normal(mean, std, validate_args=False), 1, validate_args=False)


class SquashedDiagonalGaussian(TransformedDistribution):
    """a = loc + scale * tanh(u), u ~ N(mean, diag(exp(log_std))^2), over (B, A); loc and scale are (A,).

    `entropy()` returns the entropy of the Gaussian before squashing, summed over A: the squashed entropy
    H(u) + E[sum_i log(scale_i (1 - tanh(u_i)^2))] has no closed form; estimate it as -log_prob(rsample()) if needed.
    `log_prob` moves actions on or beyond the bounds SQUASH_EPS of the half-range inside them, so that actions
    stored from an earlier policy have a finite log-probability.
    """

    def __init__(self, mean: Tensor, log_std: Tensor, low: Tensor, high: Tensor) -> None:
        self.loc = (high + low) / 2
        self.scale = (high - low) / 2
        transforms = [TanhTransform(cache_size=1), AffineTransform(self.loc, self.scale, cache_size=1)]
        super().__init__(diagonal_gaussian(mean, log_std), transforms, validate_args=False)

    def log_prob(self, actions: Tensor) -> Tensor:
        limit = self.scale * (1.0 - SQUASH_EPS)
        low, high = self.loc - limit, self.loc + limit
        if ((actions < low) | (actions > high)).any():
            actions = torch.clamp(actions, low, high)
        # An unclamped action keeps its identity, so a fresh rsample() reuses the cached u instead of atanh(a).
        return super().log_prob(actions)

    def entropy(self) -> Tensor:
        return self.base_dist.entropy()

    @property
    def mode(self) -> Tensor:
        return self.loc + self.scale * torch.tanh(self.base_dist.mean)


def kl(p: Distribution, q: Distribution) -> Tensor:
    """KL(p || q) per sample ((B,), summed over action dimensions) for two policies of the same family.

    The squashed Gaussian's KL is that of the Gaussians before squashing: KL is unchanged by the same bijection.
    """
    if type(p) is not type(q):
        raise ValueError(
            f"kl needs two distributions of the same family, got {type(p).__name__} and {type(q).__name__}"
        )
    return kl_divergence(p, q)


class CategoricalHead(nn.Module):
    """Features (B, F) -> Categorical over K actions, through one linear layer of logits."""

    def __init__(self, in_features: int, num_actions: int) -> None:
        super().__init__()
        self.logits = nn.Linear(in_features, num_actions)

    def forward(self, features: Tensor) -> PolicyCategorical:
        return categorical(self.logits(features))


class GaussianHead(nn.Module):
    """Features (B, F) -> diagonal Gaussian over A action dimensions, tanh-squashed onto [low, high] if given.

    The mean is a linear layer. The log-std is a parameter (A,) initialised to `log_std_init`, or, with
    `state_dependent_std`, a second linear layer whose output is clamped to [LOG_STD_MIN, LOG_STD_MAX].
    Unsquashed actions are unbounded: the agent clips them to the Box before stepping the env.
    """

    def __init__(
        self,
        in_features: int,
        action_dim: int,
        log_std_init: float = 0.0,
        state_dependent_std: bool = False,
        low: np.ndarray | None = None,
        high: np.ndarray | None = None,
    ) -> None:
        super().__init__()
        self.mean = nn.Linear(in_features, action_dim)
        self.state_dependent_std = state_dependent_std
        if state_dependent_std:
            self.log_std = nn.Linear(in_features, action_dim)
            nn.init.constant_(self.log_std.bias, log_std_init)
        else:
            self.log_std = nn.Parameter(torch.full((action_dim,), float(log_std_init)))
        self.squashed = low is not None and high is not None
        if self.squashed:
            # Not learnt and rebuilt from the env's space, so kept out of checkpoints.
            self.register_buffer("low", torch.as_tensor(low, dtype=torch.float32), persistent=False)
            self.register_buffer("high", torch.as_tensor(high, dtype=torch.float32), persistent=False)

    def forward(self, features: Tensor) -> Independent | SquashedDiagonalGaussian:
        mean = self.mean(features)  # (B, A)
        if self.state_dependent_std:
            log_std = torch.clamp(self.log_std(features), LOG_STD_MIN, LOG_STD_MAX)  # (B, A)
        else:
            log_std = self.log_std  # (A,)
        if self.squashed:
            return SquashedDiagonalGaussian(mean, log_std, self.low, self.high)
        return diagonal_gaussian(mean, log_std)


def policy_head(
    space: gym.Space,
    in_features: int,
    agent: str,
    env_id: str,
    log_std_init: float = 0.0,
    state_dependent_std: bool = False,
    squash: bool = False,
) -> CategoricalHead | GaussianHead:
    """The head for an action space: Discrete -> CategoricalHead, 1-D Box -> GaussianHead; a UserError otherwise.

    `squash` tanh-squashes the Gaussian onto the Box's bounds, which must then be finite.
    """
    if isinstance(space, gym.spaces.Discrete):
        return CategoricalHead(in_features, discrete_size(space, "action", agent, env_id))
    if isinstance(space, gym.spaces.Box) and len(space.shape) == 1:
        bounds = (space.low, space.high) if squash else (None, None)
        if squash and not (np.all(np.isfinite(space.low)) and np.all(np.isfinite(space.high))):
            raise UserError(
                f"{agent} squashes actions into the action bounds, but {env_id} has unbounded actions {space}; "
                "turn squashing off or wrap the env with gymnasium.wrappers.RescaleAction."
            )
        return GaussianHead(in_features, space.shape[0], log_std_init, state_dependent_std, *bounds)
    raise UserError(
        f"{agent} needs a Discrete or one-dimensional Box action space, but {env_id} has {space}; "
        "pick an env with such actions or flatten its action space in a wrapper."
    )
