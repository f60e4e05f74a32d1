"""QAC and off-policy actor-critic: one update of each by hand, importance weights of 1 when the behaviour is the
target policy (the update is then the on-policy actor-critic's), truncation of rho, every parameter moving,
learning CartPole (QAC) and the grid world from uniform behaviour data (off-policy) to seeded thresholds,
resumption, and errors for spaces that do not fit."""

from __future__ import annotations

import copy
import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn
from torch.distributions import Categorical

import envs  # noqa: F401  (registers GridWorld-v0)
from agents import actor_critic as ac
from agents.reinforce import PolicyNetwork, ValueNetwork
from rl.checkpoint import load_checkpoint
from rl.environments import make_env
from rl.errors import UserError
from rl.evaluation import evaluate_policy
from rl.rollout import Transition
from rl.run import Run, RunSpec

ONE_STATE = gym.spaces.Discrete(1)
TWO_ACTIONS = gym.spaces.Discrete(2)
GRID = {"terminal_target": True, "r_target": 0, "r_forbidden": -10, "r_boundary": -10, "r_other": -1, "start": [1, 1]}
CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("one_thread")


def train(train_fn, cfg, tmp_path, steps, seed=0, env_id="CartPole-v1", env_kwargs=None, run_dir=None, evals=10):
    spec = RunSpec("ac", env_id, env_kwargs or {}, seed, total_steps=steps, runs_dir=str(tmp_path), quiet=True,
                    eval_episodes=evals)  # fmt: skip
    with Run(spec, {}, run_dir=run_dir) as run:
        return train_fn(cfg, run), run


def linear_policy(logits: list[float]) -> PolicyNetwork:
    """A softmax policy over two actions in a single state with the given logits."""
    policy = PolicyNetwork(ONE_STATE, TWO_ACTIONS, (), "ac", "test")
    with torch.no_grad():
        policy.head.logits.weight.zero_()
        policy.head.logits.bias.copy_(torch.tensor(logits))
    return policy


def one_state_steps(actions, rewards, terminated) -> Transition:
    n = len(actions)
    return Transition(np.zeros(n, np.int64), np.array(actions), np.array(rewards, np.float32), np.zeros(n, np.int64),
                      np.array(terminated), np.zeros(n, bool))  # fmt: skip


def sgd(net: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(net.parameters(), lr=1.0)


def test_sarsa_targets_by_hand():
    targets = ac.sarsa_targets(torch.tensor([1.0, 2.0]), torch.tensor([5.0, 7.0]), torch.tensor([0.0, 1.0]), 0.9)
    np.testing.assert_allclose(targets, [5.5, 2.0])


def test_qac_update_by_hand():
    # pi = (1/2, 1/2); q(s, 0) = 1, q(s, 1) = 3. Env 0 takes action 0 (reward 1, goes on), env 1 action 1 (reward 0,
    # terminates). The critic steps first (Algorithm 10.1), then the actor ascends with the updated q'(s_t, a_t):
    # mean_i q'_i (e_{a_i} - pi) = (q'_0 (1/2, -1/2) + q'_1 (-1/2, 1/2)) / 2.
    actor = linear_policy([0.0, 0.0])
    critic = ac.DiscreteQNetwork(ONE_STATE, 2, ())
    with torch.no_grad():
        critic.body[0].weight.zero_()
        critic.body[0].bias.copy_(torch.tensor([1.0, 3.0]))
    t = one_state_steps([0, 1], [1.0, 0.0], [False, True])
    torch.manual_seed(0)
    cfg = ac.QACConfig(gamma=0.9)
    next_actions, stats = ac.qac_update(cfg, t, torch.tensor([0, 1]), actor, critic, sgd(actor), sgd(critic), CPU)
    # Critic: y_0 = 1 + 0.9 q(s, a'_0) with a'_0 ~ pi as returned, y_1 = 0 (terminated); the gradient of
    # 0.5 mean (q_i - y_i)^2 on output a_i is (q_i - y_i) / 2.
    y0 = 1.0 + 0.9 * [1.0, 3.0][int(next_actions[0])]
    np.testing.assert_allclose(critic.body[0].bias.detach(), [1.0 - (1.0 - y0) / 2, 3.0 - 3.0 / 2], atol=1e-6)
    # The one-hot input's weight takes the same step as the bias, so q'_i = q_i - (q_i - y_i) = y_i: q' = (y_0, 0).
    np.testing.assert_allclose(actor.head.logits.bias.detach(), [y0 / 4, -y0 / 4], atol=1e-6)
    assert stats["losses/value_loss"] == pytest.approx(0.5 * ((1.0 - y0) ** 2 + 9.0) / 2)


def test_behaviour_mixes_uniform_and_target():
    pi = torch.tensor([[0.7, 0.2, 0.1]])
    np.testing.assert_allclose(ac.behaviour_probs(pi, 1.0), [[1 / 3, 1 / 3, 1 / 3]])
    np.testing.assert_allclose(ac.behaviour_probs(pi, 0.0), pi)
    np.testing.assert_allclose(ac.behaviour_probs(pi, 0.5), [[0.35 + 1 / 6, 0.1 + 1 / 6, 0.05 + 1 / 6]])


def offpolicy_step(cfg, actor, critic, t, actions, behaviour_log_probs):
    return ac.offpolicy_update(cfg, t, actions, behaviour_log_probs, actor, critic, sgd(actor), sgd(critic), CPU)


@pytest.mark.parametrize(("rho_clip", "rho"), [(None, (1.8, 0.2)), (1.2, (1.2, 0.2))])
def test_offpolicy_update_by_hand_with_and_without_truncation(rho_clip, rho):
    # pi = (0.9, 0.1), uniform behaviour beta = 1/2: rho = (1.8, 0.2), truncated at 1.2 to (1.2, 0.2). v = 0 and both
    # episodes terminate, so delta = r = (2, -1).
    actor = linear_policy([math.log(9.0), 0.0])
    critic = ValueNetwork(ONE_STATE, ())
    nn.init.zeros_(critic.body[0].weight), nn.init.zeros_(critic.body[0].bias)
    t = one_state_steps([0, 1], [2.0, -1.0], [True, True])
    cfg = ac.OffPolicyACConfig(rho_clip=rho_clip)
    stats = offpolicy_step(cfg, actor, critic, t, torch.tensor([0, 1]), torch.full((2,), math.log(0.5)))
    assert stats["charts/importance_weight"] == pytest.approx(np.mean(rho))
    # Actor ascent mean_i rho_i delta_i (e_{a_i} - pi) = (rho_0 2 (0.1, -0.1) + rho_1 (-1) (-0.9, 0.9)) / 2.
    step = (rho[0] * 2 * 0.1 + rho[1] * 0.9) / 2
    np.testing.assert_allclose(actor.head.logits.bias.detach(), [math.log(9.0) + step, -step], rtol=1e-5)
    # Critic ascent mean_i rho_i delta_i on v's bias (and on its weight, whose input is the one-hot 1).
    np.testing.assert_allclose(critic.body[0].bias.detach(), [(rho[0] * 2 - rho[1]) / 2], rtol=1e-5)


def test_behaviour_equal_to_target_gives_weights_of_one_and_the_on_policy_update():
    env = make_env("CartPole-v1")
    torch.manual_seed(0)
    actor = PolicyNetwork(env.observation_space, env.action_space, (8,), "ac", "CartPole-v1")
    critic = ValueNetwork(env.observation_space, (8,))
    actor_ref, critic_ref = copy.deepcopy(actor), copy.deepcopy(critic)
    obs, next_obs = torch.randn(3, 4), torch.randn(3, 4)
    rewards, terminated = torch.tensor([1.0, 1.0, 1.0]), torch.tensor([0.0, 1.0, 0.0])
    with torch.no_grad():
        beta = Categorical(probs=ac.behaviour_probs(actor(obs).probs, behaviour_epsilon=0.0))
        actions = beta.sample()
    t = Transition(obs.numpy(), actions.numpy(), rewards.numpy(), next_obs.numpy(), terminated.bool().numpy(),
                   np.zeros(3, bool))  # fmt: skip
    cfg = ac.OffPolicyACConfig(behaviour_epsilon=0.0, gamma=0.9)
    stats = offpolicy_step(cfg, actor, critic, t, actions, beta.log_prob(actions))
    assert stats["charts/importance_weight"] == pytest.approx(1.0, abs=1e-6)

    # The on-policy actor-critic with a v critic (book 10.2), written out independently.
    values = critic_ref(obs)
    deltas = (rewards + 0.9 * (1 - terminated) * critic_ref(next_obs) - values).detach()
    actor_loss = -(deltas * actor_ref(obs).log_prob(actions)).mean()
    critic_loss = -(deltas * values).mean()  # semi-gradient: its gradient is -mean delta grad v
    for loss, net in ((actor_loss, actor_ref), (critic_loss, critic_ref)):
        optimizer = sgd(net)
        optimizer.zero_grad(), loss.backward(), optimizer.step()
    for net, ref in ((actor, actor_ref), (critic, critic_ref)):
        for p, p_ref in zip(net.parameters(), ref.parameters(), strict=True):
            torch.testing.assert_close(p, p_ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_every_parameter_changes_after_one_qac_update(env_id):
    env = make_env(env_id)
    actor = PolicyNetwork(env.observation_space, env.action_space, (8,), "qac", env_id)
    critic = ac.q_network(env.observation_space, env.action_space, (8,), "qac", env_id)
    before = [p.detach().clone() for p in [*actor.parameters(), *critic.parameters()]]
    obs = np.stack([env.observation_space.sample() for _ in range(4)])
    with torch.no_grad():
        actions = actor(torch.as_tensor(obs)).sample()
    t = Transition(obs, actions.numpy(), np.ones(4, np.float32), obs, np.zeros(4, bool), np.zeros(4, bool))
    adam = [torch.optim.Adam(net.parameters(), lr=1e-2) for net in (actor, critic)]
    ac.qac_update(ac.QACConfig(), t, actions, actor, critic, *adam, CPU)
    after = [*actor.parameters(), *critic.parameters()]
    assert all(not torch.equal(b, a) for b, a in zip(before, after, strict=True))


def test_every_parameter_changes_after_one_offpolicy_update():
    env = make_env("CartPole-v1")
    actor = PolicyNetwork(env.observation_space, env.action_space, (8,), "ac", "CartPole-v1")
    critic = ValueNetwork(env.observation_space, (8,))
    before = [p.detach().clone() for p in [*actor.parameters(), *critic.parameters()]]
    obs = np.stack([env.observation_space.sample() for _ in range(4)])
    actions = torch.tensor([0, 1, 1, 0])
    t = Transition(obs, actions.numpy(), np.ones(4, np.float32), obs[::-1].copy(), np.zeros(4, bool), np.zeros(4, bool))
    adam = [torch.optim.Adam(net.parameters(), lr=1e-2) for net in (actor, critic)]
    ac.offpolicy_update(ac.OffPolicyACConfig(), t, actions, torch.full((4,), math.log(0.5)), actor, critic, *adam, CPU)
    after = [*actor.parameters(), *critic.parameters()]
    assert all(not torch.equal(b, a) for b, a in zip(before, after, strict=True))


def test_qac_learns_cartpole(tmp_path):
    returns, run = train(ac.train_qac, ac.QACConfig(), tmp_path, steps=24_000, seed=0)
    assert returns.mean() >= 150  # a uniform policy averages about 22
    tags = set(EventAccumulator(str(run.run_dir)).Reload().Tags()["scalars"])
    assert {"losses/policy_loss", "losses/value_loss", "charts/entropy", "charts/episodic_return"} <= tags


def test_offpolicy_ac_learns_the_grid_world_from_uniform_behaviour(tmp_path):
    cfg = ac.OffPolicyACConfig()
    returns, run = train(ac.train_offpolicy_ac, cfg, tmp_path, steps=16_000, env_id="GridWorld-v0", env_kwargs=GRID)
    # The greedy target policy reaches the target from (1, 1); the best path scores -10, one through a forbidden
    # cell -13, a policy that never arrives -100 or less, and the uniform behaviour about -270.
    assert returns.mean() >= -13
    events = EventAccumulator(str(run.run_dir)).Reload()
    rhos = [e.value for e in events.Scalars("charts/importance_weight")]
    assert all(0.0 < rho < 5.0 for rho in rhos)  # pi / (1/5) is at most 5
    behaviour_returns = [e.value for e in events.Scalars("charts/episodic_return")]
    assert np.mean(behaviour_returns) < -100  # the data came from the uniform policy all along

    arrays, _ = load_checkpoint(run.run_dir)
    env = make_env("GridWorld-v0", GRID)
    replayed = evaluate_policy(env, ac.offpolicy_act_from_checkpoint(arrays, cfg, env), 10, seed=run.spec.seed + 10_000)
    np.testing.assert_array_equal(replayed, returns)


def test_qac_resumes_with_actor_critic_and_optimisers(tmp_path):
    cfg = ac.QACConfig(hidden_sizes=(16,), num_envs=4)
    _, first = train(ac.train_qac, cfg, tmp_path, steps=400, evals=1)
    before, _ = load_checkpoint(first.run_dir)
    _, resumed = train(ac.train_qac, cfg, tmp_path, steps=800, run_dir=first.run_dir, evals=1)
    after, _ = load_checkpoint(resumed.run_dir)

    def adam_steps(arrays, prefix):
        return {a.item() for name, a in arrays.items() if name.startswith(prefix) and name.endswith("step")}

    for prefix in ("actor_optimizer.", "critic_optimizer."):  # one update per step of the 4 envs
        assert adam_steps(before, prefix) == {100} and adam_steps(after, prefix) == {200}
    assert not np.array_equal(before["critic.body.0.weight"], after["critic.body.0.weight"])


def test_spaces_that_do_not_fit_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="Discrete action.*uniform behaviour"):
        train(ac.train_offpolicy_ac, ac.OffPolicyACConfig(), tmp_path, steps=100, env_id="Pendulum-v1")
    with pytest.raises(UserError, match="Box or Discrete observation"):
        train(ac.train_qac, ac.QACConfig(), tmp_path, steps=100, env_id="TextToy-v0")
    assert not list(tmp_path.iterdir())  # no empty run directory left behind


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="behaviour_epsilon"):
        ac.OffPolicyACConfig(behaviour_epsilon=1.5)
    with pytest.raises(ValueError, match="rho_clip"):
        ac.OffPolicyACConfig(rho_clip=0.0)
    with pytest.raises(ValueError, match="num_envs"):
        ac.QACConfig(num_envs=0)
