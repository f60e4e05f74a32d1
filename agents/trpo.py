"""Trust region policy optimisation (TRPO): Schulman et al. (2015), "Trust Region Policy Optimization", sections 5-6
and appendix C; the critic and advantages of Schulman et al. (2016), "High-Dimensional Continuous Control Using
Generalized Advantage Estimation".

N envs step together for T steps with a ~ pi_old(.|s) (`rl.onpolicy.collect`, GAE advantages A, normalised). Then

    maximise   L(theta) = mean(pi_theta(a|s) / pi_old(a|s) A)   subject to   mean KL(pi_old || pi_theta) <= max_kl

by one natural-gradient step (`rl.natural_gradient`): g = grad L at theta_old; x = F^-1 g by conjugate gradient on
Fisher-vector products (the Hessian of the mean KL at theta_old, plus cg_damping I); the full step
s = sqrt(2 max_kl / x^T F x) x (F damped here too); then theta_old + c^i s for i = 0, 1, ... until the surrogate
improves and the KL, measured after the step, is at most max_kl (no step if none does). The critic V(s) then
regresses on the GAE returns R = A + V_old(s) by Adam, `n_critic_updates` passes over the samples in minibatches of
`batch_size`.

Deviations from the papers:
1. As in sb3-contrib's TRPO: the critic is trained by Adam on minibatches (the GAE paper solves a trust-region
   problem for it), after the policy step; advantages are normalised; the line search shrinks the step by
   `line_search_coeff` (0.8) per try, at most `line_search_max_iter` tries.
2. The defaults are rl-baselines3-zoo's CartPole-v1 values (2 envs, n_steps 512, critic minibatch 512, 20 critic
   passes, cg_damping 1e-3, gae_lambda 0.98, gamma 0.99, critic learning rate 1e-3) over sb3-contrib's defaults
   (max_kl 0.01, 15 conjugate-gradient iterations).
3. Separate actor and critic MLPs (tanh, orthogonal init; `activation` and `orthogonal_init` change them); the
   actor's parameters are the only ones stepped.
4. Truncated episodes bootstrap from V(final observation); terminated ones do not. The last iteration is shortened
   so that the run stops within N - 1 steps of its step budget.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor

from rl.advantages import normalize
from rl.distributions import kl
from rl.natural_gradient import (
    LineSearchResult,
    backtracking_line_search,
    conjugate_gradient,
    fisher_vector_product,
    flat_grad,
)
from rl.networks import ActorCritic, adam, check_activation
from rl.onpolicy import (
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
from rl.pg_losses import surrogate_loss, value_loss
from rl.run import Run


@dataclass(frozen=True)
class Config:
    num_envs: int = 2
    """Environments stepped together (a Gymnasium vector env)."""
    n_steps: int = 512
    """Steps per env between updates (T); one update reads T * num_envs transitions."""
    gamma: float = 0.99
    """Discount factor."""
    gae_lambda: float = 0.98
    """GAE lambda."""
    max_kl: float = 0.01
    """Trust region: the largest mean KL(pi_old || pi) a policy step may reach."""
    cg_iters: int = 15
    """Conjugate-gradient iterations for the natural-gradient direction."""
    cg_damping: float = 1e-3
    """Added to the Fisher matrix's diagonal (F + cg_damping I) so that conjugate gradient stays stable."""
    line_search_coeff: float = 0.8
    """The line search tries the full step times 1, c, c^2, ... for this c."""
    line_search_max_iter: int = 10
    """Tries of the line search before it gives up and keeps the old policy."""
    normalize_advantage: bool = True
    """Normalise the advantages of each update to mean 0 and std 1."""
    critic_learning_rate: float = 1e-3
    """Adam step size of the critic."""
    n_critic_updates: int = 20
    """Passes over the collected transitions that train the critic per update."""
    batch_size: int = 512
    """Transitions per critic minibatch."""
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
        for name in ("num_envs", "n_steps", "cg_iters", "line_search_max_iter", "n_critic_updates", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)}")
        if not 0.0 <= self.gamma <= 1.0 or not 0.0 <= self.gae_lambda <= 1.0:
            raise ValueError(f"gamma and gae_lambda must be in [0, 1], not {self.gamma} and {self.gae_lambda}")
        if self.max_kl <= 0 or self.cg_damping < 0:
            raise ValueError("max_kl must be positive and cg_damping non-negative")
        if not 0.0 < self.line_search_coeff < 1.0:
            raise ValueError(f"line_search_coeff must be in (0, 1), not {self.line_search_coeff}")


def build_network(cfg: Config, observation_space: gym.Space, action_space: gym.Space, env_id: str) -> ActorCritic:
    return ActorCritic(observation_space, action_space, cfg.hidden_sizes, "trpo", env_id, cfg.log_std_init,
                       cfg.orthogonal_init, cfg.normalize_observation,
                       activation=cfg.activation)  # fmt: skip


def natural_gradient_step(
    cfg: Config, network: ActorCritic, samples: Samples, advantages: Tensor
) -> tuple[float, LineSearchResult]:
    """One TRPO policy step on the actor's parameters; returns (surrogate loss before it, the line search's result)."""
    params = network.actor_parameters()
    with torch.no_grad():
        old_distribution = network.distribution(samples.obs)  # pi_old, a constant

    def loss_fn() -> Tensor:
        log_probs = network.distribution(samples.obs).log_prob(samples.actions)
        return surrogate_loss(log_probs, samples.old_log_probs, advantages)

    def kl_fn() -> Tensor:
        return kl(old_distribution, network.distribution(samples.obs)).mean()

    loss = loss_fn()
    gradient = flat_grad(loss, params)  # of the loss, -grad L

    def fvp(vector: Tensor) -> Tensor:
        return fisher_vector_product(kl_fn, params, vector, cfg.cg_damping)

    direction = conjugate_gradient(fvp, -gradient, cfg.cg_iters)  # x = F^-1 grad L
    full_step = torch.sqrt(2 * cfg.max_kl / (direction @ fvp(direction)).clamp(min=1e-12)) * direction
    result = backtracking_line_search(params, full_step, loss_fn, kl_fn, cfg.max_kl, cfg.line_search_max_iter,
                                      cfg.line_search_coeff)  # fmt: skip
    return loss.item(), result


def critic_updates(
    cfg: Config, network: ActorCritic, optimizer: torch.optim.Optimizer, samples: Samples, rng: np.random.Generator
) -> float:
    """`n_critic_updates` passes of Adam steps on 0.5 mean((V(s) - R)^2); returns the mean loss."""
    losses = []
    for minibatch in minibatches(samples, cfg.batch_size, rng, epochs=cfg.n_critic_updates):
        loss = value_loss(network.value(minibatch.obs), minibatch.returns)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())
    return torch.stack(losses).mean().item()  # one host sync per update, not one per minibatch


def train(cfg: Config, run: Run) -> np.ndarray:
    """Trains a policy by TRPO and a critic by Adam on `run`'s env; returns the final deterministic evaluation."""
    spec, device = run.spec, torch.device(cfg.device)
    action_space = run.env.action_space
    network = build_network(cfg, run.env.observation_space, action_space, spec.env_id).to(device)
    critic_optimizer = adam(network.critic_parameters(), cfg.critic_learning_rate, eps=1e-5)
    run.track("network", network)
    run.track("critic_optimizer", critic_optimizer)
    rollout = run.vector_rollout(cfg.num_envs, cfg.clip_reward)
    reward_scaler = tracked_reward_scaler(run, cfg.normalize_reward, cfg.num_envs, cfg.gamma)

    act = run.evaluate_during_training(deterministic_policy(network, action_space, device))
    while run.keep_going():
        num_steps = steps_this_iteration(cfg.n_steps, cfg.num_envs, rollout.global_step, spec.total_steps)
        samples = flatten(collect(rollout, network, num_steps, cfg.gamma, cfg.gae_lambda, device, reward_scaler))
        advantages = samples.advantages  # (B,)
        if cfg.normalize_advantage and len(advantages) > 1:  # the std of one sample is undefined
            advantages = normalize(advantages)
        policy_loss, step = natural_gradient_step(cfg, network, samples, advantages)
        with torch.no_grad():
            entropy = network.distribution(samples.obs).entropy().mean().item()
        run.log("losses/policy_loss", policy_loss)
        run.log("losses/value_loss", critic_updates(cfg, network, critic_optimizer, samples, run.rng))
        run.log("charts/entropy", entropy)
        run.log("charts/approx_kl", step.kl)
        run.log("charts/step_fraction", step.step_fraction)
        fold_observations(network, samples.obs)

    return run.evaluate(act)


def act_from_checkpoint(arrays: dict[str, np.ndarray], cfg: Config, env: gym.Env) -> Callable[[np.ndarray], Any]:
    """The deterministic policy (argmax, or the Gaussian mean clipped to the Box) a checkpoint's actor holds."""
    network = build_network(cfg, env.observation_space, env.action_space, str(env.spec.id if env.spec else env))
    return deterministic_policy(load_tracked(network, arrays, "network"), env.action_space)
