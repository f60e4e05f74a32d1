"""On-policy rollout collection, shared by A2C, PPO and TRPO: T steps of N envs into one (T, N) batch with GAE.

`collect` steps `run.vector_rollout(N)`'s Rollout T times with actions sampled from the current policy: one actor
forward pass per step for all N envs. After the T steps one batched critic pass gives V(obs) and V(next_obs) for all
T * N transitions (the parameters have not changed, so these are the values at collection time), where `next_obs` is
the true final observation when an episode ended (the Rollout hands it over), and `rl.advantages.gae` turns rewards,
values and next values into advantages and returns:

    delta[t] = r[t] + gamma (1 - terminated[t]) V(next_obs[t]) - V(obs[t])
    A[t]     = delta[t] + gamma gae_lambda (1 - terminated[t] or truncated[t]) A[t + 1],   A[T] = 0
    R[t]     = A[t] + V(obs[t])

so a truncated episode, and the rollout's last step, bootstrap from V(next_obs); a terminated one does not.
gae_lambda = 1 gives the n-step returns of A3C (each step looks ahead to the rollout's or its episode's end).

Continuous actions are Gaussian samples, clipped to the Box only on their way to the env: the batch keeps the
unclipped samples, whose log-probabilities the policy's ratio and gradient need.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Protocol

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor
from torch.distributions import Distribution

from rl.advantages import gae
from rl.networks import update_observation_statistics
from rl.reward_scaling import RewardScaler
from rl.rollout import Rollout

if TYPE_CHECKING:
    from rl.networks import ActorCritic
    from rl.run import Run


class ActorCriticPolicy(Protocol):
    """What `collect` needs of a network: pi(.|s) and V(s) for a batch of observations."""

    def distribution(self, obs: Tensor) -> Distribution: ...

    def value(self, obs: Tensor) -> Tensor: ...


@dataclass(frozen=True, slots=True)
class OnPolicyBatch:
    """T steps of N envs; step t of env n is (obs, actions, rewards, next_obs, terminated, truncated)[t, n]."""

    obs: Tensor
    """(T, N, *O) observations the actions were chosen in."""
    actions: Tensor
    """(T, N) action indices, or (T, N, A) Gaussian samples before clipping to the Box."""
    log_probs: Tensor
    """(T, N) log pi_old(a|s) under the policy that acted."""
    values: Tensor
    """(T, N) V(obs) by the critic at collection time."""
    rewards: Tensor
    """(T, N)"""
    terminated: Tensor
    """(T, N) 0/1: the episode reached a terminal state at this step."""
    truncated: Tensor
    """(T, N) 0/1: the episode was cut at this step (time limit) without reaching a terminal state."""
    next_values: Tensor
    """(T, N) V(next_obs), from the true final observation where the episode ended."""
    advantages: Tensor
    """(T, N) GAE advantages."""
    returns: Tensor
    """(T, N) the critic's regression targets, advantages + values."""


@dataclass(frozen=True, slots=True)
class Samples:
    """B transitions drawn from an OnPolicyBatch (flattened over T and N): what one update step reads."""

    obs: Tensor
    """(B, *O)"""
    actions: Tensor
    """(B,) or (B, A)"""
    old_log_probs: Tensor
    """(B,) log pi_old(a|s)"""
    old_values: Tensor
    """(B,) V_old(s), for value clipping"""
    advantages: Tensor
    """(B,)"""
    returns: Tensor
    """(B,)"""


def _env_actions(space: gym.Space) -> Callable[[Tensor], np.ndarray]:
    """Sampled actions (N, ...) -> what the vector env steps with: clipped to the bounds for a Box."""
    if isinstance(space, gym.spaces.Box):
        low, high = space.low, space.high
        return lambda actions: np.clip(actions.cpu().numpy(), low, high).astype(space.dtype, copy=False)
    return lambda actions: actions.cpu().numpy()


@torch.no_grad()
def collect(
    rollout: Rollout,
    policy: ActorCriticPolicy,
    num_steps: int,
    gamma: float,
    gae_lambda: float,
    device: torch.device | str = "cpu",
    reward_scaler: RewardScaler | None = None,
) -> OnPolicyBatch:
    """Steps the vector env `num_steps` (T) times with actions sampled from `policy` and returns the (T, N) batch.
    With a `reward_scaler` the batch's rewards (and so its advantages and returns) are the scaled ones."""
    if not rollout.is_vector:
        raise ValueError("collect needs a vector-env Rollout; build it with run.vector_rollout(num_envs).")
    device = torch.device(device)
    env, shape = rollout.env, (num_steps, rollout.num_envs)
    observation_space, action_space = env.single_observation_space, env.single_action_space
    obs = np.zeros((*shape, *observation_space.shape), dtype=observation_space.dtype)  # (T, N, *O)
    obs_tensor = torch.from_numpy(obs)  # (T, N, *O), the same memory: row t is filled before it is read
    next_obs = np.zeros_like(obs)  # (T, N, *O)
    rewards = np.zeros(shape, dtype=np.float32)
    terminated = np.zeros(shape, dtype=np.float32)
    truncated = np.zeros(shape, dtype=np.float32)
    actions, log_probs = [], []  # T tensors of (N,) or (N, A), and of (N,): one torch.stack each at the end
    to_env = _env_actions(action_space)
    for t in range(num_steps):
        obs[t] = rollout.obs
        distribution = policy.distribution(obs_tensor[t].to(device))
        action = distribution.sample()  # (N,) or (N, A)
        actions.append(action)
        log_probs.append(distribution.log_prob(action))
        transition = rollout.step(to_env(action))
        next_obs[t] = transition.next_obs
        rewards[t] = transition.rewards
        if reward_scaler is not None:
            rewards[t] = reward_scaler(transition.rewards, transition.terminated | transition.truncated)
        terminated[t] = transition.terminated
        truncated[t] = transition.truncated

    # One batched critic pass over all T * N observations and next observations, the true final ones included.
    both = torch.as_tensor(np.stack([obs, next_obs]), device=device)  # (2, T, N, *O)
    values, next_values = policy.value(both.reshape(-1, *observation_space.shape)).reshape(2, *shape)
    rewards_t, terminated_t, truncated_t = (torch.as_tensor(x, device=device) for x in (rewards, terminated, truncated))
    advantages, returns = gae(rewards_t, values, next_values, terminated_t, truncated_t, gamma, gae_lambda)
    return OnPolicyBatch(
        obs=obs_tensor.to(device),
        actions=torch.stack(actions),
        log_probs=torch.stack(log_probs),
        values=values,
        rewards=rewards_t,
        terminated=terminated_t,
        truncated=truncated_t,
        next_values=next_values,
        advantages=advantages,
        returns=returns,
    )


def flatten(batch: OnPolicyBatch) -> Samples:
    """All T * N transitions of a batch as one set of samples, B = T * N."""
    rows = batch.values.numel()
    return Samples(
        obs=batch.obs.reshape(rows, *batch.obs.shape[2:]),
        actions=batch.actions.reshape(rows, *batch.actions.shape[2:]),
        old_log_probs=batch.log_probs.reshape(rows),
        old_values=batch.values.reshape(rows),
        advantages=batch.advantages.reshape(rows),
        returns=batch.returns.reshape(rows),
    )


def minibatches(samples: Samples, batch_size: int, rng: np.random.Generator, epochs: int = 1) -> Iterator[Samples]:
    """`epochs` passes over `samples`, each in a fresh random order, `batch_size` at a time (the last minibatch of a
    pass may be smaller).

    The orders of all passes are drawn up front (the same draws, in the same order, as one permutation per pass) and
    each pass gathers every field once, so that a minibatch is a slice of that gather instead of six index ops.
    """
    rows = samples.old_values.shape[0]
    orders = torch.as_tensor(np.stack([rng.permutation(rows) for _ in range(epochs)]), device=samples.old_values.device)
    for order in orders:  # (B,)
        shuffled = [getattr(samples, f.name)[order] for f in fields(Samples)]
        for start in range(0, rows, batch_size):
            yield Samples(*(field[start : start + batch_size] for field in shuffled))


def steps_this_iteration(n_steps: int, num_envs: int, global_step: int, total_steps: int | None) -> int:
    """n_steps, or fewer in the last iteration so that the run stops within N - 1 steps of its step budget."""
    if total_steps is None:
        return n_steps
    remaining = total_steps - global_step
    return max(1, min(n_steps, -(-remaining // num_envs)))


def deterministic_policy(
    network: torch.nn.Module, action_space: gym.Space, device: torch.device | str = "cpu"
) -> Callable[[np.ndarray], Any]:
    """act(obs) -> the deterministic action for one (unbatched) observation: the argmax of a Categorical, the mean
    of a Gaussian clipped to the Box. `network` has `distribution(obs)`, like `rl.networks.ActorCritic`."""
    device = torch.device(device)
    if isinstance(action_space, gym.spaces.Box):
        low, high = action_space.low, action_space.high

        def act_continuous(obs: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                mean = network.distribution(torch.as_tensor(np.asarray(obs)[None], device=device)).mode[0]
            return np.clip(mean.cpu().numpy(), low, high)

        return act_continuous

    def act_discrete(obs: np.ndarray) -> int:
        with torch.no_grad():
            return int(network.distribution(torch.as_tensor(np.asarray(obs)[None], device=device)).mode[0])

    return act_discrete


def tracked_reward_scaler(run: Run, normalize_reward: bool, num_envs: int, gamma: float) -> RewardScaler | None:
    """The agent's `RewardScaler` when `normalize_reward` is on, registered with the run so that its statistics are
    checkpointed and restored; None when it is off."""
    if not normalize_reward:
        return None
    scaler = RewardScaler(num_envs, gamma)
    run.track("reward_scaler", scaler)
    return scaler


def fold_observations(network: ActorCritic, obs: Tensor) -> None:
    """With observation normalisation on, adds a batch's observations to the running statistics. Agents call it after
    the batch's update, so that a batch is collected and trained on under the same statistics (PPO's probability
    ratio starts at 1); the first batch is collected under mean 0, variance 1."""
    update_observation_statistics([network], obs)


def load_tracked(module: torch.nn.Module, arrays: dict[str, np.ndarray], name: str) -> torch.nn.Module:
    """Loads the parameters a checkpoint stores under the tracked name `name` ("<name>.<param>") into `module`."""
    prefix = f"{name}."
    module.load_state_dict(
        {key.removeprefix(prefix): torch.from_numpy(array) for key, array in arrays.items() if key.startswith(prefix)}
    )
    return module.eval()
