"""Linear agents: the update by hand, one-hot twins of the tabular agents, learning on the grid world, Mountain Car
and CartPole, checkpoint replay, and the errors for envs that do not fit."""

from __future__ import annotations

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import envs  # noqa: F401
from agents import linear, td
from agents.features import Features
from agents.planning import policy_evaluation
from envs.grid_world import GridWorld
from rl.checkpoint import load_checkpoint
from rl.config import build_config
from rl.environments import make_env
from rl.errors import UserError
from rl.evaluation import evaluate_policy
from rl.run import Run, RunSpec


def train(fn, cfg, env_id, tmp_path, seed=0, steps=None, episodes=None, env_kwargs=None):
    spec = RunSpec(
        agent=fn.__name__.removeprefix("train_"),
        env_id=env_id,
        env_kwargs=env_kwargs or {},
        seed=seed,
        total_steps=steps,
        total_episodes=episodes,
        runs_dir=str(tmp_path),
        quiet=True,
    )
    with Run(spec, {}) as run:
        return fn(cfg, run), run


def test_linear_values_and_the_semi_gradient_step_by_hand():
    x = Features(np.array([0, 2]), np.array([1.0, 0.5]))
    w = np.array([[1.0, 9.0, 2.0], [-1.0, 9.0, 4.0]])
    assert linear.state_value(w[0], x) == pytest.approx(2.0)  # 1 * 1 + 2 * 0.5
    np.testing.assert_allclose(linear.action_values(w, x), [2.0, 1.0])
    linear.semi_gradient_step(w[1], x, step=0.1, td_error=2.0)  # w_1 += 0.1 * 2 * x(s); untouched weights stay
    np.testing.assert_allclose(w, [[1.0, 9.0, 2.0], [-0.8, 9.0, 4.1]])
    assert linear.step_size(0.5, "tile", 8) == pytest.approx(0.0625) and linear.step_size(0.5, "fourier", 8) == 0.5


# With one-hot features, w is the table and every step (and random draw) is the tabular agent's.
PATH_FINDING = dict(terminal_target=True, r_target=0, r_forbidden=-10, r_boundary=-10, r_other=-1, start=[1, 1])
TWINS = [
    (linear.train_sarsa_linear, td.train_sarsa),
    (linear.train_q_learning_linear, td.train_q_learning),
]


@pytest.mark.parametrize("env_kwargs", [{}, PATH_FINDING], ids=["continuing", "terminal_target"])
@pytest.mark.parametrize("linear_fn, tabular_fn", TWINS, ids=["sarsa", "q_learning"])
def test_one_hot_control_agents_are_their_tabular_twins(tmp_path, linear_fn, tabular_fn, env_kwargs):
    tabular_cfg = td.TDConfig(gamma=0.9, alpha=0.1, epsilon=0.2, epsilon_end=0.0, epsilon_decay_steps=3_000)
    linear_cfg = linear.ControlConfig(
        gamma=0.9, alpha=0.1, epsilon=0.2, epsilon_end=0.0, epsilon_decay_steps=3_000, features="one_hot"
    )
    tabular, _ = train(tabular_fn, tabular_cfg, "GridWorld-v0", tmp_path, seed=5, steps=4_000, env_kwargs=env_kwargs)
    approx, _ = train(linear_fn, linear_cfg, "GridWorld-v0", tmp_path, seed=5, steps=4_000, env_kwargs=env_kwargs)
    assert np.abs(tabular.q_values).sum() > 0
    np.testing.assert_allclose(approx.q_values, tabular.q_values, rtol=0, atol=1e-12)
    np.testing.assert_allclose(approx.weights.T, tabular.q_values, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(approx.eval_returns, tabular.eval_returns)


@pytest.mark.parametrize("policy", ["uniform", "optimal"])
def test_one_hot_td_linear_is_td0(tmp_path, policy):
    tabular, _ = train(td.train_td0, td.TD0Config(alpha=0.05, policy=policy), "GridWorld-v0", tmp_path, steps=4_000)
    approx, run = train(
        linear.train_td_linear,
        linear.PredictionConfig(alpha=0.05, policy=policy, features="one_hot"),
        "GridWorld-v0",
        tmp_path,
        steps=4_000,
    )
    np.testing.assert_allclose(approx.values, tabular.values, rtol=0, atol=1e-12)
    # The checkpoint replays the evaluated policy: the optimal one's greedy actions, or uniform draws.
    arrays, _ = load_checkpoint(run.run_dir)
    act = linear.prediction_act_from_checkpoint(arrays, run_config(policy, "one_hot"), make_env("GridWorld-v0"))
    if policy == "optimal":
        assert [act(s) for s in range(25)] == [int(a) for a in tabular.greedy_actions]
    else:
        assert set(act(0) for _ in range(200)) == set(range(5))


def run_config(policy: str, features: str) -> linear.PredictionConfig:
    return linear.PredictionConfig(alpha=0.05, policy=policy, features=features)


def test_fourier_td_linear_approaches_the_planners_values(tmp_path):
    true_values = policy_evaluation(GridWorld().model(), np.full((25, 5), 0.2), 0.9)
    result, run = train(linear.train_td_linear, linear.PredictionConfig(), "GridWorld-v0", tmp_path, steps=30_000)
    rmse = np.sqrt(np.mean((result.values - true_values) ** 2))
    zero_rmse = np.sqrt(np.mean(true_values**2))
    # Order-3 Fourier (16 features) cannot fit 25 values exactly: its least-squares best is 0.09. Seeds 0-4 reach
    # 0.13-0.22 in 30,000 steps; the zero vector is 3.54 off.
    assert zero_rmse > 3.5
    assert rmse < 0.3
    events = EventAccumulator(str(run.run_dir))
    events.Reload()
    logged = events.Scalars("eval/value_rmse")
    assert [event.step for event in logged] == [1, *range(1_000, 30_001, 1_000)]  # after the first step, then 1,000
    logged = [event.value for event in logged]
    assert logged[0] > 3.0 and logged[-1] == pytest.approx(rmse, rel=0.05)
    assert max(logged[-10:]) < logged[0] / 10


def test_sarsa_with_tile_coding_drives_mountain_car_to_the_goal(tmp_path):
    result, run = train(linear.train_sarsa_linear, linear.ControlConfig(), "MountainCar-v0", tmp_path, episodes=150)
    # A greedy episode that never reaches the goal is cut at 200 steps (return -200); seeds 0-4 score -131 to -152.
    assert result.eval_returns.max() <= -100
    assert result.eval_returns.min() > -200
    assert result.values is None and result.weights.shape == (3, 8 * 9 * 9)
    # `rl eval` rebuilds the feature map from the config and the env and replays the same greedy policy.
    arrays, _ = load_checkpoint(run.run_dir)
    env = make_env("MountainCar-v0")
    act = linear.act_from_checkpoint(arrays, linear.ControlConfig(), env)
    replayed = evaluate_policy(env, act, len(result.eval_returns), seed=run.spec.seed + 10_000)
    np.testing.assert_array_equal(replayed, result.eval_returns)


CARTPOLE_BOUNDS = ((-2.4, 2.4), (-3.0, 3.0), (-0.21, 0.21), (-3.5, 3.5))


def test_q_learning_with_tile_coding_balances_cartpole(tmp_path):
    cfg = linear.ControlConfig(
        gamma=0.99,
        alpha=0.3,
        epsilon=0.1,
        epsilon_end=0.0,
        epsilon_decay_steps=10_000,
        tiles_per_dim=4,
        bounds=CARTPOLE_BOUNDS,
    )
    result, _ = train(linear.train_q_learning_linear, cfg, "CartPole-v1", tmp_path, steps=20_000)
    # A random policy lasts ~22 steps; seeds 0-7 score 196-403 here.
    assert result.eval_returns.mean() > 150


def test_envs_that_do_not_fit_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="one_hot features need a Discrete observation space"):
        train(linear.train_sarsa_linear, linear.ControlConfig(features="one_hot"), "CartPole-v1", tmp_path, steps=10)
    with pytest.raises(UserError, match="unbounded; pass bounds="):
        train(
            linear.train_q_learning_linear,
            linear.ControlConfig(features="polynomial"),
            "CartPole-v1",
            tmp_path,
            steps=10,
        )
    for fn in (linear.train_sarsa_linear, linear.train_q_learning_linear):
        with pytest.raises(UserError, match="needs a Discrete action space"):
            train(fn, linear.ControlConfig(), "Pendulum-v1", tmp_path, steps=10)
    with pytest.raises(UserError, match="needs a Discrete action space"):
        train(linear.train_td_linear, linear.PredictionConfig(features="tile"), "Pendulum-v1", tmp_path, steps=10)
    with pytest.raises(UserError, match="policy='optimal' needs the env's model"):
        cfg = linear.PredictionConfig(policy="optimal", features="tile")
        train(linear.train_td_linear, cfg, "MountainCar-v0", tmp_path, steps=10)


def test_bad_config_values_are_user_errors():
    with pytest.raises(UserError, match="features must be one of"):
        build_config(linear.ControlConfig, {"features": "rbf"}, "sarsa_linear")
    with pytest.raises(UserError, match="tilings must be at least 1"):
        build_config(linear.ControlConfig, {"tilings": 0}, "sarsa_linear")
    with pytest.raises(UserError, match="'optimal'"):
        build_config(linear.PredictionConfig, {"policy": "greedy"}, "td_linear")
    cfg = build_config(linear.ControlConfig, {"bounds": [[-1, 1], [-2, 2]]}, "sarsa_linear")
    assert cfg.bounds == ((-1.0, 1.0), (-2.0, 2.0))
