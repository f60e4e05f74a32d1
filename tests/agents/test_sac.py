"""SAC: the squashed Gaussian's log-density against torch.distributions, the soft target by hand, the temperature
moving toward its target entropy, Pendulum learned to a seeded threshold, checkpoint replay, resumption with the
temperature and its optimiser, and the errors for action spaces and configs that do not fit."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import distributions as D

from agents import sac
from rl.checkpoint import load_checkpoint
from rl.environments import make_env
from rl.errors import UserError
from rl.evaluation import evaluate_policy
from rl.replay_buffer import ReplayBatch
from rl.run import Run, RunSpec

PENDULUM = make_env("Pendulum-v1")


def train(cfg, tmp_path, steps, seed=0, env_id="Pendulum-v1", run_dir=None):
    spec = RunSpec("sac", env_id, {}, seed, total_steps=steps, runs_dir=str(tmp_path), quiet=True, eval_episodes=10)
    with Run(spec, cfg, run_dir=run_dir) as run:
        return sac.train(cfg, run), run


def test_squashed_gaussian_log_prob_equals_torch_tanh_transformed_normal():
    torch.manual_seed(0)
    mean, log_std = torch.randn(64, 3, dtype=torch.float64), torch.randn(64, 3, dtype=torch.float64).clamp(-2, 1)
    u = mean + log_std.exp() * torch.randn(64, 3, dtype=torch.float64)
    u[0] = torch.tensor([0.0, 1.5, -3.0])
    reference = D.TransformedDistribution(D.Normal(mean, log_std.exp()), [D.TanhTransform()])
    expected = reference.log_prob(torch.tanh(u)).sum(dim=1)  # float64: tanh(u) stays below 1 for these u
    ours = sac.squashed_gaussian_log_prob(u, mean, log_std)
    torch.testing.assert_close(ours, expected, rtol=1e-9, atol=1e-9)
    # Far in the tails tanh(u) rounds to 1 and the textbook form log(1 - tanh(u)^2) is -inf; ours stays finite.
    far = sac.squashed_gaussian_log_prob(torch.tensor([[30.0]]), torch.tensor([[30.0]]), torch.tensor([[0.0]]))
    assert far.item() == pytest.approx(-0.5 * math.log(2 * math.pi) - 2 * (math.log(2) - 30.0), rel=1e-6)


def test_actor_samples_in_the_bounds_and_greedy_is_tanh_of_the_mean():
    torch.manual_seed(1)
    space = gym.spaces.Box(np.array([-1.0, 0.0], np.float32), np.array([3.0, 10.0], np.float32))
    actor = sac.SquashedGaussianActor(gym.spaces.Box(-1, 1, (4,)), space, (16,), normalize=False)
    obs = torch.randn(500, 4)
    actions, log_probs = actor.sample(obs)
    assert actions.shape == (500, 2) and log_probs.shape == (500,)
    assert (actions >= torch.tensor(space.low)).all() and (actions <= torch.tensor(space.high)).all()
    mean, _ = actor.mean_and_log_std(obs)
    torch.testing.assert_close(actor.greedy(obs), torch.tensor([1.0, 5.0]) + torch.tensor([2.0, 5.0]) * mean.tanh())


def test_soft_target_by_hand():
    torch.manual_seed(2)
    cfg = sac.Config(hidden_sizes=(8,), alpha=0.5)
    nets = sac.build_networks(cfg, PENDULUM.observation_space, PENDULUM.action_space)
    batch = ReplayBatch(
        obs=torch.randn(5, 3), actions=torch.rand(5, 1) * 4 - 2, rewards=torch.tensor([1.0, -2.0, 0.5, 0.0, 3.0]),
        next_obs=torch.randn(5, 3), terminated=torch.tensor([0.0, 1.0, 0.0, 0.0, 1.0]),
        discounts=torch.full((5,), 0.99), weights=torch.ones(5), indices=np.arange(5), extras={},
    )  # fmt: skip
    torch.manual_seed(3)
    next_values = sac.soft_next_q_values(batch, nets)
    torch.manual_seed(3)  # the same next actions a' ~ pi(.|s')
    next_actions, next_log_probs = nets.actor.sample(batch.next_obs)
    with torch.no_grad():
        q1, q2 = (critic(batch.next_obs, next_actions) for critic in nets.target_critics)
    for i in range(5):
        soft = min(q1[i].item(), q2[i].item()) - 0.5 * next_log_probs[i].item()
        assert next_values[i].item() == pytest.approx(soft, abs=1e-6)
    targets = sac.critic_targets(batch, next_values)
    expected = [1.0 + 0.99 * next_values[0].item(), -2.0, 0.5 + 0.99 * next_values[2].item(),
                0.99 * next_values[3].item(), 3.0]  # fmt: skip
    np.testing.assert_allclose(targets.numpy(), expected, rtol=1e-6)


@pytest.mark.parametrize(("target_entropy", "direction"), [(5.0, 1), (-5.0, -1)])
def test_temperature_rises_below_the_target_entropy_and_falls_above_it(target_entropy, direction):
    # The fresh actor's entropy (in [-1, 1] units, one action dimension) lies between -5 and 5.
    torch.manual_seed(4)
    nets = sac.build_networks(sac.Config(hidden_sizes=(8,)), PENDULUM.observation_space, PENDULUM.action_space)
    batch = ReplayBatch(
        obs=torch.randn(64, 3), actions=torch.rand(64, 1) * 4 - 2, rewards=torch.zeros(64), next_obs=torch.randn(64, 3),
        terminated=torch.zeros(64), discounts=torch.full((64,), 0.99), weights=torch.ones(64),
        indices=np.arange(64), extras={},
    )  # fmt: skip
    stats = sac.update(nets, batch, target_entropy, tau=0.005)
    assert -5.0 < stats["entropy"] < 5.0 and stats["alpha"] == 1.0
    assert np.sign(nets.temperature().item() - 1.0) == direction


def test_fixed_temperature_is_not_learned():
    nets = sac.build_networks(
        sac.Config(hidden_sizes=(8,), alpha=0.2), PENDULUM.observation_space, PENDULUM.action_space
    )
    assert nets.temperature_optimizer is None and not nets.temperature.log_alpha.requires_grad
    assert nets.temperature().item() == pytest.approx(0.2)
    zero = sac.build_networks(
        sac.Config(hidden_sizes=(8,), alpha=0.0), PENDULUM.observation_space, PENDULUM.action_space
    )
    assert zero.temperature().item() == 0.0


def test_learns_pendulum(tmp_path):
    torch.set_num_threads(1)
    cfg = sac.Config(hidden_sizes=(64, 64), batch_size=128)
    returns, run = train(cfg, tmp_path, steps=4_000, seed=0)  # seeds 0-3: -126, -151, -138, -707
    assert returns.mean() >= -400, returns  # a uniform random policy averages about -1,200
    events = EventAccumulator(str(run.run_dir)).Reload()
    assert set(sac.LOGGED.values()) | {"charts/episodic_return"} <= set(events.Tags()["scalars"])
    alphas = [e.value for e in events.Scalars("charts/alpha")]
    assert alphas[-1] < alphas[0] <= 1.0  # the temperature falls as the policy sharpens toward -dim(A) = -1

    arrays, _ = load_checkpoint(run.run_dir)
    act = sac.act_from_checkpoint(arrays, cfg, make_env("Pendulum-v1"))
    replayed = evaluate_policy(make_env("Pendulum-v1"), act, episodes=10, seed=run.spec.seed + 10_000)
    np.testing.assert_array_equal(replayed, returns)  # the checkpoint holds the policy that was evaluated


def test_a_resumed_run_trains_on_the_uninterrupted_runs_steps(tmp_path, logged_steps):
    cfg = sac.Config(hidden_sizes=(8,), learning_starts=100, train_frequency=64, log_every=1, buffer_size=1_000)
    _, whole = train(cfg, tmp_path / "whole", steps=600)
    _, first = train(cfg, tmp_path / "split", steps=300)  # stops between two phases (at 292 and 356)
    _, resumed = train(cfg, tmp_path / "split", steps=600, run_dir=first.run_dir)

    phases = logged_steps(whole.run_dir, "losses/value_loss")
    assert phases[:3] == [100, 164, 228] and logged_steps(resumed.run_dir, "losses/value_loss") == phases


def test_resumes_with_networks_optimisers_temperature_and_buffer(tmp_path):
    cfg = sac.Config(hidden_sizes=(16,), learning_starts=200, train_frequency=50, buffer_size=5_000, num_envs=2)
    _, first = train(cfg, tmp_path, steps=1_000)
    before, _ = load_checkpoint(first.run_dir)
    _, resumed = train(cfg, tmp_path, steps=1_500, run_dir=first.run_dir)
    after, meta = load_checkpoint(resumed.run_dir)
    assert meta["global_step"] == 1_500
    np.testing.assert_array_equal(after["buffer.0.storage.obs"][:1_000], before["buffer.0.storage.obs"])

    def adam_steps(arrays, optimizer):
        return {a.item() for name, a in arrays.items() if name.startswith(optimizer) and name.endswith("step")}

    # Phases at 200, 250, ..., 1000 (17 updates), then 1050, ..., 1500 (10 more), for every optimiser alike.
    for optimizer in ("critic_optimizer.", "actor_optimizer.", "temperature_optimizer."):
        assert adam_steps(before, optimizer) == {17} and adam_steps(after, optimizer) == {27}
    assert after["temperature.log_alpha"] != before["temperature.log_alpha"]


def test_refuses_discrete_actions_and_bad_configs(tmp_path):
    with pytest.raises(UserError, match="Box.*use dqn"):
        train(sac.Config(), tmp_path, steps=100, env_id="CartPole-v1")
    assert not list(tmp_path.iterdir())  # no empty run directory left behind
    for bad in [dict(tau=0.0), dict(alpha=-0.1), dict(initial_alpha=0.0), dict(batch_size=0), dict(gamma=1.5)]:
        with pytest.raises(ValueError):
            sac.Config(**bad)


def test_observation_normalisation_reaches_actor_critics_and_targets_alike(tmp_path):
    cfg = sac.Config(normalize_observation=True, learning_starts=100, batch_size=32, hidden_sizes=(16,))
    returns, run = train(cfg, tmp_path, steps=300)
    arrays, meta = load_checkpoint(run.run_dir)
    stored = arrays["buffer.0.storage.obs"].astype(np.float64)  # raw observations, one row per step
    assert arrays["actor.encoder.obs_count"] == meta["global_step"] == len(stored) == 300
    np.testing.assert_allclose(arrays["actor.encoder.obs_mean"], stored.mean(0), rtol=1e-10)
    for network in ("critics.0", "critics.1", "target_critics.0", "target_critics.1"):
        for key in ("obs_mean", "obs_var", "obs_count"):
            np.testing.assert_array_equal(arrays[f"{network}.encoder.{key}"], arrays[f"actor.encoder.{key}"])
    act = sac.act_from_checkpoint(arrays, cfg, make_env("Pendulum-v1"))
    replayed = evaluate_policy(make_env("Pendulum-v1"), act, episodes=10, seed=run.spec.seed + 10_000)
    np.testing.assert_array_equal(replayed, returns)  # evaluated with the checkpoint's statistics
