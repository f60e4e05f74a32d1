"""A2C: one update moves every parameter, by the gradient of the hand-written loss; learning CartPole to a seeded
threshold with the logged tags and checkpoint replay; Pendulum's continuous actions; resumption with the optimiser's
state; same seed, same run; and the errors for spaces and configs that do not fit."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from agents import a2c
from rl.checkpoint import load_checkpoint
from rl.environments import make_env, make_vector_env
from rl.errors import UserError
from rl.evaluation import evaluate_policy
from rl.onpolicy import collect, flatten
from rl.rollout import Rollout
from rl.run import Run, RunSpec

pytestmark = pytest.mark.usefixtures("one_thread")


def train(cfg, tmp_path, steps, seed=0, env_id="CartPole-v1", run_dir=None):
    spec = RunSpec("a2c", env_id, {}, seed, total_steps=steps, runs_dir=str(tmp_path), quiet=True, eval_episodes=10)
    with Run(spec, {}, run_dir=run_dir) as run:
        return a2c.train(cfg, run), run


def network_and_batch(cfg, env_id, num_steps=16):
    torch.manual_seed(0)
    env = make_vector_env(env_id, cfg.num_envs)
    network = a2c.build_network(cfg, env.single_observation_space, env.single_action_space, env_id)
    return network, collect(Rollout(env, seed=0), network, num_steps, cfg.gamma, cfg.gae_lambda)


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
@pytest.mark.parametrize("optimizer", ["rmsprop", "adam"])
def test_one_update_changes_every_trainable_parameter(env_id, optimizer):
    cfg = a2c.Config(num_envs=4, optimizer=optimizer, ent_coef=0.01, normalize_advantage=True)
    network, batch = network_and_batch(cfg, env_id)
    before = {name: p.detach().clone() for name, p in network.named_parameters()}
    a2c.update(cfg, network, a2c.build_optimizer(cfg, network), batch)
    for name, p in network.named_parameters():
        assert not torch.equal(before[name], p), name


def test_update_follows_the_gradient_of_the_a2c_loss():
    cfg = a2c.Config(num_envs=4, vf_coef=0.7, ent_coef=0.05, max_grad_norm=1e9)
    network, batch = network_and_batch(cfg, "CartPole-v1")
    samples = flatten(batch)
    # The loss written out: -mean(log pi A) + vf_coef 0.5 mean((V - R)^2) - ent_coef mean(H).
    distribution = network.distribution(samples.obs)
    by_hand = (
        -(distribution.log_prob(samples.actions) * samples.advantages).mean()
        + 0.7 * 0.5 * ((network.value(samples.obs) - samples.returns) ** 2).mean()
        - 0.05 * distribution.entropy().mean()
    )
    expected = torch.autograd.grad(by_hand, list(network.parameters()))
    before = [p.detach().clone() for p in network.parameters()]
    sgd = torch.optim.SGD(network.parameters(), lr=1.0)  # one step of lr 1 moves each parameter by -gradient
    a2c.update(cfg, network, sgd, batch)
    for p, p0, g in zip(network.parameters(), before, expected, strict=True):
        torch.testing.assert_close(p0 - p.detach(), g, rtol=1e-4, atol=1e-6)


def test_a2c_learns_cartpole(tmp_path):
    returns, run = train(a2c.Config(), tmp_path, steps=6_000, seed=2)
    assert returns.mean() >= 150  # a uniform policy averages about 22
    events = EventAccumulator(str(run.run_dir)).Reload()
    tags = set(events.Tags()["scalars"])
    assert {"losses/policy_loss", "losses/value_loss", "charts/entropy", "charts/episodic_return"} <= tags
    entropies = [e.value for e in events.Scalars("charts/entropy")]
    cfg = a2c.Config()
    assert len(entropies) == -(-6_000 // (cfg.n_steps * cfg.num_envs))  # one per update, the last one shortened
    assert entropies[0] == pytest.approx(np.log(2), abs=0.01)
    assert entropies[-1] < entropies[0]  # the policy became more certain

    arrays, meta = load_checkpoint(run.run_dir)
    assert meta["global_step"] == 6_000
    act = a2c.act_from_checkpoint(arrays, a2c.Config(), make_env("CartPole-v1"))
    replayed = evaluate_policy(make_env("CartPole-v1"), act, episodes=10, seed=run.spec.seed + 10_000)
    np.testing.assert_array_equal(replayed, returns)  # the checkpoint holds the policy that was evaluated


def test_a2c_runs_on_continuous_actions(tmp_path):
    returns, run = train(a2c.Config(num_envs=4), tmp_path, steps=400, env_id="Pendulum-v1")
    assert returns.shape == (10,) and np.isfinite(returns).all() and (returns >= -16.3 * 200).all()
    losses = EventAccumulator(str(run.run_dir)).Reload().Scalars("losses/value_loss")
    assert len(losses) == -(-400 // (a2c.Config().n_steps * 4)) and np.isfinite([e.value for e in losses]).all()
    arrays, _ = load_checkpoint(run.run_dir)
    action = a2c.act_from_checkpoint(arrays, a2c.Config(num_envs=4), make_env("Pendulum-v1"))(np.zeros(3))
    assert action.shape == (1,) and -2.0 <= action[0] <= 2.0


def test_a2c_resumes_with_network_and_optimiser(tmp_path):
    cfg = a2c.Config(num_envs=2, n_steps=5)
    _, first = train(cfg, tmp_path, steps=400)
    before, before_meta = load_checkpoint(first.run_dir)
    _, resumed = train(cfg, tmp_path, steps=600, run_dir=first.run_dir)
    after, after_meta = load_checkpoint(resumed.run_dir)
    assert (before_meta["global_step"], after_meta["global_step"]) == (400, 600)

    def optimiser_steps(arrays):
        return {a.item() for name, a in arrays.items() if name.startswith("optimizer.") and name.endswith("step")}

    assert optimiser_steps(before) == {40} and optimiser_steps(after) == {60}  # 10 steps per update, counting on
    assert not np.array_equal(before["network.critic.0.weight"], after["network.critic.0.weight"])


def test_same_seed_same_run(tmp_path):
    cfg = a2c.Config(num_envs=2)
    runs = [load_checkpoint(train(cfg, tmp_path, steps=200, seed=3)[1].run_dir)[0] for _ in range(2)]
    for name in ("network.actor_body.0.0.weight", "network.critic.2.weight"):
        np.testing.assert_array_equal(runs[0][name], runs[1][name])


def test_a2c_refuses_unsupported_spaces(tmp_path):
    with pytest.raises(UserError, match="a2c needs a Box or Discrete observation space.*TextToy"):
        train(a2c.Config(), tmp_path, steps=100, env_id="TextToy-v0")
    assert not list(tmp_path.iterdir())  # no empty run directory left behind


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="n_steps"):
        a2c.Config(n_steps=0)
    with pytest.raises(ValueError, match="gae_lambda"):
        a2c.Config(gae_lambda=1.5)
