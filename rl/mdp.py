"""A finite MDP as arrays, the form planners and value-error metrics work with.

Termination is folded into the transition array: `transitions[s, a, s2]` is the probability of moving to `s2` and
the episode going on. Mass that ends the episode is left out, so a row may sum to less than one, and the Bellman
backup `rewards[s, a] + gamma * transitions[s, a] @ v` never bootstraps past termination.
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from rl.errors import UserError


@dataclass(frozen=True)
class TabularModel:
    """The dynamics of a finite MDP with S states and A actions."""

    transitions: np.ndarray
    """(S, A, S) probability of each next state when the episode continues."""
    rewards: np.ndarray
    """(S, A) expected immediate reward."""

    @property
    def n_states(self) -> int:
        return self.transitions.shape[0]

    @property
    def n_actions(self) -> int:
        return self.transitions.shape[1]

    def q_from_v(self, v: np.ndarray, gamma: float) -> np.ndarray:
        """Action values q(s, a) = r(s, a) + gamma * sum_s' p(s' | s, a) v(s'); shape (S, A)."""
        return self.rewards + gamma * self.transitions @ v


def model_from_p(p: dict, n_states: int, n_actions: int) -> TabularModel:
    """Builds a model from Gymnasium toy-text's `P[s][a] = [(prob, next_state, reward, terminated), ...]`."""
    transitions = np.zeros((n_states, n_actions, n_states))
    rewards = np.zeros((n_states, n_actions))
    for s in range(n_states):
        for a in range(n_actions):
            for prob, next_state, reward, terminated in p[s][a]:
                rewards[s, a] += prob * reward
                if not terminated:
                    transitions[s, a, next_state] += prob
    return TabularModel(transitions, rewards)


def model_of(env: gym.Env) -> TabularModel | None:
    """The model an env exposes: our envs' `model()`, toy-text's `P` table, or None if it has neither."""
    inner = env.unwrapped
    if hasattr(inner, "model") and callable(inner.model):
        return inner.model()
    if hasattr(inner, "P") and isinstance(env.observation_space, gym.spaces.Discrete):
        return model_from_p(inner.P, int(env.observation_space.n), int(env.action_space.n))
    return None


def require_model(env: gym.Env, env_id: str) -> TabularModel:
    """The env's model, or a UserError saying that planning needs one."""
    model = model_of(env)
    if model is None:
        raise UserError(
            f"{env_id} does not expose its model; planning needs an env with a `model()` method "
            "(like GridWorld-v0) or a toy-text `P` table (like FrozenLake-v1)."
        )
    return model
