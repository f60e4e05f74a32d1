"""Dynamic programming against hand-computed MDPs, the book's published grid-world values, and toy-text envs."""

from __future__ import annotations

from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest

import envs  # noqa: F401  (registers GridWorld-v0)
from agents.planning import (
    PLANNERS,
    evaluate_policy_exactly,
    greedy_policy,
    one_hot_policy,
    policy_evaluation,
    policy_iteration,
    truncated_policy_iteration,
    value_iteration,
)
from envs.grid_world import GridWorld
from rl.errors import UserError
from rl.mdp import TabularModel, model_of, require_model

BOOK_OPTIMAL_VALUES = np.array(
    [
        [5.8, 5.6, 6.2, 6.5, 5.8],
        [6.5, 7.2, 8.0, 7.2, 6.5],
        [7.2, 8.0, 10.0, 8.0, 7.2],
        [8.0, 10.0, 10.0, 10.0, 8.0],
        [7.2, 9.0, 10.0, 9.0, 8.1],
    ]
)
"""The optimal state values of the book's 5x5 grid world at gamma = 0.9 (chapters 3 and 4), as printed."""


def two_state_mdp() -> TabularModel:
    """State 0 pays -1 to switch, 0 to stay; state 1 pays 2 to stay, 0 to switch. Action 0 stays, 1 switches."""
    transitions = np.zeros((2, 2, 2))
    transitions[0, 0, 0] = transitions[0, 1, 1] = transitions[1, 0, 1] = transitions[1, 1, 0] = 1.0
    return TabularModel(transitions, rewards=np.array([[0.0, -1.0], [2.0, 0.0]]))


def quit_or_gamble_mdp() -> TabularModel:
    """One state: action 0 ends the episode with reward 1; action 1 pays 0.6 and goes on with probability 0.5."""
    return TabularModel(transitions=np.array([[[0.0], [0.5]]]), rewards=np.array([[1.0, 0.6]]))


def bellman_optimality_residual(model: TabularModel, values: np.ndarray, gamma: float) -> float:
    return float(np.max(np.abs(model.q_from_v(values, gamma).max(axis=1) - values)))


@pytest.mark.parametrize("name", PLANNERS)
def test_two_state_mdp_by_hand(name: str) -> None:
    # Staying in state 1 forever is worth 2 / (1 - 0.9) = 20; from state 0 the best is to pay 1 and switch:
    # -1 + 0.9 * 20 = 17, which beats staying (0 + 0.9 * 17 = 15.3).
    result = PLANNERS[name](two_state_mdp(), 0.9)
    np.testing.assert_allclose(result.values, [17.0, 20.0], atol=1e-8)
    np.testing.assert_allclose(result.q_values, [[15.3, 17.0], [20.0, 15.3]], atol=1e-8)
    np.testing.assert_array_equal(result.policy, [1, 0])


@pytest.mark.parametrize("name", PLANNERS)
def test_termination_is_not_bootstrapped(name: str) -> None:
    # Gambling forever: v = 0.6 + 0.9 * 0.5 * v, so v = 0.6 / 0.55 = 12/11 > 1, the value of quitting.
    result = PLANNERS[name](quit_or_gamble_mdp(), 0.9)
    np.testing.assert_allclose(result.values, [12 / 11], atol=1e-8)
    np.testing.assert_allclose(result.q_values, [[1.0, 12 / 11]], atol=1e-8)
    assert result.policy.tolist() == [1]


def test_policy_evaluation_by_hand() -> None:
    # Uniform policy: r_pi = [-0.5, 1] and both states move to either with probability 1/2, so the mean value m
    # solves m = 0.25 + 0.9 m, m = 2.5, and v = r_pi + 0.9 m = [1.75, 3.25].
    uniform = np.full((2, 2), 0.5)
    np.testing.assert_allclose(policy_evaluation(two_state_mdp(), uniform, 0.9), [1.75, 3.25], atol=1e-8)
    np.testing.assert_allclose(evaluate_policy_exactly(two_state_mdp(), uniform, 0.9), [1.75, 3.25], atol=1e-12)


@pytest.mark.parametrize("env_id", ["GridWorld-v0", "FrozenLake-v1"])
def test_iterative_policy_evaluation_equals_the_linear_solve(env_id: str) -> None:
    model = model_of(gym.make(env_id))
    policy = np.random.default_rng(0).dirichlet(np.ones(model.n_actions), size=model.n_states)
    np.testing.assert_allclose(
        policy_evaluation(model, policy, 0.9), evaluate_policy_exactly(model, policy, 0.9), atol=1e-8
    )


@pytest.mark.parametrize("name", PLANNERS)
def test_grid_world_matches_the_book(name: str) -> None:
    env = gym.make("GridWorld-v0")  # the book's rewards are the defaults: r_boundary = r_forbidden = -1, r_target = 1
    result = PLANNERS[name](model_of(env), 0.9)
    # The book prints one decimal, so each value must round to the printed one.
    np.testing.assert_allclose(result.values.reshape(5, 5), BOOK_OPTIMAL_VALUES, atol=0.05 + 1e-9)
    assert env.unwrapped.format_values(result.values).split("\n")[4] == " 7.2  9.0 10.0  9.0  8.1"


@pytest.mark.parametrize("env_id", ["GridWorld-v0", "FrozenLake-v1", "CliffWalking-v1", "Taxi-v4"])
def test_planners_agree_and_satisfy_the_bellman_optimality_equation(env_id: str) -> None:
    model = model_of(gym.make(env_id))
    results = {name: planner(model, 0.95) for name, planner in PLANNERS.items()}
    reference = results["policy_iteration"]
    assert bellman_optimality_residual(model, reference.values, 0.95) < 1e-8
    for result in results.values():
        np.testing.assert_allclose(result.values, reference.values, atol=1e-7)
        # Policies may differ only between actions that are equally good.
        chosen = np.take_along_axis(reference.q_values, result.policy[:, None], axis=1)[:, 0]
        np.testing.assert_allclose(chosen, reference.values, atol=1e-7)


def test_truncation_of_one_step_is_value_iteration() -> None:
    model = model_of(gym.make("GridWorld-v0"))
    vi, tpi = value_iteration(model, 0.9), truncated_policy_iteration(model, 0.9, truncation_steps=1)
    assert vi.iterations == tpi.iterations
    np.testing.assert_allclose(vi.values, tpi.values, atol=1e-12)


def test_frozen_lake_values_match_monte_carlo_returns_of_the_greedy_policy() -> None:
    gamma, n_episodes = 0.99, 2000
    env = gym.make("FrozenLake-v1").unwrapped  # no time limit: the planner's values assume none
    result = value_iteration(model_of(env), gamma)
    returns = np.zeros(n_episodes)
    for i in range(n_episodes):
        obs, _ = env.reset(seed=i)
        for t in range(1000):  # 0.99^1000 < 1e-4: later rewards cannot move the estimate
            obs, reward, terminated, _, _ = env.step(int(result.policy[obs]))
            returns[i] += gamma**t * reward
            if terminated:
                break
    standard_error = returns.std() / np.sqrt(n_episodes)
    assert abs(returns.mean() - result.values[0]) < 4 * standard_error


def test_greedy_ties_go_to_the_first_action() -> None:
    q_values = np.array([[1.0, 1.0 + 1e-12, 0.5], [0.0, 1.0, 1.0], [100.0, 100.0 + 1e-8, 0.0], [0.0, 0.1, 0.0]])
    np.testing.assert_array_equal(greedy_policy(q_values), [0, 1, 0, 1])


def test_one_hot_policy() -> None:
    np.testing.assert_array_equal(one_hot_policy(np.array([2, 0]), 3), [[0, 0, 1], [1, 0, 0]])


@pytest.mark.parametrize("gamma", [1.5, -0.1])
def test_gamma_outside_the_unit_interval_is_a_user_error(gamma: float) -> None:
    with pytest.raises(UserError, match="gamma"):
        value_iteration(two_state_mdp(), gamma)


@pytest.mark.parametrize("name", sorted(PLANNERS))
def test_undiscounted_planning_on_an_episodic_task(name: str) -> None:
    # quit_or_gamble at gamma = 1: quitting is worth 1, gambling 0.6 + 0.5 v, so gambling forever is worth 1.2.
    result = PLANNERS[name](quit_or_gamble_mdp(), 1.0)
    np.testing.assert_allclose(result.values, [1.2], atol=1e-9)
    assert result.policy[0] == 1


@pytest.mark.parametrize("name", sorted(PLANNERS))
def test_undiscounted_ties_go_to_actions_that_end_the_episode(name: str) -> None:
    # On the random walk at gamma = 1 a step left is worth a step right (both reach the right end in the end); the
    # first tied action, left, would bounce between A and B for ever. The planners step right.
    model = model_of(gym.make("RandomWalk-v0"))
    result = PLANNERS[name](model, 1.0)
    np.testing.assert_allclose(result.values, 1.0)
    assert (result.policy == 1).all()


def test_undiscounted_evaluation_of_policies_that_never_end() -> None:
    # GridWorld has no end: the uniform policy collects the target's +1 for ever (a solver would return ~1e16).
    with pytest.raises(UserError, match="never ends"):
        evaluate_policy_exactly(GridWorld().model(), np.full((25, 5), 0.2), 1.0)
    # A loop that pays nothing is worth 0, and a state that leads into it and then to it is worth what it pays.
    transitions = np.zeros((3, 1, 3))
    transitions[0, 0, 1] = transitions[1, 0, 1] = 0.5  # state 0 ends half the time; state 1 loops or ends
    transitions[2, 0, 2] = 1.0  # state 2 loops for ever, for nothing
    model = TabularModel(transitions, rewards=np.array([[1.0], [2.0], [0.0]]))
    np.testing.assert_allclose(evaluate_policy_exactly(model, np.ones((3, 1)), 1.0), [1.0 + 0.5 * 4.0, 4.0, 0.0])


@pytest.mark.parametrize("name", sorted(PLANNERS))
def test_undiscounted_values_that_grow_for_ever_stop_the_planners_early(name: str) -> None:
    with pytest.raises(UserError, match="never ends|stopped after 2000 sweeps"):
        PLANNERS[name](two_state_mdp(), 1.0)
    with pytest.raises(UserError, match="stopped after 2000 sweeps"):
        policy_evaluation(two_state_mdp(), one_hot_policy(np.array([0, 0]), 2), 1.0)


class BrokenTable(gym.Env):
    """A toy-text style env whose P table lacks state 1."""

    observation_space, action_space = gym.spaces.Discrete(2), gym.spaces.Discrete(1)
    P = {0: {0: [(1.0, 1, 0.0, False)]}}


def test_a_malformed_p_table_is_a_user_error() -> None:
    with pytest.raises(UserError, match=r"P table .*KeyError: 1"):
        model_of(BrokenTable())


def test_undiscounted_values_that_do_not_exist_are_user_errors() -> None:
    # In two_state_mdp nothing ends and state 1 pays 2 for ever: no finite undiscounted value.
    stay = one_hot_policy(np.array([0, 0]), 2)
    with pytest.raises(UserError, match="never ends"):
        evaluate_policy_exactly(two_state_mdp(), stay, 1.0)
    with pytest.raises(UserError, match="policy iteration met a policy .* never ends"):
        policy_iteration(two_state_mdp(), 1.0)
    with pytest.raises(UserError, match="did not converge.*gamma = 1"):
        value_iteration(two_state_mdp(), 1.0, max_iterations=1000)


def test_bad_truncation_and_non_convergence_are_user_errors() -> None:
    with pytest.raises(UserError, match="truncation_steps"):
        truncated_policy_iteration(two_state_mdp(), 0.9, truncation_steps=0)
    with pytest.raises(UserError, match="max_iterations"):
        value_iteration(two_state_mdp(), 0.9, max_iterations=3)


def test_policy_transitions_match_a_dense_reference() -> None:
    rng = np.random.default_rng(0)
    dense = rng.random((6, 3, 6)) * (rng.random((6, 3, 6)) < 0.4)  # sparse-ish, rows summing below one
    dense /= dense.sum(axis=2, keepdims=True).clip(min=1.0) * 1.25
    policy = rng.dirichlet(np.ones(3), size=6)
    model = TabularModel(dense, rewards=rng.normal(size=(6, 3)))
    np.testing.assert_array_equal(model.dense_transitions(), dense)
    np.testing.assert_allclose(model.policy_transitions(policy).toarray(), np.einsum("sa,sat->st", policy, dense))
    values = rng.normal(size=6)
    np.testing.assert_allclose(model.q_from_v(values, 0.9), model.rewards + 0.9 * dense @ values)


def test_a_large_grid_world_plans_on_its_sparse_model() -> None:
    # 150 x 150 = 22,500 states: a dense (S, A, S) model would take 20 GB; the sparse one holds S * A entries.
    env = gym.make("GridWorld-v0", rows=150, cols=150)
    model = model_of(env)
    assert model.transitions.nnz == model.n_states * model.n_actions
    for planner in (value_iteration, truncated_policy_iteration):
        result = planner(model, 0.9)
        assert bellman_optimality_residual(model, result.values, 0.9) < 1e-8
        target = (4 - 1) * 150 + (3 - 1)
        assert result.values[target] == pytest.approx(10.0)  # stay on the target: 1 / (1 - 0.9)
        # The book's first row: its cells reach the target by the same paths when the grid extends further.
        np.testing.assert_allclose(result.values[:5], BOOK_OPTIMAL_VALUES[0], atol=0.05)


def test_dense_transitions_of_the_wrong_shape_are_refused() -> None:
    with pytest.raises(ValueError, match=r"expected \(S, A, S\)"):
        TabularModel(np.zeros((2, 2, 3)), rewards=np.zeros((2, 2)))


def test_a_model_with_non_finite_rewards_is_refused_before_planning():
    model = TabularModel(np.ones((1, 1, 1)), np.array([[np.nan]]))
    with pytest.raises(UserError, match="Toy-v0's model has non-finite rewards"):
        require_model(SimpleNamespace(unwrapped=SimpleNamespace(model=lambda: model)), "Toy-v0")
