"""DQN: targets, target-network updates and exploration by hand, learning CartPole to a seeded threshold, the logged
tags, checkpoint replay and resumption with network, optimiser and buffer, and the errors for envs that do not fit."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

from agents import dqn
from rl.checkpoint import load_checkpoint
from rl.environments import make_env
from rl.errors import UserError
from rl.evaluation import evaluate_policy
from rl.replay_buffer import ReplayBatch
from rl.run import Run, RunSpec


def train(cfg, tmp_path, steps, seed=0, env_id="CartPole-v1", run_dir=None):
    spec = RunSpec("dqn", env_id, {}, seed, total_steps=steps, runs_dir=str(tmp_path), quiet=True, eval_episodes=10)
    with Run(spec, {}, run_dir=run_dir) as run:
        return dqn.train(cfg, run), run


class FixedQ(nn.Module):
    """A stand-in network that returns the given action values whatever the observation."""

    def __init__(self, values: list[list[float]]) -> None:
        super().__init__()
        self.values = torch.tensor(values)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.values


def batch_of(rewards, terminated, discounts) -> ReplayBatch:
    n = len(rewards)
    return ReplayBatch(
        obs=torch.zeros(n, 1),
        actions=torch.zeros(n, dtype=torch.long),
        rewards=torch.tensor(rewards),
        next_obs=torch.zeros(n, 1),
        terminated=torch.tensor(terminated),
        discounts=torch.tensor(discounts),
        weights=torch.ones(n),
        indices=np.arange(n),
        extras={},
    )


def test_td_targets_by_hand():
    batch = batch_of(rewards=[1.0, 2.0, -1.0], terminated=[0.0, 1.0, 0.0], discounts=[0.9, 0.9, 0.81])
    target = FixedQ([[1.0, 5.0], [3.0, 4.0], [2.0, -2.0]])
    online = FixedQ([[9.0, 0.0], [0.0, 9.0], [0.0, 9.0]])
    # max over the target's values: 1 + 0.9 * 5; terminated: 2; two-step discount: -1 + 0.81 * 2
    np.testing.assert_allclose(dqn.td_targets(batch, online, target, double_dqn=False), [5.5, 2.0, 0.62], rtol=1e-6)
    # double DQN: the online net picks the action (0, 1, 1), the target values it: 1 + 0.9 * 1; 2; -1 + 0.81 * -2
    np.testing.assert_allclose(dqn.td_targets(batch, online, target, double_dqn=True), [1.9, 2.0, -2.62], rtol=1e-6)


def test_td_loss_is_the_weighted_huber_loss():
    q = torch.tensor([0.0, 0.0, 0.0])
    targets = torch.tensor([0.5, 3.0, -2.0])  # huber: 0.5 * 0.5^2 = 0.125, |3| - 0.5 = 2.5, |-2| - 0.5 = 1.5
    weights = torch.tensor([1.0, 0.5, 2.0])
    assert dqn.td_loss(q, targets, weights).item() == pytest.approx((0.125 + 1.25 + 3.0) / 3)


def test_polyak_update_copies_with_tau_one_and_averages_below():
    online, target = nn.Linear(2, 1), nn.Linear(2, 1)
    nn.init.constant_(online.weight, 2.0), nn.init.constant_(target.weight, 0.0)
    dqn.polyak_update(target, online, tau=0.25)
    np.testing.assert_allclose(target.weight.detach(), [[0.5, 0.5]])
    dqn.polyak_update(target, online, tau=1.0)
    assert torch.equal(target.weight, online.weight) and torch.equal(target.bias, online.bias)


def test_epsilon_greedy_actions():
    q = torch.tensor([[0.0, 1.0, 0.0]]).repeat(30_000, 1)
    rng = np.random.default_rng(0)
    assert (dqn.epsilon_greedy_actions(q, 0.0, rng) == 1).all()
    counts = np.bincount(dqn.epsilon_greedy_actions(q, 0.3, rng), minlength=3) / len(q)
    np.testing.assert_allclose(counts, [0.1, 0.8, 0.1], atol=0.01)  # greedy 0.7 + 0.3 / 3


def test_dqn_learns_cartpole(tmp_path):
    cfg = dqn.Config(hidden_sizes=(64, 64), exploration_steps=4_000, train_frequency=128, gradient_steps=64)
    returns, run = train(cfg, tmp_path, steps=12_000, seed=2)
    assert returns.mean() >= 100  # a uniform policy averages about 22
    events = EventAccumulator(str(run.run_dir)).Reload()
    tags = set(events.Tags()["scalars"])
    assert {"losses/td_loss", "charts/q_values", "charts/epsilon", "charts/episodic_return", "charts/SPS"} <= tags
    epsilons = [e.value for e in events.Scalars("charts/epsilon")]
    assert epsilons[0] > 0.5 and epsilons[-1] == pytest.approx(cfg.epsilon_end)

    arrays, _ = load_checkpoint(run.run_dir)
    act = dqn.act_from_checkpoint(arrays, cfg, make_env("CartPole-v1"))
    replayed = evaluate_policy(make_env("CartPole-v1"), act, episodes=10, seed=run.spec.seed + 10_000)
    np.testing.assert_array_equal(replayed, returns)  # the checkpoint holds the policy that was evaluated


@pytest.mark.parametrize(
    "options",
    [dict(double_dqn=True), dict(n_step=3), dict(prioritized=True), dict(tau=0.05, num_envs=4), dict(dueling=True)],
    ids=["double", "n_step", "prioritized", "polyak_vector", "dueling"],
)
def test_dqn_options_train_and_improve_on_random(tmp_path, options):
    cfg = dqn.Config(
        hidden_sizes=(64, 64),
        exploration_steps=2_000,
        learning_starts=500,
        train_frequency=64,
        gradient_steps=32,
        target_update_interval=10 if options.get("tau", 1.0) < 1 else 200,
        **options,
    )
    returns, run = train(cfg, tmp_path, steps=6_000, seed=0)
    assert returns.mean() >= 50, options  # a uniform policy averages about 22
    losses = EventAccumulator(str(run.run_dir)).Reload().Scalars("losses/td_loss")
    assert np.isfinite([e.value for e in losses]).all()
    act = dqn.act_from_checkpoint(load_checkpoint(run.run_dir)[0], cfg, make_env("CartPole-v1"))
    replayed = evaluate_policy(make_env("CartPole-v1"), act, episodes=len(returns), seed=run.spec.seed + 10_000)
    np.testing.assert_array_equal(replayed, returns)  # the checkpoint rebuilds the same network (dueling streams too)


def test_dqn_resumes_with_network_optimiser_and_buffer(tmp_path):
    cfg = dqn.Config(hidden_sizes=(32,), learning_starts=200, train_frequency=50, gradient_steps=5, buffer_size=5_000)
    _, first = train(cfg, tmp_path, steps=1_000)
    before, before_meta = load_checkpoint(first.run_dir)
    assert before_meta["global_step"] == 1_000

    _, resumed = train(cfg, tmp_path, steps=1_500, run_dir=first.run_dir)
    after, after_meta = load_checkpoint(resumed.run_dir)
    assert after_meta["global_step"] == 1_500

    def only(arrays, suffix):
        (name,) = [name for name in arrays if name.endswith(suffix)]
        return arrays[name]

    # The buffer kept its first 1,000 rows and grew by the 500 new steps.
    old_obs, new_obs = only(before, "storage.obs"), only(after, "storage.obs")
    assert len(old_obs) == 1_000 and len(new_obs) == 1_500
    np.testing.assert_array_equal(new_obs[:1_000], old_obs)

    # Adam kept counting: 17 training phases of 5 steps before (at steps 200, 250, ..., 1000), 10 more after.
    def adam_steps(arrays):
        return {
            array.item() for name, array in arrays.items() if name.startswith("optimizer.") and name.endswith("step")
        }

    assert adam_steps(before) == {17 * 5} and adam_steps(after) == {(17 + 10) * 5}
    assert not np.array_equal(only(before, "q_network.body.0.weight"), only(after, "q_network.body.0.weight"))


def test_a_resumed_run_trains_and_updates_its_target_on_the_uninterrupted_runs_steps(tmp_path, logged_steps):
    cfg = dqn.Config(hidden_sizes=(16,), learning_starts=100, train_frequency=64, gradient_steps=1,
                     target_update_interval=96, buffer_size=2_000)  # fmt: skip
    _, whole = train(cfg, tmp_path / "whole", steps=900)
    _, first = train(cfg, tmp_path / "split", steps=500)  # stops between two phases (at 484 and 548)
    _, resumed = train(cfg, tmp_path / "split", steps=900, run_dir=first.run_dir)

    phases = logged_steps(whole.run_dir, "losses/td_loss")
    assert phases[:3] == [100, 164, 228] and logged_steps(resumed.run_dir, "losses/td_loss") == phases
    whole_meta, resumed_meta = load_checkpoint(whole.run_dir)[1], load_checkpoint(resumed.run_dir)[1]
    assert resumed_meta["objects"]["target_update"] == whole_meta["objects"]["target_update"] == {"next": 960}


def test_dqn_refuses_continuous_actions(tmp_path):
    with pytest.raises(UserError, match="Box.*ddpg"):
        train(dqn.Config(), tmp_path, steps=100, env_id="Pendulum-v1")
    assert not list(tmp_path.iterdir())  # no empty run directory left behind


def test_observation_normalisation_takes_in_every_acted_on_observation(tmp_path):
    cfg = dqn.Config(normalize_observation=True, num_envs=2, learning_starts=100, train_frequency=50, gradient_steps=2)
    returns, run = train(cfg, tmp_path, steps=400)
    arrays, meta = load_checkpoint(run.run_dir)
    stored = arrays["buffer.0.storage.obs"].astype(np.float64)  # the buffer keeps raw observations, one row per step
    assert arrays["q_network.encoder.obs_count"] == meta["global_step"] == len(stored) == 400
    np.testing.assert_allclose(arrays["q_network.encoder.obs_mean"], stored.mean(0), rtol=1e-10)
    np.testing.assert_allclose(arrays["q_network.encoder.obs_var"], stored.var(0), rtol=1e-10)
    for key in ("obs_mean", "obs_var", "obs_count"):  # the target network normalises alike
        np.testing.assert_array_equal(arrays[f"target_network.encoder.{key}"], arrays[f"q_network.encoder.{key}"])
    act = dqn.act_from_checkpoint(arrays, cfg, make_env("CartPole-v1"))
    replayed = evaluate_policy(make_env("CartPole-v1"), act, episodes=10, seed=run.spec.seed + 10_000)
    np.testing.assert_array_equal(replayed, returns)  # evaluated with the checkpoint's statistics


def test_observation_normalisation_refuses_discrete_observations(tmp_path):
    with pytest.raises(UserError, match="normalize_observation=true needs Box observations"):
        train(dqn.Config(normalize_observation=True), tmp_path, steps=100, env_id="FrozenLake-v1")
    assert not list(tmp_path.iterdir())


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="tau"):
        dqn.Config(tau=0.0)
    with pytest.raises(ValueError, match="n_step"):
        dqn.Config(n_step=0)


@pytest.mark.parametrize("hidden_sizes", [(32, 16), (16,), ()])
def test_dueling_q_is_value_plus_centred_advantage(hidden_sizes):
    torch.manual_seed(0)
    network = dqn.QNetwork(gym.spaces.Box(-1, 1, (4,)), 3, hidden_sizes, dueling=True)
    obs = torch.randn(10, 4)
    features = network.encoder(obs) if network.torso is None else network.torso(network.encoder(obs))
    value, advantages = network.value(features), network.advantage(features)
    q = network(obs)
    torch.testing.assert_close(q.mean(dim=1, keepdim=True), value)  # the advantages are centred: mean q is v
    torch.testing.assert_close(q - value, advantages - advantages.mean(dim=1, keepdim=True))
    streams = {name.split(".")[0] for name, _ in network.named_parameters()}
    assert streams == ({"torso", "value", "advantage"} if len(hidden_sizes) > 1 else {"value", "advantage"})
    # Each stream has its own last hidden layer (width hidden_sizes[-1]); the layers before it are shared.
    assert [m.out_features for m in network.value if isinstance(m, nn.Linear)] == [*hidden_sizes[-1:], 1]
