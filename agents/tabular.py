"""What the tabular agents share: table sizes, epsilon-greedy policies, the result record and the final evaluation."""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from rl.errors import UserError
from rl.run import Run
from rl.schedules import linear_schedule
from rl.spaces import discrete_size


@dataclass(frozen=True)
class TabularResult:
    """What a tabular agent learned, for tests and the demo to check."""

    values: np.ndarray
    """(S,) state values v(s): of the learned policy for control agents, of the evaluated policy for prediction."""
    policy: np.ndarray
    """(S, A) action probabilities of the learned (or, for prediction, the evaluated) policy."""
    q_values: np.ndarray | None = None
    """(S, A) action values, for agents that learn them."""
    eval_returns: np.ndarray | None = None
    """Undiscounted returns of the final greedy evaluation episodes."""

    @property
    def greedy_actions(self) -> np.ndarray:
        """(S,) the greedy action in each state."""
        source = self.q_values if self.q_values is not None else self.policy
        return greedy_actions(source)


def table_shape(run: Run) -> tuple[int, int]:
    """(S, A) of the run's env; a UserError if either space is not Discrete."""
    env = run.env
    n_states = discrete_size(env.observation_space, "observation", run.spec.agent, run.spec.env_id)
    n_actions = discrete_size(env.action_space, "action", run.spec.agent, run.spec.env_id)
    return n_states, n_actions


def control_table(run: Run, n_states: int, n_actions: int) -> np.ndarray:
    """A control agent's (S, A) table q: zeros, or the checkpoint's when resuming. Its greedy policy, read live, is
    the one `--eval-every` evaluates while the run trains."""
    q = run.state("q", np.zeros((n_states, n_actions)))
    run.evaluate_during_training(lambda obs: int(np.argmax(q[int(obs)])))
    return q


def greedy_actions(table: np.ndarray) -> np.ndarray:
    """(S,) the first maximising action of each row of an (S, A) table of action values or probabilities."""
    return np.argmax(table, axis=1)


def epsilon_greedy_policy(q_values: np.ndarray, epsilon: float) -> np.ndarray:
    """(S, A) the epsilon-greedy policy of book section 5.4.

    1 - epsilon (A - 1) / A on the first greedy action, epsilon / A on each other one.
    """
    n_states, n_actions = q_values.shape
    policy = np.full((n_states, n_actions), epsilon / n_actions)
    policy[np.arange(n_states), greedy_actions(q_values)] += 1.0 - epsilon
    return policy


def epsilon_greedy_action(q_row: np.ndarray, epsilon: float, rng: np.random.Generator) -> int:
    """Explores uniformly with probability epsilon, else acts greedily, breaking ties at random.

    The row is read as a Python list: for a handful of actions, max and a comprehension cost a fraction of NumPy's
    per-call overhead. `best[rng.integers(len(best))]` draws exactly what `rng.choice(best)` would.
    """
    if rng.random() < epsilon:
        return int(rng.integers(len(q_row)))
    values = q_row.tolist()
    best_value = max(values)
    best = [a for a, value in enumerate(values) if value == best_value]
    if not best:  # NaN compares unequal to everything, itself included
        raise UserError(
            f"the action values became NaN ({values}): the rewards are too large for float64 arithmetic; scale them "
            "down."
        )
    return best[0] if len(best) == 1 else best[int(rng.integers(len(best)))]


def epsilon_greedy_probs(q_row: list[float], epsilon: float) -> list[float]:
    """(A,) the probabilities with which `epsilon_greedy_action` picks each action, ties shared equally."""
    best_value = max(q_row)
    n_best = sum(value == best_value for value in q_row)
    explore = epsilon / len(q_row)
    return [explore + (1.0 - epsilon) / n_best if value == best_value else explore for value in q_row]


def cumulative_policy(policy: np.ndarray) -> list[list[float]]:
    """(S, A) each row of pi(.|s) as its cumulative distribution, normalised as `rng.choice(A, p=pi(.|s))` does."""
    cumulative = policy.cumsum(axis=1)
    return (cumulative / cumulative[:, -1:]).tolist()


def sample_action(cumulative_probs: list[float], rng: np.random.Generator) -> int:
    """An action from a cumulative distribution by inverse transform: the first a whose F(a) exceeds one uniform draw.

    The same single draw and the same search as `rng.choice(A, p=probs)`, so the same action from the same stream,
    without choice's checks and array allocations on every call.
    """
    return bisect.bisect_right(cumulative_probs, rng.random())


def epsilon_at(epsilon: float, epsilon_end: float | None, decay_steps: int, step: int) -> float:
    """epsilon, decayed linearly to epsilon_end over decay_steps when epsilon_end is set."""
    if epsilon_end is None:
        return epsilon
    return linear_schedule(epsilon, epsilon_end, decay_steps, step)


EPSILON_LOG_EVERY = 1_000
"""While epsilon decays, the step-by-step agents log charts/epsilon every this many steps."""


def scheduled_epsilon(cfg: Any, run: Run, log: bool = True) -> float:
    """epsilon at the run's current step, from a config with epsilon, epsilon_end and epsilon_decay_steps; logged
    (with `log`) every EPSILON_LOG_EVERY steps while it decays."""
    step = run.rollout.global_step
    epsilon = epsilon_at(cfg.epsilon, cfg.epsilon_end, cfg.epsilon_decay_steps, step)
    if log and cfg.epsilon_end is not None and step % EPSILON_LOG_EVERY == 0:
        run.log("charts/epsilon", epsilon)
    return epsilon


POLICY_DRAW_SEED = 0
"""The seed of the generator a prediction agent's evaluation draws its policy's actions from, in the run's final
evaluation and in `rl eval` alike, so that `rl eval RUN --seed <seed + 10000>` repeats `eval/episodic_return`."""


def policy_sampler(policy: np.ndarray) -> Callable[[Any], int]:
    """act(obs) -> an action drawn from the (S, A) policy table, from a fresh generator seeded `POLICY_DRAW_SEED`."""
    cumulative, rng = cumulative_policy(policy), np.random.default_rng(POLICY_DRAW_SEED)
    return lambda obs: sample_action(cumulative[int(obs)], rng)


def finish(
    run: Run, values: np.ndarray, policy: np.ndarray, q_values: np.ndarray | None = None, predicted: bool = False
) -> TabularResult:
    """Evaluates the greedy policy on a fresh env and packs the result. A prediction agent (`predicted`) learns the
    values of `policy` rather than improving it, so its evaluation runs that policy, stochastic or not: the greedy
    version of the uniform policy would walk the first action everywhere."""
    result = TabularResult(
        values=values.copy(), policy=policy.copy(), q_values=None if q_values is None else q_values.copy()
    )
    actions = result.greedy_actions
    act = policy_sampler(policy) if predicted else lambda obs: int(actions[int(obs)])
    label = "evaluation of the policy predicted" if predicted else "greedy evaluation"
    eval_returns = run.evaluate(act, label=label)
    return TabularResult(result.values, result.policy, result.q_values, eval_returns)


def greedy_act_from_checkpoint(arrays: dict[str, np.ndarray], cfg: object, env: gym.Env) -> Callable[[Any], int]:
    """The greedy policy stored in a tabular checkpoint, as `act(obs) -> action`."""
    actions = greedy_actions(checked_table(arrays["q"] if "q" in arrays else arrays["policy"], env))
    return lambda obs: int(actions[int(obs)])


def predicted_act_from_checkpoint(arrays: dict[str, np.ndarray], cfg: object, env: gym.Env) -> Callable[[Any], int]:
    """The policy whose values a prediction checkpoint (td0) holds, drawn from as its final evaluation did."""
    return policy_sampler(checked_table(arrays["policy"], env))


def checked_table(table: np.ndarray, env: gym.Env) -> np.ndarray:
    """`table`, once its (states, actions) shape is known to fit `env`; a UserError otherwise."""
    env_id = str(env.spec.id if env.spec else env)
    shape = (discrete_size(env.observation_space, "observation", "tabular", env_id),
             discrete_size(env.action_space, "action", "tabular", env_id))  # fmt: skip
    if table.shape != shape:
        raise UserError(
            f"the checkpoint's table has shape {table.shape} but {env_id} needs {shape} (states, actions); evaluate "
            "with the env and env kwargs the run was trained on."
        )
    return table
