"""Linear value function approximation: Zhao, *Mathematical Foundations of RL*, chapter 8; Sutton & Barto, 9-10.

The value is linear in a feature vector x(s) (agents/features.py): v(s, w) = w . x(s), and q(s, a, w) = w_a . x(s)
with one weight vector per action, so grad_w v(s, w) = x(s). Each agent moves w along that gradient by the TD error
of one transition, treating the target as a constant (a semi-gradient):

    td_linear          w <- w + alpha [r + gamma v(s', w) - v(s, w)] x(s)                   (book 8.2, S&B 9.3)
    sarsa_linear       w_a <- w_a + alpha [r + gamma q(s', a', w) - q(s, a, w)] x(s)        (book 8.3.1, S&B 10.1)
                       with a' ~ pi(s'), the epsilon-greedy policy of q
    q_learning_linear  w_a <- w_a + alpha [r + gamma max_a' q(s', a', w) - q(s, a, w)] x(s)     (book 8.3.2)

td_linear predicts the values of a fixed policy (uniform by default) and, on envs that expose their model, logs
eval/value_rmse against the exact values from agents.planning.evaluate_policy_exactly. The control agents act
epsilon-greedily on q. A terminated step's target has no bootstrap term; a truncated step's does, from the final
observation. With features='one_hot' each agent is its tabular twin in agents/td.py, step for step.

The prediction defaults (Fourier order 3, alpha = 0.002, gamma = 0.9) bring td_linear on GridWorld-v0 to an RMSE of
~0.13-0.22 from the uniform policy's exact values in 30,000 steps; the best any order-3 Fourier vector can do is 0.09.

The control defaults are S&B's Mountain Car setup (Figure 10.1): 8 tilings of 8x8 tiles, alpha = 0.5 / 8 per tile,
epsilon = 0, gamma = 1, and w = 0, which is optimistic under rewards of -1 and so explores by itself. Under
MountainCar-v0's 200-step time limit (truncation bootstraps, so the optimism survives the cut) the car first reaches
the goal in episode ~25, and after 150 episodes (~27,000 steps) the greedy policy reaches it from every start in
~130-150 steps. With env_kwargs={"max_episode_steps": 1000}, closer to S&B's unlimited episodes, the first or
second episode already gets there.

Deviations from the books:
1. With tile coding the step size per weight is alpha / tilings (S&B 9.5.4's choice, which moves v(s) by about
   alpha of the TD error); with other features it is alpha, Fourier features included (Konidaris et al. 2011 suggest
   alpha / ||c|| for the feature of frequency vector c).
2. Greedy ties in the behaviour policy are broken at random; the final greedy policy takes the first maximiser.
3. epsilon may decay linearly over `epsilon_decay_steps` environment steps (`epsilon_end`); off by default.
4. Experience is one stream of autoreset episodes; the budget is environment steps or episodes.
5. td_linear's final evaluation runs the evaluated policy itself (sampled), since a prediction agent learns no
   policy of its own.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from agents.features import FEATURE_KINDS, FeatureMap, Features, make_features
from agents.planning import evaluate_policy_exactly, one_hot_policy, value_iteration
from agents.tabular import POLICY_DRAW_SEED, epsilon_greedy_action, scheduled_epsilon
from agents.td import check_unit_interval, td_target
from rl.errors import Diverged, UserError
from rl.mdp import model_of
from rl.run import Run
from rl.spaces import discrete_size

ACTION_HINT = "the linear agents choose among finitely many actions; pick an env such as MountainCar-v0 or CartPole-v1"


@dataclass(frozen=True)
class PredictionConfig:
    """TD(0) with linear function approximation: the state values of a given policy."""

    gamma: float = 0.9
    """Discount factor."""
    alpha: float = 0.002
    """Step size of the semi-gradient update (divided by tilings for tile coding)."""
    policy: str = "uniform"
    """Policy to evaluate: 'uniform', or 'optimal' (the planner's greedy optimal policy; needs the env's model)."""
    features: str = "fourier"
    """Feature vector x(s): 'one_hot', 'polynomial', 'fourier' or 'tile'."""
    order: int = 3
    """Order of the polynomial or Fourier basis."""
    tilings: int = 8
    """Number of offset tilings (tile coding)."""
    tiles_per_dim: int = 8
    """Tiles along each observation dimension in one tiling (tile coding)."""
    bounds: tuple[tuple[float, float], ...] | None = None
    """[low, high] per observation dimension, replacing the space's bounds; needed where those are infinite."""
    eval_every: int = 1_000
    """Log eval/value_rmse every this many environment steps (envs that expose their model)."""

    def __post_init__(self) -> None:
        check_unit_interval("gamma", self.gamma)
        check_common(self)
        if self.policy not in ("uniform", "optimal"):
            raise ValueError(f"policy must be 'uniform' or 'optimal', not {self.policy!r}")

    @property
    def step_size(self) -> float:
        return step_size(self.alpha, self.features, self.tilings)


@dataclass(frozen=True)
class ControlConfig:
    """Semi-gradient Sarsa and Q-learning with linear action values."""

    gamma: float = 1.0
    """Discount factor."""
    alpha: float = 0.5
    """Step size of the semi-gradient update (divided by tilings for tile coding)."""
    epsilon: float = 0.0
    """Exploration rate of the epsilon-greedy policy; 0 relies on optimistic initial values, as S&B 10.1 does."""
    epsilon_end: float | None = None
    """If set, epsilon decays linearly to this value over epsilon_decay_steps environment steps."""
    epsilon_decay_steps: int = 0
    """Length of the epsilon decay, in environment steps."""
    features: str = "tile"
    """Feature vector x(s): 'one_hot', 'polynomial', 'fourier' or 'tile'."""
    order: int = 3
    """Order of the polynomial or Fourier basis."""
    tilings: int = 8
    """Number of offset tilings (tile coding)."""
    tiles_per_dim: int = 8
    """Tiles along each observation dimension in one tiling (tile coding)."""
    bounds: tuple[tuple[float, float], ...] | None = None
    """[low, high] per observation dimension, replacing the space's bounds; needed where those are infinite."""

    def __post_init__(self) -> None:
        check_unit_interval("gamma", self.gamma)
        check_unit_interval("epsilon", self.epsilon)
        check_common(self)

    @property
    def step_size(self) -> float:
        return step_size(self.alpha, self.features, self.tilings)


@dataclass(frozen=True)
class LinearResult:
    """What a linear agent learned, for tests and the demo to check."""

    weights: np.ndarray
    """(F,) w of v(s, w) for prediction, (A, F) one w_a per action for control."""
    values: np.ndarray | None
    """(S,) v(s, w), or max_a q(s, a, w) for control, on envs with Discrete states; else None."""
    q_values: np.ndarray | None
    """(S, A) q(s, a, w) of the control agents on envs with Discrete states; else None."""
    eval_returns: np.ndarray
    """Undiscounted returns of the final evaluation episodes."""


def check_common(cfg: PredictionConfig | ControlConfig) -> None:
    if not cfg.alpha > 0.0:
        raise ValueError(f"alpha must be positive, not {cfg.alpha}")
    if cfg.features not in FEATURE_KINDS:
        raise ValueError(f"features must be one of {', '.join(map(repr, FEATURE_KINDS))}, not {cfg.features!r}")
    for name, least in (("order", 0), ("tilings", 1), ("tiles_per_dim", 1)):
        if getattr(cfg, name) < least:
            raise ValueError(f"{name} must be at least {least}, not {getattr(cfg, name)}")


def step_size(alpha: float, features: str, tilings: int) -> float:
    """alpha / tilings for tile coding, where x(s) has `tilings` ones; alpha otherwise."""
    return alpha / tilings if features == "tile" else alpha


def feature_map(cfg: PredictionConfig | ControlConfig, env: gym.Env) -> FeatureMap:
    """x(s) as the config describes it on this env; training and `rl eval` build the same one."""
    return make_features(
        cfg.features, env.observation_space, env, cfg.order, cfg.tilings, cfg.tiles_per_dim, cfg.bounds
    )


# The linear values and their gradient step; x(s) is sparse, so each touches only the active features.


def state_value(w: np.ndarray, x: Features) -> float:
    """v(s, w) = w . x(s)."""
    return float(w[x.indices] @ x.values)


def action_values(w: np.ndarray, x: Features) -> np.ndarray:
    """(A,) q(s, a, w) = w_a . x(s) for every action."""
    return w[:, x.indices] @ x.values


def semi_gradient_step(w: np.ndarray, x: Features, step: float, td_error: float) -> None:
    """w <- w + step * td_error * grad_w (w . x(s)), in place; the gradient of a linear value is x(s)."""
    if not math.isfinite(td_error):  # semi-gradient TD with a large step on large features diverges
        raise Diverged(
            f"the linear weights diverged (TD error {td_error}); lower alpha (now {step} per feature) or use "
            "tile coding, whose features are 0 or 1."
        )
    w[x.indices] += step * td_error * x.values


# The agents.

NO_OVERFLOW_WARNINGS = np.errstate(over="ignore", invalid="ignore")
"""Diverging weights overflow before the TD error turns non-finite: `semi_gradient_step` reports it as one error."""


@NO_OVERFLOW_WARNINGS
def train_td_linear(cfg: PredictionConfig, run: Run) -> LinearResult:
    """TD-Linear (book 8.2; S&B 9.3's semi-gradient TD(0)): the values of a fixed policy."""
    n_actions = discrete_size(run.env.action_space, "action", run.spec.agent, run.spec.env_id, ACTION_HINT)
    features = feature_map(cfg, run.env)
    policy = evaluated_policy(cfg, run, n_actions)
    model = model_of(run.env)
    true_values = (
        evaluate_policy_exactly(model, policy_table(policy, run.env), cfg.gamma) if model is not None else None
    )
    w = run.state("w", np.zeros(features.n_features))
    rollout = run.rollout
    next_eval = rollout.global_step
    while run.keep_going():
        x = features(rollout.obs)
        t = rollout.step(int(run.rng.choice(n_actions, p=policy(rollout.obs))))
        target = td_target(t.rewards, state_value(w, features(t.next_obs)), t.terminated, cfg.gamma)
        semi_gradient_step(w, x, cfg.step_size, target - state_value(w, x))
        if true_values is not None and rollout.global_step >= next_eval:
            values = state_values(w, features, len(true_values))
            run.log("eval/value_rmse", np.sqrt(np.mean((values - true_values) ** 2)))
            next_eval += cfg.eval_every
    eval_returns = run.evaluate(
        sampler(policy, np.random.default_rng(POLICY_DRAW_SEED)), label="evaluation of the policy predicted"
    )
    values = state_values(w, features, n_discrete(run.env)) if n_discrete(run.env) else None
    return LinearResult(w.copy(), values, None, eval_returns)


def evaluated_policy(cfg: PredictionConfig, run: Run, n_actions: int) -> Callable[[Any], np.ndarray]:
    """pi(.|s) as a function of the observation; the optimal policy is saved so `rl eval` can replay it."""
    if cfg.policy == "uniform":
        uniform = np.full(n_actions, 1.0 / n_actions)
        return lambda obs: uniform
    model = model_of(run.env)
    if model is None:
        raise UserError(
            f"{run.spec.agent} policy='optimal' needs the env's model, which {run.spec.env_id} does not expose; "
            "use policy='uniform'."
        )
    table = run.state("policy", one_hot_policy(value_iteration(model, cfg.gamma).policy, n_actions))
    return lambda obs: table[int(obs)]


@NO_OVERFLOW_WARNINGS
def train_sarsa_linear(cfg: ControlConfig, run: Run) -> LinearResult:
    """Semi-gradient Sarsa (S&B 10.1, book 8.3.1): on-policy control with an epsilon-greedy policy."""
    features, w = control_setup(cfg, run)
    rollout = run.rollout
    first_epsilon = scheduled_epsilon(cfg, run, log=False)
    action = epsilon_greedy_action(action_values(w, features(rollout.obs)), first_epsilon, run.rng)
    while run.keep_going():
        epsilon = scheduled_epsilon(cfg, run)
        x = features(rollout.obs)
        t = rollout.step(action)
        q_next = action_values(w, features(t.next_obs))
        next_action = epsilon_greedy_action(q_next, epsilon, run.rng)
        target = td_target(t.rewards, q_next[next_action], t.terminated, cfg.gamma)
        semi_gradient_step(w[action], x, cfg.step_size, target - action_values(w, x)[action])
        if t.terminated or t.truncated:
            next_action = epsilon_greedy_action(action_values(w, features(rollout.obs)), epsilon, run.rng)
        action = next_action
    return finish_control(run, w, features)


@NO_OVERFLOW_WARNINGS
def train_q_learning_linear(cfg: ControlConfig, run: Run) -> LinearResult:
    """Q-learning with linear function approximation (book 8.3.2): behave epsilon-greedily, learn the greedy values."""
    features, w = control_setup(cfg, run)
    rollout = run.rollout
    while run.keep_going():
        epsilon = scheduled_epsilon(cfg, run)
        x = features(rollout.obs)
        q = action_values(w, x)
        action = epsilon_greedy_action(q, epsilon, run.rng)
        t = rollout.step(action)
        target = td_target(t.rewards, action_values(w, features(t.next_obs)).max(), t.terminated, cfg.gamma)
        semi_gradient_step(w[action], x, cfg.step_size, target - q[action])
    return finish_control(run, w, features)


def control_setup(cfg: ControlConfig, run: Run) -> tuple[FeatureMap, np.ndarray]:
    """The feature map and the (A, F) weights w_a, zero (optimistic when every reward is negative); the greedy policy
    of w, read live, is the one `--eval-every` evaluates while the run trains."""
    n_actions = discrete_size(run.env.action_space, "action", run.spec.agent, run.spec.env_id, ACTION_HINT)
    features = feature_map(cfg, run.env)
    w = run.state("w", np.zeros((n_actions, features.n_features)))
    run.evaluate_during_training(greedy_policy(w, features))
    return features, w


def finish_control(run: Run, w: np.ndarray, features: FeatureMap) -> LinearResult:
    """Evaluates the greedy policy of q on a fresh env and packs the result."""
    eval_returns = run.evaluate(greedy_policy(w, features))
    n_states = n_discrete(run.env)
    if not n_states:
        return LinearResult(w.copy(), None, None, eval_returns)
    q = np.stack([action_values(w, features(s)) for s in range(n_states)])
    return LinearResult(w.copy(), q.max(axis=1), q, eval_returns)


# Tables on Discrete states, and the policies `rl eval` replays.


def n_discrete(env: gym.Env) -> int:
    """The number of states of a Discrete observation space, 0 for any other."""
    return int(env.observation_space.n) if isinstance(env.observation_space, gym.spaces.Discrete) else 0


def state_values(w: np.ndarray, features: FeatureMap, n_states: int) -> np.ndarray:
    """(S,) v(s, w) of every state 0 .. S-1."""
    return np.array([state_value(w, features(s)) for s in range(n_states)])


def policy_table(policy: Callable[[Any], np.ndarray], env: gym.Env) -> np.ndarray:
    """(S, A) pi(a|s) of every state, for the planner's exact policy evaluation."""
    return np.stack([policy(s) for s in range(n_discrete(env))])


def greedy_policy(w: np.ndarray, features: FeatureMap) -> Callable[[Any], int]:
    """act(obs) -> the first action of highest q(s, a, w)."""
    return lambda obs: int(np.argmax(action_values(w, features(obs))))


def sampler(policy: Callable[[Any], np.ndarray], rng: np.random.Generator) -> Callable[[Any], int]:
    """act(obs) -> an action drawn from pi(.|s)."""
    return lambda obs: int(rng.choice(len(policy(obs)), p=policy(obs)))


def act_from_checkpoint(arrays: dict[str, np.ndarray], cfg: ControlConfig, env: gym.Env) -> Callable[[Any], int]:
    """The greedy policy of the weights a sarsa_linear or q_learning_linear checkpoint stores."""
    return greedy_policy(arrays["w"], feature_map(cfg, env))


def prediction_act_from_checkpoint(
    arrays: dict[str, np.ndarray], cfg: PredictionConfig, env: gym.Env
) -> Callable[[Any], int]:
    """The policy a td_linear checkpoint evaluated, the saved optimal one or the uniform one, drawn from as its final
    evaluation did."""
    if "policy" in arrays:
        actions = np.argmax(arrays["policy"], axis=1)
        return lambda obs: int(actions[int(obs)])
    n_actions = discrete_size(env.action_space, "action", "td_linear", str(env.spec.id if env.spec else env))
    uniform = np.full(n_actions, 1.0 / n_actions)
    return sampler(lambda obs: uniform, np.random.default_rng(POLICY_DRAW_SEED))
