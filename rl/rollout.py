"""The rollout core: steps a Gymnasium env or vector env and hands back transitions and finished episodes.

Every agent, tabular or deep, collects experience through `Rollout`, so the rules below are written once:
- `terminated` and `truncated` stay apart. A learner bootstraps from `next_obs` on truncation, never on termination.
- `next_obs` is always the observation the action led to. When an episode ends, Gymnasium's autoreset has already
  produced the first observation of the next episode; that one becomes `Rollout.obs`, and the final observation of
  the finished episode is what `next_obs` holds (vector envs hand it over in `infos["final_obs"]`).
- Episode returns are the env's rewards summed. With `clip_reward` c > 0 the transitions carry each reward clipped to
  [-c, c] (Mnih et al. 2015 learn Atari games from rewards clipped to [-1, 1]), while the returns stay game scores.
- Vector envs must autoreset in SAME_STEP mode (what `make_vector_env` builds): the NEXT_STEP default spends one
  step per reset on a transition that is not part of either episode.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv

from rl.errors import UserError


@dataclass(slots=True)
class Transition:
    """One step: scalars for a single env, arrays with a leading N axis for a vector env of N envs.

    Read-only by convention, not frozen: a frozen dataclass sets every field through object.__setattr__, which made
    building one cost about a sixth of a toy-text env step, paid on every step of every tabular agent.
    """

    obs: Any
    actions: Any
    rewards: Any
    next_obs: Any
    """The observation the action led to; the final observation when the episode ended here."""
    terminated: Any
    truncated: Any


@dataclass(frozen=True, slots=True)
class EpisodeStats:
    """A finished episode: undiscounted return and number of steps."""

    episode_return: float
    length: int


class Rollout:
    """Steps `env` with the actions it is given, resetting finished episodes and recording their statistics."""

    def __init__(
        self, env: gym.Env | VectorEnv, seed: int, global_step: int = 0, episodes: int = 0, clip_reward: float = 0.0
    ) -> None:
        if clip_reward < 0:
            raise ValueError(f"clip_reward must be >= 0 (0 for no clipping), not {clip_reward}")
        self.env = env
        self.clip_reward = clip_reward
        self.is_vector = isinstance(env, VectorEnv)
        if self.is_vector and env.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP) != AutoresetMode.SAME_STEP:
            raise ValueError("Rollout needs a vector env with autoreset_mode=SAME_STEP; build it with make_vector_env.")
        self.num_envs = env.num_envs if self.is_vector else 1
        self.global_step = global_step
        """Environment steps taken so far, summed over the N envs."""
        self.episodes = episodes
        """Episodes finished so far."""
        self.finished: list[EpisodeStats] = []
        self._returns = np.zeros(self.num_envs)
        self._lengths = np.zeros(self.num_envs, dtype=np.int64)
        first = env.reset(seed=seed)
        if not (isinstance(first, tuple) and len(first) == 2):
            raise UserError(
                f"{self._env_name()}'s reset() returned {type(first).__name__}, not the (obs, info) pair of "
                "Gymnasium's API; return both from reset()."
            )
        self.obs = first[0]

    def reset(self, options: dict | None = None) -> Any:
        """Abandons the running episode(s) without recording them and starts afresh."""
        self.obs, _ = self.env.reset(options=options)
        self._returns[:] = 0.0
        self._lengths[:] = 0
        return self.obs

    def end_episode(self) -> Any:
        """Counts the running episode(s) as finished, as a TimeLimit truncation would, and starts afresh.

        For agents that cut episodes at a length of their own (Monte Carlo's episode length): `reset` alone would
        drop the episode unlogged, and a --total-episodes budget would never run out.
        """
        for i in range(self.num_envs):
            self._finish(i)
        return self.reset()

    def step(self, actions: Any) -> Transition:
        if self.is_vector:
            return self._step_vector(actions)
        return self._step_single(actions)

    def pop_finished(self) -> list[EpisodeStats]:
        """The episodes finished since the last call."""
        finished, self.finished = self.finished, []
        return finished

    def _step_single(self, action: Any) -> Transition:
        next_obs, reward, terminated, truncated, _ = self.env.step(action)
        try:
            finite = math.isfinite(reward)
        except TypeError:  # an array or another non-number
            finite = False
        if not finite:
            self._refuse_reward(reward)
        self._record(0, reward)
        if self.clip_reward:
            reward = min(max(reward, -self.clip_reward), self.clip_reward)
        transition = Transition(self.obs, action, reward, next_obs, terminated, truncated)
        if terminated or truncated:
            self._finish(0)
            self.obs, _ = self.env.reset()
        else:
            self.obs = next_obs
        return transition

    def _step_vector(self, actions: np.ndarray) -> Transition:
        try:
            obs, rewards, terminated, truncated, infos = self.env.step(actions)
        except ValueError as error:  # SyncVectorEnv storing an env's array reward into its (N,) reward array
            if "setting an array element with a sequence" not in str(error):
                raise
            self._refuse_reward("an array")
        next_obs = obs
        done = np.logical_or(terminated, truncated)
        if done.any():
            # SAME_STEP autoreset: `obs` already starts the next episode where done; the true final ones are in infos.
            next_obs = obs.copy()
            for i in np.flatnonzero(done):
                next_obs[i] = infos["final_obs"][i]
        if not np.isfinite(rewards).all():
            self._refuse_reward(rewards[~np.isfinite(rewards)][0])
        self._returns += rewards
        if self.clip_reward:
            rewards = np.clip(rewards, -self.clip_reward, self.clip_reward)
        transition = Transition(self.obs, actions, rewards, next_obs, terminated, truncated)
        self._lengths += 1
        self.global_step += self.num_envs
        for i in np.flatnonzero(done):
            self._finish(i)
        self.obs = obs
        return transition

    def _refuse_reward(self, reward: Any) -> None:
        """A reward of NaN or +-inf would turn every value it reaches into NaN, and one that is not a single number
        has no meaning for a learner; stop with the env named instead."""
        raise UserError(
            f"{self._env_name()} returned a reward that is not one finite number ({reward}) at step "
            f"{self.global_step}; learning needs finite scalar rewards: fix the env or the reward settings passed to "
            "it (--env-kwargs)."
        )

    def _env_name(self) -> str:
        one_env = self.env.envs[0] if hasattr(self.env, "envs") else self.env  # a SyncVectorEnv's first env
        return one_env.spec.id if one_env.spec is not None else type(one_env.unwrapped).__name__

    def _record(self, i: int, reward: float) -> None:
        self._returns[i] += reward
        self._lengths[i] += 1
        self.global_step += 1

    def _finish(self, i: int) -> None:
        self.finished.append(EpisodeStats(float(self._returns[i]), int(self._lengths[i])))
        self.episodes += 1
        self._returns[i] = 0.0
        self._lengths[i] = 0
