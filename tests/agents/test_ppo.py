"""PPO: every parameter moves in one update, the KL target stops an update early, learning CartPole to a seeded
threshold with approx_kl and clip_fraction logged, Pendulum's continuous actions, resumption with Adam's state,
and the errors for spaces and configs that do not fit."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.wrappers import TransformObservation
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from agents import ppo
from rl.checkpoint import load_checkpoint
from rl.environments import make_env, make_vector_env
from rl.errors import UserError
from rl.evaluation import evaluate_policy
from rl.onpolicy import collect
from rl.rollout import Rollout
from rl.run import Run, RunSpec

pytestmark = pytest.mark.usefixtures("one_thread")


def train(cfg, tmp_path, steps, seed=0, env_id="CartPole-v1", run_dir=None):
    spec = RunSpec("ppo", env_id, {}, seed, total_steps=steps, runs_dir=str(tmp_path), quiet=True, eval_episodes=10)
    with Run(spec, {}, run_dir=run_dir) as run:
        return ppo.train(cfg, run), run


def network_optimizer_batch(cfg, env_id, num_steps=16):
    torch.manual_seed(0)
    env = make_vector_env(env_id, cfg.num_envs)
    network = ppo.build_network(cfg, env.single_observation_space, env.single_action_space, env_id)
    optimizer = torch.optim.Adam(network.parameters(), lr=cfg.learning_rate)
    return network, optimizer, collect(Rollout(env, seed=0), network, num_steps, cfg.gamma, cfg.gae_lambda)


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
@pytest.mark.parametrize("clip_range_vf", [None, 0.2])
def test_one_update_changes_every_trainable_parameter(env_id, clip_range_vf):
    cfg = ppo.Config(num_envs=4, batch_size=16, n_epochs=2, clip_range_vf=clip_range_vf, ent_coef=0.01)
    network, optimizer, batch = network_optimizer_batch(cfg, env_id)
    before = {name: p.detach().clone() for name, p in network.named_parameters()}
    stats = ppo.update(cfg, network, optimizer, batch, cfg.clip_range, np.random.default_rng(0))
    assert len(stats) == 2 * 64 // 16
    assert stats[0].approx_kl == pytest.approx(0.0, abs=1e-7) and stats[0].clip_fraction == 0.0  # ratio 1 at first
    assert stats[-1].approx_kl > 0
    for name, p in network.named_parameters():
        assert not torch.equal(before[name], p), name


def test_target_kl_stops_the_update_before_the_minibatch_that_passes_it():
    cfg = ppo.Config(num_envs=4, batch_size=16, n_epochs=10, target_kl=1e-7, learning_rate=1e-2)
    network, optimizer, batch = network_optimizer_batch(cfg, "CartPole-v1")
    stats = ppo.update(cfg, network, optimizer, batch, cfg.clip_range, np.random.default_rng(0))
    # The first minibatch sees the old policy (KL 0) and steps; the second sees a KL above 1.5e-7 and stops.
    assert len(stats) == 1
    assert optimizer.state_dict()["state"][0]["step"].item() == 1


def test_ppo_learns_cartpole_and_logs_kl_and_clip_fraction(tmp_path):
    returns, run = train(ppo.Config(), tmp_path, steps=6_000, seed=0)
    assert returns.mean() >= 150  # a uniform policy averages about 22
    events = EventAccumulator(str(run.run_dir)).Reload()
    tags = set(events.Tags()["scalars"])
    assert {"losses/policy_loss", "losses/value_loss", "charts/entropy", "charts/approx_kl",
            "charts/clip_fraction", "charts/episodic_return"} <= tags  # fmt: skip
    approx_kl = np.array([e.value for e in events.Scalars("charts/approx_kl")])
    clip_fraction = np.array([e.value for e in events.Scalars("charts/clip_fraction")])
    assert len(approx_kl) == len(clip_fraction) == -(-6_000 // 256)
    assert (approx_kl >= 0).all() and approx_kl.max() > 1e-4
    assert ((clip_fraction >= 0) & (clip_fraction <= 1)).all() and clip_fraction.max() > 0.01

    arrays, meta = load_checkpoint(run.run_dir)
    assert meta["global_step"] == 6_000  # the last iteration was shortened to end on the budget
    act = ppo.act_from_checkpoint(arrays, ppo.Config(), make_env("CartPole-v1"))
    replayed = evaluate_policy(make_env("CartPole-v1"), act, episodes=10, seed=run.spec.seed + 10_000)
    np.testing.assert_array_equal(replayed, returns)  # the checkpoint holds the policy that was evaluated


def scaled_cartpole(**kwargs) -> gym.Env:
    """CartPole with observations in the hundreds and thousands, where tanh layers saturate."""
    env = gym.make("CartPole-v1", **kwargs)
    scale = np.array([100.0, 100.0, 1000.0, 100.0], dtype=np.float32)
    space = gym.spaces.Box(env.observation_space.low * scale, env.observation_space.high * scale, dtype=np.float32)
    return TransformObservation(env, lambda obs: (obs * scale).astype(np.float32), space)


if "ScaledCartPole-v0" not in gym.registry:
    gym.register("ScaledCartPole-v0", entry_point=scaled_cartpole)


@pytest.mark.slow
def test_observation_normalisation_learns_badly_scaled_observations(tmp_path):
    # 50,000 steps, seeds 0-2: greedy returns 500, 500, 500 with normalisation and 320, 205, 329 without.
    cfg = ppo.Config(normalize_observation=True)
    normalised, run = train(cfg, tmp_path, steps=50_000, env_id="ScaledCartPole-v0")
    raw, _ = train(ppo.Config(), tmp_path, steps=50_000, env_id="ScaledCartPole-v0")
    assert normalised.mean() >= 475 and raw.mean() <= 400
    arrays, _ = load_checkpoint(run.run_dir)
    assert arrays["network.encoder.obs_count"] == 50_000  # every collected observation, once
    act = ppo.act_from_checkpoint(arrays, cfg, make_env("ScaledCartPole-v0"))
    replayed = evaluate_policy(make_env("ScaledCartPole-v0"), act, episodes=10, seed=run.spec.seed + 10_000)
    np.testing.assert_array_equal(replayed, normalised)  # evaluated with the checkpoint's statistics


def test_ppo_runs_on_continuous_actions(tmp_path):
    cfg = ppo.Config(num_envs=2, n_steps=64, batch_size=64, n_epochs=2)
    returns, run = train(cfg, tmp_path, steps=512, env_id="Pendulum-v1")
    assert returns.shape == (10,) and np.isfinite(returns).all()
    losses = EventAccumulator(str(run.run_dir)).Reload().Scalars("losses/value_loss")
    assert len(losses) == 4 and np.isfinite([e.value for e in losses]).all()
    arrays, _ = load_checkpoint(run.run_dir)
    action = ppo.act_from_checkpoint(arrays, cfg, make_env("Pendulum-v1"))(np.zeros(3))
    assert action.shape == (1,) and -2.0 <= action[0] <= 2.0


def test_ppo_resumes_with_network_and_optimiser(tmp_path):
    cfg = ppo.Config(num_envs=2, n_steps=16, batch_size=16, n_epochs=2)
    _, first = train(cfg, tmp_path, steps=320)
    before, before_meta = load_checkpoint(first.run_dir)
    _, resumed = train(cfg, tmp_path, steps=480, run_dir=first.run_dir)
    after, after_meta = load_checkpoint(resumed.run_dir)
    assert (before_meta["global_step"], after_meta["global_step"]) == (320, 480)

    def adam_steps(arrays):
        return {a.item() for name, a in arrays.items() if name.startswith("optimizer.") and name.endswith("step")}

    # 10 updates of 2 epochs of 2 minibatches, then 5 more updates.
    assert adam_steps(before) == {10 * 4} and adam_steps(after) == {15 * 4}
    assert not np.array_equal(before["network.critic.0.weight"], after["network.critic.0.weight"])


def test_ppo_refuses_unsupported_spaces(tmp_path):
    with pytest.raises(UserError, match="ppo needs a Box or Discrete observation space.*TextToy"):
        train(ppo.Config(), tmp_path, steps=100, env_id="TextToy-v0")
    assert not list(tmp_path.iterdir())


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="clip_range"):
        ppo.Config(clip_range=0.0)
    with pytest.raises(ValueError, match="target_kl"):
        ppo.Config(target_kl=-0.1)
