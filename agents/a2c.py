"""Advantage actor-critic (A2C), the synchronous variant of A3C: Mnih et al. (2016), "Asynchronous Methods for Deep
Reinforcement Learning", algorithm S3; Zhao, *Mathematical Foundations of RL*, section 10.2 (advantage actor-critic).

N envs step together for T steps with actions a ~ pi(.|s; theta) (`rl.onpolicy.collect`); then one gradient step on

    A[t]   = GAE(gamma, gae_lambda) advantages; gae_lambda = 1 gives A3C's n-step advantage
             R[t] - V(s[t]) with R[t] = r[t] + gamma r[t+1] + ... + gamma^k V(s[t+k]), k = steps to the rollout's end
    loss   = -mean(log pi(a|s) A) + vf_coef * 0.5 mean((V(s) - R)^2) - ent_coef * mean(H(pi(.|s)))

over all T * N samples, with the gradient norm clipped at `max_grad_norm`, by Adam (or RMSprop).

Deviations from the paper:
1. Synchronous: one learner and N envs stepped in lockstep, not asynchronous actor-learner threads (the A2C of
   OpenAI Baselines and Stable-Baselines3). Advantages are GAE's; the paper's n-step advantage is gae_lambda = 1.
2. Separate actor and critic MLPs (tanh, orthogonal init; `activation` and `orthogonal_init` change them) instead
   of one network with two heads; one optimiser and one loss train both, as in Stable-Baselines3.
3. The defaults start from rl-baselines3-zoo's CartPole-v1 values (8 envs, ent_coef 0, Stable-Baselines3's A2C
   defaults otherwise: gamma 0.99, gae_lambda 1, max_grad_norm 0.5) with three changes that make the 100,000-step
   budget enough: Adam with the learning rate annealed linearly to 0 instead of RMSprop (alpha 0.99, eps 1e-5) at a
   constant rate, a rate of 1e-3 instead of 7e-4, and n_steps 16 instead of 5 (fewer, less noisy updates). The zoo
   budgets 500,000 steps; within 100,000 its setting (optimizer="rmsprop", anneal_lr=false, n_steps=5,
   learning_rate=7e-4) reached a greedy return of 475 on 2 of 5 seeds (often collapsing late), these defaults on
   10 of 15 (seeds 0-14; benchmarks/onpolicy_thresholds.py). The value loss here carries a factor 0.5, so vf_coef
   1.0 is Stable-Baselines3's vf_coef 0.5 on the plain squared error.
4. Truncated episodes bootstrap from V(final observation); terminated ones do not.
5. With `anneal_lr` the learning rate falls linearly to 0 over the step budget (set from the step at the start of
   each iteration); the last iteration is shortened so that the run stops within N - 1 steps of the budget.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from rl.advantages import normalize
from rl.networks import ActorCritic, adam, check_activation, clip_grad_norm
from rl.onpolicy import (
    OnPolicyBatch,
    collect,
    deterministic_policy,
    flatten,
    fold_observations,
    load_tracked,
    steps_this_iteration,
    tracked_reward_scaler,
)
from rl.pg_losses import entropy_bonus, policy_gradient_loss, value_loss
from rl.run import Run
from rl.schedules import linear_schedule


@dataclass(frozen=True)
class Config:
    num_envs: int = 8
    """Environments stepped together (a Gymnasium vector env)."""
    n_steps: int = 16
    """Steps per env between updates (T); one update reads T * num_envs transitions."""
    learning_rate: float = 1e-3
    """Optimiser step size."""
    anneal_lr: bool = True
    """Decay the learning rate linearly to 0 over the step budget."""
    optimizer: Literal["adam", "rmsprop"] = "adam"
    """Adam, or RMSprop (alpha 0.99) as in the paper and Stable-Baselines3."""
    optimizer_eps: float = 1e-5
    """Epsilon of RMSprop or Adam."""
    gamma: float = 0.99
    """Discount factor."""
    gae_lambda: float = 1.0
    """GAE lambda; 1.0 gives the paper's n-step returns."""
    ent_coef: float = 0.0
    """Weight of the entropy bonus."""
    vf_coef: float = 1.0
    """Weight of the value loss 0.5 mean((V - R)^2)."""
    max_grad_norm: float = 0.5
    """Clip the global gradient norm of both networks at this value."""
    normalize_advantage: bool = False
    """Normalise the advantages of each update to mean 0 and std 1."""
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
        for name in ("num_envs", "n_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)}")
        if not 0.0 <= self.gamma <= 1.0 or not 0.0 <= self.gae_lambda <= 1.0:
            raise ValueError(f"gamma and gae_lambda must be in [0, 1], not {self.gamma} and {self.gae_lambda}")
        if self.learning_rate <= 0 or self.max_grad_norm <= 0:
            raise ValueError("learning_rate and max_grad_norm must be positive")


@dataclass(frozen=True)
class UpdateStats:
    policy_loss: float
    value_loss: float
    entropy: float


def build_network(cfg: Config, observation_space: gym.Space, action_space: gym.Space, env_id: str) -> ActorCritic:
    return ActorCritic(observation_space, action_space, cfg.hidden_sizes, "a2c", env_id, cfg.log_std_init,
                       cfg.orthogonal_init, cfg.normalize_observation,
                       share_torso=True, activation=cfg.activation)  # fmt: skip


def build_optimizer(cfg: Config, network: nn.Module) -> torch.optim.Optimizer:
    if cfg.optimizer == "rmsprop":
        # foreach: one multi-tensor kernel per step on the CPU too (torch picks it by default on GPUs only).
        return torch.optim.RMSprop(network.parameters(), lr=cfg.learning_rate, alpha=0.99, eps=cfg.optimizer_eps,
                                   foreach=True)  # fmt: skip
    return adam(network.parameters(), cfg.learning_rate, cfg.optimizer_eps)


def update(cfg: Config, network: ActorCritic, optimizer: torch.optim.Optimizer, batch: OnPolicyBatch) -> UpdateStats:
    """One gradient step on the A2C loss over all T * N samples of the batch."""
    samples = flatten(batch)
    distribution, values = network.distribution_and_value(samples.obs)
    advantages = samples.advantages  # (B,)
    if cfg.normalize_advantage and len(advantages) > 1:  # the std of one sample is undefined
        advantages = normalize(advantages)
    policy_loss = policy_gradient_loss(distribution.log_prob(samples.actions), advantages)
    critic_loss = value_loss(values, samples.returns)
    with torch.set_grad_enabled(cfg.ent_coef != 0):  # without the bonus, its gradient would only be scaled by 0
        entropy = entropy_bonus(distribution.entropy())
    loss = policy_loss + cfg.vf_coef * critic_loss - cfg.ent_coef * entropy
    optimizer.zero_grad()
    loss.backward()
    clip_grad_norm(network.parameters(), cfg.max_grad_norm)
    optimizer.step()
    return UpdateStats(policy_loss.item(), critic_loss.item(), entropy.item())


def train(cfg: Config, run: Run) -> np.ndarray:
    """Trains an actor and a critic on `run`'s env; returns the final deterministic-policy evaluation returns."""
    spec, device = run.spec, torch.device(cfg.device)
    action_space = run.env.action_space
    network = build_network(cfg, run.env.observation_space, action_space, spec.env_id).to(device)
    optimizer = build_optimizer(cfg, network)
    run.track("network", network)
    run.track("optimizer", optimizer)
    rollout = run.vector_rollout(cfg.num_envs, cfg.clip_reward)
    reward_scaler = tracked_reward_scaler(run, cfg.normalize_reward, cfg.num_envs, cfg.gamma)

    act = run.evaluate_during_training(deterministic_policy(network, action_space, device))
    while run.keep_going():
        if cfg.anneal_lr and spec.total_steps is not None:
            lr = linear_schedule(cfg.learning_rate, 0.0, spec.total_steps, rollout.global_step)
            for group in optimizer.param_groups:
                group["lr"] = lr
        num_steps = steps_this_iteration(cfg.n_steps, cfg.num_envs, rollout.global_step, spec.total_steps)
        batch = collect(rollout, network, num_steps, cfg.gamma, cfg.gae_lambda, device, reward_scaler)
        stats = update(cfg, network, optimizer, batch)
        fold_observations(network, batch.obs)
        run.log("losses/policy_loss", stats.policy_loss)
        run.log("losses/value_loss", stats.value_loss)
        run.log("charts/entropy", stats.entropy)

    return run.evaluate(act)


def act_from_checkpoint(arrays: dict[str, np.ndarray], cfg: Config, env: gym.Env) -> Callable[[np.ndarray], Any]:
    """The deterministic policy (argmax, or the Gaussian mean clipped to the Box) a checkpoint's actor holds."""
    network = build_network(cfg, env.observation_space, env.action_space, str(env.spec.id if env.spec else env))
    return deterministic_policy(load_tracked(network, arrays, "network"), env.action_space)
