"""Deep deterministic policy gradient (DDPG) and its twin-delayed variant (TD3).

DDPG: Lillicrap et al. (2016), built on the deterministic policy gradient of Silver et al. (2014); Zhao,
*Mathematical Foundations of RL*, section 10.4 (deterministic actor-critic). TD3: Fujimoto et al. (2018).

An actor mu(s; theta) with actions in the Box's bounds and a critic q(s, a; w) learn off-policy from the replay
buffer. The behaviour policy is a = clip(mu(s) + noise, low, high), Gaussian or Ornstein-Uhlenbeck noise
(`rl.exploration`); the networks are in `agents.ddpg_networks`.

    DDPG  y = r + gamma (1 - terminated) q(s', mu(s'; theta'); w')
    TD3   y = r + gamma (1 - terminated) min_{j=1,2} q_j(s', a~; w_j'),
          a~ = clip(mu(s'; theta') + clip(eps, -c, c), low, high),  eps ~ N(0, target_noise^2)
    critic loss  sum_j mean_i (q_j(s_i, a_i; w_j) - y_i)^2
    actor loss   -mean_i q_1(s_i, mu(s_i; theta); w_1)   (its gradient is the deterministic policy gradient
                                                          grad_a q(s, a) grad_theta mu(s) at a = mu(s))
    targets      theta' <- tau theta + (1 - tau) theta',  w' <- tau w + (1 - tau) w'

DDPG updates the actor and the target networks after every critic step, TD3 after every `policy_delay`-th.
A truncated episode bootstraps from its final observation; only termination drops the bootstrap term.

Deviations from the papers:
1. Defaults are rl-baselines3-zoo's Pendulum-v1 values (one learning rate 1e-3 for actor and critic, Gaussian
   noise of std 0.1, gamma 0.98, (400, 300) hidden units, 10,000 uniform-random steps first) on Stable-Baselines3's
   tau 0.005 and batch 256, for DDPG and TD3 alike; not DDPG's 1e-4/1e-3, tau 0.001 and OU noise. The zoo trains
   200 gradient steps after each 200-step episode; here one step follows each environment step: as many updates.
2. No batch normalisation and no L2 weight decay on the critic; the action enters the critic at its input layer
   (as in TD3), scaled to [-1, 1] so that wide bounds do not swamp the observation.
3. Noise widths (noise_std, target_noise, target_noise_clip) are in units of the action's half-range
   (high - low) / 2, so one setting suits any bounds; the Ornstein-Uhlenbeck process takes unit time steps (dt = 1).
4. Training runs in phases as in Stable-Baselines3: every `train_frequency` environment steps, `gradient_steps`
   updates. `learning_starts` steps of uniform random actions come first (as in TD3; DDPG explores with its noise).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Literal

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from agents.ddpg_networks import Actor, Critic, action_bounds, deterministic_policy
from rl.environments import frame_stack_size
from rl.exploration import ExplorationNoise, GaussianNoise, OrnsteinUhlenbeckNoise, noisy_actions
from rl.images import image_layout
from rl.networks import adam, check_normalizable, frozen, polyak_update, update_observation_statistics
from rl.replay_buffer import ReplayBatch, ReplayBuffer
from rl.run import Run
from rl.schedules import Periodic
from rl.spaces import flat_size


@dataclass(frozen=True)
class DDPGConfig:
    learning_rate: float = 1e-3
    """Adam step size of the actor and of the critic."""
    buffer_size: int = 200_000
    """Replay buffer capacity in transitions."""
    learning_starts: int = 10_000
    """Environment steps of uniform random actions before the first update."""
    batch_size: int = 256
    """Transitions per minibatch."""
    gamma: float = 0.98
    """Discount factor."""
    tau: float = 0.005
    """Polyak rate of the target networks: target <- tau online + (1 - tau) target."""
    train_frequency: int = 1
    """Environment steps (summed over the envs) between training phases."""
    gradient_steps: int = 1
    """Minibatch updates per training phase."""
    noise: Literal["gaussian", "ornstein_uhlenbeck"] = "gaussian"
    """Exploration noise added to the actor's action: independent Gaussian, or a mean-reverting OU process."""
    noise_std: float = 0.1
    """Std of the Gaussian noise, or of the OU process's increments, as a fraction of the action's half-range."""
    theta: float = 0.15
    """Mean-reversion rate of the Ornstein-Uhlenbeck noise per step (noise = ornstein_uhlenbeck only)."""
    hidden_sizes: tuple[int, ...] = (400, 300)
    """Widths of the hidden layers of the actor and of the critic."""
    num_envs: int = 1
    """Environments stepped together (a Gymnasium vector env)."""
    normalize_observation: bool = False
    """Feed the networks Box observations normalised by their running mean and std (clipped to +-10); the buffer
    keeps raw observations, the statistics are saved with the networks (`rl.networks.ObservationEncoder`)."""
    log_every: int = 1_000
    """Environment steps between logged means of the losses and q-values."""
    device: str = "cpu"
    """Torch device for the networks and minibatches."""

    def __post_init__(self) -> None:
        check_off_policy_config(self)
        if not 0.0 < self.theta <= 1.0:
            raise ValueError(f"theta must be in (0, 1], not {self.theta}")
        if self.noise_std < 0:
            raise ValueError(f"noise_std must be >= 0, not {self.noise_std}")


def check_off_policy_config(cfg: DDPGConfig) -> None:
    """The checks DDPG's, TD3's and SAC's configs share: tau in (0, 1], gamma in [0, 1], sizes and counts >= 1."""
    if not 0.0 < cfg.tau <= 1.0:
        raise ValueError(f"tau must be in (0, 1], not {cfg.tau}")
    if not 0.0 <= cfg.gamma <= 1.0:
        raise ValueError(f"gamma must be in [0, 1], not {cfg.gamma}")
    for name in ("buffer_size", "batch_size", "train_frequency", "gradient_steps", "num_envs", "log_every"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"{name} must be at least 1, not {getattr(cfg, name)}")


@dataclass(frozen=True)
class TD3Config(DDPGConfig):
    policy_delay: int = 2
    """Critic updates per actor and target-network update."""
    target_noise: float = 0.2
    """Std of the target-policy smoothing noise, as a fraction of the action's half-range."""
    target_noise_clip: float = 0.5
    """The smoothing noise is clipped to +-target_noise_clip (fraction of the half-range)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.policy_delay < 1:
            raise ValueError(f"policy_delay must be at least 1, not {self.policy_delay}")
        if self.target_noise < 0 or self.target_noise_clip < 0:
            raise ValueError("target_noise and target_noise_clip must be >= 0")


NOISES: dict[str, Callable[[DDPGConfig, tuple[int, ...]], ExplorationNoise]] = {
    "gaussian": lambda cfg, shape: GaussianNoise(shape, cfg.noise_std),
    "ornstein_uhlenbeck": lambda cfg, shape: OrnsteinUhlenbeckNoise(shape, cfg.noise_std, cfg.theta),
}


def critic_targets(batch: ReplayBatch, next_q_values: torch.Tensor) -> torch.Tensor:
    """(B,) y = r + gamma^k (1 - terminated) q'(s', a'): truncated steps bootstrap, terminated ones do not."""
    return batch.rewards + batch.discounts * (1.0 - batch.terminated) * next_q_values


def ddpg_next_q_values(batch: ReplayBatch, target_actor: Actor, target_critics: nn.ModuleList) -> torch.Tensor:
    """(B,) q(s', mu(s'; theta'); w'), DDPG's bootstrap value."""
    with torch.no_grad():
        return target_critics[0](batch.next_obs, target_actor(batch.next_obs))


def smoothed_target_actions(
    next_actions: torch.Tensor, half_range: torch.Tensor, middle: torch.Tensor, noise: float, noise_clip: float
) -> torch.Tensor:
    """(B, *A) clip(mu'(s') + clip(eps, -c, c), low, high), eps ~ N(0, noise^2); widths in half-range units."""
    eps = (noise * torch.randn_like(next_actions)).clamp(-noise_clip, noise_clip)
    return torch.clamp(next_actions + eps * half_range, middle - half_range, middle + half_range)


def td3_next_q_values(
    batch: ReplayBatch,
    target_actor: Actor,
    target_critics: nn.ModuleList,
    target_noise: float,
    target_noise_clip: float,
) -> torch.Tensor:
    """(B,) min_j q_j(s', a~; w_j') at the smoothed target action a~ (TD3's clipped double-Q value)."""
    with torch.no_grad():
        next_actions = target_actor(batch.next_obs)
        smoothed = smoothed_target_actions(
            next_actions, target_actor.half_range, target_actor.middle, target_noise, target_noise_clip
        )
        return torch.stack([critic(batch.next_obs, smoothed) for critic in target_critics]).min(dim=0).values


def critic_loss(q_values: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """sum over the C critics of the mean squared error of their (C, B) q_values against the (B,) targets."""
    return ((q_values - targets) ** 2).mean(dim=1).sum()


def actor_loss(q_values: torch.Tensor) -> torch.Tensor:
    """-mean q_1(s, mu(s)) of the (B,) values at the actor's actions; descending it ascends the critic."""
    return -q_values.mean()


@dataclass
class Networks:
    """The online and target networks and their optimisers; each field is tracked by the run under its name."""

    actor: Actor
    critics: nn.ModuleList
    target_actor: Actor
    target_critics: nn.ModuleList
    actor_optimizer: torch.optim.Optimizer
    critic_optimizer: torch.optim.Optimizer


@dataclass(frozen=True)
class UpdateStats:
    value_loss: float
    q_values: float
    """Mean q_1 of the minibatch's actions."""
    policy_loss: float | None
    """None when this update left the actor alone (TD3's delay)."""


NextQValues = Callable[[ReplayBatch, Actor, nn.ModuleList], torch.Tensor]


def build_actor_critic(
    cfg: DDPGConfig, observation_space: gym.Space, action_space: gym.spaces.Box, n_critics: int
) -> Networks:
    def new_actor() -> Actor:
        return Actor(observation_space, action_space, cfg.hidden_sizes, cfg.normalize_observation)

    device = torch.device(cfg.device)
    actor = new_actor().to(device)
    critics = new_critics(cfg, observation_space, action_space, n_critics)
    target_actor = new_actor().to(device)
    target_critics = new_critics(cfg, observation_space, action_space, n_critics)
    target_actor.load_state_dict(actor.state_dict())
    target_critics.load_state_dict(critics.state_dict())
    actor_optimizer = adam(actor.parameters(), cfg.learning_rate)
    critic_optimizer = adam(critics.parameters(), cfg.learning_rate)
    return Networks(actor, critics, target_actor, target_critics, actor_optimizer, critic_optimizer)


def new_critics(
    cfg: DDPGConfig, observation_space: gym.Space, action_space: gym.spaces.Box, n_critics: int
) -> nn.ModuleList:
    """`n_critics` freshly initialised critics on cfg.device (DDPG one, TD3 and SAC two)."""
    return nn.ModuleList(
        Critic(observation_space, action_space, cfg.hidden_sizes, cfg.normalize_observation) for _ in range(n_critics)
    ).to(torch.device(cfg.device))


def replay_buffer_for(
    cfg: DDPGConfig, observation_space: gym.Space, action_space: gym.spaces.Box, frame_stack: int = 1
) -> ReplayBuffer:
    """The replay buffer of a Box-action agent (DDPG, TD3, SAC): raw observations, float32 actions, 1-step; images
    kept frame by frame (`frame_stack`: `rl.environments.frame_stack_size` of the env)."""
    return ReplayBuffer(
        cfg.buffer_size,
        observation_space.shape,
        action_shape=action_space.shape,
        obs_dtype=observation_space.dtype,
        action_dtype=np.float32,
        num_envs=cfg.num_envs,
        gamma=cfg.gamma,
        device=torch.device(cfg.device),
        compact_observations=image_layout(observation_space) is not None,  # frames kept once (rl.frame_store)
        frame_stack=frame_stack,
    )


def update(
    nets: Networks, batch: ReplayBatch, next_q_values: NextQValues, update_actor: bool, tau: float
) -> UpdateStats:
    """One critic step; with `update_actor`, one actor step and the Polyak update of both target networks."""
    targets = critic_targets(batch, next_q_values(batch, nets.target_actor, nets.target_critics))
    q_values = torch.stack([critic(batch.obs, batch.actions) for critic in nets.critics])  # (C, B)
    value_loss = critic_loss(q_values, targets)
    nets.critic_optimizer.zero_grad()
    value_loss.backward()
    nets.critic_optimizer.step()
    policy_loss = None
    if update_actor:
        with frozen(nets.critics):  # the deterministic policy gradient needs d q / d a only
            loss = actor_loss(nets.critics[0](batch.obs, nets.actor(batch.obs)))
        nets.actor_optimizer.zero_grad()
        loss.backward()
        nets.actor_optimizer.step()
        polyak_update(nets.target_actor, nets.actor, tau)
        polyak_update(nets.target_critics, nets.critics, tau)
        policy_loss = loss.item()
    return UpdateStats(value_loss.item(), q_values[0].mean().item(), policy_loss)


def train_ddpg(cfg: DDPGConfig, run: Run) -> np.ndarray:
    """Trains DDPG on `run`'s env; returns the final greedy (noise-free) evaluation returns."""
    return train_actor_critic(cfg, run, n_critics=1, next_q_values=ddpg_next_q_values, policy_delay=1)


def train_td3(cfg: TD3Config, run: Run) -> np.ndarray:
    """Trains TD3 on `run`'s env; returns the final greedy (noise-free) evaluation returns."""
    smoothed = partial(td3_next_q_values, target_noise=cfg.target_noise, target_noise_clip=cfg.target_noise_clip)
    return train_actor_critic(cfg, run, n_critics=2, next_q_values=smoothed, policy_delay=cfg.policy_delay)


def train_actor_critic(
    cfg: DDPGConfig, run: Run, n_critics: int, next_q_values: NextQValues, policy_delay: int
) -> np.ndarray:
    """The loop DDPG and TD3 share: act with noise, store, update in phases, evaluate the greedy actor."""
    spec, device = run.spec, torch.device(cfg.device)
    observation_space, action_space = run.env.observation_space, run.env.action_space
    low, high = action_bounds(action_space, spec.agent, spec.env_id)
    flat_size(observation_space, "observation", spec.agent, spec.env_id)
    check_normalizable(observation_space, cfg.normalize_observation, spec.agent, spec.env_id)
    rollout = run.vector_rollout(cfg.num_envs)

    nets = build_actor_critic(cfg, observation_space, action_space, n_critics)
    buffer = replay_buffer_for(cfg, observation_space, action_space, frame_stack_size(run.env))
    for name, obj in [*vars(nets).items(), ("buffer", buffer)]:
        run.track(name, obj)
    critic_updates = run.state("critic_updates", np.zeros(1, dtype=np.int64))  # TD3's delay counts on across resumes
    noise = NOISES[cfg.noise](cfg, (cfg.num_envs, *action_space.shape))

    first_phase = max(cfg.learning_starts, rollout.global_step + cfg.train_frequency)
    train_phase = run.track("train_phase", Periodic(first_phase, cfg.train_frequency))
    next_log, stats = rollout.global_step + cfg.log_every, []
    act = run.evaluate_during_training(deterministic_policy(nets.actor, device))
    while run.keep_going():
        if rollout.global_step < cfg.learning_starts:
            actions = run.rng.uniform(low, high, size=(cfg.num_envs, *action_space.shape)).astype(np.float32)
        else:
            with torch.no_grad():
                greedy = nets.actor(torch.as_tensor(rollout.obs, device=device)).cpu().numpy()  # (N, *A)
            actions = noisy_actions(greedy, noise.sample(run.rng), low, high)
        t = rollout.step(actions)
        noise.reset(np.logical_or(t.terminated, t.truncated))
        buffer.add(t.obs, t.actions, t.rewards, t.next_obs, t.terminated, t.truncated)
        if cfg.normalize_observation:  # the acted-on observations, into every network's encoder alike
            networks = (nets.actor, nets.critics, nets.target_actor, nets.target_critics)
            update_observation_statistics(networks, torch.as_tensor(np.asarray(t.obs)))

        if train_phase.due(rollout.global_step):
            for _ in range(cfg.gradient_steps):
                critic_updates += 1
                update_actor = critic_updates[0] % policy_delay == 0
                stats.append(update(nets, buffer.sample(cfg.batch_size, run.rng), next_q_values, update_actor, cfg.tau))
        if rollout.global_step >= next_log and stats:
            next_log = rollout.global_step + cfg.log_every
            log_stats(run, stats)
            stats = []

    return run.evaluate(act)


def log_stats(run: Run, stats: list[UpdateStats]) -> None:
    """Mean losses and q-values of the updates since the last log; `losses/policy_loss` if the actor moved."""
    run.log("losses/value_loss", np.mean([s.value_loss for s in stats]))
    run.log("charts/q_values", np.mean([s.q_values for s in stats]))
    policy_losses = [s.policy_loss for s in stats if s.policy_loss is not None]
    if policy_losses:
        run.log("losses/policy_loss", np.mean(policy_losses))


def act_from_checkpoint(
    arrays: dict[str, np.ndarray], cfg: DDPGConfig, env: gym.Env
) -> Callable[[np.ndarray], np.ndarray]:
    """The deterministic policy mu(s) of the actor a DDPG or TD3 checkpoint stores."""
    env_id = str(env.spec.id if env.spec else env)
    action_bounds(env.action_space, "ddpg and td3", env_id)
    actor = Actor(env.observation_space, env.action_space, cfg.hidden_sizes, cfg.normalize_observation)
    prefix = "actor."
    actor.load_state_dict(
        {
            name.removeprefix(prefix): torch.from_numpy(array)
            for name, array in arrays.items()
            if name.startswith(prefix)
        }
    )
    return deterministic_policy(actor.eval(), torch.device("cpu"))
