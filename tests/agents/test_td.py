"""TD agents: targets by hand, the cliff-walking contrast of Sarsa and Q-learning, the grid world's optimum."""

from __future__ import annotations

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import envs  # noqa: F401
from agents import td
from agents.planning import one_hot_policy, policy_evaluation, value_iteration
from agents.registry import AGENTS
from envs.grid_world import GridWorld
from rl.checkpoint import load_checkpoint
from rl.config import build_config
from rl.environments import make_env
from rl.errors import UserError
from rl.evaluation import evaluate_policy
from rl.run import Run, RunSpec


def train(fn, cfg, env_id, tmp_path, seed=0, steps=None, episodes=None, env_kwargs=None, run_dir=None):
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
    with Run(spec, {}, run_dir=run_dir) as run:
        return fn(cfg, run), run


def test_targets_by_hand():
    assert td.td_target(1.0, 5.0, terminated=False, gamma=0.9) == pytest.approx(5.5)
    assert td.td_target(1.0, 5.0, terminated=True, gamma=0.9) == 1.0
    # 1 + 0.5 * 2 + 0.25 * 3 + 0.125 * 10
    assert td.nstep_return([1.0, 2.0, 3.0], bootstrap=10.0, gamma=0.5) == pytest.approx(4.0)
    assert td.expected_q(np.array([1.0, 3.0]), np.array([0.25, 0.75])) == pytest.approx(2.5)


CLIFF = {"gamma": 1.0, "alpha": 0.5, "epsilon": 0.1}  # Sutton & Barto, Example 6.6


@pytest.mark.parametrize("seed", [0, 1])
def test_sarsa_keeps_to_the_safe_path_and_q_learning_walks_the_cliff_edge(tmp_path, seed):
    sarsa, _ = train(td.train_sarsa, td.TDConfig(**CLIFF), "CliffWalking-v1", tmp_path, seed, episodes=500)
    q_learning, _ = train(td.train_q_learning, td.TDConfig(**CLIFF), "CliffWalking-v1", tmp_path, seed, episodes=500)
    # The cliff-edge path takes 13 steps (return -13); Sarsa's epsilon-aware path keeps away from the edge.
    assert q_learning.eval_returns.mean() == -13.0
    assert -25.0 <= sarsa.eval_returns.mean() <= -15.0


def logged_values(run_dir, tag: str) -> list[float]:
    events = EventAccumulator(str(run_dir))
    events.Reload()
    return [event.value for event in events.Scalars(tag)]


def online_returns(run_dir) -> np.ndarray:
    """The training episodes' returns as logged (`charts/episodic_return`), read back from TensorBoard."""
    events = EventAccumulator(str(run_dir))
    events.Reload()
    return np.array([event.value for event in events.Scalars("charts/episodic_return")])


def test_online_returns_match_sutton_and_barto_figure_6_4(tmp_path):
    # Figure 6.4: while exploring with epsilon 0.1, Sarsa's episodes sum to about -25 and Q-learning's to about -50,
    # because Q-learning's cliff-edge path makes exploratory steps fall off (-100). Mean of episodes 100-500.
    means = {}
    for fn in (td.train_sarsa, td.train_q_learning):
        runs = [train(fn, td.TDConfig(**CLIFF), "CliffWalking-v1", tmp_path, s, episodes=500)[1] for s in range(3)]
        means[fn] = np.mean([online_returns(r.run_dir)[100:].mean() for r in runs])
    assert -40.0 <= means[td.train_sarsa] <= -20.0
    assert -58.0 <= means[td.train_q_learning] <= -42.0
    assert means[td.train_sarsa] > means[td.train_q_learning] + 10.0


@pytest.mark.parametrize(
    "fn, cfg",
    [
        (td.train_sarsa, td.TDConfig(**CLIFF)),
        (td.train_expected_sarsa, td.TDConfig(**CLIFF)),
        (td.train_nstep_sarsa, td.NStepSarsaConfig(**CLIFF, n=2)),
        (td.train_q_learning, td.TDConfig(**CLIFF)),
    ],
)
def test_control_agents_reach_the_cliff_goal(tmp_path, fn, cfg):
    result, _ = train(fn, cfg, "CliffWalking-v1", tmp_path, episodes=400)
    assert result.eval_returns.mean() >= -25.0  # reaches the goal without falling: a fall alone costs -100


def test_offpolicy_q_learning_finds_the_grid_world_optimum(tmp_path):
    model = GridWorld().model()
    optimum = value_iteration(model, 0.9)
    result, _ = train(td.train_q_learning_offpolicy, td.OffPolicyQConfig(), "GridWorld-v0", tmp_path, steps=60_000)
    greedy_values = policy_evaluation(model, one_hot_policy(result.greedy_actions, 5), 0.9)
    np.testing.assert_allclose(greedy_values, optimum.values, atol=1e-6)
    np.testing.assert_allclose(result.q_values, optimum.q_values, atol=0.5)


def test_td0_values_approach_the_planners_policy_evaluation(tmp_path):
    model = GridWorld().model()
    uniform = np.full((25, 5), 0.2)
    true_values = policy_evaluation(model, uniform, 0.9)
    early, _ = train(td.train_td0, td.TD0Config(), "GridWorld-v0", tmp_path, steps=500)
    late, _ = train(td.train_td0, td.TD0Config(), "GridWorld-v0", tmp_path, steps=40_000)

    def rmse(values):
        return np.sqrt(np.mean((values - true_values) ** 2))

    assert rmse(late.values) < 0.25
    assert rmse(late.values) < rmse(early.values) / 3


def test_td0_predicts_undiscounted_values_on_an_episodic_task(tmp_path, logged_steps):
    # CliffWalking at gamma = 1, the book's setting, used to stop at the start: the planner behind eval/value_rmse
    # refused gamma = 1. The uniform policy's undiscounted values exist, as its episodes end.
    result, run = train(td.train_td0, td.TD0Config(gamma=1.0), "CliffWalking-v1", tmp_path, steps=3000)
    assert logged_steps(run.run_dir, "eval/value_rmse") == [1, 1000, 2000, 3000]
    assert np.isfinite(result.values).all() and result.values.min() < -10


def test_td0_evaluates_the_policy_it_predicts_and_rl_eval_repeats_it(tmp_path):
    # The uniform policy's expected return over GridWorld's 100-step episodes from the corner: 100 finite-horizon
    # backups v_k = r_pi + P_pi v_(k-1) (undiscounted; the book's grid world never terminates).
    model, uniform = GridWorld(start=(1, 1)).model(), np.full((25, 5), 0.2)
    expected = np.zeros(25)
    for _ in range(100):
        expected = (uniform * model.rewards).sum(axis=1) + model.policy_transitions(uniform) @ expected
    spec = RunSpec("td0", "GridWorld-v0", {"start": [1, 1]}, 0, total_steps=100, runs_dir=str(tmp_path), quiet=True,
                   eval_episodes=300)  # fmt: skip
    with Run(spec, {}) as run:
        returns = td.train_td0(td.TD0Config(), run).eval_returns
    assert abs(returns.mean() - expected[0]) < 4 * returns.std() / np.sqrt(len(returns)), (returns.mean(), expected[0])

    act = AGENTS["td0"].act_from_checkpoint(
        load_checkpoint(run.run_dir)[0], td.TD0Config(), make_env(spec.env_id, spec.env_kwargs)
    )
    replayed = evaluate_policy(make_env(spec.env_id, spec.env_kwargs), act, episodes=300, seed=spec.seed + 10_000)
    np.testing.assert_array_equal(replayed, returns)  # `rl eval RUN --seed 10000` draws the same actions


def test_nstep_sarsa_with_n_equal_one_is_sarsa(tmp_path):
    cfg = dict(CLIFF)
    sarsa, _ = train(td.train_sarsa, td.TDConfig(**cfg), "CliffWalking-v1", tmp_path, episodes=50)
    one_step, _ = train(td.train_nstep_sarsa, td.NStepSarsaConfig(**cfg, n=1), "CliffWalking-v1", tmp_path, episodes=50)
    np.testing.assert_array_equal(sarsa.q_values, one_step.q_values)


def test_same_seed_same_table(tmp_path):
    a, _ = train(td.train_expected_sarsa, td.TDConfig(), "FrozenLake-v1", tmp_path, seed=3, steps=3_000)
    b, _ = train(td.train_expected_sarsa, td.TDConfig(), "FrozenLake-v1", tmp_path, seed=3, steps=3_000)
    c, _ = train(td.train_expected_sarsa, td.TDConfig(), "FrozenLake-v1", tmp_path, seed=4, steps=3_000)
    np.testing.assert_array_equal(a.q_values, b.q_values)
    assert not np.array_equal(a.q_values, c.q_values)


def test_resumed_run_continues_from_its_checkpoint(tmp_path):
    first, run = train(td.train_sarsa, td.TDConfig(), "GridWorld-v0", tmp_path, steps=2_000)
    resumed, resumed_run = train(
        td.train_sarsa, td.TDConfig(), "GridWorld-v0", tmp_path, steps=2_001, run_dir=run.run_dir
    )
    # One more step from the saved table: the tables differ in at most the one updated entry.
    assert resumed_run.rollout.global_step == 2_001
    assert np.sum(resumed.q_values != first.q_values) <= 1
    assert np.abs(first.q_values).sum() > 0


def test_bad_config_values_are_user_errors():
    with pytest.raises(UserError, match="alpha"):
        build_config(td.TDConfig, {"alpha": 2.0}, "sarsa")
    with pytest.raises(UserError, match="n"):
        build_config(td.NStepSarsaConfig, {"n": 0}, "nstep_sarsa")
    with pytest.raises(UserError, match="'optimal'"):
        build_config(td.TD0Config, {"policy": "greedy"}, "td0")
    for key, value in [("alpha", -1.0), ("alpha", 0.0), ("eval_every", 0), ("initial_value", float("inf"))]:
        with pytest.raises(UserError, match=key):
            build_config(td.NStepTDConfig, {key: value}, "nstep_td")


def test_states_where_episodes_end_start_at_zero(tmp_path):
    # FrozenLake's holes and goal: no update reaches them, so an initial value of 0.5 there would floor the RMS error.
    result, run = train(td.train_mc_prediction, td.TD0Config(alpha=0.05, initial_value=0.5), "FrozenLake-v1",
                        tmp_path, steps=20_000)  # fmt: skip
    ends = [5, 7, 11, 12, 15]
    np.testing.assert_array_equal(result.values[ends], 0.0)
    assert logged_values(run.run_dir, "eval/value_rmse")[-1] < 0.1


def test_tabular_agent_on_a_continuous_env_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="Discrete observation space"):
        train(td.train_sarsa, td.TDConfig(), "CartPole-v1", tmp_path, steps=10)


# The book's chapter 7 path-finding task: from (1,1) to the terminal target (4,3), -1 a step, -10 for a forbidden cell.
PATH_FINDING = dict(terminal_target=True, r_target=0, r_forbidden=-10, r_boundary=-10, r_other=-1, start=[1, 1])
DECAY = dict(epsilon=0.2, epsilon_end=0.0, epsilon_decay_steps=6_000)


@pytest.mark.parametrize(
    "fn, cfg",
    [
        (td.train_sarsa, td.TDConfig(**DECAY)),
        (td.train_expected_sarsa, td.TDConfig(**DECAY)),
        (td.train_nstep_sarsa, td.NStepSarsaConfig(**DECAY)),
        (td.train_q_learning, td.TDConfig(**DECAY)),
        (td.train_q_learning_offpolicy, td.OffPolicyQConfig()),
    ],
)
def test_control_agents_reach_the_optimal_return_of_the_path_finding_task(tmp_path, fn, cfg):
    optimum = value_iteration(GridWorld(**PATH_FINDING).model(), 0.9)
    result, _ = train(fn, cfg, "GridWorld-v0", tmp_path, episodes=400, env_kwargs=PATH_FINDING)
    optimal_return = evaluate_policy(GridWorld(**PATH_FINDING), lambda obs: int(optimum.policy[obs]), 1, seed=0)[0]
    assert optimal_return == -10.0  # 11 moves around the forbidden cells, the last one into the target
    assert result.eval_returns.mean() == optimal_return


@pytest.mark.parametrize("fn", [td.train_sarsa, td.train_expected_sarsa, td.train_nstep_sarsa, td.train_q_learning])
def test_a_decaying_epsilon_is_logged(tmp_path, fn):
    cfg = (td.NStepSarsaConfig if fn is td.train_nstep_sarsa else td.TDConfig)(
        epsilon=1.0, epsilon_end=0.1, epsilon_decay_steps=3000
    )
    _, run = train(fn, cfg, "GridWorld-v0", tmp_path, steps=4500)
    events = EventAccumulator(str(run.run_dir))
    events.Reload()
    logged = [(e.step, round(e.value, 6)) for e in events.Scalars("charts/epsilon")]
    assert logged == [(0, 1.0), (1000, 0.7), (2000, 0.4), (3000, 0.1), (4000, 0.1)]


def test_expected_sarsa_keeps_its_interim_performance_at_a_step_size_of_one(tmp_path):
    # S&B Figure 6.3 (interim performance, the first 100 episodes of cliff walking): Expected Sarsa, whose target
    # does not depend on the next action drawn, does best at large step sizes and stays good at alpha = 1, where
    # Sarsa and Q-learning fall behind. Means over seeds 0-9 here: -43.2, against -72.8 (Sarsa), -75.2 (Q-learning).
    cfg = td.TDConfig(gamma=1.0, alpha=1.0, epsilon=0.1)
    means = {}
    for fn in (td.train_sarsa, td.train_expected_sarsa, td.train_q_learning):
        returns = [online_returns(train(fn, cfg, "CliffWalking-v1", tmp_path, seed, episodes=100)[1].run_dir)
                   for seed in range(10)]  # fmt: skip
        means[fn] = np.mean([r[:100].mean() for r in returns])
    assert means[td.train_expected_sarsa] > max(means[td.train_sarsa], means[td.train_q_learning]) + 15
