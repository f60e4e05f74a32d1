"""Proximal policy optimisation (PPO-Clip): Schulman et al. (2017), "Proximal Policy Optimization Algorithms",
algorithm 1 with the clipped surrogate of eq. 7 and the combined loss of eq. 9.

N envs step together for T steps with a ~ pi_old(.|s) (`rl.onpolicy.collect`, GAE advantages); then `n_epochs`
passes over the T * N samples in shuffled minibatches, each one Adam step on

    ratio  = pi(a|s) / pi_old(a|s)
    L_clip = -mean(min(ratio A, clip(ratio, 1 - clip_range, 1 + clip_range) A))
    L_V    = 0.5 mean((V(s) - R)^2)        or, with clip_range_vf, 0.5 mean(max((V - R)^2, (V_clip - R)^2))
    loss   = L_clip + vf_coef L_V - ent_coef mean(H(pi(.|s)))

with A normalised per minibatch and the gradient norm clipped at `max_grad_norm`. With `target_kl`, the update
stops at the first minibatch whose approximate KL(pi_old || pi) exceeds 1.5 * target_kl, before stepping on it.

Deviations from the paper:
1. The implementation details of OpenAI Baselines and Stable-Baselines3: separate actor and critic MLPs (tanh,
   orthogonal init; `activation` and `orthogonal_init` change them), advantages normalised per minibatch, optional
   value clipping, global gradient clipping, Adam with eps 1e-5, learning rate and clip range annealed linearly to
   0 over the step budget (set from the step at the start of each iteration; constant when the run's budget is in
   episodes).
2. The defaults are rl-baselines3-zoo's CartPole-v1 values (8 envs, n_steps 32, minibatch 256, 20 epochs,
   gamma 0.98, gae_lambda 0.8, ent_coef 0, learning rate 1e-3 and clip range 0.2 both annealed). The value loss
   here carries a factor 0.5, so vf_coef 1.0 is Stable-Baselines3's vf_coef 0.5 on the plain squared error.
3. Truncated episodes bootstrap from V(final observation); terminated ones do not.
4. The last iteration is shortened so that the run stops within N - 1 steps of its step budget.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from rl.advantages import normalize
from rl.networks import ActorCritic, adam, check_activation, clip_grad_norm
from rl.onpolicy import (
    OnPolicyBatch,
    Samples,
    collect,
    deterministic_policy,
    flatten,
    fold_observations,
    load_tracked,
    minibatches,
    steps_this_iteration,
    tracked_reward_scaler,
)
from rl.pg_losses import clipped_surrogate_loss, entropy_bonus, value_loss
from rl.run import Run
from rl.schedules import linear_schedule


@dataclass(frozen=True)
class Config:
    num_envs: int = 8
    """Environments stepped together (a Gymnasium vector env)."""
    n_steps: int = 32
    """Steps per env between updates (T); one update reads T * num_envs transitions."""
    batch_size: int = 256
    """Transitions per minibatch."""
    n_epochs: int = 20
    """Passes over the collected transitions per update."""
    learning_rate: float = 1e-3
    """Adam step size (its initial value when annealed)."""
    anneal_lr: bool = True
    """Decay the learning rate linearly to 0 over the step budget."""
    gamma: float = 0.98
    """Discount factor."""
    gae_lambda: float = 0.8
    """GAE lambda."""
    clip_range: float = 0.2
    """Clip the probability ratio to [1 - clip_range, 1 + clip_range] (its initial value when annealed)."""
    anneal_clip_range: bool = True
    """Decay the clip range linearly to 0 over the step budget."""
    clip_range_vf: float | None = None
    """Clip the value change per update to +-clip_range_vf in the value loss; None: no value clipping."""
    normalize_advantage: bool = True
    """Normalise the advantages of each minibatch to mean 0 and std 1."""
    ent_coef: float = 0.0
    """Weight of the entropy bonus."""
    vf_coef: float = 1.0
    """Weight of the value loss 0.5 mean((V - R)^2)."""
    max_grad_norm: float = 0.5
    """Clip the global gradient norm of both networks at this value."""
    target_kl: float | None = None
    """Stop an update early once the approximate KL exceeds 1.5 * target_kl; None: never."""
    hidden_sizes: tuple[int, ...] = (64, 64)
    """Widths of the hidden layers of the actor and of the critic."""
    log_std_init: float = 0.0
    """Initial log standard deviation of the Gaussian policy (Box actions)."""
    activation: str = "tanh"
    """Nonlinearity of the hidden layers: "tanh" (the papers') or "relu" (rl-baselines3-zoo's MuJoCo configs)."""
    orthogonal_init: bool = True
    """Orthogonal initial weights (hidden layers gain sqrt(2), policy output 0.01, value output 1); false: PyTorch's
    default initialisation (the zoo's `ortho_init: false`)."""
    clip_reward: float = 0.0
    """Learn from each reward clipped to [-clip_reward, clip_reward] (1 for Atari, as Mnih et al. 2015); 0 does not
    clip. Logged and evaluated returns are the env's own."""
    normalize_reward: bool = False
    """Learn from rewards divided by the running std of a discounted return (clipped to +-10; Engstrom et al. 2020,
    the zoo's `normalize: true`); the statistics are saved with the checkpoint (`rl.reward_scaling`). Logged and
    evaluated returns are the env's own."""
    normalize_observation: bool = False
    """Feed the networks Box observations normalised by their running mean and std (clipped to +-10); the
    statistics are saved with the network (`rl.networks.ObservationEncoder`)."""
    device: str = "cpu"
    """Torch device for the networks and batches."""

    def __post_init__(self) -> None:
        check_activation(self.activation)
        for name in ("num_envs", "n_steps", "batch_size", "n_epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)}")
        if not 0.0 <= self.gamma <= 1.0 or not 0.0 <= self.gae_lambda <= 1.0:
            raise ValueError(f"gamma and gae_lambda must be in [0, 1], not {self.gamma} and {self.gae_lambda}")
        if self.clip_range <= 0 or (self.clip_range_vf is not None and self.clip_range_vf <= 0):
            raise ValueError("clip_range and clip_range_vf must be positive")
        if self.target_kl is not None and self.target_kl <= 0:
            raise ValueError(f"target_kl must be positive or None, not {self.target_kl}")


@dataclass(frozen=True)
class MinibatchStats:
    policy_loss: float
    value_loss: float
    entropy: float
    approx_kl: float
    clip_fraction: float


def build_network(cfg: Config, observation_space: gym.Space, action_space: gym.Space, env_id: str) -> ActorCritic:
    return ActorCritic(observation_space, action_space, cfg.hidden_sizes, "ppo", env_id, cfg.log_std_init,
                       cfg.orthogonal_init, cfg.normalize_observation,
                       share_torso=True, activation=cfg.activation)  # fmt: skip


def minibatch_step(
    cfg: Config, network: ActorCritic, optimizer: torch.optim.Optimizer, samples: Samples, clip_range: float
) -> MinibatchStats | None:
    """One Adam step on the PPO loss of a minibatch; None (and no step) when its KL already passed the target."""
    distribution, values = network.distribution_and_value(samples.obs)  # values (B,)
    advantages = samples.advantages  # (B,)
    if cfg.normalize_advantage and len(advantages) > 1:  # the std of one sample is undefined
        advantages = normalize(advantages)
    surrogate = clipped_surrogate_loss(distribution.log_prob(samples.actions), samples.old_log_probs, advantages,
                                       clip_range)  # fmt: skip
    if cfg.target_kl is not None and surrogate.approx_kl.item() > 1.5 * cfg.target_kl:
        return None
    if cfg.clip_range_vf is None:
        critic_loss = value_loss(values, samples.returns)
    else:
        critic_loss = value_loss(values, samples.returns, samples.old_values, cfg.clip_range_vf)
    with torch.set_grad_enabled(cfg.ent_coef != 0):  # without the bonus, its gradient would only be scaled by 0
        entropy = entropy_bonus(distribution.entropy())
    loss = surrogate.loss + cfg.vf_coef * critic_loss - cfg.ent_coef * entropy
    optimizer.zero_grad()
    loss.backward()
    clip_grad_norm(network.parameters(), cfg.max_grad_norm)
    optimizer.step()
    return MinibatchStats(surrogate.loss.item(), critic_loss.item(), entropy.item(), surrogate.approx_kl.item(),
                          surrogate.clip_fraction.item())  # fmt: skip


def update(
    cfg: Config,
    network: ActorCritic,
    optimizer: torch.optim.Optimizer,
    batch: OnPolicyBatch,
    clip_range: float,
    rng: np.random.Generator,
) -> list[MinibatchStats]:
    """`n_epochs` passes of minibatch steps over the batch; stops early at the KL target."""
    stats = []
    for minibatch in minibatches(flatten(batch), cfg.batch_size, rng, epochs=cfg.n_epochs):
        step = minibatch_step(cfg, network, optimizer, minibatch, clip_range)
        if step is None:
            return stats
        stats.append(step)
    return stats


def log_stats(run: Run, stats: list[MinibatchStats]) -> None:
    if not stats:  # the first minibatch was already past the KL target
        return
    for tag, name in [("losses/policy_loss", "policy_loss"), ("losses/value_loss", "value_loss"),
                      ("charts/entropy", "entropy"), ("charts/approx_kl", "approx_kl"),
                      ("charts/clip_fraction", "clip_fraction")]:  # fmt: skip
        run.log(tag, np.mean([getattr(s, name) for s in stats]))


def train(cfg: Config, run: Run) -> np.ndarray:
    """Trains an actor and a critic by PPO on `run`'s env; returns the final deterministic-policy evaluation returns."""
    spec, device = run.spec, torch.device(cfg.device)
    action_space = run.env.action_space
    network = build_network(cfg, run.env.observation_space, action_space, spec.env_id).to(device)
    optimizer = adam(network.parameters(), cfg.learning_rate, eps=1e-5)
    run.track("network", network)
    run.track("optimizer", optimizer)
    rollout = run.vector_rollout(cfg.num_envs, cfg.clip_reward)
    reward_scaler = tracked_reward_scaler(run, cfg.normalize_reward, cfg.num_envs, cfg.gamma)

    act = run.evaluate_during_training(deterministic_policy(network, action_space, device))
    while run.keep_going():
        anneal = spec.total_steps is not None
        progress_left = linear_schedule(1.0, 0.0, spec.total_steps, rollout.global_step) if anneal else 1.0
        for group in optimizer.param_groups:
            group["lr"] = cfg.learning_rate * (progress_left if cfg.anneal_lr else 1.0)
        clip_range = cfg.clip_range * (progress_left if cfg.anneal_clip_range else 1.0)
        num_steps = steps_this_iteration(cfg.n_steps, cfg.num_envs, rollout.global_step, spec.total_steps)
        batch = collect(rollout, network, num_steps, cfg.gamma, cfg.gae_lambda, device, reward_scaler)
        log_stats(run, update(cfg, network, optimizer, batch, clip_range, run.rng))
        fold_observations(network, batch.obs)

    return run.evaluate(act)


def act_from_checkpoint(arrays: dict[str, np.ndarray], cfg: Config, env: gym.Env) -> Callable[[np.ndarray], Any]:
    """The deterministic policy (argmax, or the Gaussian mean clipped to the Box) a checkpoint's actor holds."""
    network = build_network(cfg, env.observation_space, env.action_space, str(env.spec.id if env.spec else env))
    return deterministic_policy(load_tracked(network, arrays, "network"), env.action_space)
