"""DDPG and TD3: critic targets (twin minimum, clipped target smoothing) by hand, termination against truncation
through the replay buffer, Polyak averaging, which parameters an update moves, the exploration noise processes,
Pendulum learned to a seeded threshold, checkpoint replay, resumption with networks, optimisers, buffer and the
delay counter, and the errors for action spaces that do not fit."""

from __future__ import annotations

from functools import partial

import gymnasium as gym
import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

from agents import ddpg, ddpg_networks
from rl import exploration
from rl.checkpoint import load_checkpoint
from rl.environments import make_env
from rl.errors import UserError
from rl.evaluation import evaluate_policy
from rl.networks import polyak_update
from rl.replay_buffer import ReplayBatch, ReplayBuffer
from rl.run import Run, RunSpec

TRAIN = {"ddpg": ddpg.train_ddpg, "td3": ddpg.train_td3}


def train(agent, cfg, tmp_path, steps, seed=0, env_id="Pendulum-v1", run_dir=None):
    spec = RunSpec(agent, env_id, {}, seed, total_steps=steps, runs_dir=str(tmp_path), quiet=True, eval_episodes=10)
    with Run(spec, {}, run_dir=run_dir) as run:
        return TRAIN[agent](cfg, run), run


def batch_of(rewards, terminated, discounts, next_obs) -> ReplayBatch:
    n = len(rewards)
    return ReplayBatch(
        obs=torch.zeros(n, 1),
        actions=torch.zeros(n, 1),
        rewards=torch.tensor(rewards),
        next_obs=torch.tensor(next_obs).reshape(n, 1),
        terminated=torch.tensor(terminated),
        discounts=torch.tensor(discounts),
        weights=torch.ones(n),
        indices=np.arange(n),
        extras={},
    )


class LinearActor(nn.Module):
    """A stand-in actor mu(s) = slope * s + offset, with the bounds [-2, 2] of Pendulum's torque."""

    def __init__(self, slope: float, offset: float = 0.0) -> None:
        super().__init__()
        self.slope, self.offset = slope, offset
        self.half_range, self.middle = torch.tensor([2.0]), torch.tensor([0.0])

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.slope * obs + self.offset


class FormulaCritic(nn.Module):
    """A stand-in critic q(s, a) = formula(s, a)."""

    def __init__(self, formula) -> None:
        super().__init__()
        self.formula = formula

    def forward(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return self.formula(obs[:, 0], actions[:, 0])


def test_ddpg_critic_targets_by_hand():
    batch = batch_of([1.0, 2.0, -1.0], [0.0, 1.0, 0.0], [0.9, 0.9, 0.9], next_obs=[1.0, 2.0, 3.0])
    actor = LinearActor(slope=0.5)  # mu'(s') = 0.5, 1.0, 1.5
    critics = nn.ModuleList([FormulaCritic(lambda s, a: s + 2 * a)])  # q'(s', mu'(s')) = 2, 4, 6
    next_q = ddpg.ddpg_next_q_values(batch, actor, critics)
    np.testing.assert_allclose(next_q, [2.0, 4.0, 6.0])
    # 1 + 0.9 * 2; terminated: 2 with no bootstrap term; -1 + 0.9 * 6
    np.testing.assert_allclose(ddpg.critic_targets(batch, next_q), [2.8, 2.0, 4.4], rtol=1e-6)


def test_td3_critic_targets_take_the_min_of_the_twins_at_clipped_smoothed_actions():
    torch.manual_seed(0)
    batch = batch_of([1.0, 1.0], [0.0, 0.0], [0.5, 0.5], next_obs=[0.0, 3.0])
    actor = LinearActor(slope=0.0)  # mu'(s') = 0
    # A huge smoothing noise is always clipped, to +-0.25 half-ranges = +-0.5 torque: a~ = +-0.5 and a~^2 = 0.25.
    twins = nn.ModuleList([FormulaCritic(lambda s, a: s + 4 * a**2), FormulaCritic(lambda s, a: 2 + a**2)])
    for _ in range(20):
        next_q = ddpg.td3_next_q_values(batch, actor, twins, target_noise=1e6, target_noise_clip=0.25)
        # twin values (1, 2.25) and (4, 2.25): the minimum comes from the first twin, then from the second
        np.testing.assert_allclose(next_q, [1.0, 2.25])
        np.testing.assert_allclose(ddpg.critic_targets(batch, next_q), [1.5, 2.125])


def test_smoothed_target_actions_clip_the_noise_then_the_action():
    torch.manual_seed(0)
    half_range, middle = torch.tensor([2.0]), torch.tensor([0.0])
    next_actions = torch.tensor([[0.0], [1.9], [-1.9]]).repeat(1_000, 1)
    smoothed = ddpg.smoothed_target_actions(next_actions, half_range, middle, noise=1e6, noise_clip=0.25)
    # noise clipped to +-0.25 * 2 = +-0.5, then the action clipped into [-2, 2]
    for start, allowed in [(0.0, {-0.5, 0.5}), (1.9, {1.4, 2.0}), (-1.9, {-2.0, -1.4})]:
        values = np.unique(smoothed[next_actions == start].numpy())
        np.testing.assert_allclose(values, sorted(allowed), rtol=1e-6, err_msg=str(start))

    eps = ddpg.smoothed_target_actions(torch.zeros(200_000, 1), half_range, middle, noise=0.2, noise_clip=0.5) / 2
    assert eps.abs().max().item() == pytest.approx(0.5)  # 2.5 sigma: about 1.2 % of the draws are clipped
    assert (eps.abs() == 0.5).float().mean().item() == pytest.approx(0.0124, abs=0.002)
    assert eps[eps.abs() < 0.5].std().item() == pytest.approx(0.2, rel=0.05)  # the inner part is N(0, 0.2^2)


def test_truncation_bootstraps_and_termination_does_not_through_the_buffer():
    buffer = ReplayBuffer(8, (1,), action_shape=(1,), action_dtype=np.float32, gamma=0.9)
    buffer.add([[0.0]], [[0.5]], [1.0], [[1.0]], terminated=[False], truncated=[True])  # time limit: bootstrap
    buffer.add([[1.0]], [[0.5]], [2.0], [[2.0]], terminated=[True], truncated=[False])  # a real end: no bootstrap
    batch = buffer.sample(64, np.random.default_rng(0))
    targets = ddpg.critic_targets(batch, next_q_values=torch.full((64,), 10.0))
    expected = torch.where(batch.rewards == 1.0, 1.0 + 0.9 * 10.0, 2.0)
    assert set(batch.rewards.tolist()) == {1.0, 2.0}
    np.testing.assert_allclose(targets, expected, rtol=1e-6)


def test_critic_and_actor_losses_by_hand():
    q_values = torch.tensor([[1.0, 2.0], [0.0, 4.0]])  # (C=2, B=2)
    targets = torch.tensor([2.0, 2.0])
    # critic 1: (1 + 0) / 2; critic 2: (4 + 4) / 2
    assert ddpg.critic_loss(q_values, targets).item() == pytest.approx(0.5 + 4.0)
    assert ddpg.actor_loss(torch.tensor([1.0, 3.0])).item() == pytest.approx(-2.0)


def test_polyak_update_averages_every_parameter_of_twin_critics():
    space = gym.spaces.Box(-2.0, 2.0, (1,))
    online = nn.ModuleList(ddpg_networks.Critic(space, space, (4,)) for _ in range(2))
    target = nn.ModuleList(ddpg_networks.Critic(space, space, (4,)) for _ in range(2))
    before = [p.detach().clone() for p in target.parameters()]
    polyak_update(target, online, tau=0.005)
    for old, new, param in zip(before, target.parameters(), online.parameters(), strict=True):
        torch.testing.assert_close(new, 0.995 * old + 0.005 * param)


def filled_buffer(n: int = 512) -> ReplayBuffer:
    rng = np.random.default_rng(0)
    buffer = ReplayBuffer(n, (3,), action_shape=(1,), action_dtype=np.float32, num_envs=n)
    obs, next_obs = rng.normal(size=(n, 3)), rng.normal(size=(n, 3))
    actions = rng.uniform(-2, 2, (n, 1)).astype(np.float32)
    buffer.add(obs.astype(np.float32), actions, rng.normal(size=n), next_obs.astype(np.float32),
               np.zeros(n, bool), np.zeros(n, bool))  # fmt: skip
    return buffer


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in module.named_parameters()}


def changed(before: dict[str, torch.Tensor], module: nn.Module) -> dict[str, bool]:
    return {name: not torch.equal(before[name], p) for name, p in module.named_parameters()}


def test_every_parameter_moves_and_td3_delays_the_actor_and_targets():
    env = make_env("Pendulum-v1")
    cfg = ddpg.TD3Config(hidden_sizes=(16, 16), batch_size=64)
    torch.manual_seed(0)
    nets = ddpg.build_actor_critic(cfg, env.observation_space, env.action_space, n_critics=2)
    buffer, rng = filled_buffer(), np.random.default_rng(1)
    next_q = partial(ddpg.td3_next_q_values, target_noise=0.2, target_noise_clip=0.5)
    modules = ["actor", "critics", "target_actor", "target_critics"]

    before = {name: snapshot(getattr(nets, name)) for name in modules}
    stats = ddpg.update(nets, buffer.sample(64, rng), next_q, update_actor=False, tau=cfg.tau)
    assert stats.policy_loss is None
    assert all(changed(before["critics"], nets.critics).values())  # both twins, every weight and bias
    for name in ["actor", "target_actor", "target_critics"]:
        assert not any(changed(before[name], getattr(nets, name)).values()), name

    before = {name: snapshot(getattr(nets, name)) for name in modules}
    stats = ddpg.update(nets, buffer.sample(64, rng), next_q, update_actor=True, tau=cfg.tau)
    assert stats.policy_loss is not None
    for name in modules:
        assert all(changed(before[name], getattr(nets, name)).values()), name


def test_ddpg_update_moves_actor_critic_and_targets_at_once():
    env = make_env("Pendulum-v1")
    cfg = ddpg.DDPGConfig(hidden_sizes=(16, 16))
    nets = ddpg.build_actor_critic(cfg, env.observation_space, env.action_space, n_critics=1)
    before = {name: snapshot(getattr(nets, name)) for name in ["actor", "critics", "target_actor", "target_critics"]}
    ddpg.update(nets, filled_buffer().sample(64, np.random.default_rng(1)), ddpg.ddpg_next_q_values, True, cfg.tau)
    for name, params in before.items():
        assert all(changed(params, getattr(nets, name)).values()), name


def test_actor_scales_into_the_bounds_and_noisy_actions_are_clipped():
    obs_space = gym.spaces.Box(-1.0, 1.0, (2,))
    action_space = gym.spaces.Box(np.array([0.0, -3.0], np.float32), np.array([1.0, 5.0], np.float32))
    actor = ddpg_networks.Actor(obs_space, action_space, (8,))
    nn.init.constant_(actor.body[-1].bias, 50.0)  # tanh saturates at +1: the actor's actions sit at the upper bound
    torch.testing.assert_close(actor(torch.zeros(3, 2)), torch.tensor([[1.0, 5.0]]).repeat(3, 1))
    nn.init.constant_(actor.body[-1].bias, 0.0), nn.init.constant_(actor.body[-1].weight, 0.0)
    torch.testing.assert_close(actor(torch.zeros(1, 2)), torch.tensor([[0.5, 1.0]]))  # tanh 0: the middle

    low, high = action_space.low, action_space.high
    mu = np.array([[0.5, 1.0], [0.5, 1.0]], np.float32)
    noise = np.array([[0.5, 0.5], [-3.0, 3.0]])  # half-ranges 0.5 and 4: (+0.25, +2), then (-1.5, +12) clipped
    np.testing.assert_allclose(exploration.noisy_actions(mu, noise, low, high), [[0.75, 3.0], [0.0, 5.0]])


def test_gaussian_noise_statistics():
    noise = exploration.GaussianNoise((200_000, 1), std=0.3)
    draws = noise.sample(np.random.default_rng(0))
    assert draws.mean() == pytest.approx(0.0, abs=0.003) and draws.std() == pytest.approx(0.3, rel=0.01)
    assert abs(np.corrcoef(draws[:-1, 0], draws[1:, 0])[0, 1]) < 0.01


def test_ornstein_uhlenbeck_noise_reverts_to_zero():
    rng = np.random.default_rng(0)
    theta, std = 0.15, 0.2
    silent = exploration.OrnsteinUhlenbeckNoise((1, 1), std=0.0, theta=theta)
    silent.state[:] = 1.0
    np.testing.assert_allclose([silent.sample(rng)[0, 0] for _ in range(3)], [0.85, 0.85**2, 0.85**3])

    noise = exploration.OrnsteinUhlenbeckNoise((50_000, 1), std=std, theta=theta)
    noise.state[:] = 1.0
    for _ in range(5):
        draws = noise.sample(rng)
    assert draws.mean() == pytest.approx(0.85**5, abs=0.005)  # E[x_5 | x_0 = 1] = (1 - theta)^5
    for _ in range(200):
        previous, draws = draws, noise.sample(rng)
    stationary_std = std / np.sqrt(theta * (2 - theta))  # var = (1 - theta)^2 var + std^2
    assert draws.mean() == pytest.approx(0.0, abs=0.01) and draws.std() == pytest.approx(stationary_std, rel=0.02)
    assert np.corrcoef(previous[:, 0], draws[:, 0])[0, 1] == pytest.approx(1 - theta, abs=0.01)

    done = np.zeros(50_000, bool)
    done[:10] = True
    noise.reset(done)
    assert (noise.state[:10] == 0).all() and (noise.state[10:] != 0).all()


@pytest.mark.parametrize(
    ("agent", "cfg", "steps"),
    [
        ("ddpg", ddpg.DDPGConfig(hidden_sizes=(64, 64), learning_starts=1_000), 4_000),
        ("td3", ddpg.TD3Config(hidden_sizes=(64, 64), learning_starts=500), 5_000),
    ],
    ids=["ddpg", "td3"],
)
def test_learns_pendulum(tmp_path, agent, cfg, steps):
    torch.set_num_threads(1)
    returns, run = train(agent, cfg, tmp_path, steps=steps, seed=0)
    assert returns.mean() >= -400, returns  # a uniform random policy averages about -1,200
    events = EventAccumulator(str(run.run_dir)).Reload()
    tags = set(events.Tags()["scalars"])
    assert {"losses/value_loss", "losses/policy_loss", "charts/q_values", "charts/episodic_return"} <= tags
    assert np.isfinite([e.value for e in events.Scalars("losses/value_loss")]).all()

    arrays, _ = load_checkpoint(run.run_dir)
    act = ddpg.act_from_checkpoint(arrays, cfg, make_env("Pendulum-v1"))
    replayed = evaluate_policy(make_env("Pendulum-v1"), act, episodes=10, seed=run.spec.seed + 10_000)
    np.testing.assert_array_equal(replayed, returns)  # the checkpoint holds the policy that was evaluated


def test_a_resumed_td3_run_trains_on_the_uninterrupted_runs_steps(tmp_path, logged_steps):
    cfg = ddpg.TD3Config(hidden_sizes=(8,), learning_starts=100, train_frequency=64, log_every=1, buffer_size=1_000)
    _, whole = train("td3", cfg, tmp_path / "whole", steps=600)
    _, first = train("td3", cfg, tmp_path / "split", steps=300)  # stops between two phases (at 292 and 356)
    _, resumed = train("td3", cfg, tmp_path / "split", steps=600, run_dir=first.run_dir)

    phases = logged_steps(whole.run_dir, "losses/value_loss")
    assert phases[:3] == [100, 164, 228] and logged_steps(resumed.run_dir, "losses/value_loss") == phases


def test_td3_resumes_with_networks_optimisers_buffer_and_delay_counter(tmp_path):
    cfg = ddpg.TD3Config(hidden_sizes=(16,), learning_starts=200, train_frequency=50, buffer_size=5_000, num_envs=2,
                         noise="ornstein_uhlenbeck")  # fmt: skip
    _, first = train("td3", cfg, tmp_path, steps=1_000)
    before, before_meta = load_checkpoint(first.run_dir)
    assert before_meta["global_step"] == 1_000

    _, resumed = train("td3", cfg, tmp_path, steps=1_550, run_dir=first.run_dir)
    after, after_meta = load_checkpoint(resumed.run_dir)
    assert after_meta["global_step"] == 1_550

    # The buffer kept its first 1,000 rows and grew by the 550 new steps of the two envs.
    assert len(before["buffer.0.storage.obs"]) == 1_000 and len(after["buffer.0.storage.obs"]) == 1_550
    np.testing.assert_array_equal(after["buffer.0.storage.obs"][:1_000], before["buffer.0.storage.obs"])
    assert np.abs(after["buffer.0.storage.actions"]).max() <= 2.0  # noisy actions clipped to Pendulum's torque

    # Critic steps: phases at 200, 250, ..., 1000 (17) before, 1050, ..., 1550 (11) after. The actor moves on every
    # second critic step counted over the whole run: 8, then 14 (a counter restarted on resume would give 8 + 5).
    def adam_steps(arrays, optimizer):
        return {a.item() for name, a in arrays.items() if name.startswith(optimizer) and name.endswith("step")}

    assert before["critic_updates"].item() == 17 and after["critic_updates"].item() == 28
    assert adam_steps(before, "critic_optimizer.") == {17} and adam_steps(after, "critic_optimizer.") == {28}
    assert adam_steps(before, "actor_optimizer.") == {8} and adam_steps(after, "actor_optimizer.") == {14}
    assert not np.array_equal(before["actor.body.0.weight"], after["actor.body.0.weight"])


def test_refuses_discrete_and_unbounded_actions(tmp_path):
    with pytest.raises(UserError, match="Box.*use dqn"):
        train("ddpg", ddpg.DDPGConfig(), tmp_path, steps=100, env_id="CartPole-v1")
    assert not list(tmp_path.iterdir())  # no empty run directory left behind
    with pytest.raises(UserError, match="unbounded"):
        ddpg_networks.action_bounds(gym.spaces.Box(-np.inf, np.inf, (2,)), "td3", "Unbounded-v0")
    with pytest.raises(UserError, match="Box.*use dqn"):
        ddpg.act_from_checkpoint({}, ddpg.DDPGConfig(), make_env("CartPole-v1"))


def test_td3_observation_normalisation_takes_in_every_acted_on_observation(tmp_path):
    cfg = ddpg.TD3Config(normalize_observation=True, learning_starts=100, batch_size=32, hidden_sizes=(16,))
    returns, run = train("td3", cfg, tmp_path, steps=300)
    arrays, meta = load_checkpoint(run.run_dir)
    stored = arrays["buffer.0.storage.obs"].astype(np.float64)  # raw observations, one row per step
    assert arrays["actor.encoder.obs_count"] == meta["global_step"] == len(stored) == 300
    np.testing.assert_allclose(arrays["actor.encoder.obs_mean"], stored.mean(0), rtol=1e-10)
    np.testing.assert_allclose(arrays["actor.encoder.obs_var"], stored.var(0), rtol=1e-10)
    for network in ("critics.0", "critics.1", "target_actor", "target_critics.0", "target_critics.1"):
        for key in ("obs_mean", "obs_var", "obs_count"):  # every network normalises alike
            np.testing.assert_array_equal(arrays[f"{network}.encoder.{key}"], arrays[f"actor.encoder.{key}"])
    act = ddpg.act_from_checkpoint(arrays, cfg, make_env("Pendulum-v1"))
    replayed = evaluate_policy(make_env("Pendulum-v1"), act, episodes=10, seed=run.spec.seed + 10_000)
    np.testing.assert_array_equal(replayed, returns)  # evaluated with the checkpoint's statistics


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="tau"):
        ddpg.DDPGConfig(tau=0.0)
    with pytest.raises(ValueError, match="policy_delay"):
        ddpg.TD3Config(policy_delay=0)
