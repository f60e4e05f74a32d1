"""TRPO: each policy step keeps the KL, measured after the step, within max_kl and improves the surrogate; every
parameter moves in one update; learning CartPole to a seeded threshold with every logged KL within the trust region;
Pendulum's continuous actions; resumption with the critic's Adam state; the errors for spaces and configs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from agents import trpo
from rl.advantages import normalize
from rl.checkpoint import load_checkpoint
from rl.environments import make_env, make_vector_env
from rl.errors import UserError
from rl.evaluation import evaluate_policy
from rl.onpolicy import collect, flatten
from rl.rollout import Rollout
from rl.run import Run, RunSpec

pytestmark = pytest.mark.usefixtures("one_thread")


def train(cfg, tmp_path, steps, seed=0, env_id="CartPole-v1", run_dir=None):
    spec = RunSpec("trpo", env_id, {}, seed, total_steps=steps, runs_dir=str(tmp_path), quiet=True, eval_episodes=10)
    with Run(spec, {}, run_dir=run_dir) as run:
        return trpo.train(cfg, run), run


def network_and_samples(cfg, env_id, num_steps=64, seed=0):
    torch.manual_seed(seed)
    env = make_vector_env(env_id, cfg.num_envs)
    network = trpo.build_network(cfg, env.single_observation_space, env.single_action_space, env_id)
    return network, flatten(collect(Rollout(env, seed=seed), network, num_steps, cfg.gamma, cfg.gae_lambda))


def kl_between(before, after, env_id):
    """Mean KL(before || after) by its closed form, independent of torch.distributions.kl."""
    if env_id == "CartPole-v1":
        p, q = before.probs, after.probs
        return (p * (p.log() - q.log())).sum(-1).mean().item()
    mu0, s0, mu1, s1 = before.mean, before.stddev, after.mean, after.stddev
    return (torch.log(s1 / s0) + (s0**2 + (mu0 - mu1) ** 2) / (2 * s1**2) - 0.5).sum(-1).mean().item()


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
@pytest.mark.parametrize("max_kl", [0.01, 0.001])
def test_every_policy_step_keeps_the_kl_within_max_kl(env_id, max_kl):
    cfg = trpo.Config(num_envs=2, max_kl=max_kl)
    network, samples = network_and_samples(cfg, env_id)
    advantages = normalize(samples.advantages)
    accepted = 0
    for _ in range(4):  # successive steps, each from the policy the last one left
        with torch.no_grad():
            before = network.distribution(samples.obs)
        critic = [p.detach().clone() for p in network.critic_parameters()]
        loss_before, step = trpo.natural_gradient_step(cfg, network, samples, advantages)
        with torch.no_grad():
            after = network.distribution(samples.obs)
        measured = kl_between(before, after, env_id)
        assert measured <= max_kl * (1 + 1e-5)
        assert measured == pytest.approx(step.kl, rel=1e-4, abs=1e-9)
        assert all(torch.equal(p, c) for p, c in zip(network.critic_parameters(), critic, strict=True))
        if step.accepted:
            accepted += 1
            assert step.improvement > 0 and 0 < step.step_fraction <= 1
            assert measured > 0.1 * max_kl  # the step is scaled up to the trust region, not a tiny one
        # Later steps reuse the first batch's old log-probs, so the surrogate keeps pointing somewhere new.
        samples = type(samples)(samples.obs, samples.actions, after.log_prob(samples.actions), samples.old_values,
                                samples.advantages, samples.returns)  # fmt: skip
    assert accepted >= 3


def test_one_update_changes_every_trainable_parameter():
    for env_id in ("CartPole-v1", "Pendulum-v1"):
        cfg = trpo.Config(num_envs=2, n_critic_updates=2, batch_size=64)
        network, samples = network_and_samples(cfg, env_id)
        optimizer = torch.optim.Adam(network.critic_parameters(), lr=cfg.critic_learning_rate)
        before = {name: p.detach().clone() for name, p in network.named_parameters()}
        _, step = trpo.natural_gradient_step(cfg, network, samples, normalize(samples.advantages))
        assert step.accepted
        trpo.critic_updates(cfg, network, optimizer, samples, np.random.default_rng(0))
        for name, p in network.named_parameters():
            assert not torch.equal(before[name], p), (env_id, name)


def test_trpo_learns_cartpole_within_the_trust_region(tmp_path):
    cfg = trpo.Config()
    returns, run = train(cfg, tmp_path, steps=6_000, seed=1)
    assert returns.mean() >= 150  # a uniform policy averages about 22
    events = EventAccumulator(str(run.run_dir)).Reload()
    tags = set(events.Tags()["scalars"])
    assert {"losses/policy_loss", "losses/value_loss", "charts/entropy", "charts/approx_kl"} <= tags
    kls = np.array([e.value for e in events.Scalars("charts/approx_kl")])
    assert len(kls) == -(-6_000 // 1024) and (kls <= cfg.max_kl).all() and (kls > 0).sum() >= len(kls) - 1

    arrays, _ = load_checkpoint(run.run_dir)
    act = trpo.act_from_checkpoint(arrays, cfg, make_env("CartPole-v1"))
    replayed = evaluate_policy(make_env("CartPole-v1"), act, episodes=10, seed=run.spec.seed + 10_000)
    np.testing.assert_array_equal(replayed, returns)  # the checkpoint holds the policy that was evaluated


def test_trpo_runs_on_continuous_actions(tmp_path):
    cfg = trpo.Config(n_steps=128, batch_size=128, n_critic_updates=2)
    returns, run = train(cfg, tmp_path, steps=512, env_id="Pendulum-v1")
    assert returns.shape == (10,) and np.isfinite(returns).all()
    kls = [e.value for e in EventAccumulator(str(run.run_dir)).Reload().Scalars("charts/approx_kl")]
    assert len(kls) == 2 and max(kls) <= cfg.max_kl
    arrays, _ = load_checkpoint(run.run_dir)
    action = trpo.act_from_checkpoint(arrays, cfg, make_env("Pendulum-v1"))(np.zeros(3))
    assert action.shape == (1,) and -2.0 <= action[0] <= 2.0


def test_trpo_resumes_with_network_and_critic_optimiser(tmp_path):
    cfg = trpo.Config(n_steps=32, batch_size=32, n_critic_updates=2)
    _, first = train(cfg, tmp_path, steps=256)
    before, before_meta = load_checkpoint(first.run_dir)
    _, resumed = train(cfg, tmp_path, steps=384, run_dir=first.run_dir)
    after, after_meta = load_checkpoint(resumed.run_dir)
    assert (before_meta["global_step"], after_meta["global_step"]) == (256, 384)

    def adam_steps(arrays):
        return {a.item() for n, a in arrays.items() if n.startswith("critic_optimizer.") and n.endswith("step")}

    assert adam_steps(before) == {4 * 2 * 2} and adam_steps(after) == {6 * 2 * 2}  # updates x passes x minibatches
    assert not np.array_equal(before["network.policy_head.logits.weight"], after["network.policy_head.logits.weight"])


def test_trpo_refuses_unsupported_spaces(tmp_path):
    with pytest.raises(UserError, match="trpo needs a Box or Discrete observation space.*TextToy"):
        train(trpo.Config(), tmp_path, steps=100, env_id="TextToy-v0")
    assert not list(tmp_path.iterdir())


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="max_kl"):
        trpo.Config(max_kl=0.0)
    with pytest.raises(ValueError, match="line_search_coeff"):
        trpo.Config(line_search_coeff=1.0)
