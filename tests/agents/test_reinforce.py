"""REINFORCE: the policy gradient of hand-made episodes by hand (with and without gamma^t), returns that stop at
termination and bootstrap from the baseline at truncation, every parameter moving, learning CartPole to a seeded
threshold, Box actions, resumption, and errors for spaces that do not fit."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

from agents import reinforce
from rl.checkpoint import load_checkpoint
from rl.environments import make_env
from rl.errors import UserError
from rl.evaluation import evaluate_policy
from rl.rollout import Transition
from rl.run import Run, RunSpec

ONE_STATE = gym.spaces.Discrete(1)
TWO_ACTIONS = gym.spaces.Discrete(2)


class MultiDiscreteActions(gym.Env):
    """A one-step env whose actions are MultiDiscrete, which no policy head here fits."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = gym.spaces.MultiDiscrete([2, 3])

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(2, np.float32), {}

    def step(self, action):
        return np.zeros(2, np.float32), 0.0, True, False, {}


if "MultiDiscreteToy-v0" not in gym.registry:
    gym.register("MultiDiscreteToy-v0", entry_point=MultiDiscreteActions)


pytestmark = pytest.mark.usefixtures("one_thread")


def train(cfg, tmp_path, steps, seed=0, env_id="CartPole-v1", run_dir=None, evals=10):
    spec = RunSpec("reinforce", env_id, {}, seed, total_steps=steps, runs_dir=str(tmp_path), quiet=True,
                    eval_episodes=evals)  # fmt: skip
    with Run(spec, {}, run_dir=run_dir) as run:
        return reinforce.train(cfg, run), run


def uniform_policy() -> reinforce.PolicyNetwork:
    """A linear softmax policy over two actions in a single state, all logits 0: pi = (1/2, 1/2)."""
    policy = reinforce.PolicyNetwork(ONE_STATE, TWO_ACTIONS, (), "reinforce", "test")
    for parameter in policy.parameters():
        nn.init.zeros_(parameter)
    return policy


def batch_of(episodes) -> reinforce.EpisodeBatch:
    """Episodes given as lists of (action, reward) with a final "terminated" or "truncated", in state 0."""
    batch = reinforce.EpisodeBatch.empty()
    for steps, ending in episodes:
        for i, (action, reward) in enumerate(steps):
            last = i == len(steps) - 1
            t = Transition(0, action, reward, 0, last and ending == "terminated", last and ending == "truncated")
            batch.add(t, torch.tensor(action))
    return batch


def sgd_step(cfg, batch, value=None) -> torch.Tensor:
    """The change of the policy's logit bias after one update by SGD with step size 1: the ascent direction."""
    policy = uniform_policy()
    optimizer = torch.optim.SGD(policy.parameters(), lr=1.0)
    value_optimizer = None if value is None else torch.optim.SGD(value.parameters(), lr=0.0)
    reinforce.update(cfg, batch, policy, value, optimizer, value_optimizer, torch.device("cpu"))
    return policy.head.logits.bias.detach()


def test_policy_gradient_of_two_episodes_by_hand():
    # Episode 1: actions 0, 1, 1, rewards 1, 0, 2, terminated; gamma 0.5 gives G = (1.5, 1, 2).
    # Episode 2: action 0, reward 3, truncated; with no baseline nothing is bootstrapped: G = 3.
    # grad log pi(a) with respect to the logits is e_a - pi = +-(1/2, -1/2), so the summed gradient is
    # 1.5 (1/2, -1/2) + 1 (-1/2, 1/2) + 2 (-1/2, 1/2) + 3 (1/2, -1/2) = (3/4, -3/4), over 2 episodes (3/8, -3/8).
    batch = batch_of([([(0, 1.0), (1, 0.0), (1, 2.0)], "terminated"), ([(0, 3.0)], "truncated")])
    cfg = reinforce.Config(gamma=0.5, baseline=False, normalize_advantages=False)
    np.testing.assert_allclose(sgd_step(cfg, batch), [0.375, -0.375], rtol=1e-6)

    # With S&B's gamma^t the weights are G_t gamma^t = (1.5, 0.5, 0.5) and 3:
    # 1.5 (1/2, -1/2) + 0.5 (-1/2, 1/2) + 0.5 (-1/2, 1/2) + 3 (1/2, -1/2) = (7/4, -7/4), over 2 episodes.
    cfg = reinforce.Config(gamma=0.5, baseline=False, normalize_advantages=False, discount_score=True)
    np.testing.assert_allclose(sgd_step(cfg, batch), [0.875, -0.875], rtol=1e-6)


def test_baseline_is_subtracted_and_bootstraps_truncated_episodes():
    class Constant(nn.Module):
        def __init__(self, value: float) -> None:
            super().__init__()
            self.value = nn.Parameter(torch.tensor(value))

        def forward(self, obs: torch.Tensor) -> torch.Tensor:
            return self.value * torch.ones(len(obs))

    value = Constant(2.0)
    # Terminated: G = (1.5, 1, 2), never bootstrapped. Truncated: G = 3 + 0.5 * v(final obs) = 4.
    rewards = torch.tensor([1.0, 0.0, 2.0, 3.0])
    terminated, truncated = torch.tensor([0.0, 0.0, 1.0, 0.0]), torch.tensor([0.0, 0.0, 0.0, 1.0])
    returns = reinforce.monte_carlo_returns(rewards, torch.zeros(4), terminated, truncated, value, gamma=0.5)
    np.testing.assert_allclose(returns, [1.5, 1.0, 2.0, 4.0])
    no_baseline = reinforce.monte_carlo_returns(rewards, torch.zeros(4), terminated, truncated, None, gamma=0.5)
    np.testing.assert_allclose(no_baseline, [1.5, 1.0, 2.0, 3.0])

    # The weights G - b = (-0.5, -1, 0, 2): -0.5 (1/2, -1/2) - 1 (-1/2, 1/2) + 0 + 2 (1/2, -1/2) = (5/4, -5/4), / 2.
    batch = batch_of([([(0, 1.0), (1, 0.0), (1, 2.0)], "terminated"), ([(0, 3.0)], "truncated")])
    cfg = reinforce.Config(gamma=0.5, baseline=True, normalize_advantages=False)
    np.testing.assert_allclose(sgd_step(cfg, batch, value), [0.625, -0.625], rtol=1e-6)


def test_score_weights_and_timesteps_by_hand():
    terminated, truncated = torch.tensor([0.0, 0.0, 1.0, 0.0, 1.0]), torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0])
    timesteps = reinforce.episode_timesteps(terminated, truncated)
    np.testing.assert_array_equal(timesteps, [0, 1, 2, 0, 1])
    returns, baselines = torch.tensor([3.0, 2.0, 1.0, 5.0, 4.0]), torch.tensor([1.0, 1.0, 1.0, 1.0, 1.0])
    weights = reinforce.score_weights(
        returns, baselines, timesteps, 0.5, discount_score=True, normalize_advantages=False
    )
    np.testing.assert_allclose(weights, [2.0, 0.5, 0.0, 4.0, 1.5])
    standard = reinforce.score_weights(returns, baselines, timesteps, 0.5, False, normalize_advantages=True)
    assert standard.mean().item() == pytest.approx(0.0, abs=1e-6) and standard.std().item() == pytest.approx(1.0)


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_every_parameter_changes_after_one_update(env_id):
    env = make_env(env_id)
    policy = reinforce.PolicyNetwork(env.observation_space, env.action_space, (8,), "reinforce", env_id)
    value = reinforce.ValueNetwork(env.observation_space, (8,))
    before = [p.detach().clone() for p in [*policy.parameters(), *value.parameters()]]
    batch, obs = reinforce.EpisodeBatch.empty(), env.reset(seed=0)[0]
    for i in range(6):
        with torch.no_grad():
            action = policy(torch.as_tensor(obs[None])).sample()[0]
        next_obs, reward, terminated, _, _ = env.step(reinforce.env_actions(action[None], env.action_space)[0])
        batch.add(Transition(obs, action, reward, next_obs, terminated, i == 5 and not terminated), action)
        obs = next_obs
        if terminated:
            break
    cfg = reinforce.Config(ent_coef=0.01)
    optimizers = [torch.optim.Adam(net.parameters(), lr=1e-2) for net in (policy, value)]
    reinforce.update(cfg, batch, policy, value, *optimizers, torch.device("cpu"))
    after = [*policy.parameters(), *value.parameters()]
    assert all(not torch.equal(b, a) for b, a in zip(before, after, strict=True))


def test_reinforce_learns_cartpole(tmp_path):
    returns, run = train(reinforce.Config(), tmp_path, steps=8_000, seed=0)
    assert returns.mean() >= 150  # a uniform policy averages about 22
    events = EventAccumulator(str(run.run_dir)).Reload()
    tags = set(events.Tags()["scalars"])
    assert {"losses/policy_loss", "losses/value_loss", "charts/entropy", "charts/episodic_return"} <= tags
    entropies = [e.value for e in events.Scalars("charts/entropy")]
    assert entropies[0] > 0.65 > entropies[-1]  # starts near log 2 = 0.69 and commits as it learns

    arrays, _ = load_checkpoint(run.run_dir)
    act = reinforce.act_from_checkpoint(arrays, reinforce.Config(), make_env("CartPole-v1"))
    replayed = evaluate_policy(make_env("CartPole-v1"), act, episodes=10, seed=run.spec.seed + 10_000)
    np.testing.assert_array_equal(replayed, returns)  # the checkpoint holds the policy that was evaluated


def test_box_actions_train_and_replay_within_bounds(tmp_path):
    cfg = reinforce.Config(batch_episodes=1, hidden_sizes=(16,))
    returns, run = train(cfg, tmp_path, steps=600, env_id="Pendulum-v1", evals=2)
    assert returns.shape == (2,) and np.isfinite(returns).all()
    arrays, _ = load_checkpoint(run.run_dir)
    assert "policy.head.log_std" in arrays and not np.all(arrays["policy.head.log_std"] == 0.0)  # it learned
    env = make_env("Pendulum-v1")
    action = reinforce.act_from_checkpoint(arrays, cfg, env)(env.reset(seed=0)[0] * 100)
    assert action.shape == (1,) and env.action_space.contains(action)


def test_reinforce_resumes_with_policy_baseline_and_optimisers(tmp_path):
    cfg = reinforce.Config(hidden_sizes=(16,), batch_episodes=2, value_epochs=3)
    _, first = train(cfg, tmp_path, steps=300, evals=1)
    before, meta = load_checkpoint(first.run_dir)
    updates = len(EventAccumulator(str(first.run_dir)).Reload().Scalars("losses/policy_loss"))
    _, resumed = train(cfg, tmp_path, steps=600, run_dir=first.run_dir, evals=1)
    after, _ = load_checkpoint(resumed.run_dir)

    def adam_steps(arrays, prefix):
        return {a.item() for name, a in arrays.items() if name.startswith(prefix) and name.endswith("step")}

    (policy_steps,) = adam_steps(before, "policy_optimizer.")
    assert policy_steps == updates >= 2 and adam_steps(before, "value_optimizer.") == {3 * policy_steps}
    (resumed_steps,) = adam_steps(after, "policy_optimizer.")
    assert resumed_steps > policy_steps  # Adam kept counting from the checkpoint
    assert not np.array_equal(before["policy.body.0.0.weight"], after["policy.body.0.0.weight"])
    assert meta["global_step"] == 300


def test_spaces_that_do_not_fit_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="Discrete or one-dimensional Box action"):
        train(reinforce.Config(), tmp_path, steps=100, env_id="MultiDiscreteToy-v0")
    with pytest.raises(UserError, match="Box or Discrete observation"):
        train(reinforce.Config(), tmp_path, steps=100, env_id="TextToy-v0")
    assert not list(tmp_path.iterdir())  # no empty run directory left behind


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="batch_episodes"):
        reinforce.Config(batch_episodes=0)
    with pytest.raises(ValueError, match="gamma"):
        reinforce.Config(gamma=1.5)
