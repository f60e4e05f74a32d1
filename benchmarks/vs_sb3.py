"""Our agents against Stable-Baselines3 (and sb3-contrib) side by side: same env, budget and hyperparameters.

    pip install -e ".[bench]"
    python benchmarks/vs_sb3.py [--tasks dqn_cartpole ...] [--seeds 0 1 2] [--threads 1]

For every task and seed it trains our agent, then SB3's, alternating, each in a fresh process with the same torch
thread count, and prints per task: environment steps per second of each (training only: the final greedy evaluation
is timed apart), updates per second for off-policy agents, the speed ratio ours / SB3, and the mean greedy return of
each over 20 evaluation episodes run by the same evaluation code. Rates are per second of the run's CPU time (the
wall-clock rate is printed per run too): on a quiet machine with one thread they agree, on a busy one CPU time is
the fairer clock. Hyperparameters are rl-baselines3-zoo's for both sides; each task (`sb3_tasks.py`) gives our
agent's config and the SB3 constructor arguments that match it.
"""

from __future__ import annotations

import argparse
import operator
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from functools import partial
from typing import Any

import numpy as np
from sb3_tasks import ALL_TASKS, TASKS, Task

from rl.errors import run_script

EVAL_EPISODES = 20


def clock() -> np.ndarray:
    """(wall seconds, CPU seconds of this process): rates are reported on both; the ratio uses CPU time, which other
    work on a shared machine disturbs far less than wall time."""
    return np.array([time.perf_counter(), time.process_time()])


def run_ours(task: Task, seed: int) -> tuple[np.ndarray, float]:
    """((wall, CPU) training seconds, mean greedy return) of our agent."""
    import envs  # noqa: F401
    from agents.registry import get_agent
    from rl.config import build_config, config_dict
    from rl.run import Run, RunSpec

    entry = get_agent(task.agent)
    cfg = build_config(entry.config, dict(task.ours), task.agent)
    with tempfile.TemporaryDirectory() as runs_dir:
        spec = RunSpec(task.agent, task.env_id, {}, seed, total_steps=task.total_steps, runs_dir=runs_dir,
                       eval_episodes=EVAL_EPISODES, quiet=True)  # fmt: skip
        with Run(spec, config_dict(cfg)) as run:
            evaluate, eval_seconds = run.evaluate, []

            def timed_evaluate(*args: Any, **kwargs: Any) -> Any:
                start = clock()
                returns = evaluate(*args, **kwargs)
                eval_seconds.append(clock() - start)
                return returns

            run.evaluate = timed_evaluate
            start = clock()
            returns = entry.train(cfg, run)
            seconds = clock() - start - sum(eval_seconds)
    eval_returns = returns if not hasattr(returns, "eval_returns") else returns.eval_returns
    return seconds, float(eval_returns.mean())


def run_sb3(task: Task, seed: int) -> tuple[np.ndarray, float]:
    """((wall, CPU) training seconds, mean greedy return) of the SB3 agent, evaluated by our evaluation code."""
    import importlib

    import gymnasium as gym
    from stable_baselines3.common.env_util import make_vec_env

    from rl.evaluation import evaluate_policy

    module, name = task.sb3_class.split(":")
    algo = getattr(importlib.import_module(module), name)
    kwargs = {key: sb3_schedule(value) for key, value in task.sb3_kwargs.items()}
    if name in ("DDPG", "TD3"):
        from stable_baselines3.common.noise import NormalActionNoise

        actions = gym.make(task.env_id).action_space.shape
        kwargs["action_noise"] = NormalActionNoise(np.zeros(actions), task.ours["noise_std"] * np.ones(actions))
    # SB3 makes its envs with render_mode="rgb_array" unless told otherwise; LunarLander then simulates its engine
    # particles as Box2D bodies (decoration, skipped without a render mode), which made its steps about 4x dearer.
    env = make_vec_env(task.env_id, n_envs=task.sb3_n_envs, seed=seed, env_kwargs={"render_mode": None})
    model = algo("MlpPolicy", env, seed=seed, device="cpu", verbose=0,
                 policy_kwargs=task.sb3_policy_kwargs or None, **kwargs)  # fmt: skip
    start = clock()
    model.learn(task.total_steps)
    seconds = clock() - start
    env = gym.make(task.env_id)
    returns = evaluate_policy(env, lambda obs: model.predict(obs, deterministic=True)[0], EVAL_EPISODES, seed + 10_000)
    return seconds, float(returns.mean())


def sb3_schedule(value: Any) -> Any:
    """("linear", x) -> SB3's schedule of progress_remaining (1 at the start, 0 at the end) falling from x to 0."""
    if isinstance(value, tuple) and value and value[0] == "linear":
        return partial(operator.mul, value[1])
    return value


def one_run(side: str, task: Task, seed: int, threads: int) -> tuple[np.ndarray, float]:
    import torch
    import torch._dynamo  # noqa: F401  (the first optimizer step imports it, ~3 s; SB3 pays that before learn())

    torch.set_num_threads(threads)
    return (run_ours if side == "ours" else run_sb3)(task, seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(ALL_TASKS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=1, help="torch threads in each run, the same for both sides")
    parser.add_argument("--total-steps", type=int, help="override every task's budget (a quick check, not a result)")
    args = parser.parse_args()

    tasks = {name: ALL_TASKS[name] for name in args.tasks}
    if args.total_steps:
        tasks = {name: replace(task, total_steps=args.total_steps, updates=0) for name, task in tasks.items()}
    results: dict[tuple[str, str], list[tuple[np.ndarray, float]]] = {}
    with ProcessPoolExecutor(max_workers=1, max_tasks_per_child=1) as pool:  # one run at a time, a fresh process each
        for task_name in args.tasks:
            for seed in args.seeds:
                for side in ("ours", "sb3"):
                    seconds, mean_return = pool.submit(one_run, side, tasks[task_name], seed, args.threads).result()
                    wall, cpu = tasks[task_name].total_steps / seconds
                    print(f"{task_name} seed {seed} {side:4s}: {cpu:8.0f} steps per CPU second ({wall:.0f} per wall "
                          f"second), return {mean_return:7.1f}", flush=True)  # fmt: skip
                    results.setdefault((task_name, side), []).append((seconds, mean_return))

    print("\nsteps/s and upd/s per CPU second of each run's process (medians over seeds); ratio = ours / SB3")
    header = f"{'task':16s} {'ours steps/s':>12s} {'SB3 steps/s':>12s} {'ratio':>6s} {'ours upd/s':>10s} "
    print(header + f"{'SB3 upd/s':>10s} {'ours return':>14s} {'SB3 return':>14s}")
    for task_name in args.tasks:
        task = tasks[task_name]
        ours, theirs = results[(task_name, "ours")], results[(task_name, "sb3")]
        ours_s = statistics.median(float(s[1]) for s, _ in ours)
        sb3_s = statistics.median(float(s[1]) for s, _ in theirs)
        updates = (f"{task.updates / ours_s:10.0f} {task.updates / sb3_s:10.0f}" if task.updates
                   else f"{'-':>10s} {'-':>10s}")  # fmt: skip
        print(
            f"{task_name:16s} {task.total_steps / ours_s:12.0f} {task.total_steps / sb3_s:12.0f} "
            f"{sb3_s / ours_s:6.2f} {updates} {returns_cell(ours):>14s} {returns_cell(theirs):>14s}"
        )


def returns_cell(runs: list[tuple[np.ndarray, float]]) -> str:
    returns = [r for _, r in runs]
    spread = statistics.stdev(returns) if len(returns) > 1 else 0.0
    return f"{statistics.mean(returns):.1f} +- {spread:.1f}"


if __name__ == "__main__":
    run_script(main)
