"""Soft actor-critic (SAC): Haarnoja et al. (2018), "Soft Actor-Critic Algorithms and Applications".

SAC maximises the return plus alpha times the policy's entropy. A stochastic actor pi(a|s; theta), a Gaussian
squashed by tanh into the Box, and two critics q_j(s, a; w_j) learn off-policy from the replay buffer:

    a~ = middle + half_range * tanh(u),  u = mu(s; theta) + sigma(s; theta) * eps,  eps ~ N(0, I)   (reparameterised)
    log pi(a~|s) = log N(u; mu, sigma^2) - sum_k log(1 - tanh(u_k)^2)
    y = r + gamma^k (1 - terminated) (min_j q_j(s', a'; w_j') - alpha log pi(a'|s')),  a' ~ pi(.|s')
    critic loss  sum_j mean_i (q_j(s_i, a_i; w_j) - y_i)^2
    actor loss   mean_i (alpha log pi(a~_i|s_i) - min_j q_j(s_i, a~_i; w_j))
    alpha loss   -mean_i log(alpha) (log pi(a~_i|s_i) + target_entropy)      (automatic temperature)
    targets      w_j' <- tau w_j + (1 - tau) w_j'

The greedy (evaluation) action is middle + half_range * tanh(mu(s)). A truncated episode bootstraps from its final
observation; only termination drops the bootstrap term.

Deviations from the paper:
1. Defaults are Stable-Baselines3's with rl-baselines3-zoo's Pendulum-v1 learning rate 1e-3 (one rate for actor,
   critics and temperature), gamma 0.99, (256, 256) hidden units, tau 0.005, batch 256, 100 uniform-random steps
   first; the temperature starts at 1 and is learned with target entropy -dim(A).
2. Log-probabilities are those of the action scaled to [-1, 1] (the constant -sum_k log half_range_k left out), so
   one target entropy suits any bounds, as in Stable-Baselines3.
3. The actor's log standard deviation is clipped to [-20, 2]. The critics are DDPG's (`agents.ddpg_networks`): the
   action enters at the input layer, scaled to [-1, 1].
4. Training runs in phases: every `train_frequency` environment steps, `gradient_steps` updates of critics, actor
   and temperature, each followed by the Polyak update of the target critics.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from agents.ddpg import check_off_policy_config, critic_loss, critic_targets, new_critics, replay_buffer_for
from agents.ddpg_networks import action_bounds, register_action_scale
from rl.environments import frame_stack_size
from rl.networks import (
    ObservationEncoder,
    adam,
    check_normalizable,
    frozen,
    mlp,
    polyak_update,
    update_observation_statistics,
)
from rl.replay_buffer import ReplayBatch
from rl.run import Run
from rl.schedules import Periodic
from rl.spaces import flat_size

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0
LOGGED = {"value_loss": "losses/value_loss", "policy_loss": "losses/policy_loss", "q_values": "charts/q_values",
          "alpha": "charts/alpha", "entropy": "charts/entropy"}  # fmt: skip
"""`update`'s statistics and their TensorBoard tags (means over the updates between logs)."""


@dataclass(frozen=True)
class Config:
    learning_rate: float = 1e-3
    """Adam step size of the actor, the critics and the temperature."""
    buffer_size: int = 1_000_000
    """Replay buffer capacity in transitions."""
    learning_starts: int = 100
    """Environment steps of uniform random actions before the first update."""
    batch_size: int = 256
    """Transitions per minibatch."""
    gamma: float = 0.99
    """Discount factor."""
    tau: float = 0.005
    """Polyak rate of the target critics: target <- tau online + (1 - tau) target."""
    train_frequency: int = 1
    """Environment steps (summed over the envs) between training phases."""
    gradient_steps: int = 1
    """Minibatch updates per training phase."""
    alpha: float | None = None
    """A fixed temperature (entropy weight); None learns it, starting from `initial_alpha`."""
    initial_alpha: float = 1.0
    """The learned temperature's starting value."""
    target_entropy: float | None = None
    """Entropy the learned temperature aims at, in nats of the [-1, 1]-scaled action; None: -dim(A)."""
    hidden_sizes: tuple[int, ...] = (256, 256)
    """Widths of the hidden layers of the actor and of the critics."""
    num_envs: int = 1
    """Environments stepped together (a Gymnasium vector env)."""
    normalize_observation: bool = False
    """Feed the networks Box observations normalised by their running mean and std (clipped to +-10); the buffer
    keeps raw observations, the statistics are saved with the networks (`rl.networks.ObservationEncoder`)."""
    log_every: int = 1_000
    """Environment steps between logged means of the losses, q-values and temperature."""
    device: str = "cpu"
    """Torch device for the networks and minibatches."""

    def __post_init__(self) -> None:
        check_off_policy_config(self)
        if self.alpha is not None and self.alpha < 0:
            raise ValueError(f"alpha must be >= 0 (or None to learn it), not {self.alpha}")
        if self.initial_alpha <= 0:
            raise ValueError(f"initial_alpha must be > 0, not {self.initial_alpha}")


class SquashedGaussianActor(nn.Module):
    """pi(a|s; theta): u ~ N(mu(s), sigma(s)^2), a = middle + half_range * tanh(u)."""

    def __init__(
        self, observation_space: gym.Space, action_space: gym.spaces.Box, hidden_sizes: tuple[int, ...], normalize: bool
    ) -> None:
        super().__init__()
        self.encoder = ObservationEncoder(observation_space, normalize)
        self.action_shape = action_space.shape
        self.body = mlp(self.encoder.out_features, hidden_sizes, 2 * int(np.prod(action_space.shape)))
        register_action_scale(self, action_space)

    def mean_and_log_std(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, A) each: the Gaussian's mean and its log standard deviation, clipped to [LOG_STD_MIN, LOG_STD_MAX]."""
        mean, log_std = self.body(self.encoder(obs)).chunk(2, dim=1)
        return mean, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)

    def sample(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A reparameterised action (B, *A) in the Box and its (B,) log-probability in [-1, 1] units."""
        mean, log_std = self.mean_and_log_std(obs)
        u = mean + log_std.exp() * torch.randn_like(mean)
        return self.to_box(torch.tanh(u)), squashed_gaussian_log_prob(u, mean, log_std)

    def greedy(self, obs: torch.Tensor) -> torch.Tensor:
        """(B, *A) middle + half_range * tanh(mu(s)): the evaluation action."""
        return self.to_box(torch.tanh(self.mean_and_log_std(obs)[0]))

    def to_box(self, squashed: torch.Tensor) -> torch.Tensor:
        return self.middle + self.half_range * squashed.reshape(-1, *self.action_shape)


def squashed_gaussian_log_prob(u: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """(B,) log density of tanh(u) for u ~ N(mean, exp(log_std)^2) (B, A): the Gaussian's log density minus
    sum_k log(1 - tanh(u_k)^2), written as 2 (log 2 - u - softplus(-2u)) to stay finite where tanh(u) is +-1."""
    gaussian = -0.5 * ((u - mean) / log_std.exp()) ** 2 - log_std - 0.5 * math.log(2 * math.pi)
    log_det = 2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))
    return (gaussian - log_det).sum(dim=1)


class Temperature(nn.Module):
    """alpha = exp(log_alpha): learned against a target entropy, or fixed."""

    def __init__(self, initial: float, learned: bool) -> None:
        super().__init__()
        self.log_alpha = nn.Parameter(torch.tensor([math.log(initial) if initial > 0 else -math.inf]), learned)

    def forward(self) -> torch.Tensor:
        """(1,) alpha."""
        return self.log_alpha.exp()


@dataclass
class Networks:
    """The actor, the twin critics and their targets, the temperature and the optimisers; each field is tracked by
    the run under its name."""

    actor: SquashedGaussianActor
    critics: nn.ModuleList
    target_critics: nn.ModuleList
    temperature: Temperature
    actor_optimizer: torch.optim.Optimizer
    critic_optimizer: torch.optim.Optimizer
    temperature_optimizer: torch.optim.Optimizer | None


def build_networks(cfg: Config, observation_space: gym.Space, action_space: gym.spaces.Box) -> Networks:
    device = torch.device(cfg.device)
    actor = SquashedGaussianActor(observation_space, action_space, cfg.hidden_sizes, cfg.normalize_observation)
    critics, target_critics = (new_critics(cfg, observation_space, action_space, 2) for _ in range(2))
    target_critics.load_state_dict(critics.state_dict())
    learned = cfg.alpha is None
    temperature = Temperature(cfg.initial_alpha if learned else cfg.alpha, learned).to(device)
    return Networks(
        actor.to(device),
        critics,
        target_critics,
        temperature,
        adam(actor.parameters(), cfg.learning_rate),
        adam(critics.parameters(), cfg.learning_rate),
        torch.optim.Adam(temperature.parameters(), lr=cfg.learning_rate) if learned else None,
    )


def soft_next_q_values(batch: ReplayBatch, nets: Networks) -> torch.Tensor:
    """(B,) min_j q_j(s', a'; w_j') - alpha log pi(a'|s'), a' ~ pi(.|s'): the soft bootstrap value."""
    with torch.no_grad():
        next_actions, next_log_probs = nets.actor.sample(batch.next_obs)
        next_q = torch.stack([critic(batch.next_obs, next_actions) for critic in nets.target_critics]).min(dim=0).values
        return next_q - nets.temperature() * next_log_probs


def update(nets: Networks, batch: ReplayBatch, target_entropy: float, tau: float) -> dict[str, float]:
    """One step of the critics, the actor and the temperature, then the Polyak update of the target critics."""
    targets = critic_targets(batch, soft_next_q_values(batch, nets))
    q_values = torch.stack([critic(batch.obs, batch.actions) for critic in nets.critics])  # (2, B)
    value_loss = critic_loss(q_values, targets)
    nets.critic_optimizer.zero_grad()
    value_loss.backward()
    nets.critic_optimizer.step()

    actions, log_probs = nets.actor.sample(batch.obs)
    with frozen(nets.critics):  # the actor's gradient flows through the critics to the action only
        q_new = torch.stack([critic(batch.obs, actions) for critic in nets.critics]).min(dim=0).values
    alpha = nets.temperature().detach()
    policy_loss = (alpha * log_probs - q_new).mean()
    nets.actor_optimizer.zero_grad()
    policy_loss.backward()
    nets.actor_optimizer.step()

    if nets.temperature_optimizer is not None:
        alpha_loss = -(nets.temperature.log_alpha * (log_probs.detach() + target_entropy)).mean()
        nets.temperature_optimizer.zero_grad()
        alpha_loss.backward()
        nets.temperature_optimizer.step()
    polyak_update(nets.target_critics, nets.critics, tau)
    return {
        "value_loss": value_loss.item(),
        "q_values": q_values[0].mean().item(),
        "policy_loss": policy_loss.item(),
        "alpha": alpha.item(),
        "entropy": -log_probs.mean().item(),
    }


def train(cfg: Config, run: Run) -> np.ndarray:
    """Trains SAC on `run`'s env; returns the final greedy (tanh of the mean) evaluation returns."""
    spec, device = run.spec, torch.device(cfg.device)
    observation_space, action_space = run.env.observation_space, run.env.action_space
    low, high = action_bounds(action_space, spec.agent, spec.env_id)
    flat_size(observation_space, "observation", spec.agent, spec.env_id)
    check_normalizable(observation_space, cfg.normalize_observation, spec.agent, spec.env_id)
    rollout = run.vector_rollout(cfg.num_envs)

    nets = build_networks(cfg, observation_space, action_space)
    buffer = replay_buffer_for(cfg, observation_space, action_space, frame_stack_size(run.env))
    for name, obj in [*vars(nets).items(), ("buffer", buffer)]:
        if obj is not None:
            run.track(name, obj)
    target_entropy = -float(np.prod(action_space.shape)) if cfg.target_entropy is None else cfg.target_entropy

    first_phase = max(cfg.learning_starts, rollout.global_step + cfg.train_frequency)
    train_phase = run.track("train_phase", Periodic(first_phase, cfg.train_frequency))
    next_log, stats = rollout.global_step + cfg.log_every, []
    act = run.evaluate_during_training(greedy_policy(nets.actor, device))
    while run.keep_going():
        if rollout.global_step < cfg.learning_starts:
            actions = run.rng.uniform(low, high, size=(cfg.num_envs, *action_space.shape)).astype(np.float32)
        else:
            with torch.no_grad():
                actions = nets.actor.sample(torch.as_tensor(rollout.obs, device=device))[0].cpu().numpy()
        t = rollout.step(np.clip(actions, low, high))  # tanh can round to exactly +-1 in float32: stay in bounds
        buffer.add(t.obs, t.actions, t.rewards, t.next_obs, t.terminated, t.truncated)
        if cfg.normalize_observation:  # the acted-on observations, into every network's encoder alike
            networks = (nets.actor, nets.critics, nets.target_critics)
            update_observation_statistics(networks, torch.as_tensor(np.asarray(t.obs)))

        if train_phase.due(rollout.global_step):
            for _ in range(cfg.gradient_steps):
                stats.append(update(nets, buffer.sample(cfg.batch_size, run.rng), target_entropy, cfg.tau))
        if rollout.global_step >= next_log and stats:
            next_log = rollout.global_step + cfg.log_every
            for name, tag in LOGGED.items():
                run.log(tag, np.mean([update_stats[name] for update_stats in stats]))
            stats = []

    return run.evaluate(act)


def greedy_policy(actor: SquashedGaussianActor, device: torch.device) -> Callable[[np.ndarray], np.ndarray]:
    """act(obs) -> middle + half_range * tanh(mu(obs)), for a single (unbatched) observation."""

    def act(obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return actor.greedy(torch.as_tensor(np.asarray(obs)[None], device=device))[0].cpu().numpy()

    return act


def act_from_checkpoint(arrays: dict[str, np.ndarray], cfg: Config, env: gym.Env) -> Callable[[np.ndarray], np.ndarray]:
    """The greedy policy of the actor a SAC checkpoint stores."""
    action_bounds(env.action_space, "sac", str(env.spec.id if env.spec else env))
    actor = SquashedGaussianActor(env.observation_space, env.action_space, cfg.hidden_sizes, cfg.normalize_observation)
    prefix = "actor."
    actor.load_state_dict(
        {name.removeprefix(prefix): torch.from_numpy(a) for name, a in arrays.items() if name.startswith(prefix)}
    )
    return greedy_policy(actor.eval(), torch.device("cpu"))
