"""Deep Q-learning: Mnih et al. (2015); Zhao, *Mathematical Foundations of RL*, section 8.4.

The network q(s, a; w) is trained on minibatches from the replay buffer to minimise the Huber loss of the TD error

    y = r + gamma^k (1 - terminated) max_a' q(s', a'; w_target)                    (k = 1, or n with n-step replay)
    y = r + gamma^k (1 - terminated) q(s', argmax_a' q(s', a'; w); w_target)      (double_dqn, van Hasselt 2016)
    loss = mean_i  weight_i * huber(q(s_i, a_i; w) - y_i)

while acting epsilon-greedily on q(s, .; w). The target network w_target follows w by a hard copy every
`target_update_interval` environment steps (tau = 1) or by Polyak averaging w_target <- tau w + (1 - tau) w_target.
With `prioritized`, minibatches are drawn in proportion to |TD error|^alpha (Schaul et al. 2016) and the loss is
weighted by the importance weights, beta annealed to 1. With `dueling`, q(s, a) = v(s) + A(s, a) - mean_a' A(s, a')
from two streams of one network (Wang et al. 2016).

Deviations from the paper:
1. The defaults suit low-dimensional observations and an MLP. Image observations go through the paper's
   convolutional torso (`rl.images`) before the MLP; ale-py's games get the paper's preprocessing (frame skipping,
   grey 84x84 frames, a stack of 4) from `make_env` (`rl.atari`), and `configs/dqn_atari.toml` holds Atari values,
   the paper's reward clipping (`clip_reward`) among them.
2. Training runs in phases as in Stable-Baselines3: every `train_frequency` environment steps, `gradient_steps`
   minibatch updates; the defaults (rl-baselines3-zoo's CartPole values) solve CartPole-v1 in 50,000 steps.
3. Adam instead of RMSProp, and the gradient norm is clipped at `max_grad_norm`.
4. epsilon decays linearly over `exploration_steps` environment steps, then stays at `epsilon_end`.
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rl.environments import frame_stack_size
from rl.images import image_layout
from rl.networks import (
    ObservationEncoder,
    adam,
    check_normalizable,
    clip_grad_norm,
    mlp,
    polyak_update,
    update_observation_statistics,
)
from rl.replay_buffer import ReplayBatch, ReplayBuffer
from rl.run import Run
from rl.schedules import Periodic, linear_schedule
from rl.spaces import discrete_size, flat_size

ACTION_HINT = "DQN picks among finitely many actions; pick an env with Discrete actions, or ddpg for continuous ones"


@dataclass(frozen=True)
class Config:
    learning_rate: float = 2.3e-3
    """Adam step size."""
    buffer_size: int = 100_000
    """Replay buffer capacity in transitions."""
    learning_starts: int = 1_000
    """Environment steps of pure exploration before the first update."""
    batch_size: int = 64
    """Transitions per minibatch."""
    gamma: float = 0.99
    """Discount factor."""
    train_frequency: int = 256
    """Environment steps between training phases."""
    gradient_steps: int = 128
    """Minibatch updates per training phase."""
    target_update_interval: int = 10
    """Environment steps between target-network updates."""
    tau: float = 1.0
    """Target update rate: 1.0 copies the online network, smaller values average (Polyak)."""
    epsilon_start: float = 1.0
    """Exploration rate at the start."""
    epsilon_end: float = 0.04
    """Exploration rate after the decay."""
    exploration_steps: int = 8_000
    """Environment steps over which epsilon decays linearly."""
    max_grad_norm: float = 10.0
    """Gradient norm clip."""
    hidden_sizes: tuple[int, ...] = (256, 256)
    """Widths of the Q-network's hidden layers."""
    num_envs: int = 1
    """Environments stepped together (a Gymnasium vector env)."""
    double_dqn: bool = False
    """Pick the bootstrap action with the online network and value it with the target network."""
    n_step: int = 1
    """Rewards summed before bootstrapping (n-step replay)."""
    dueling: bool = False
    """Dueling network: separate value and advantage streams after the shared layers (Wang et al. 2016)."""
    prioritized: bool = False
    """Prioritized experience replay."""
    prioritized_alpha: float = 0.6
    """How strongly priorities shape sampling (0 is uniform)."""
    prioritized_beta: float = 0.4
    """Initial importance-weight exponent, annealed linearly to 1 over the run."""
    clip_reward: float = 0.0
    """Learn from each reward clipped to [-clip_reward, clip_reward] (1 for Atari, as Mnih et al. 2015); 0 does not
    clip. Logged and evaluated returns are the env's own."""
    normalize_observation: bool = False
    """Feed the networks Box observations normalised by their running mean and std (clipped to +-10); the buffer
    keeps raw observations, the statistics are saved with the networks (`rl.networks.ObservationEncoder`)."""
    device: str = "cpu"
    """Torch device for the networks and minibatches."""

    def __post_init__(self) -> None:
        if not 0.0 < self.tau <= 1.0:
            raise ValueError(f"tau must be in (0, 1], not {self.tau}")
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], not {self.gamma}")
        for name in ("buffer_size", "batch_size", "train_frequency", "gradient_steps", "num_envs", "n_step",
                     "target_update_interval"):  # fmt: skip
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)}")
        if not (self.prioritized_alpha >= 0 and 0 <= self.prioritized_beta <= 1):
            raise ValueError("prioritized_alpha must be >= 0 and prioritized_beta in [0, 1]")


class QNetwork(nn.Module):
    """q(s, .; w): observation in, one value per action out.

    Dueling (Wang et al. 2016): the layers up to the last hidden one are shared, then a value stream v(s) and an
    advantage stream A(s, a), each with its own last hidden layer, combine as q = v + A - mean_a A.
    """

    def __init__(
        self,
        observation_space: gym.Space,
        n_actions: int,
        hidden_sizes: tuple[int, ...],
        normalize: bool = False,
        dueling: bool = False,
    ) -> None:
        super().__init__()
        self.encoder = ObservationEncoder(observation_space, normalize)
        self.dueling = dueling
        if not dueling:
            self.body = mlp(self.encoder.out_features, hidden_sizes, n_actions)
            return
        shared, stream = tuple(hidden_sizes[:-1]), tuple(hidden_sizes[-1:])
        width = shared[-1] if shared else self.encoder.out_features
        self.torso = nn.Sequential(mlp(self.encoder.out_features, shared[:-1], width), nn.ReLU()) if shared else None
        self.value = mlp(width, stream, 1)
        self.advantage = mlp(width, stream, n_actions)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        features = self.encoder(obs)
        if not self.dueling:
            return self.body(features)  # (B, A)
        if self.torso is not None:
            features = self.torso(features)
        advantages = self.advantage(features)  # (B, A)
        return self.value(features) + advantages - advantages.mean(dim=1, keepdim=True)


def td_targets(batch: ReplayBatch, online: QNetwork, target: QNetwork, double_dqn: bool) -> torch.Tensor:
    """(B,) y = r + gamma^k (1 - terminated) q_target(s', a*), a* greedy under target (or online, for double DQN)."""
    with torch.no_grad():
        next_q = target(batch.next_obs)  # (B, A)
        if double_dqn:
            best = online(batch.next_obs).argmax(dim=1, keepdim=True)
            next_value = next_q.gather(1, best).squeeze(1)
        else:
            next_value = next_q.max(dim=1).values
        return batch.rewards + batch.discounts * (1.0 - batch.terminated) * next_value


def td_loss(q_taken: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Importance-weighted mean Huber loss of the TD errors."""
    return (weights * F.smooth_l1_loss(q_taken, targets, reduction="none")).mean()


def epsilon_greedy_actions(q_values: torch.Tensor, epsilon: float, rng: np.random.Generator) -> np.ndarray:
    """(N,) greedy actions of (N, A) action values, each replaced by a uniform one with probability epsilon."""
    actions = q_values.argmax(dim=1).cpu().numpy()
    explore = rng.random(len(actions)) < epsilon
    actions[explore] = rng.integers(q_values.shape[1], size=int(explore.sum()))
    return actions


def train(cfg: Config, run: Run) -> np.ndarray:
    """Trains a Q-network on `run`'s env; returns the final greedy evaluation returns."""
    spec = run.spec
    device = torch.device(cfg.device)
    observation_space, action_space = run.env.observation_space, run.env.action_space
    n_actions = discrete_size(action_space, "action", spec.agent, spec.env_id, ACTION_HINT)
    flat_size(observation_space, "observation", spec.agent, spec.env_id)
    check_normalizable(observation_space, cfg.normalize_observation, spec.agent, spec.env_id)
    rollout = run.vector_rollout(cfg.num_envs, cfg.clip_reward)

    network_args = (observation_space, n_actions, cfg.hidden_sizes, cfg.normalize_observation, cfg.dueling)
    q_network = QNetwork(*network_args).to(device)
    target_network = QNetwork(*network_args).to(device)
    target_network.load_state_dict(q_network.state_dict())
    optimizer = adam(q_network.parameters(), cfg.learning_rate)
    buffer = ReplayBuffer(
        cfg.buffer_size,
        observation_space.shape,
        obs_dtype=observation_space.dtype,
        num_envs=cfg.num_envs,
        n_step=cfg.n_step,
        gamma=cfg.gamma,
        prioritized=cfg.prioritized,
        alpha=cfg.prioritized_alpha,
        device=device,
        compact_observations=image_layout(observation_space) is not None,  # frames kept once (rl.frame_store)
        frame_stack=frame_stack_size(run.env),
    )
    for name, obj in [("q_network", q_network), ("target_network", target_network), ("optimizer", optimizer),
                      ("buffer", buffer)]:  # fmt: skip
        run.track(name, obj)
    if run.resumed:
        buffer.discard_pending()  # the envs restart with fresh episodes; half-built n-step windows would join two

    total_steps = spec.total_steps or 10**9
    first_phase = max(cfg.learning_starts, rollout.global_step + cfg.train_frequency)
    train_phase = run.track("train_phase", Periodic(first_phase, cfg.train_frequency))
    first_target_update = rollout.global_step + cfg.target_update_interval
    target_update = run.track("target_update", Periodic(first_target_update, cfg.target_update_interval))
    act = run.evaluate_during_training(greedy_policy(q_network, device))
    while run.keep_going():
        step = rollout.global_step
        epsilon = linear_schedule(cfg.epsilon_start, cfg.epsilon_end, cfg.exploration_steps, step)
        with torch.no_grad():
            q_values = q_network(torch.as_tensor(rollout.obs, device=device))
        t = rollout.step(epsilon_greedy_actions(q_values, epsilon, run.rng))
        buffer.add(t.obs, t.actions, t.rewards, t.next_obs, t.terminated, t.truncated)
        if cfg.normalize_observation:  # the acted-on observations; online and target networks alike
            update_observation_statistics((q_network, target_network), torch.as_tensor(np.asarray(t.obs)))

        if len(buffer) >= cfg.batch_size and train_phase.due(rollout.global_step):
            beta = linear_schedule(cfg.prioritized_beta, 1.0, total_steps, rollout.global_step)
            losses, q_means = [], []
            for _ in range(cfg.gradient_steps):
                loss, q_mean = update(cfg, q_network, target_network, optimizer, buffer, run.rng, beta)
                losses.append(loss)
                q_means.append(q_mean)
            run.log("losses/td_loss", np.mean(losses))
            run.log("charts/q_values", np.mean(q_means))
            run.log("charts/epsilon", epsilon)
        if target_update.due(rollout.global_step):
            polyak_update(target_network, q_network, cfg.tau)

    return run.evaluate(act)


def update(
    cfg: Config,
    q_network: QNetwork,
    target_network: QNetwork,
    optimizer: torch.optim.Optimizer,
    buffer: ReplayBuffer,
    rng: np.random.Generator,
    beta: float,
) -> tuple[float, float]:
    """One minibatch step; returns (loss, mean q of the taken actions)."""
    batch = buffer.sample(cfg.batch_size, rng, beta=beta)
    targets = td_targets(batch, q_network, target_network, cfg.double_dqn)
    q_taken = q_network(batch.obs).gather(1, batch.actions.long().reshape(-1, 1)).squeeze(1)
    loss = td_loss(q_taken, targets, batch.weights)
    optimizer.zero_grad()
    loss.backward()
    clip_grad_norm(q_network.parameters(), cfg.max_grad_norm)
    optimizer.step()
    if cfg.prioritized:
        buffer.update_priorities(batch.indices, (q_taken - targets).abs().detach().cpu().numpy())
    return loss.item(), q_taken.mean().item()


def greedy_policy(q_network: QNetwork, device: torch.device):
    """act(obs) -> the action of highest q, for a single (unbatched) observation."""

    def act(obs: np.ndarray) -> int:
        with torch.no_grad():
            return int(q_network(torch.as_tensor(np.asarray(obs)[None], device=device)).argmax(dim=1).item())

    return act


def act_from_checkpoint(arrays: dict[str, np.ndarray], cfg: Config, env: gym.Env):
    """The greedy policy of the Q-network a checkpoint stores."""
    n_actions = discrete_size(env.action_space, "action", "dqn", str(env.spec.id if env.spec else env), ACTION_HINT)
    q_network = QNetwork(env.observation_space, n_actions, cfg.hidden_sizes, cfg.normalize_observation, cfg.dueling)
    prefix = "q_network."
    q_network.load_state_dict(
        {
            name.removeprefix(prefix): torch.from_numpy(array)
            for name, array in arrays.items()
            if name.startswith(prefix)
        }
    )
    return greedy_policy(q_network.eval(), torch.device("cpu"))
