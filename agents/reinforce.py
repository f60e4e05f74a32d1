"""REINFORCE: Monte Carlo policy gradient. Zhao, *Mathematical Foundations of RL*, section 9.4 (Algorithm 9.1);
Sutton & Barto, sections 13.3 (REINFORCE) and 13.4 (REINFORCE with baseline); Williams (1992).

The policy pi(a|s; theta) runs whole episodes; afterwards every step t of every episode in the batch moves theta
along its Monte Carlo estimate of the policy gradient,

    G_t   = r_{t+1} + gamma r_{t+2} + ... + gamma^{T-t-1} r_T          (0 after termination)
    theta <- theta + alpha_theta (1 / E) sum_episodes sum_t  gamma^t? (G_t - b(s_t)) grad log pi(a_t|s_t; theta)
    w     <- w - alpha_w grad_w (1 / 2) mean_t (v(s_t; w) - G_t)^2          (the learned baseline b = v, S&B 13.4)

written as the loss -(1 / E) sum_t weight_t log pi(a_t|s_t) over the E episodes of a batch.

The estimator. The book's Algorithm 9.1 moves theta by grad log pi(a_t|s_t) q_t(s_t, a_t) with q_t = G_t, no
gamma^t; S&B 13.3 multiplies step t by gamma^t, which makes it the unbiased gradient of the discounted return
from the start state. Most libraries drop gamma^t, as the book does: the gradient of the discounted objective
weighs late steps so little that a long episode's end learns almost nothing. `discount_score=false` (the default)
is the book's update, `discount_score=true` is S&B's.

Deviations from the book:
1. Several episodes per update (`batch_episodes`) and their gradients averaged, where the book and S&B update
   after each episode (and per step t within it, one theta after another); one episode is `batch_episodes=1`, but
   the gradient of all T steps is taken at the theta that collected them (the usual implementation).
2. A truncated episode (a time limit, not a terminal state) is not over: with the baseline its return bootstraps
   from v(final observation); without one there is nothing to bootstrap from and the return stops there, as if the
   episode had terminated (biased low for the steps just before the limit, the choice of most implementations).
3. Adam instead of plain stochastic gradient ascent, an MLP with tanh units, and a diagonal Gaussian with a
   learned state-independent log-std for Box actions (sampled actions are clipped to the Box before the env sees
   them, the log-probability is that of the unclipped sample).
4. Options not in the book: standardising the weights G_t - b(s_t) over the batch (`normalize_advantages`; without a
   baseline this is the return normalisation of many REINFORCE examples) and an entropy bonus (`ent_coef`).
5. The learned baseline takes `value_epochs` full-batch gradient steps on the batch's returns after each update.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from rl.advantages import discounted_returns, normalize
from rl.distributions import policy_head
from rl.networks import ObservationEncoder, adam, mlp
from rl.pg_losses import entropy_bonus, policy_gradient_loss, value_loss
from rl.rollout import Transition
from rl.run import Run
from rl.spaces import flat_size


@dataclass(frozen=True)
class Config:
    learning_rate: float = 3e-3
    """Adam step size of the policy (alpha_theta)."""
    value_learning_rate: float = 1e-2
    """Adam step size of the baseline v(s; w) (alpha_w)."""
    gamma: float = 0.99
    """Discount factor."""
    batch_episodes: int = 4
    """Whole episodes collected per policy update."""
    baseline: bool = True
    """Subtract a learned state value v(s_t; w) from G_t (REINFORCE with baseline, S&B 13.4)."""
    value_epochs: int = 5
    """Full-batch gradient steps of the baseline per update."""
    discount_score: bool = False
    """Weigh step t by gamma^t (S&B 13.3, the unbiased gradient of the discounted return); the book drops it."""
    normalize_advantages: bool = True
    """Standardise the weights G_t - b(s_t) over the batch to mean 0 and standard deviation 1."""
    ent_coef: float = 0.0
    """Weight of the entropy bonus in the policy loss."""
    hidden_sizes: tuple[int, ...] = (64, 64)
    """Widths of the hidden layers of the policy and of the baseline."""
    log_std_init: float = 0.0
    """Initial log standard deviation of the Gaussian policy (Box actions only)."""
    device: str = "cpu"
    """Torch device for the networks."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], not {self.gamma}")
        for name in ("batch_episodes", "value_epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)}")
        if self.learning_rate <= 0 or self.value_learning_rate <= 0:
            raise ValueError("learning_rate and value_learning_rate must be positive")


def hidden_layers(in_features: int, hidden_sizes: tuple[int, ...]) -> nn.Module:
    """(B, in_features) -> (B, hidden_sizes[-1]) through tanh layers; the identity when there are none."""
    if not hidden_sizes:
        return nn.Identity()
    return nn.Sequential(mlp(in_features, hidden_sizes[:-1], hidden_sizes[-1], nn.Tanh), nn.Tanh())


class PolicyNetwork(nn.Module):
    """pi(.|s; theta): observation in, a Categorical (Discrete actions) or diagonal Gaussian (Box actions) out."""

    def __init__(
        self,
        observation_space: gym.Space,
        action_space: gym.Space,
        hidden_sizes: tuple[int, ...],
        agent: str,
        env_id: str,
        log_std_init: float = 0.0,
    ) -> None:
        super().__init__()
        self.encoder = ObservationEncoder(observation_space)
        self.body = hidden_layers(self.encoder.out_features, hidden_sizes)
        features = hidden_sizes[-1] if hidden_sizes else self.encoder.out_features
        self.head = policy_head(action_space, features, agent, env_id, log_std_init=log_std_init)

    def forward(self, obs: Tensor) -> Distribution:
        return self.head(self.body(self.encoder(obs)))


class ValueNetwork(nn.Module):
    """v(s; w): observation in, one value out, (B,)."""

    def __init__(self, observation_space: gym.Space, hidden_sizes: tuple[int, ...]) -> None:
        super().__init__()
        self.encoder = ObservationEncoder(observation_space)
        self.body = mlp(self.encoder.out_features, hidden_sizes, 1, nn.Tanh)

    def forward(self, obs: Tensor) -> Tensor:
        return self.body(self.encoder(obs)).squeeze(-1)


def env_actions(actions: Tensor, action_space: gym.Space) -> np.ndarray:
    """Sampled actions (N, ...) as the env takes them: Box ones clipped into the bounds."""
    actions = actions.cpu().numpy()
    if isinstance(action_space, gym.spaces.Box):
        return np.clip(actions, action_space.low, action_space.high).astype(action_space.dtype)
    return actions


def greedy_policy(policy: PolicyNetwork, action_space: gym.Space, device: torch.device) -> Callable[[object], object]:
    """act(obs) -> the policy's mode (argmax for Categorical, the mean for a Gaussian), one unbatched observation."""

    def act(obs: object) -> object:
        with torch.no_grad():
            action = env_actions(policy(torch.as_tensor(np.asarray(obs)[None], device=device)).mode, action_space)[0]
        return int(action) if isinstance(action_space, gym.spaces.Discrete) else action

    return act


def episode_timesteps(terminated: Tensor, truncated: Tensor) -> Tensor:
    """(T,) each step's index t within its episode, for a batch of whole episodes laid end to end."""
    timesteps = torch.zeros(len(terminated), dtype=torch.long)
    for i in range(1, len(terminated)):
        timesteps[i] = 0 if (terminated[i - 1] or truncated[i - 1]) else timesteps[i - 1] + 1
    return timesteps


def monte_carlo_returns(
    rewards: Tensor, next_obs: Tensor, terminated: Tensor, truncated: Tensor, value: nn.Module | None, gamma: float
) -> Tensor:
    """(T,) G_t of whole episodes laid end to end: 0 after termination, v(final obs) after truncation (0 without a
    baseline, deviation 2); the batch ends where an episode ends, so the last step is one of the two."""
    with torch.no_grad():
        bootstrap = value(next_obs) if value is not None else torch.zeros_like(rewards)
    return discounted_returns(rewards[:, None], terminated[:, None], truncated[:, None], bootstrap[:, None], gamma)[
        :, 0
    ]


def score_weights(
    returns: Tensor,
    baselines: Tensor,
    timesteps: Tensor,
    gamma: float,
    discount_score: bool,
    normalize_advantages: bool,
) -> Tensor:
    """(T,) the factor of grad log pi(a_t|s_t): gamma^t? (G_t - b(s_t)), standardised over the batch if asked.

    Standardising comes before gamma^t, so that the discount still shrinks late steps.
    """
    weights = returns - baselines
    if normalize_advantages and len(weights) > 1:
        weights = normalize(weights)
    if discount_score:
        weights = weights * gamma ** timesteps.to(weights.dtype)
    return weights


def reinforce_loss(log_probs: Tensor, weights: Tensor, num_episodes: int) -> Tensor:
    """-(1 / E) sum_t weight_t log pi(a_t|s_t): minus the Monte Carlo policy gradient averaged over E episodes."""
    return policy_gradient_loss(log_probs, weights, reduce=lambda x, mask: x.sum() / num_episodes)


@dataclass
class EpisodeBatch:
    """Whole episodes laid end to end; T steps in all."""

    obs: list
    actions: list
    rewards: list
    next_obs: list
    terminated: list
    truncated: list
    num_episodes: int = 0

    @classmethod
    def empty(cls) -> EpisodeBatch:
        return cls([], [], [], [], [], [])

    def add(self, t: Transition, action: Tensor) -> None:
        """Appends a step; `action` is the sampled (unclipped) one, whose log-probability the update needs."""
        for items, item in zip(self.columns(), (t.obs, action, t.rewards, t.next_obs, t.terminated, t.truncated),
                               strict=True):  # fmt: skip
            items.append(item)
        self.num_episodes += int(t.terminated or t.truncated)

    def columns(self) -> tuple[list, ...]:
        return self.obs, self.actions, self.rewards, self.next_obs, self.terminated, self.truncated

    def tensors(self, device: torch.device) -> tuple[Tensor, ...]:
        """obs (T, ...), actions (T, ...), rewards (T,), next_obs (T, ...), terminated (T,), truncated (T,)."""
        return (
            torch.as_tensor(np.asarray(self.obs), device=device),
            torch.stack(self.actions).to(device),
            torch.as_tensor(self.rewards, dtype=torch.float32, device=device),
            torch.as_tensor(np.asarray(self.next_obs), device=device),
            torch.as_tensor(self.terminated, dtype=torch.float32, device=device),
            torch.as_tensor(self.truncated, dtype=torch.float32, device=device),
        )


def update(
    cfg: Config,
    batch: EpisodeBatch,
    policy: PolicyNetwork,
    value: ValueNetwork | None,
    policy_optimizer: torch.optim.Optimizer,
    value_optimizer: torch.optim.Optimizer | None,
    device: torch.device,
) -> dict[str, float]:
    """One policy step on the batch's episodes (and `value_epochs` baseline steps); returns the logged scalars."""
    obs, actions, rewards, next_obs, terminated, truncated = batch.tensors(device)
    returns = monte_carlo_returns(rewards, next_obs, terminated, truncated, value, cfg.gamma)
    with torch.no_grad():
        baselines = value(obs) if value is not None else torch.zeros_like(returns)
    timesteps = episode_timesteps(terminated, truncated).to(device)
    weights = score_weights(returns, baselines, timesteps, cfg.gamma, cfg.discount_score, cfg.normalize_advantages)
    dist = policy(obs)
    entropy = entropy_bonus(dist.entropy())
    policy_loss = reinforce_loss(dist.log_prob(actions), weights, batch.num_episodes)
    policy_optimizer.zero_grad()
    (policy_loss - cfg.ent_coef * entropy).backward()
    policy_optimizer.step()
    stats = {"losses/policy_loss": policy_loss.item(), "charts/entropy": entropy.item()}
    if value is not None and value_optimizer is not None:
        for _ in range(cfg.value_epochs):
            loss = value_loss(value(obs), returns)
            value_optimizer.zero_grad()
            loss.backward()
            value_optimizer.step()
        stats["losses/value_loss"] = loss.item()
    return stats


def train(cfg: Config, run: Run) -> np.ndarray:
    """Trains the policy (and baseline) on `run`'s env, one episode at a time; returns the final greedy returns."""
    spec, env, device = run.spec, run.env, torch.device(cfg.device)
    flat_size(env.observation_space, "observation", spec.agent, spec.env_id)
    policy = PolicyNetwork(env.observation_space, env.action_space, cfg.hidden_sizes, spec.agent, spec.env_id,
                           cfg.log_std_init).to(device)  # fmt: skip
    policy_optimizer = adam(policy.parameters(), cfg.learning_rate)
    run.track("policy", policy)
    run.track("policy_optimizer", policy_optimizer)
    value, value_optimizer = None, None
    if cfg.baseline:
        value = ValueNetwork(env.observation_space, cfg.hidden_sizes).to(device)
        value_optimizer = adam(value.parameters(), cfg.value_learning_rate)
        run.track("value", value)
        run.track("value_optimizer", value_optimizer)

    rollout, batch = run.rollout, EpisodeBatch.empty()
    act = run.evaluate_during_training(greedy_policy(policy, env.action_space, device))
    while run.keep_going():
        with torch.no_grad():
            action = policy(torch.as_tensor(np.asarray(rollout.obs)[None], device=device)).sample()[0]
        t = rollout.step(env_actions(action[None], env.action_space)[0])
        batch.add(t, action)
        if (t.terminated or t.truncated) and batch.num_episodes == cfg.batch_episodes:
            stats = update(cfg, batch, policy, value, policy_optimizer, value_optimizer, device)
            for tag, number in stats.items():
                run.log(tag, number)
            batch = EpisodeBatch.empty()
    # Episodes cut short by the budget or a stop signal are dropped: REINFORCE needs whole episodes.
    return run.evaluate(act)


def policy_from_checkpoint(
    arrays: dict[str, np.ndarray], env: gym.Env, hidden_sizes: tuple[int, ...], log_std_init: float, agent: str
) -> Callable[[object], object]:
    """The greedy (mode) policy of the network a checkpoint stores under the tracked name "policy"."""
    env_id = str(env.spec.id if env.spec else env)
    policy = PolicyNetwork(env.observation_space, env.action_space, hidden_sizes, agent, env_id, log_std_init)
    prefix = "policy."
    policy.load_state_dict(
        {name.removeprefix(prefix): torch.from_numpy(a) for name, a in arrays.items() if name.startswith(prefix)}
    )
    return greedy_policy(policy.eval(), env.action_space, torch.device("cpu"))


def act_from_checkpoint(arrays: dict[str, np.ndarray], cfg: Config, env: gym.Env) -> Callable[[object], object]:
    """The greedy (mode) policy of the policy network a checkpoint stores."""
    return policy_from_checkpoint(arrays, env, cfg.hidden_sizes, cfg.log_std_init, "reinforce")
