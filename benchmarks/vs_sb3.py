"""Our agents against Stable-Baselines3 (and sb3-contrib) side by side: same env, budget and hyperparameters.

    pip install -e ".[bench]"
    python benchmarks/vs_sb3.py [--tasks dqn_cartpole ...] [--seeds 0 1 2] [--threads 1]

For every task and seed it trains our agent, then SB3's, alternating, each in a fresh process with the same torch
thread count, and prints per task: environment steps per second of each (training only: the final greedy evaluation
is timed apart), updates per second for off-policy agents, the speed ratio ours / SB3, and the mean greedy return of
each over 20 evaluation episodes run by the same evaluation code. Hyperparameters are rl-baselines3-zoo's for both
sides; a task lists only what differs from our agent's defaults and the SB3 constructor arguments that match them.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

EVAL_EPISODES = 20


@dataclass(frozen=True)
class Task:
    env_id: str
    total_steps: int
    agent: str
    """Our agent's name in `agents.registry`."""
    ours: dict[str, Any]
    """Overrides of our agent's config."""
    sb3_class: str
    """`module:Class` of the SB3 algorithm."""
    sb3_kwargs: dict[str, Any]
    updates: int = 0
    """Gradient updates in the run (off-policy agents), for updates per second; 0 when not counted."""
    sb3_policy_kwargs: dict[str, Any] = field(default_factory=dict)


def dqn_updates(total: int, learning_starts: int, train_frequency: int, gradient_steps: int) -> int:
    return (total - learning_starts) // train_frequency * gradient_steps


TASKS: dict[str, Task] = {
    "dqn_cartpole": Task(
        "CartPole-v1",
        50_000,
        "dqn",
        {},
        "stable_baselines3:DQN",
        dict(
            learning_rate=2.3e-3,
            batch_size=64,
            buffer_size=100_000,
            learning_starts=1_000,
            gamma=0.99,
            target_update_interval=10,
            train_freq=256,
            gradient_steps=128,
            exploration_fraction=0.16,
            exploration_final_eps=0.04,
        ),
        updates=dqn_updates(50_000, 1_000, 256, 128),
        sb3_policy_kwargs=dict(net_arch=[256, 256]),
    ),
}


def run_ours(task: Task, seed: int) -> tuple[float, float]:
    """(training seconds, mean greedy return) of our agent."""
    import envs  # noqa: F401
    from agents.registry import get_agent
    from rl.config import build_config, config_dict
    from rl.run import Run, RunSpec

    entry = get_agent(task.agent)
    cfg = build_config(entry.config, task.ours, task.agent)
    with tempfile.TemporaryDirectory() as runs_dir:
        spec = RunSpec(task.agent, task.env_id, {}, seed, total_steps=task.total_steps, runs_dir=runs_dir,
                       eval_episodes=EVAL_EPISODES, quiet=True)  # fmt: skip
        with Run(spec, config_dict(cfg)) as run:
            evaluate, eval_seconds = run.evaluate, []

            def timed_evaluate(*args: Any, **kwargs: Any) -> Any:
                start = time.perf_counter()
                returns = evaluate(*args, **kwargs)
                eval_seconds.append(time.perf_counter() - start)
                return returns

            run.evaluate = timed_evaluate
            start = time.perf_counter()
            returns = entry.train(cfg, run)
            seconds = time.perf_counter() - start - sum(eval_seconds)
    eval_returns = returns if not hasattr(returns, "eval_returns") else returns.eval_returns
    return seconds, float(eval_returns.mean())


def run_sb3(task: Task, seed: int) -> tuple[float, float]:
    """(training seconds, mean greedy return) of the SB3 agent, evaluated by our evaluation code."""
    import importlib

    import gymnasium as gym

    from rl.evaluation import evaluate_policy

    module, name = task.sb3_class.split(":")
    algo = getattr(importlib.import_module(module), name)
    model = algo("MlpPolicy", gym.make(task.env_id), seed=seed, device="cpu", verbose=0,
                 policy_kwargs=task.sb3_policy_kwargs or None, **task.sb3_kwargs)  # fmt: skip
    start = time.perf_counter()
    model.learn(task.total_steps)
    seconds = time.perf_counter() - start
    env = gym.make(task.env_id)
    returns = evaluate_policy(env, lambda obs: model.predict(obs, deterministic=True)[0], EVAL_EPISODES, seed + 10_000)
    return seconds, float(returns.mean())


def one_run(side: str, task: Task, seed: int, threads: int) -> tuple[float, float]:
    import torch

    torch.set_num_threads(threads)
    return (run_ours if side == "ours" else run_sb3)(task, seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=1, help="torch threads in each run, the same for both sides")
    parser.add_argument("--total-steps", type=int, help="override every task's budget (a quick check, not a result)")
    args = parser.parse_args()

    tasks = {name: TASKS[name] for name in args.tasks}
    if args.total_steps:
        tasks = {name: replace(task, total_steps=args.total_steps, updates=0) for name, task in tasks.items()}
    results: dict[tuple[str, str], list[tuple[float, float]]] = {}
    with ProcessPoolExecutor(max_workers=1, max_tasks_per_child=1) as pool:  # one run at a time, a fresh process each
        for task_name in args.tasks:
            for seed in args.seeds:
                for side in ("ours", "sb3"):
                    seconds, mean_return = pool.submit(one_run, side, tasks[task_name], seed, args.threads).result()
                    steps_per_s = tasks[task_name].total_steps / seconds
                    print(f"{task_name} seed {seed} {side:4s}: {steps_per_s:8.0f} steps/s, return {mean_return:7.1f}")
                    results.setdefault((task_name, side), []).append((seconds, mean_return))

    header = f"{'task':16s} {'ours steps/s':>12s} {'SB3 steps/s':>12s} {'ratio':>6s} {'ours upd/s':>10s} "
    print("\n" + header + f"{'SB3 upd/s':>10s} {'ours return':>14s} {'SB3 return':>14s}")
    for task_name in args.tasks:
        task = tasks[task_name]
        ours, theirs = results[(task_name, "ours")], results[(task_name, "sb3")]
        ours_s, sb3_s = statistics.mean(s for s, _ in ours), statistics.mean(s for s, _ in theirs)
        updates = (f"{task.updates / ours_s:10.0f} {task.updates / sb3_s:10.0f}" if task.updates
                   else f"{'-':>10s} {'-':>10s}")  # fmt: skip
        print(
            f"{task_name:16s} {task.total_steps / ours_s:12.0f} {task.total_steps / sb3_s:12.0f} "
            f"{sb3_s / ours_s:6.2f} {updates} {returns_cell(ours):>14s} {returns_cell(theirs):>14s}"
        )


def returns_cell(runs: list[tuple[float, float]]) -> str:
    returns = [r for _, r in runs]
    spread = statistics.stdev(returns) if len(returns) > 1 else 0.0
    return f"{statistics.mean(returns):.1f} +- {spread:.1f}"


if __name__ == "__main__":
    main()
