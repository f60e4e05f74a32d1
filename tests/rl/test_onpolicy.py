"""The on-policy collector: truncation bootstraps from the true final observation and termination does not, returns
by hand, Box actions clipped for the env but stored as sampled, minibatches, the step budget; and the actor-critic
network: initialisation, deterministic actions, errors for spaces it cannot handle."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from gymnasium.wrappers import TimeLimit
from torch import nn
from torch.distributions import Categorical, Independent, Normal

from rl.errors import UserError
from rl.networks import ActorCritic
from rl.onpolicy import Samples, collect, deterministic_policy, flatten, minibatches, steps_this_iteration
from rl.rollout import Rollout

pytestmark = pytest.mark.usefixtures("one_thread")


class CounterEnv(gym.Env):
    """obs = [steps since reset]; reward 1 per step; terminates after `terminate_at` steps if given."""

    observation_space = gym.spaces.Box(0.0, 100.0, (1,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, terminate_at: int | None = None) -> None:
        self.terminate_at = terminate_at
        self.count = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.count = 0
        return np.array([0.0], np.float32), {}

    def step(self, action):
        self.count += 1
        terminated = self.terminate_at is not None and self.count >= self.terminate_at
        return np.array([self.count], np.float32), 1.0, terminated, False, {}


class EchoEnv(gym.Env):
    """obs = the action the env received; actions in [-1, 1]."""

    observation_space = gym.spaces.Box(-10.0, 10.0, (1,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        return np.zeros(1, np.float32), {}

    def step(self, action):
        return np.asarray(action, np.float32).reshape(1), 0.0, False, False, {}


class StubPolicy(nn.Module):
    """V(s) = 10 s + 1 and a uniform policy over two actions, or a Gaussian of mean 5 and std 0.01."""

    def __init__(self, continuous: bool = False) -> None:
        super().__init__()
        self.continuous = continuous

    def distribution(self, obs: torch.Tensor):
        if self.continuous:
            return Independent(Normal(torch.full((len(obs), 1), 5.0), torch.full((len(obs), 1), 0.01)), 1)
        return Categorical(logits=torch.zeros(len(obs), 2))

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return 10.0 * obs[:, 0] + 1.0


def vector_env(*factories) -> SyncVectorEnv:
    return SyncVectorEnv(list(factories), autoreset_mode=AutoresetMode.SAME_STEP)


def counter_rollout() -> Rollout:
    # env 0 is truncated by its time limit after 3 steps; env 1 terminates after 2.
    env = vector_env(lambda: TimeLimit(CounterEnv(), 3), lambda: TimeLimit(CounterEnv(terminate_at=2), 10))
    return Rollout(env, seed=0)


def test_truncation_bootstraps_from_the_final_observation_and_termination_does_not():
    rollout = counter_rollout()
    batch = collect(rollout, StubPolicy(), num_steps=4, gamma=0.5, gae_lambda=1.0)
    assert rollout.global_step == 8
    np.testing.assert_array_equal(batch.obs[:, :, 0], [[0, 0], [1, 1], [2, 0], [0, 1]])
    np.testing.assert_array_equal(batch.truncated, [[0, 0], [0, 0], [1, 0], [0, 0]])
    np.testing.assert_array_equal(batch.terminated, [[0, 0], [0, 1], [0, 0], [0, 1]])
    # V(next_obs) = 10 next_obs + 1; env 0's truncated step ends in its final observation 3, not the reset one 0.
    np.testing.assert_array_equal(batch.next_values, [[11, 11], [21, 21], [31, 11], [11, 21]])
    np.testing.assert_array_equal(batch.values, [[1, 1], [11, 11], [21, 1], [1, 11]])
    # gae_lambda = 1: discounted returns, gamma = 0.5. Env 0: the last step bootstraps 1 + 0.5 V(1) = 6.5, the
    # truncated one 1 + 0.5 V(3) = 16.5, then 1 + 0.5 * 16.5 = 9.25, 1 + 0.5 * 9.25 = 5.625.
    # Env 1: terminated steps return 1 (no bootstrap), the steps before them 1 + 0.5 * 1 = 1.5.
    np.testing.assert_allclose(batch.returns, [[5.625, 1.5], [9.25, 1.0], [16.5, 1.5], [6.5, 1.0]])
    np.testing.assert_allclose(batch.advantages, batch.returns - batch.values)
    np.testing.assert_allclose(batch.log_probs, np.log(0.5), rtol=1e-6)


def test_gae_lambda_zero_gives_one_step_td_errors():
    batch = collect(counter_rollout(), StubPolicy(), num_steps=4, gamma=0.5, gae_lambda=0.0)
    # delta = 1 + 0.5 (1 - terminated) V(next_obs) - V(obs)
    expected = 1 + 0.5 * (1 - batch.terminated) * batch.next_values - batch.values
    np.testing.assert_allclose(batch.advantages, expected)
    assert batch.advantages[1, 1] == pytest.approx(1 - 11)  # terminated: r - V(s), nothing after it


def test_box_actions_are_clipped_for_the_env_and_stored_as_sampled():
    rollout = Rollout(vector_env(EchoEnv, EchoEnv, EchoEnv), seed=0)
    batch = collect(rollout, StubPolicy(continuous=True), num_steps=2, gamma=0.9, gae_lambda=0.9)
    assert batch.actions.shape == (2, 3, 1)
    np.testing.assert_allclose(batch.actions, 5.0, atol=0.1)  # what the Gaussian sampled, far outside [-1, 1]
    np.testing.assert_array_equal(batch.obs[1], np.ones((3, 1)))  # what the env received: clipped to 1
    expected = Normal(5.0, 0.01).log_prob(batch.actions[..., 0])
    np.testing.assert_allclose(batch.log_probs, expected, rtol=1e-5)


def test_flatten_keeps_time_major_order():
    batch = collect(counter_rollout(), StubPolicy(), num_steps=5, gamma=0.9, gae_lambda=0.9)
    samples = flatten(batch)
    assert samples.obs.shape == (10, 1) and samples.actions.shape == (10,) and samples.returns.shape == (10,)
    np.testing.assert_array_equal(samples.obs[:, 0], batch.obs[:, :, 0].reshape(-1))  # row t * N + n
    np.testing.assert_array_equal(samples.returns, batch.returns.reshape(-1))


def test_minibatches_cover_every_sample_once_per_pass_and_keep_rows_together():
    row = torch.arange(10.0)
    samples = Samples(obs=row[:, None], actions=row.long(), old_log_probs=-row, old_values=2 * row,
                      advantages=3 * row, returns=4 * row)  # fmt: skip
    parts = list(minibatches(samples, 4, np.random.default_rng(0)))
    assert [len(p.returns) for p in parts] == [4, 4, 2]
    seen = torch.cat([p.obs[:, 0] for p in parts])
    assert sorted(seen.tolist()) == list(range(10)) and seen.tolist() != list(range(10))  # all of them, shuffled
    for p in parts:
        i = p.obs[:, 0]
        assert torch.equal(p.actions, i.long()) and torch.equal(p.old_log_probs, -i)
        assert torch.equal(p.old_values, 2 * i) and torch.equal(p.advantages, 3 * i) and torch.equal(p.returns, 4 * i)


def test_minibatches_over_several_epochs_draw_one_permutation_per_pass():
    row = torch.arange(10.0)
    samples = Samples(obs=row[:, None], actions=row.long(), old_log_probs=-row, old_values=2 * row,
                      advantages=3 * row, returns=4 * row)  # fmt: skip
    parts = list(minibatches(samples, 4, np.random.default_rng(0), epochs=3))
    assert [len(p.returns) for p in parts] == [4, 4, 2] * 3
    rng = np.random.default_rng(0)  # the same draws as three single passes
    for epoch in range(3):
        seen = torch.cat([p.obs[:, 0] for p in parts[3 * epoch : 3 * epoch + 3]])
        assert seen.long().tolist() == rng.permutation(10).tolist()
    for p in parts:
        assert torch.equal(p.returns, 4 * p.obs[:, 0]) and torch.equal(p.old_log_probs, -p.obs[:, 0])


def test_steps_this_iteration_stops_within_one_vector_step_of_the_budget():
    assert steps_this_iteration(32, 8, global_step=0, total_steps=1_000) == 32
    assert steps_this_iteration(32, 8, global_step=768, total_steps=1_000) == 29  # 232 left: ceil(232 / 8)
    assert steps_this_iteration(32, 8, global_step=996, total_steps=1_000) == 1
    assert steps_this_iteration(32, 8, global_step=0, total_steps=None) == 32


def test_actor_critic_starts_near_uniform_and_acts_deterministically():
    torch.manual_seed(0)
    env = gym.make("CartPole-v1")
    network = ActorCritic(env.observation_space, env.action_space, (64, 64), "ppo", "CartPole-v1")
    obs = torch.randn(100, 4)
    probs = network.distribution(obs).probs
    assert (probs - 0.5).abs().max() < 0.05  # output layer gain 0.01
    weight = network.actor_body[0][0].weight.detach()  # orthogonal rows scaled by sqrt(2)
    np.testing.assert_allclose(weight.T @ weight, 2 * torch.eye(4).numpy(), atol=1e-5)
    act = deterministic_policy(network, env.action_space)
    assert act(obs[0].numpy()) == int(probs[0].argmax())
    actor, critic = {id(p) for p in network.actor_parameters()}, {id(p) for p in network.critic_parameters()}
    assert not actor & critic and actor | critic == {id(p) for p in network.parameters()}


def test_continuous_deterministic_action_is_the_mean_clipped_to_the_box():
    env = gym.make("Pendulum-v1")
    network = ActorCritic(env.observation_space, env.action_space, (8,), "ppo", "Pendulum-v1", log_std_init=-1.0)
    np.testing.assert_allclose(network.policy_head.log_std.detach(), [-1.0])
    with torch.no_grad():
        network.policy_head.mean.bias.fill_(7.0)
    act = deterministic_policy(network, env.action_space)
    np.testing.assert_allclose(act(np.zeros(3, np.float32)), [2.0])  # mean about 7, clipped to high = 2


@pytest.mark.parametrize(
    "observation_space, action_space, match",
    [
        (gym.spaces.Box(-1, 1, (2,)), gym.spaces.MultiDiscrete([2, 3]), "Discrete or one-dimensional Box action"),
        (gym.spaces.Box(-1, 1, (2,)), gym.spaces.Box(-1, 1, (2, 2)), "Discrete or one-dimensional Box action"),
        (gym.spaces.Tuple([gym.spaces.Discrete(2)] * 2), gym.spaces.Discrete(2), "Box or Discrete observation"),
    ],
)
def test_actor_critic_refuses_spaces_it_cannot_handle(observation_space, action_space, match):
    with pytest.raises(UserError, match=match):
        ActorCritic(observation_space, action_space, (8,), "ppo", "Weird-v0")


@pytest.mark.parametrize("agent", ["a2c", "ppo", "trpo"])
def test_each_policy_gradient_agent_folds_every_observation_into_its_statistics(agent, tmp_path):
    from agents.registry import get_agent
    from rl.checkpoint import load_checkpoint
    from rl.run import Run, RunSpec

    entry = get_agent(agent)
    cfg = entry.config(num_envs=2, n_steps=64, normalize_observation=True)
    spec = RunSpec(agent, "CartPole-v1", {}, 0, total_steps=512, runs_dir=str(tmp_path), quiet=True, eval_episodes=1)
    with Run(spec, cfg) as run:
        entry.train(cfg, run)
    arrays, _ = load_checkpoint(run.run_dir)
    assert arrays["network.encoder.obs_count"] == 512  # after each update, that batch's observations, once
    assert np.all(arrays["network.encoder.obs_var"] != 1.0) and np.all(arrays["network.encoder.obs_mean"] != 0.0)
