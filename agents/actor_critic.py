"""Actor-critic methods of Zhao, *Mathematical Foundations of RL*, chapter 10: QAC (section 10.1, Algorithm 10.1)
and off-policy actor-critic (section 10.3, Algorithm 10.3; Degris, White and Sutton 2012, "Off-Policy
Actor-Critic").

QAC, the simplest actor-critic. The actor pi(a|s; theta) acts; the critic q(s, a; w) learns q_pi by Sarsa:

    a_{t+1} ~ pi(.|s_{t+1}; theta_t)                                  (the action the env then gets, as in Sarsa)
    critic  w_{t+1} = w_t + alpha_w [r_{t+1} + gamma q(s_{t+1}, a_{t+1}; w_t) - q(s_t, a_t; w_t)] grad q(s_t, a_t; w_t)
    actor   theta_{t+1} = theta_t + alpha_theta q(s_t, a_t; w_{t+1}) grad_theta log pi(a_t|s_t; theta_t)

(the critic steps first and the actor is weighted by the updated critic's value, as Algorithm 10.1 orders them).

Off-policy actor-critic. A fixed behaviour policy beta generates the data; the critic learns v_pi(s; w) by
importance-weighted TD and the actor follows the importance-weighted TD error:

    rho_t   = min(pi(a_t|s_t; theta) / beta(a_t|s_t), rho_clip)      (no truncation when rho_clip is unset)
    delta_t = r_{t+1} + gamma v(s_{t+1}; w) - v(s_t; w)
    critic  w     <- w + alpha_w rho_t delta_t grad_w v(s_t; w)
    actor   theta <- theta + alpha_theta rho_t delta_t grad_theta log pi(a_t|s_t; theta)

The behaviour is beta = behaviour_epsilon * uniform + (1 - behaviour_epsilon) * pi(.|s; theta_t), taken as fixed
(not differentiated) at the step it acts: behaviour_epsilon = 1 (the default) is the book's uniform policy,
behaviour_epsilon = 0 makes every rho exactly 1 and the update the on-policy actor-critic with a v critic
(book 10.2, advantage actor-critic with one-step TD error). Discrete actions only: the uniform policy needs finitely
many. QAC takes Discrete (critic with one output per action) and Box actions (the action enters the critic's input).

Both run on a vector env of `num_envs` copies and update after every step, on the batch of N transitions that step
produced (the book updates on one transition at a time; `num_envs=1` is that). Every bootstrap follows the rule of
`rl.advantages`: no bootstrap on termination, the true final observation's value on truncation.

Deviations from the book:
1. N transitions per update, averaged (above); Adam instead of plain stochastic gradient steps; MLPs with tanh
   units; for Box actions a diagonal Gaussian with a learned state-independent log-std whose samples are clipped to
   the Box before the env sees them (the log-probability, and QAC's critic input, is the unclipped sample).
2. QAC: where an env's episode ends, a_{t+1} for the critic's target is drawn at the final observation (it matters
   only on truncation) and the env's next action is drawn afresh at the next episode's first observation.
3. Truncating rho at `rho_clip` (not in Degris et al. or the book's Algorithm 10.3) bounds the variance at the
   price of a bias: actions that pi favours far more than beta does count for less. min(rho, c) is a constant
   weight of grad log pi, as rho itself is in the book. Unset by default: a uniform beta over K actions keeps
   rho <= K anyway.
4. An optional entropy bonus (`ent_coef`); scalars are logged as means over every LOG_INTERVAL environment steps.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor, nn
from torch.distributions import Categorical

from agents.reinforce import PolicyNetwork, ValueNetwork, env_actions, greedy_policy, policy_from_checkpoint
from rl.advantages import td_errors
from rl.networks import ObservationEncoder, adam, mlp
from rl.pg_losses import entropy_bonus, importance_weights, policy_gradient_loss, value_loss
from rl.rollout import Transition
from rl.run import Run
from rl.spaces import discrete_size, flat_size

LOG_INTERVAL = 1_000
"""Environment steps over which the per-step scalars are averaged before they are logged."""
BEHAVIOUR_HINT = "the uniform behaviour policy needs finitely many actions; pick an env with Discrete actions"


@dataclass(frozen=True)
class QACConfig:
    learning_rate: float = 1e-4
    """Adam step size of the actor (alpha_theta)."""
    critic_learning_rate: float = 1e-3
    """Adam step size of the critic q(s, a; w) (alpha_w)."""
    gamma: float = 0.99
    """Discount factor."""
    num_envs: int = 8
    """Environments stepped together; each update averages their N transitions."""
    ent_coef: float = 0.0
    """Weight of the entropy bonus in the actor's loss."""
    hidden_sizes: tuple[int, ...] = (64, 64)
    """Widths of the hidden layers of the actor and of the critic."""
    log_std_init: float = 0.0
    """Initial log standard deviation of the Gaussian policy (Box actions only)."""
    device: str = "cpu"
    """Torch device for the networks."""

    def __post_init__(self) -> None:
        check_common(self)


@dataclass(frozen=True)
class OffPolicyACConfig:
    learning_rate: float = 3e-4
    """Adam step size of the actor (alpha_theta)."""
    critic_learning_rate: float = 1e-3
    """Adam step size of the critic v(s; w) (alpha_w)."""
    gamma: float = 0.99
    """Discount factor."""
    num_envs: int = 8
    """Environments stepped together; each update averages their N transitions."""
    behaviour_epsilon: float = 1.0
    """Behaviour beta = epsilon * uniform + (1 - epsilon) * pi; 1.0 is the uniform policy, 0.0 is on-policy."""
    rho_clip: float | None = None
    """Truncate the importance weight pi / beta at this value; unset (null) keeps it whole."""
    ent_coef: float = 0.0
    """Weight of the entropy bonus in the actor's loss."""
    hidden_sizes: tuple[int, ...] = (64, 64)
    """Widths of the hidden layers of the actor and of the critic."""
    device: str = "cpu"
    """Torch device for the networks."""

    def __post_init__(self) -> None:
        check_common(self)
        if not 0.0 <= self.behaviour_epsilon <= 1.0:
            raise ValueError(f"behaviour_epsilon must be in [0, 1], not {self.behaviour_epsilon}")
        if self.rho_clip is not None and self.rho_clip <= 0:
            raise ValueError(f"rho_clip must be positive (or null for no truncation), not {self.rho_clip}")


def check_common(cfg: QACConfig | OffPolicyACConfig) -> None:
    if not 0.0 <= cfg.gamma <= 1.0:
        raise ValueError(f"gamma must be in [0, 1], not {cfg.gamma}")
    if cfg.num_envs < 1:
        raise ValueError(f"num_envs must be at least 1, not {cfg.num_envs}")
    if cfg.learning_rate <= 0 or cfg.critic_learning_rate <= 0:
        raise ValueError("learning_rate and critic_learning_rate must be positive")


class DiscreteQNetwork(nn.Module):
    """q(s, a; w) for K actions: one output per action, the taken one picked; (B,)."""

    def __init__(self, observation_space: gym.Space, num_actions: int, hidden_sizes: tuple[int, ...]) -> None:
        super().__init__()
        self.encoder = ObservationEncoder(observation_space)
        self.body = mlp(self.encoder.out_features, hidden_sizes, num_actions, nn.Tanh)

    def forward(self, obs: Tensor, actions: Tensor) -> Tensor:
        return self.body(self.encoder(obs)).gather(1, actions.long().reshape(-1, 1)).squeeze(1)


class BoxQNetwork(nn.Module):
    """q(s, a; w) for Box actions: the (flattened) action joins the observation at the input; (B,)."""

    def __init__(self, observation_space: gym.Space, action_dim: int, hidden_sizes: tuple[int, ...]) -> None:
        super().__init__()
        self.encoder = ObservationEncoder(observation_space)
        self.body = mlp(self.encoder.out_features + action_dim, hidden_sizes, 1, nn.Tanh)

    def forward(self, obs: Tensor, actions: Tensor) -> Tensor:
        inputs = torch.cat([self.encoder(obs), actions.float().reshape(len(actions), -1)], dim=1)
        return self.body(inputs).squeeze(1)


def q_network(
    observation_space: gym.Space, action_space: gym.Space, hidden_sizes: tuple[int, ...], agent: str, env_id: str
) -> nn.Module:
    """The critic for a Discrete or Box action space (policy_head has already refused spaces that fit neither)."""
    if isinstance(action_space, gym.spaces.Discrete):
        num_actions = discrete_size(action_space, "action", agent, env_id)
        return DiscreteQNetwork(observation_space, num_actions, hidden_sizes)
    return BoxQNetwork(observation_space, int(np.prod(action_space.shape)), hidden_sizes)


def sarsa_targets(rewards: Tensor, next_q_values: Tensor, terminated: Tensor, gamma: float) -> Tensor:
    """(N,) r + gamma (1 - terminated) q(s', a'; w), a' ~ pi(.|s'); a truncated step bootstraps like any other."""
    return rewards + gamma * (1.0 - terminated) * next_q_values


def qac_actor_loss(log_probs: Tensor, q_values: Tensor) -> Tensor:
    """-mean q(s, a; w) log pi(a|s): its gradient is minus the book's actor step (q is a constant weight)."""
    return policy_gradient_loss(log_probs, q_values)


def behaviour_probs(target_probs: Tensor, behaviour_epsilon: float) -> Tensor:
    """(N, K) beta = epsilon / K + (1 - epsilon) pi, with pi as a constant."""
    num_actions = target_probs.shape[-1]
    return behaviour_epsilon / num_actions + (1.0 - behaviour_epsilon) * target_probs.detach()


def offpolicy_actor_loss(log_probs: Tensor, rho: Tensor, deltas: Tensor) -> Tensor:
    """-mean rho delta log pi(a|s): its gradient is minus the book's actor step (rho, delta constant weights)."""
    return policy_gradient_loss(log_probs, rho.detach() * deltas.detach())


def offpolicy_critic_loss(values: Tensor, deltas: Tensor, rho: Tensor) -> Tensor:
    """0.5 mean rho (v(s) - (v(s) + delta))^2 with the target fixed: its gradient is -mean rho delta grad v."""
    targets = (values + deltas).detach()
    return 0.5 * (rho.detach() * (values - targets) ** 2).mean()


def step_tensors(t: Transition, device: torch.device) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """obs (N, ...), rewards (N,), next_obs (N, ...), terminated (N,) of a vector env's step as tensors."""
    as_float = {"dtype": torch.float32, "device": device}
    return (torch.as_tensor(t.obs, device=device), torch.as_tensor(t.rewards, **as_float),
            torch.as_tensor(t.next_obs, device=device), torch.as_tensor(t.terminated, **as_float))  # fmt: skip


class ScalarMeans:
    """Collects per-update scalars and logs their means once every LOG_INTERVAL environment steps."""

    def __init__(self, run: Run) -> None:
        self.run, self.values = run, defaultdict(list)
        self.next_log = run.rollout.global_step + LOG_INTERVAL

    def add(self, stats: dict[str, float]) -> None:
        for tag, value in stats.items():
            self.values[tag].append(value)
        if self.run.rollout.global_step >= self.next_log:
            for tag, values in self.values.items():
                self.run.log(tag, float(np.mean(values)))
            self.values.clear()
            self.next_log = self.run.rollout.global_step + LOG_INTERVAL


def optimize(loss: Tensor, optimizer: torch.optim.Optimizer) -> None:
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def train_qac(cfg: QACConfig, run: Run) -> np.ndarray:
    """QAC (book Algorithm 10.1) on `run`'s env; returns the final greedy evaluation returns."""
    spec, device = run.spec, torch.device(cfg.device)
    observation_space, action_space = run.env.observation_space, run.env.action_space  # before the vector env
    flat_size(observation_space, "observation", spec.agent, spec.env_id)
    actor = PolicyNetwork(observation_space, action_space, cfg.hidden_sizes, spec.agent, spec.env_id,
                          cfg.log_std_init).to(device)  # fmt: skip
    critic = q_network(observation_space, action_space, cfg.hidden_sizes, spec.agent, spec.env_id).to(device)
    actor_optimizer = adam(actor.parameters(), cfg.learning_rate)
    critic_optimizer = adam(critic.parameters(), cfg.critic_learning_rate)
    for name, obj in [("policy", actor), ("critic", critic), ("actor_optimizer", actor_optimizer),
                      ("critic_optimizer", critic_optimizer)]:  # fmt: skip
        run.track(name, obj)
    rollout, means = run.vector_rollout(cfg.num_envs), ScalarMeans(run)

    with torch.no_grad():
        actions = actor(torch.as_tensor(rollout.obs, device=device)).sample()  # (N, ...)
    act = run.evaluate_during_training(greedy_policy(actor, action_space, device))
    while run.keep_going():
        t = rollout.step(env_actions(actions, action_space))
        next_actions, stats = qac_update(cfg, t, actions, actor, critic, actor_optimizer, critic_optimizer, device)
        means.add(stats)
        done = np.logical_or(t.terminated, t.truncated)
        if done.any():  # deviation 2: a new episode's first action comes from its own first observation
            with torch.no_grad():
                fresh = actor(torch.as_tensor(rollout.obs, device=device)).sample()
            next_actions[torch.as_tensor(done, device=device)] = fresh[torch.as_tensor(done, device=device)]
        actions = next_actions
    return run.evaluate(act)


def qac_update(
    cfg: QACConfig,
    t: Transition,
    actions: Tensor,
    actor: PolicyNetwork,
    critic: nn.Module,
    actor_optimizer: torch.optim.Optimizer,
    critic_optimizer: torch.optim.Optimizer,
    device: torch.device,
) -> tuple[Tensor, dict[str, float]]:
    """One actor and one critic step on a step's N transitions; returns a_{t+1} ~ pi(.|s_{t+1}; theta_t) (N, ...),
    drawn before the update as in the book, and the scalars to log."""
    obs, rewards, next_obs, terminated = step_tensors(t, device)
    with torch.no_grad():
        next_actions = actor(next_obs).sample()
        targets = sarsa_targets(rewards, critic(next_obs, next_actions), terminated, cfg.gamma)
    q_values = critic(obs, actions)
    critic_loss = value_loss(q_values, targets)
    optimize(critic_loss, critic_optimizer)  # w_t -> w_{t+1}
    with torch.no_grad():
        updated_q_values = critic(obs, actions)  # q(s_t, a_t; w_{t+1}) weights the actor's step (Algorithm 10.1)
    dist = actor(obs)
    entropy = entropy_bonus(dist.entropy())
    actor_loss = qac_actor_loss(dist.log_prob(actions), updated_q_values)
    optimize(actor_loss - cfg.ent_coef * entropy, actor_optimizer)
    return next_actions, {"losses/policy_loss": actor_loss.item(), "losses/value_loss": critic_loss.item(),
                          "charts/entropy": entropy.item(), "charts/q_values": q_values.mean().item()}  # fmt: skip


def train_offpolicy_ac(cfg: OffPolicyACConfig, run: Run) -> np.ndarray:
    """Off-policy actor-critic (book Algorithm 10.3) from beta's data; returns the final greedy returns of pi."""
    spec, device = run.spec, torch.device(cfg.device)
    observation_space, action_space = run.env.observation_space, run.env.action_space  # before the vector env
    flat_size(observation_space, "observation", spec.agent, spec.env_id)
    discrete_size(action_space, "action", spec.agent, spec.env_id, BEHAVIOUR_HINT)
    actor = PolicyNetwork(observation_space, action_space, cfg.hidden_sizes, spec.agent, spec.env_id).to(device)
    critic = ValueNetwork(observation_space, cfg.hidden_sizes).to(device)
    actor_optimizer = adam(actor.parameters(), cfg.learning_rate)
    critic_optimizer = adam(critic.parameters(), cfg.critic_learning_rate)
    for name, obj in [("policy", actor), ("critic", critic), ("actor_optimizer", actor_optimizer),
                      ("critic_optimizer", critic_optimizer)]:  # fmt: skip
        run.track(name, obj)
    rollout, means = run.vector_rollout(cfg.num_envs), ScalarMeans(run)

    act = run.evaluate_during_training(greedy_policy(actor, action_space, device))
    while run.keep_going():
        with torch.no_grad():
            beta = Categorical(probs=behaviour_probs(actor(torch.as_tensor(rollout.obs, device=device)).probs,
                                                     cfg.behaviour_epsilon))  # fmt: skip
            actions = beta.sample()  # (N,)
            behaviour_log_probs = beta.log_prob(actions)
        t = rollout.step(actions.cpu().numpy())
        stats = offpolicy_update(cfg, t, actions, behaviour_log_probs, actor, critic, actor_optimizer,
                                 critic_optimizer, device)  # fmt: skip
        means.add(stats)
    return run.evaluate(act)


def offpolicy_update(
    cfg: OffPolicyACConfig,
    t: Transition,
    actions: Tensor,
    behaviour_log_probs: Tensor,
    actor: PolicyNetwork,
    critic: ValueNetwork,
    actor_optimizer: torch.optim.Optimizer,
    critic_optimizer: torch.optim.Optimizer,
    device: torch.device,
) -> dict[str, float]:
    """One actor and one critic step on a step's N transitions; returns the scalars to log."""
    obs, rewards, next_obs, terminated = step_tensors(t, device)
    values = critic(obs)  # (N,)
    with torch.no_grad():
        deltas = td_errors(rewards, values.detach(), critic(next_obs), terminated, cfg.gamma)
    dist = actor(obs)
    log_probs = dist.log_prob(actions)
    rho = importance_weights(log_probs.detach(), behaviour_log_probs, clip=cfg.rho_clip)
    entropy = entropy_bonus(dist.entropy())
    actor_loss = offpolicy_actor_loss(log_probs, rho, deltas)
    critic_loss = offpolicy_critic_loss(values, deltas, rho)
    optimize(actor_loss - cfg.ent_coef * entropy, actor_optimizer)
    optimize(critic_loss, critic_optimizer)
    return {"losses/policy_loss": actor_loss.item(), "losses/value_loss": critic_loss.item(),
            "charts/entropy": entropy.item(), "charts/importance_weight": rho.mean().item()}  # fmt: skip


def qac_act_from_checkpoint(arrays: dict[str, np.ndarray], cfg: QACConfig, env: gym.Env) -> Callable[[object], object]:
    """The greedy (mode) policy of the actor a QAC checkpoint stores."""
    return policy_from_checkpoint(arrays, env, cfg.hidden_sizes, cfg.log_std_init, "qac")


def offpolicy_act_from_checkpoint(
    arrays: dict[str, np.ndarray], cfg: OffPolicyACConfig, env: gym.Env
) -> Callable[[object], object]:
    """The greedy (argmax) target policy of an off-policy actor-critic checkpoint."""
    return policy_from_checkpoint(arrays, env, cfg.hidden_sizes, 0.0, "offpolicy_ac")
