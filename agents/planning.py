"""Dynamic programming on a known model: Shiyu Zhao, "Mathematical Foundations of Reinforcement Learning", ch. 4.

Every function takes an `rl.mdp.TabularModel` (transitions P without terminating mass, sparse, and rewards r (S, A))
and returns arrays; nothing here touches an environment. With q(s, a) = r(s, a) + gamma * sum_s' P(s'|s, a) v(s'):

- Policy evaluation (section 2.7): v_pi solves v = r_pi + gamma * P_pi v. Iteratively,
      v_{k+1}(s) = sum_a pi(a|s) q_k(s, a),
  or exactly, v_pi = (I - gamma * P_pi)^-1 r_pi.
- Value iteration (section 4.1):
      v_{k+1}(s) = max_a q_k(s, a), until max_s |v_{k+1}(s) - v_k(s)| < tol; then pi(s) = argmax_a q(s, a).
- Policy iteration (section 4.2): evaluate pi_k exactly, then improve greedily,
      pi_{k+1}(s) = argmax_a q_{pi_k}(s, a), until the policy stops changing.
- Truncated policy iteration (section 4.3): like policy iteration, but evaluation runs only j sweeps of the
  Bellman expectation update, starting from the previous values; until max_s |v_k(s) - v_{k-1}(s)| < tol.
  j = 1 is value iteration and j -> infinity is policy iteration.

Departures from the book:
1. The initial policy pi_0 (which the book leaves arbitrary) is greedy with respect to v_0 = 0, so truncated policy
   iteration with j = 1 takes exactly the steps of value iteration.
2. Greedy ties go to the first action within 1e-9 (relative) of the maximum, so floating-point noise cannot flip a
   tie and make policy iteration cycle. The book's figures show one of the tied actions without saying which.
3. gamma may be 1, as in Sutton & Barto's episodic examples (the gambler's problem, cliff walking), though the book's
   convergence proofs rest on the contraction that gamma < 1 gives. Undiscounted values exist only where episodes
   end (or, where they never end, nothing more is paid): a planner that meets a policy with rewards for ever stops
   with an error that says so. Ties between greedy actions go to ones under which episodes end
   (`greedy_policy_that_ends`): the first tied action can go round for ever where waiting costs nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy.sparse.linalg import splu

from rl.errors import UserError
from rl.mdp import TabularModel

TIE_TOLERANCE = 1e-9
"""Actions whose q lies within this (relative) distance of the best one count as tied."""
MASS_TOLERANCE = 1e-12
"""A transition row whose probabilities sum to less than 1 - MASS_TOLERANCE may end the episode; rounding does not."""
MAX_ITERATIONS = 100_000
"""Enough sweeps for tol = 1e-10 at gamma = 0.999; more means gamma is too close to 1 for the tolerance."""


@dataclass(frozen=True)
class PlanResult:
    """What a planner found: the optimal values, action values and a greedy policy."""

    values: np.ndarray
    """(S,) state values v*(s)."""
    q_values: np.ndarray
    """(S, A) action values q*(s, a) = r(s, a) + gamma * P(s, a) . v*."""
    policy: np.ndarray
    """(S,) int greedy action in each state."""
    iterations: int
    """Outer iterations until convergence: value-iteration sweeps, or policy improvements."""


# ---- building blocks ----


def tied_actions(q_values: np.ndarray) -> np.ndarray:
    """(S, A) True for the actions whose q is within TIE_TOLERANCE of the best in their state."""
    best = q_values.max(axis=1, keepdims=True)
    return q_values >= best - TIE_TOLERANCE * np.maximum(1.0, np.abs(best))


def greedy_policy(q_values: np.ndarray) -> np.ndarray:
    """(S,) the first action whose q is within TIE_TOLERANCE of the best in each state."""
    return np.argmax(tied_actions(q_values), axis=1)  # argmax of a boolean array is the first True


def greedy_policy_that_ends(model: TabularModel, q_values: np.ndarray) -> np.ndarray:
    """(S,) the greedy policy, but where its first tied actions never end the episode, tied actions that do: round
    by round, a state takes a tied action that may end the episode or lead into a state already known to end.
    Undiscounted, ties can otherwise go round for ever (on the random walk a step left is worth a step right); the
    states no greedy action leads out of keep the first one."""
    tied, n_states, n_actions = tied_actions(q_values), model.n_states, model.n_actions
    actions = np.argmax(tied, axis=1)
    reached = reaches_the_end(model.policy_transitions(one_hot_policy(actions, n_actions)))
    may_end = ending_chance(model) > 0
    while True:
        leads_on = may_end | ((model.transitions @ reached.astype(float)).reshape(n_states, n_actions) > 0)
        choices = tied & leads_on & ~reached[:, None]
        new = choices.any(axis=1)
        if not new.any():
            return actions
        actions[new] = np.argmax(choices[new], axis=1)
        reached |= new


def improved_policy(model: TabularModel, q_values: np.ndarray, gamma: float) -> np.ndarray:
    """(S,) the greedy policy of q: one that ends episodes where it can when gamma = 1."""
    return greedy_policy_that_ends(model, q_values) if gamma == 1.0 else greedy_policy(q_values)


def ending_chance(model: TabularModel) -> np.ndarray:
    """(S, A) the chance that taking a in s ends the episode: what the transition row lacks of 1."""
    row_mass = np.asarray(model.transitions.sum(axis=1)).reshape(model.n_states, model.n_actions)
    return np.where(row_mass < 1.0 - MASS_TOLERANCE, 1.0 - row_mass, 0.0)


def ending_states(model: TabularModel) -> np.ndarray:
    """(S,) the states where episodes have ended: every action's row is empty and pays nothing (toy-text's holes and
    goals, the gambler's 0 and goal)."""
    return (ending_chance(model) == 1.0).all(axis=1) & (model.rewards == 0.0).all(axis=1)


def reaches_the_end(p_pi: sparse.csr_array) -> np.ndarray:
    """(S,) whether an episode from s can end under the policy whose transition matrix is P_pi."""
    reached = np.asarray(p_pi.sum(axis=1)).ravel() < 1.0 - MASS_TOLERANCE  # may end at once
    while True:
        more = reached | (p_pi @ reached.astype(float) > 0)  # or may move into a state that can
        if (more == reached).all():
            return reached
        reached = more


def one_hot_policy(actions: np.ndarray, n_actions: int) -> np.ndarray:
    """(S, A) action probabilities of the deterministic policy that takes `actions[s]` in state s."""
    policy = np.zeros((len(actions), n_actions))
    policy[np.arange(len(actions)), actions] = 1.0
    return policy


def policy_rewards_and_transitions(model: TabularModel, policy: np.ndarray) -> tuple[np.ndarray, sparse.csr_array]:
    """r_pi (S,) and P_pi (S, S, sparse): the reward and state-transition matrix averaged over the policy's actions."""
    if policy.shape != (model.n_states, model.n_actions):
        raise ValueError(f"policy has shape {policy.shape}, expected (S, A) = {(model.n_states, model.n_actions)}.")
    r_pi = np.einsum("sa,sa->s", policy, model.rewards)
    return r_pi, model.policy_transitions(policy)


def check_gamma(gamma: float) -> None:
    if not 0.0 <= gamma <= 1.0:
        raise UserError(
            f"planning needs a discount gamma in [0, 1], got {gamma}; pass one (rl plan --gamma 0.9, or --set "
            "gamma=0.9 for an agent)."
        )


def no_finite_values(name: str) -> UserError:
    return UserError(
        f"{name} met a policy with no finite undiscounted values: from some state its episode never ends and goes "
        "on paying rewards; pass gamma < 1."
    )


# ---- policy evaluation ----


def evaluate_policy_exactly(model: TabularModel, policy: np.ndarray, gamma: float) -> np.ndarray:
    """(S,) v_pi from the closed form: solve (I - gamma * P_pi) v = r_pi (a sparse LU factorisation). The matrix is
    singular only at gamma = 1, for a policy under which some episode never ends."""
    check_gamma(gamma)
    r_pi, p_pi = policy_rewards_and_transitions(model, policy)
    live = reaches_the_end(p_pi) if gamma == 1.0 else np.ones(model.n_states, dtype=bool)
    if np.any(r_pi[~live] != 0):  # rewards for ever; where there are none the values are 0
        raise no_finite_values("policy evaluation")
    values, keep = np.zeros(model.n_states), np.flatnonzero(live)
    p_live = p_pi if live.all() else p_pi[keep][:, keep]
    try:
        values[keep] = splu(sparse.identity(keep.size, format="csc") - gamma * p_live.tocsc()).solve(r_pi[keep])
    except RuntimeError:  # "Factor is exactly singular": not expected once the states that never end are out
        raise no_finite_values("policy evaluation") from None
    if not np.isfinite(values).all():
        raise no_finite_values("policy evaluation")
    return values


def policy_evaluation(
    model: TabularModel,
    policy: np.ndarray,
    gamma: float,
    tol: float = 1e-10,
    max_iterations: int = MAX_ITERATIONS,
) -> np.ndarray:
    """(S,) v_pi by iterating v_{k+1} = r_pi + gamma * P_pi v_k from v_0 = 0 until the largest change is below tol."""
    check_gamma(gamma)
    r_pi, p_pi = policy_rewards_and_transitions(model, policy)
    values, convergence = np.zeros(model.n_states), Convergence("policy evaluation", gamma, tol)
    for _ in range(max_iterations):
        new_values = r_pi + gamma * p_pi @ values
        if convergence.done(values, new_values):
            return new_values
        values = new_values
    raise not_converged("policy evaluation", max_iterations)


class Convergence:
    """Whether sweeps have converged (the largest change below tol) and, at gamma = 1, whether they never will: values
    that grow for ever change by as much in each sweep, so a change that has not shrunk over STALL_CHECK sweeps stops
    the planner early instead of after max_iterations."""

    STALL_CHECK = 1_000

    def __init__(self, name: str, gamma: float, tol: float) -> None:
        self.name, self.gamma, self.tol, self.sweeps, self.checked_change = name, gamma, tol, 0, np.inf

    def done(self, values: np.ndarray, new_values: np.ndarray) -> bool:
        change = float(np.max(np.abs(new_values - values)))
        self.sweeps += 1
        if self.gamma == 1.0 and self.sweeps % self.STALL_CHECK == 0:
            if change >= self.checked_change:
                raise UserError(
                    f"{self.name} stopped after {self.sweeps} sweeps: at gamma = 1 its values change as much as "
                    f"{self.STALL_CHECK} sweeps before, as they do when some episode never ends and goes on paying "
                    "rewards; pass gamma < 1."
                )
            self.checked_change = change
        return change < self.tol


def not_converged(name: str, max_iterations: int) -> UserError:
    return UserError(
        f"{name} did not converge within {max_iterations} iterations; lower gamma (rl plan --gamma, --set gamma for "
        "an agent), or raise max_iterations when calling the planner from Python. At gamma = 1 the values may not "
        "exist: they need episodes that end."
    )


# ---- the three planners ----


def value_iteration(
    model: TabularModel, gamma: float, tol: float = 1e-10, max_iterations: int = MAX_ITERATIONS
) -> PlanResult:
    """Book Algorithm 4.1: v_{k+1}(s) = max_a q_k(s, a) until the largest change is below tol."""
    check_gamma(gamma)
    values, convergence = np.zeros(model.n_states), Convergence("value iteration", gamma, tol)
    for k in range(1, max_iterations + 1):
        new_values = model.q_from_v(values, gamma).max(axis=1)
        if convergence.done(values, new_values):
            return plan_result(model, new_values, gamma, k)
        values = new_values
    raise not_converged("value iteration", max_iterations)


def policy_iteration(
    model: TabularModel, gamma: float, tol: float = 1e-10, max_iterations: int = MAX_ITERATIONS
) -> PlanResult:
    """Book Algorithm 4.2: evaluate pi_k exactly, improve to pi_{k+1} = greedy(q_{pi_k}), until pi stops changing.

    tol is unused, since evaluation is exact; it is accepted so all planners share one signature.
    """
    check_gamma(gamma)
    actions = improved_policy(model, model.q_from_v(np.zeros(model.n_states), gamma), gamma)
    for k in range(1, max_iterations + 1):
        try:
            values = evaluate_policy_exactly(model, one_hot_policy(actions, model.n_actions), gamma)
        except UserError:
            raise no_finite_values("policy iteration") from None
        improved = improved_policy(model, model.q_from_v(values, gamma), gamma)
        if np.array_equal(improved, actions):
            return plan_result(model, values, gamma, k)
        actions = improved
    raise not_converged("policy iteration", max_iterations)


def truncated_policy_iteration(
    model: TabularModel,
    gamma: float,
    tol: float = 1e-10,
    max_iterations: int = MAX_ITERATIONS,
    truncation_steps: int = 5,
) -> PlanResult:
    """Book Algorithm 4.3: j = truncation_steps sweeps of evaluation from the last values, then a greedy improvement."""
    check_gamma(gamma)
    if truncation_steps < 1:
        raise UserError(f"truncation_steps must be at least 1, got {truncation_steps}; pass e.g. truncation_steps=5.")
    values, convergence = np.zeros(model.n_states), Convergence("truncated policy iteration", gamma, tol)
    actions = greedy_policy(model.q_from_v(values, gamma))  # each sweep's policy: the final one ends (plan_result)
    for k in range(1, max_iterations + 1):
        r_pi, p_pi = policy_rewards_and_transitions(model, one_hot_policy(actions, model.n_actions))
        new_values = values
        for _ in range(truncation_steps):
            new_values = r_pi + gamma * p_pi @ new_values
        actions = greedy_policy(model.q_from_v(new_values, gamma))
        if convergence.done(values, new_values):
            return plan_result(model, new_values, gamma, k)
        values = new_values
    raise not_converged("truncated policy iteration", max_iterations)


def plan_result(model: TabularModel, values: np.ndarray, gamma: float, iterations: int) -> PlanResult:
    """Packs converged values with their action values and greedy policy."""
    q_values = model.q_from_v(values, gamma)
    policy = improved_policy(model, q_values, gamma)
    return PlanResult(values=values, q_values=q_values, policy=policy, iterations=iterations)


Planner = Callable[..., PlanResult]
PLANNERS: dict[str, Planner] = {
    "value_iteration": value_iteration,
    "policy_iteration": policy_iteration,
    "truncated_policy_iteration": truncated_policy_iteration,
}
"""Planner by name, each called as planner(model, gamma, tol)."""
