"""A finite MDP as arrays, the form planners and value-error metrics work with.

Termination is folded into the transition matrix: the entry for (s, a) and s2 is the probability of moving to s2
and the episode going on. Mass that ends the episode is left out, so a row may sum to less than one, and the Bellman
backup `r(s, a) + gamma * sum_s2 P(s2 | s, a) v(s2)` never bootstraps past termination.

The transitions are a sparse (S * A, S) matrix with row s * A + a: a grid world moves to one cell per action, so a
dense (S, A, S) array would hold S * A * S numbers for S * A nonzeros (a 200 x 200 grid: 64 GB against 3 MB).
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np
from scipy import sparse

from rl.errors import UserError


@dataclass(frozen=True)
class TabularModel:
    """The dynamics of a finite MDP with S states and A actions.

    `transitions` may also be given as a dense (S, A, S) array (small hand-made MDPs); it is stored sparse.
    """

    transitions: sparse.csr_array
    """(S * A, S) probability of each next state when the episode continues; row s * A + a."""
    rewards: np.ndarray
    """(S, A) expected immediate reward."""

    def __post_init__(self) -> None:
        rewards = np.asarray(self.rewards, dtype=np.float64)
        if rewards.ndim != 2:
            raise ValueError(f"rewards have shape {rewards.shape}, expected (S, A).")
        n_states, n_actions = rewards.shape
        transitions = self.transitions
        if not sparse.issparse(transitions):
            transitions = np.asarray(transitions, dtype=np.float64)
            if transitions.shape != (n_states, n_actions, n_states):
                raise ValueError(f"transitions have shape {transitions.shape}, expected (S, A, S).")
            transitions = transitions.reshape(n_states * n_actions, n_states)
        transitions = sparse.csr_array(transitions, dtype=np.float64)
        if transitions.shape != (n_states * n_actions, n_states):
            raise ValueError(f"transitions have shape {transitions.shape}, expected (S * A, S).")
        object.__setattr__(self, "transitions", transitions)
        object.__setattr__(self, "rewards", rewards)

    @property
    def n_states(self) -> int:
        return self.rewards.shape[0]

    @property
    def n_actions(self) -> int:
        return self.rewards.shape[1]

    def q_from_v(self, v: np.ndarray, gamma: float) -> np.ndarray:
        """Action values q(s, a) = r(s, a) + gamma * sum_s' p(s' | s, a) v(s'); shape (S, A)."""
        return self.rewards + gamma * (self.transitions @ v).reshape(self.n_states, self.n_actions)

    def policy_transitions(self, policy: np.ndarray) -> sparse.csr_array:
        """P_pi (S, S) sparse: P_pi(s' | s) = sum_a pi(a | s) p(s' | s, a), for a policy given as (S, A)."""
        rows = np.repeat(np.arange(self.n_states), self.n_actions)  # row s * A + a belongs to state s
        mixing = sparse.csr_array(
            (np.asarray(policy, dtype=np.float64).ravel(), (rows, np.arange(rows.size))),
            shape=(self.n_states, rows.size),
        )  # (S, S * A)
        return mixing @ self.transitions

    def dense_transitions(self) -> np.ndarray:
        """(S, A, S) as a dense array; only for small models."""
        return self.transitions.toarray().reshape(self.n_states, self.n_actions, self.n_states)


def model_from_outcomes(
    rewards: np.ndarray, rows: list[int], next_states: list[int], probs: list[float]
) -> TabularModel:
    """A model from its nonzero continuing transitions: row s * A + a moves to next_states[i] with probs[i].

    Repeated (row, next state) pairs add up.
    """
    n_states, n_actions = np.shape(rewards)
    transitions = sparse.csr_array((probs, (rows, next_states)), shape=(n_states * n_actions, n_states))
    transitions.sum_duplicates()
    return TabularModel(transitions, rewards)


def model_from_p(p: dict, n_states: int, n_actions: int) -> TabularModel:
    """Builds a model from Gymnasium toy-text's `P[s][a] = [(prob, next_state, reward, terminated), ...]`."""
    rewards = np.zeros((n_states, n_actions))
    rows, next_states, probs = [], [], []
    for s in range(n_states):
        for a in range(n_actions):
            for prob, next_state, reward, terminated in p[s][a]:
                rewards[s, a] += prob * reward
                if not terminated:
                    rows.append(s * n_actions + a)
                    next_states.append(next_state)
                    probs.append(prob)
    return model_from_outcomes(rewards, rows, next_states, probs)


def model_of(env: gym.Env) -> TabularModel | None:
    """The model an env exposes: our envs' `model()`, toy-text's `P` table, or None if it has neither."""
    inner = env.unwrapped
    if hasattr(inner, "model") and callable(inner.model):
        return inner.model()
    if hasattr(inner, "P") and isinstance(env.observation_space, gym.spaces.Discrete):
        try:
            return model_from_p(inner.P, int(env.observation_space.n), int(env.action_space.n))
        except (KeyError, IndexError, TypeError, ValueError) as error:
            raise UserError(
                f"the env's P table is not P[s][a] = [(prob, next_state, reward, terminated), ...] for every state and "
                f"action of its spaces ({type(error).__name__}: {error}); fix the table."
            ) from None
    return None


def require_model(env: gym.Env, env_id: str) -> TabularModel:
    """The env's model, or a UserError saying that planning needs one."""
    model = model_of(env)
    if model is None:
        raise UserError(
            f"{env_id} does not expose its model; planning needs an env with a `model()` method "
            "(like GridWorld-v0) or a toy-text `P` table (like FrozenLake-v1)."
        )
    if not np.isfinite(model.rewards).all():
        raise UserError(f"{env_id}'s model has non-finite rewards (NaN or infinite); give the env finite rewards.")
    return model
