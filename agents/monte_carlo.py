"""Monte Carlo control: Zhao, *Mathematical Foundations of RL*, chapter 5; Sutton & Barto, chapter 5.

Action values are averages of sampled returns: no model, no bootstrapping. An episode s_0, a_0, r_1, s_1, a_1, r_2,
..., r_T gives every step its discounted return, computed backwards:

    g_T = 0,    g_t = r_{t+1} + gamma * g_{t+1}

    mc_basic             (book 5.2, Algorithm 5.1) policy iteration. Policy evaluation: for every pair (s, a),
                         q_k(s, a) = the average return of episodes_per_pair episodes that start at s, take a, then
                         follow pi_k. Policy improvement: pi_{k+1}(s) = argmax_a q_k(s, a).
    mc_exploring_starts  (book 5.3, Algorithm 5.2) each episode starts from a random pair (s_0, a_0), then follows
                         pi. For each counted visit of (s_t, a_t), backwards through the episode:
                             Returns(s_t, a_t) += g_t,  Num(s_t, a_t) += 1,  q(s_t, a_t) = Returns / Num,
                             pi(s_t) = argmax_a q(s_t, a).
    mc_epsilon_greedy    (book 5.4, Algorithm 5.3) the same averaging with no exploring starts: episodes start wherever
                         the env resets and follow the epsilon-greedy policy of q,
                             pi(a|s) = 1 - epsilon (A - 1) / A  for a = argmax_a q(s, a),  epsilon / A  otherwise.

Deviations from the book:
1. An episode ends when the env ends it or after `episode_length` steps, whichever comes first. The book's
   episode length plays the same role; the rewards after the cut are simply missing from the returns. Monte Carlo
   does not bootstrap on truncation either, since bootstrapping from q would make these TD methods.
2. Starting from a chosen state uses `reset(options={"state": s})`; Gymnasium's toy-text envs (FrozenLake,
   CliffWalking, Taxi) ignore that option, so their `s` attribute is set after the reset instead.
3. mc_exploring_starts draws the starting pair uniformly from the run's generator; the book asks only that every
   pair can start an episode. It counts first visits by default, as S&B's version does; first_visit=False counts
   every visit.
4. The policy is improved after the whole episode rather than at each step of the backward loop. That is the same
   policy, since the episode was generated before any update. mc_basic likewise keeps pi_k for all of sweep k and
   improves every state at the end.
5. pi_0 takes action 0 everywhere, and a greedy improvement takes the first maximising action; the epsilon-greedy
   behaviour breaks ties at random.
6. epsilon may decay linearly over environment steps (epsilon_end, epsilon_decay_steps); off by default, as in the
   book.
7. The budget (steps or episodes) is checked between episodes, so the last one may overrun a step budget by up to
   episode_length steps. If the budget ends in the middle of a mc_basic sweep, the result is greedy in q as it
   stands: pairs evaluated before the stop hold q_{pi_k}, the others q_{pi_(k-1)}. A resumed mc_basic run starts
   a fresh sweep with the checkpoint's policy.
8. An episode cut at episode_length is counted as a finished episode (logged, and counted against
   --total-episodes), as if a TimeLimit wrapper had truncated it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from agents.tabular import (
    TabularResult,
    control_table,
    epsilon_at,
    epsilon_greedy_action,
    epsilon_greedy_policy,
    finish,
    greedy_actions,
    table_shape,
)
from rl.errors import UserError
from rl.run import Run


@dataclass(frozen=True)
class MCBasicConfig:
    """MC Basic."""

    gamma: float = 0.9
    """Discount factor."""
    episode_length: int = 15
    """Steps per episode at most; at least the steps to the goal from any state (5 in the book's grid world)."""
    episodes_per_pair: int = 1
    """Episodes averaged per (state, action) in each evaluation; 1 is exact when env and policy are deterministic."""

    def __post_init__(self) -> None:
        check_unit_interval("gamma", self.gamma)
        check_positive("episode_length", self.episode_length)
        check_positive("episodes_per_pair", self.episodes_per_pair)


@dataclass(frozen=True)
class MCExploringStartsConfig:
    """Monte Carlo control with exploring starts."""

    gamma: float = 0.9
    """Discount factor."""
    episode_length: int = 15
    """Steps per episode at most; at least the steps to the goal from any state (5 in the book's grid world)."""
    first_visit: bool = True
    """Average only the first visit of each (state, action) in an episode; false averages every visit."""

    def __post_init__(self) -> None:
        check_unit_interval("gamma", self.gamma)
        check_positive("episode_length", self.episode_length)


@dataclass(frozen=True)
class MCEpsilonGreedyConfig:
    """Monte Carlo control with an epsilon-greedy policy."""

    gamma: float = 0.9
    """Discount factor."""
    episode_length: int = 100
    """Steps per episode at most (the env's own time limit may end it sooner)."""
    first_visit: bool = False
    """Average only the first visit of each (state, action) in an episode; false averages every visit, as the book."""
    epsilon: float = 0.1
    """Exploration rate of the epsilon-greedy policy."""
    epsilon_end: float | None = None
    """If set, epsilon decays linearly to this value over epsilon_decay_steps environment steps."""
    epsilon_decay_steps: int = 0
    """Length of the epsilon decay, in environment steps."""

    def __post_init__(self) -> None:
        check_unit_interval("gamma", self.gamma)
        check_positive("episode_length", self.episode_length)
        check_unit_interval("epsilon", self.epsilon)
        if self.epsilon_end is not None:
            check_unit_interval("epsilon_end", self.epsilon_end)
        if self.epsilon_decay_steps < 0:
            raise ValueError(f"epsilon_decay_steps must be at least 0, not {self.epsilon_decay_steps}")


def check_unit_interval(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], not {value}")


def check_positive(name: str, value: int) -> None:
    if value < 1:
        raise ValueError(f"{name} must be at least 1, not {value}")


@dataclass(frozen=True)
class Episode:
    """One episode s_0, a_0, r_1, ..., s_(T-1), a_(T-1), r_T as arrays of length T."""

    states: np.ndarray
    """(T,) int states s_t."""
    actions: np.ndarray
    """(T,) int actions a_t."""
    rewards: np.ndarray
    """(T,) rewards r_(t+1), each the one that followed a_t."""


# ---- returns and their averages ----


def discounted_returns(rewards: Sequence[float], gamma: float, bootstrap: float = 0.0) -> np.ndarray:
    """(T,) g_t = r_(t+1) + gamma * g_(t+1) with g_T = bootstrap (0 at a terminal state), computed backwards as in
    the book's algorithms."""
    returns = np.zeros(len(rewards))
    g = bootstrap
    for t in reversed(range(len(rewards))):
        g = rewards[t] + gamma * g
        returns[t] = g
    return returns


def first_visits(states: np.ndarray, actions: np.ndarray) -> np.ndarray:
    """(T,) True at each step whose (s_t, a_t) has not appeared earlier in the episode."""
    mask = np.zeros(len(states), dtype=bool)
    if len(states):
        pairs = states * (actions.max() + 1) + actions  # one integer per (s, a): 1-D unique is much faster
        _, first = np.unique(pairs, return_index=True)
        mask[first] = True
    return mask


def add_episode_returns(
    q: np.ndarray,
    returns_sum: np.ndarray,
    returns_count: np.ndarray,
    episode: Episode,
    gamma: float,
    first_visit: bool,
) -> None:
    """Policy evaluation of Algorithms 5.2 and 5.3, in place: each counted visit adds g_t to Returns(s_t, a_t) and
    one to Num(s_t, a_t); then q = Returns / Num on the pairs the episode visited."""
    g = discounted_returns(episode.rewards, gamma)
    counted = first_visits(episode.states, episode.actions) if first_visit else np.ones(len(g), dtype=bool)
    s, a = episode.states[counted], episode.actions[counted]
    np.add.at(returns_sum, (s, a), g[counted])  # add.at, not +=: a pair visited twice must add twice
    np.add.at(returns_count, (s, a), 1)
    q[s, a] = returns_sum[s, a] / returns_count[s, a]


# ---- collecting episodes ----


def start_from(run: Run, state: int) -> int:
    """Resets the env into `state` (the first half of an exploring start) and returns the observation, `state`."""
    obs = run.rollout.reset(options={"state": state})
    if int(obs) == state:
        return state
    inner = run.env.unwrapped
    # Toy-text envs ignore the option but keep their whole state in the integer `s`, so setting it is a real reset.
    if isinstance(getattr(inner, "s", None), (int, np.integer)):
        inner.s = state
        run.rollout.obs = state
        return state
    raise UserError(
        f"{run.spec.agent} needs an env that can start from a chosen state (reset(options={{'state': s}})), "
        f"and {run.spec.env_id} cannot; use mc_epsilon_greedy, which needs no exploring starts."
    )


def generate_episode(
    run: Run, policy_fn: Callable[[int], int], max_steps: int, first_action: int | None = None
) -> Episode:
    """Follows `policy_fn` from the rollout's current observation until the env ends the episode or max_steps pass.

    `first_action`, when given, is taken at s_0 instead of the policy's choice (the second half of an exploring
    start). An episode cut at max_steps is counted as finished and the env reset, so the next one starts afresh.
    """
    rollout = run.rollout
    states: list[int] = []
    actions: list[int] = []
    rewards: list[float] = []
    ended = False
    while len(rewards) < max_steps and not ended:
        s = int(rollout.obs)
        a = first_action if first_action is not None and not states else policy_fn(s)
        transition = rollout.step(a)
        states.append(s)
        actions.append(int(a))
        rewards.append(float(transition.rewards))
        ended = bool(transition.terminated or transition.truncated)
    episode = Episode(np.array(states, dtype=np.int64), np.array(actions, dtype=np.int64), np.array(rewards))
    if not ended:
        rollout.end_episode()
    return episode


# ---- the agents ----


def train_mc_basic(cfg: MCBasicConfig, run: Run) -> TabularResult:
    """MC Basic (book Algorithm 5.1): policy iteration whose policy evaluation averages sampled returns."""
    n_states, n_actions = table_shape(run)
    q = control_table(run, n_states, n_actions)
    policy = run.state("policy", epsilon_greedy_policy(np.zeros((n_states, n_actions)), 0.0))  # pi_0: action 0
    while mc_policy_evaluation(run, cfg, q, greedy_actions(policy)):
        improved = epsilon_greedy_policy(q, 0.0)  # policy improvement: pi_(k+1)(s) = argmax_a q_k(s, a)
        changed = int((greedy_actions(improved) != greedy_actions(policy)).sum())
        run.logger.line(f"step {run.rollout.global_step} | policy improvement: {changed}/{n_states} states changed")
        policy[:] = improved
    return finish(run, values=q.max(axis=1), policy=epsilon_greedy_policy(q, 0.0), q_values=q)


def mc_policy_evaluation(run: Run, cfg: MCBasicConfig, q: np.ndarray, actions: np.ndarray) -> bool:
    """Policy evaluation of Algorithm 5.1, in place: q(s, a) = the average return of episodes_per_pair episodes that
    start at s, take a, then follow the deterministic policy `actions`. False if the run stopped before the end."""
    n_states, n_actions = q.shape
    follow_pi = deterministic_policy(actions)
    for s in range(n_states):
        for a in range(n_actions):
            returns = np.zeros(cfg.episodes_per_pair)
            for i in range(cfg.episodes_per_pair):
                if not run.keep_going():
                    return False
                start_from(run, s)
                episode = generate_episode(run, follow_pi, cfg.episode_length, first_action=a)
                returns[i] = discounted_returns(episode.rewards, cfg.gamma)[0]
            q[s, a] = returns.mean()
    return True


def train_mc_exploring_starts(cfg: MCExploringStartsConfig, run: Run) -> TabularResult:
    """MC Exploring Starts (book Algorithm 5.2): episodes from random (s, a) pairs, pi greedy in q after each."""
    n_states, n_actions = table_shape(run)
    q = control_table(run, n_states, n_actions)
    returns_sum = run.state("returns_sum", np.zeros((n_states, n_actions)))
    returns_count = run.state("returns_count", np.zeros((n_states, n_actions), dtype=np.int64))
    while run.keep_going():
        # Exploring start: every pair can begin an episode, so every q(s, a) keeps being estimated.
        s, a = divmod(int(run.rng.integers(n_states * n_actions)), n_actions)
        start_from(run, s)
        # pi(s) = argmax_a q(s, a), improved after every episode.
        episode = generate_episode(run, deterministic_policy(greedy_actions(q)), cfg.episode_length, first_action=a)
        add_episode_returns(q, returns_sum, returns_count, episode, cfg.gamma, cfg.first_visit)
    return finish(run, values=q.max(axis=1), policy=epsilon_greedy_policy(q, 0.0), q_values=q)


def train_mc_epsilon_greedy(cfg: MCEpsilonGreedyConfig, run: Run) -> TabularResult:
    """MC epsilon-Greedy (book Algorithm 5.3): episodes from the env's resets, following the epsilon-greedy policy."""
    n_states, n_actions = table_shape(run)
    q = control_table(run, n_states, n_actions)
    returns_sum = run.state("returns_sum", np.zeros((n_states, n_actions)))
    returns_count = run.state("returns_count", np.zeros((n_states, n_actions), dtype=np.int64))
    while run.keep_going():
        epsilon = epsilon_at(cfg.epsilon, cfg.epsilon_end, cfg.epsilon_decay_steps, run.rollout.global_step)
        run.log("charts/epsilon", epsilon)
        episode = generate_episode(run, epsilon_greedy_behaviour(q, epsilon, run.rng), cfg.episode_length)
        add_episode_returns(q, returns_sum, returns_count, episode, cfg.gamma, cfg.first_visit)
    epsilon = epsilon_at(cfg.epsilon, cfg.epsilon_end, cfg.epsilon_decay_steps, run.rollout.global_step)
    policy = epsilon_greedy_policy(q, epsilon)
    return finish(run, values=(policy * q).sum(axis=1), policy=policy, q_values=q)


def deterministic_policy(actions: np.ndarray) -> Callable[[int], int]:
    """The policy that takes `actions[s]` in state s, as `act(s)`."""
    return lambda s: int(actions[s])


def epsilon_greedy_behaviour(q: np.ndarray, epsilon: float, rng: np.random.Generator) -> Callable[[int], int]:
    """The epsilon-greedy policy of q as `act(s)`, greedy ties broken at random."""
    return lambda s: epsilon_greedy_action(q[s], epsilon, rng)
