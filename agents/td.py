"""Temporal-difference learning: Zhao, *Mathematical Foundations of RL*, chapter 7; Sutton & Barto, chapters 6-7.

Each agent updates a table towards a TD target after every step, with step size alpha:

    td0                  v(s) <- v(s) + alpha [r + gamma v(s') - v(s)]                              (book 7.1)
    nstep_td             target r_1 + gamma r_2 + ... + gamma^(n-1) r_n + gamma^n v(s_n)                   (S&B 7.1)
    mc_prediction        target the whole return G_t, updated at the episode's end            (S&B 6.1, eq. 6.1)
    sarsa                q(s,a) <- q(s,a) + alpha [r + gamma q(s',a') - q(s,a)],  a' ~ pi(s')        (book 7.2)
    expected_sarsa       target r + gamma sum_a' pi(a'|s') q(s',a')                                   (book 7.3.1)
    nstep_sarsa          target r_1 + gamma r_2 + ... + gamma^(n-1) r_n + gamma^n q(s_n, a_n)          (book 7.3.2)
    q_learning           target r + gamma max_a' q(s',a'), behaviour epsilon-greedy on q         (book 7.4, on-policy)
    q_learning_offpolicy same target, behaviour a fixed exploratory policy (uniform default)     (book 7.4, off-policy)

The three prediction agents estimate the state values of a fixed policy (uniform by default); mc_prediction is
constant-alpha Monte Carlo, which is n-step TD with n longer than any episode, and runs as that.
The control agents improve the policy after each update: it is epsilon-greedy on q (book Algorithm 7.1).
A terminated step's target has no bootstrap term; a truncated step's does, from the final observation.

Deviations from the book:
1. Greedy ties in the behaviour policy are broken at random (the book takes any maximiser); the learned greedy
   policy reported at the end takes the first maximiser.
2. epsilon may decay linearly over the first `epsilon_decay_steps` environment steps (`epsilon_end`); off by default.
3. Experience is one continuing stream of episodes (the env autoresets), as in S&B's algorithms; the budget is
   environment steps or episodes rather than a fixed number of episodes.
4. The off-policy behaviour is epsilon-greedy on the current q with `behaviour_epsilon` (default 1.0, the book's
   uniform policy); smaller values make a behaviour policy that still explores but follows q.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from agents.monte_carlo import discounted_returns
from agents.planning import ending_states, evaluate_policy_exactly
from agents.tabular import (
    TabularResult,
    control_table,
    cumulative_policy,
    epsilon_greedy_action,
    epsilon_greedy_policy,
    epsilon_greedy_probs,
    finish,
    sample_action,
    scheduled_epsilon,
    table_shape,
)
from rl.errors import UserError
from rl.mdp import model_of
from rl.run import Run


@dataclass(frozen=True)
class TDConfig:
    """Sarsa, Expected Sarsa and Q-learning."""

    gamma: float = 0.9
    """Discount factor."""
    alpha: float = 0.1
    """Step size of the TD update."""
    epsilon: float = 0.1
    """Exploration rate of the epsilon-greedy policy."""
    epsilon_end: float | None = None
    """If set, epsilon decays linearly to this value over epsilon_decay_steps environment steps."""
    epsilon_decay_steps: int = 0
    """Length of the epsilon decay, in environment steps."""

    def __post_init__(self) -> None:
        check_unit_interval("gamma", self.gamma)
        check_unit_interval("epsilon", self.epsilon)
        check_step_size(self.alpha)


@dataclass(frozen=True)
class NStepSarsaConfig(TDConfig):
    """n-step Sarsa."""

    n: int = 3
    """Number of rewards before bootstrapping; n=1 is Sarsa, a long n approaches Monte Carlo."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.n < 1:
            raise ValueError(f"n must be at least 1, not {self.n}")


@dataclass(frozen=True)
class OffPolicyQConfig:
    """Off-policy Q-learning."""

    gamma: float = 0.9
    """Discount factor."""
    alpha: float = 0.1
    """Step size of the TD update."""
    behaviour_epsilon: float = 1.0
    """Behaviour policy: epsilon-greedy on the current q with this epsilon; 1.0 is the uniform policy."""

    def __post_init__(self) -> None:
        check_unit_interval("gamma", self.gamma)
        check_unit_interval("behaviour_epsilon", self.behaviour_epsilon)


@dataclass(frozen=True)
class TD0Config:
    """Prediction of the state values of a given policy: TD(0), and constant-alpha Monte Carlo."""

    gamma: float = 0.9
    """Discount factor."""
    alpha: float = 0.05
    """Step size of the update."""
    policy: str = "uniform"
    """Policy to evaluate: 'uniform', or 'optimal' (the planner's greedy optimal policy; needs the env's model)."""
    initial_value: float = 0.0
    """v(s) before any update (0.5 in S&B's random walk, Example 6.2); 0 where a model shows episodes end."""
    eval_every: int = 1_000
    """Log eval/value_rmse every this many environment steps (envs that expose their model)."""

    def __post_init__(self) -> None:
        check_unit_interval("gamma", self.gamma)
        check_step_size(self.alpha)
        if not math.isfinite(self.initial_value):
            raise ValueError(f"initial_value must be a finite number, not {self.initial_value}")
        if self.eval_every < 1:
            raise ValueError(f"eval_every must be at least 1, not {self.eval_every}")
        if self.policy not in ("uniform", "optimal"):
            raise ValueError(f"policy must be 'uniform' or 'optimal', not {self.policy!r}")


@dataclass(frozen=True)
class NStepTDConfig(TD0Config):
    """n-step TD prediction."""

    n: int = 4
    """Number of rewards before bootstrapping; n=1 is TD(0), n longer than every episode is constant-alpha MC."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.n < 1:
            raise ValueError(f"n must be at least 1, not {self.n}")


def check_unit_interval(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], not {value}")


def check_step_size(alpha: float) -> None:
    if not 0.0 < alpha <= 1.0:
        raise ValueError(f"alpha must be in (0, 1], not {alpha}")


# TD targets: what each update moves towards. `terminated` zeroes the bootstrap term; truncation keeps it.


def td_target(reward: float, v_next: float, terminated: bool, gamma: float) -> float:
    return reward + (0.0 if terminated else gamma * v_next)


def expected_q(q_row: Sequence[float], policy_row: Sequence[float]) -> float:
    """sum_a pi(a|s) q(s, a)."""
    return float(sum(p * q for p, q in zip(policy_row, q_row, strict=True)))


def max_q(q_row: np.ndarray) -> float:
    """max_a q(s, a); through a Python list, which for a few actions costs less than ndarray.max()."""
    return max(q_row.tolist())


def nstep_return(rewards: Sequence[float], bootstrap: float, gamma: float) -> float:
    """r_1 + gamma r_2 + ... + gamma^(k-1) r_k + gamma^k bootstrap, for k = len(rewards)."""
    g = bootstrap
    for reward in reversed(rewards):
        g = reward + gamma * g
    return g


# The agents.


def train_td0(cfg: TD0Config, run: Run) -> TabularResult:
    """TD(0) prediction (book Algorithm 7.1 in its state-value form)."""
    policy, v, log_error = start_prediction(cfg, run)
    cumulative = cumulative_policy(policy)  # actions are drawn as rng.choice(A, p=policy[s]) would, only cheaper
    rollout = run.rollout
    while run.keep_going():
        s = int(rollout.obs)
        t = rollout.step(sample_action(cumulative[s], run.rng))
        v[s] += cfg.alpha * (td_target(t.rewards, v[int(t.next_obs)], t.terminated, cfg.gamma) - v[s])
        log_error(v)
    return finish(run, values=v, policy=policy, predicted=True)


def train_nstep_td(cfg: NStepTDConfig, run: Run) -> TabularResult:
    """n-step TD prediction (S&B 7.1): update s_t once r_(t+1) .. r_(t+n) and s_(t+n) are known."""
    return predict_from_nstep_returns(cfg, run, cfg.n)


def train_mc_prediction(cfg: TD0Config, run: Run) -> TabularResult:
    """Constant-alpha Monte Carlo (S&B 6.1, eq. 6.1), every visit: v(s_t) moves towards the return G_t."""
    return predict_from_nstep_returns(cfg, run, n=None)


def predict_from_nstep_returns(cfg: TD0Config, run: Run, n: int | None) -> TabularResult:
    """n-step TD, or with n=None the whole return (updates wait for the episode's end); a truncated episode's pending
    states bootstrap from its final observation, a terminated one's do not."""
    policy, v, log_error = start_prediction(cfg, run)
    cumulative = cumulative_policy(policy)
    rollout = run.rollout
    states: deque[int] = deque()  # s_k, ..., s_t: the steps not yet updated, oldest first
    rewards: deque[float] = deque()  # r_(k+1), ..., r_(t+1)
    while run.keep_going():
        s = int(rollout.obs)
        t = rollout.step(sample_action(cumulative[s], run.rng))
        states.append(s)
        rewards.append(float(t.rewards))
        if t.terminated or t.truncated:  # every pending step's (shorter) return, in one backward pass
            bootstrap = 0.0 if t.terminated else v[int(t.next_obs)]
            for s_k, g in zip(states, discounted_returns(rewards, cfg.gamma, bootstrap), strict=True):
                v[s_k] += cfg.alpha * (g - v[s_k])
            states.clear()
            rewards.clear()
        elif len(states) == n:
            s_k = states.popleft()
            v[s_k] += cfg.alpha * (nstep_return(rewards, v[int(t.next_obs)], cfg.gamma) - v[s_k])
            rewards.popleft()
        log_error(v)
    return finish(run, values=v, policy=policy, predicted=True)


def start_prediction(cfg: TD0Config, run: Run) -> tuple[np.ndarray, np.ndarray, Callable[[np.ndarray], None]]:
    """The policy to evaluate (S, A), the value table (S,), and log_error(v), which logs eval/value_rmse every
    `eval_every` steps against the exact values when the env exposes its model, and does nothing otherwise."""
    n_states, n_actions = table_shape(run)
    model = model_of(run.env)
    policy = policy_to_evaluate(cfg, run, n_states, n_actions)
    v = run.state("v", np.full(n_states, cfg.initial_value))
    if model is None:
        return policy, v, lambda values: None
    v[ending_states(model)] = 0.0  # v(terminal) = 0, as the book sets it: no update ever reaches those states
    true_values = evaluate_policy_exactly(model, policy, cfg.gamma)
    next_log = -(-run.rollout.global_step // cfg.eval_every) * cfg.eval_every  # on the grid, after a resume too

    def log_error(values: np.ndarray) -> None:
        nonlocal next_log
        if run.rollout.global_step >= next_log:
            run.log("eval/value_rmse", np.sqrt(np.mean((values - true_values) ** 2)))
            next_log += cfg.eval_every

    return policy, v, log_error


def policy_to_evaluate(cfg: TD0Config, run: Run, n_states: int, n_actions: int) -> np.ndarray:
    """(S, A) the policy td0 evaluates; also saved in the checkpoint so `rl eval` can replay it."""
    if cfg.policy == "uniform":
        policy = np.full((n_states, n_actions), 1.0 / n_actions)
    else:
        from agents.planning import one_hot_policy, value_iteration

        model = model_of(run.env)
        if model is None:
            raise UserError(
                f"td0 policy='optimal' needs the env's model, which {run.spec.env_id} does not expose; "
                "use policy='uniform'."
            )
        policy = one_hot_policy(value_iteration(model, cfg.gamma).policy, n_actions)
    return run.state("policy", policy)


def train_sarsa(cfg: TDConfig, run: Run) -> TabularResult:
    """Sarsa (book Algorithm 7.1): on-policy TD control with an epsilon-greedy policy."""
    n_states, n_actions = table_shape(run)
    q = control_table(run, n_states, n_actions)
    rollout = run.rollout
    action = epsilon_greedy_action(q[int(rollout.obs)], scheduled_epsilon(cfg, run, log=False), run.rng)
    while run.keep_going():
        epsilon = scheduled_epsilon(cfg, run)
        s = int(rollout.obs)
        t = rollout.step(action)
        s_next = int(t.next_obs)
        next_action = epsilon_greedy_action(q[s_next], epsilon, run.rng)
        target = td_target(t.rewards, q[s_next, next_action], t.terminated, cfg.gamma)
        q[s, action] += cfg.alpha * (target - q[s, action])
        if t.terminated or t.truncated:
            next_action = epsilon_greedy_action(q[int(rollout.obs)], epsilon, run.rng)
        action = next_action
    return finish_control(run, q)


def train_expected_sarsa(cfg: TDConfig, run: Run) -> TabularResult:
    """Expected Sarsa (book 7.3.1): the target averages q(s', .) over the epsilon-greedy policy."""
    n_states, n_actions = table_shape(run)
    q = control_table(run, n_states, n_actions)
    rollout = run.rollout
    while run.keep_going():
        epsilon = scheduled_epsilon(cfg, run)
        s = int(rollout.obs)
        action = epsilon_greedy_action(q[s], epsilon, run.rng)
        t = rollout.step(action)
        q_next = q[int(t.next_obs)].tolist()  # a list: a few Python multiplications beat NumPy's per-call cost
        target = td_target(
            t.rewards, expected_q(q_next, epsilon_greedy_probs(q_next, epsilon)), t.terminated, cfg.gamma
        )
        q[s, action] += cfg.alpha * (target - q[s, action])
    return finish_control(run, q)


def train_nstep_sarsa(cfg: NStepSarsaConfig, run: Run) -> TabularResult:
    """n-step Sarsa (book 7.3.2, S&B 7.2): update (s_t, a_t) once r_(t+1) .. r_(t+n) and a_(t+n) are known."""
    n_states, n_actions = table_shape(run)
    q = control_table(run, n_states, n_actions)
    rollout = run.rollout
    pending: deque[tuple[int, int, float]] = deque()  # (s_k, a_k, r_(k+1)) not yet updated, oldest first
    action = epsilon_greedy_action(q[int(rollout.obs)], scheduled_epsilon(cfg, run, log=False), run.rng)
    while run.keep_going():
        epsilon = scheduled_epsilon(cfg, run)
        s = int(rollout.obs)
        t = rollout.step(action)
        pending.append((s, action, float(t.rewards)))
        s_next = int(t.next_obs)
        next_action = epsilon_greedy_action(q[s_next], epsilon, run.rng)
        bootstrap = 0.0 if t.terminated else q[s_next, next_action]
        # Full n-step windows update one pair; at an episode end every pending pair gets its shorter return.
        while len(pending) == cfg.n or (pending and (t.terminated or t.truncated)):
            s_k, a_k, _ = pending[0]
            g = nstep_return([r for _, _, r in pending], bootstrap, cfg.gamma)
            q[s_k, a_k] += cfg.alpha * (g - q[s_k, a_k])
            pending.popleft()
        if t.terminated or t.truncated:
            next_action = epsilon_greedy_action(q[int(rollout.obs)], epsilon, run.rng)
        action = next_action
    return finish_control(run, q)


def train_q_learning(cfg: TDConfig, run: Run) -> TabularResult:
    """Q-learning, on-policy version (book Algorithm 7.2): behave epsilon-greedily, learn the greedy values."""
    n_states, n_actions = table_shape(run)
    q = control_table(run, n_states, n_actions)
    rollout = run.rollout
    while run.keep_going():
        epsilon = scheduled_epsilon(cfg, run)
        s = int(rollout.obs)
        action = epsilon_greedy_action(q[s], epsilon, run.rng)
        t = rollout.step(action)
        target = td_target(t.rewards, max_q(q[int(t.next_obs)]), t.terminated, cfg.gamma)
        q[s, action] += cfg.alpha * (target - q[s, action])
    return finish_control(run, q)


def train_q_learning_offpolicy(cfg: OffPolicyQConfig, run: Run) -> TabularResult:
    """Q-learning, off-policy version (book Algorithm 7.3): learn the greedy policy from a behaviour policy's data."""
    n_states, n_actions = table_shape(run)
    q = control_table(run, n_states, n_actions)
    rollout = run.rollout
    while run.keep_going():
        s = int(rollout.obs)
        action = epsilon_greedy_action(q[s], cfg.behaviour_epsilon, run.rng)
        t = rollout.step(action)
        target = td_target(t.rewards, max_q(q[int(t.next_obs)]), t.terminated, cfg.gamma)
        q[s, action] += cfg.alpha * (target - q[s, action])
    return finish_control(run, q)


def finish_control(run: Run, q: np.ndarray) -> TabularResult:
    """The greedy policy of q with its estimated values max_a q(s, a), evaluated greedily."""
    return finish(run, values=q.max(axis=1), policy=epsilon_greedy_policy(q, 0.0), q_values=q)
