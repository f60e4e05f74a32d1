"""The demo: tabular agents learn the book's grid world; their greedy policies are shown beside the optimal one.

It trains each agent for a short budget, writes one TensorBoard run per agent under the runs directory, and prints
how many states each learned policy gets right (an action is right when it is optimal under q*, ties included).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

ENV_ID = "GridWorld-v0"
GAMMA = 0.9
# (agent, config overrides, environment steps): budgets that finish in seconds on two cores.
DEMO_RUNS: list[tuple[str, dict, int]] = [
    ("q_learning_offpolicy", {"alpha": 0.1}, 100_000),
    ("q_learning", {"alpha": 0.1, "epsilon": 0.3}, 100_000),
    ("sarsa", {"alpha": 0.1, "epsilon": 0.3, "epsilon_end": 0.0, "epsilon_decay_steps": 80_000}, 100_000),
    ("mc_exploring_starts", {}, 100_000),
    ("td0", {}, 50_000),
]


def side_by_side(left: str, right: str, titles: tuple[str, str]) -> str:
    left_lines, right_lines = left.splitlines(), right.splitlines()
    width = max(len(titles[0]), *(len(line) for line in left_lines)) + 4
    rows = [titles[0].ljust(width) + titles[1]]
    rows += [a.ljust(width) + b for a, b in zip(left_lines, right_lines, strict=True)]
    return "\n".join(rows)


def optimal_action_mask(q_star: np.ndarray, tolerance: float = 1e-6) -> np.ndarray:
    """(S, A) True where an action is optimal: q*(s, a) is within `tolerance` of v*(s)."""
    return q_star >= q_star.max(axis=1, keepdims=True) - tolerance


def run_demo(runs_dir: Path, seed: int = 0) -> None:
    import envs  # noqa: F401  (registers GridWorld-v0)
    from agents.planning import value_iteration
    from agents.registry import get_agent
    from rl.config import build_config, config_dict
    from rl.environments import make_env
    from rl.mdp import require_model
    from rl.run import Run, RunSpec

    grid = make_env(ENV_ID).unwrapped
    optimum = value_iteration(require_model(grid, ENV_ID), GAMMA)
    optimal = optimal_action_mask(optimum.q_values)
    print(f"The grid world of Zhao's book (5x5, gamma={GAMMA}). Value iteration gives the optimum:\n")
    print(side_by_side(grid.format_values(optimum.values), grid.format_policy(optimum.policy), ("v*", "pi*")))
    run_dirs = []
    for agent, overrides, steps in DEMO_RUNS:
        entry = get_agent(agent)
        cfg = build_config(entry.config, overrides, agent)
        spec = RunSpec(agent=agent, env_id=ENV_ID, seed=seed, total_steps=steps, runs_dir=str(runs_dir), quiet=True)
        with Run(spec, config_dict(cfg)) as run:
            result = entry.train(cfg, run)
        run_dirs.append(run.run_dir)
        print(f"\n{agent} ({steps} steps): {entry.description}")
        if agent == "td0":
            rmse = np.sqrt(np.mean((result.values - true_uniform_values(grid)) ** 2))
            print(f"values of the uniform policy, RMS error {rmse:.3f} against the exact ones:")
            print(grid.format_values(result.values))
            continue
        greedy = result.greedy_actions
        right = int(optimal[np.arange(len(greedy)), greedy].sum())
        print(side_by_side(grid.format_policy(greedy), grid.format_policy(optimum.policy), ("learned", "optimal")))
        print(f"optimal action in {right}/{len(greedy)} states; greedy return {result.eval_returns.mean():.1f}")
    print(f"\nTensorBoard runs written under {runs_dir}/. Open them with:\n  tensorboard --logdir {runs_dir}")
    print("Compare runs with:\n  rl compare " + " ".join(str(d) for d in run_dirs[:2]) + " --out curves.png")


def true_uniform_values(grid) -> np.ndarray:
    from agents.planning import policy_evaluation

    model = grid.model()
    return policy_evaluation(model, np.full((model.n_states, model.n_actions), 1.0 / model.n_actions), GAMMA)
