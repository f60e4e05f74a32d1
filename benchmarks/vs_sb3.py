"""Our agents against Stable-Baselines3 (and sb3-contrib) side by side: same env, budget and hyperparameters.

    pip install -e ".[bench]"
    python benchmarks/vs_sb3.py [--tasks dqn_cartpole ...] [--seeds 0 1 2] [--threads 1]

For every task and seed it trains our agent, then SB3's, alternating, each in a fresh process with the same torch
thread count, and prints per task: environment steps per second of each (training only: the final greedy evaluation
is timed apart), updates per second for off-policy agents, the speed ratio ours / SB3, and the mean greedy return of
each over 20 evaluation episodes run by the same evaluation code. Rates are per second of the run's CPU time (the
wall-clock rate is printed per run too): on a quiet machine with one thread they agree, on a busy one CPU time is
the fairer clock. Hyperparameters are rl-baselines3-zoo's for both
sides; a task gives our agent's config and the SB3 constructor arguments that match it.
"""

from __future__ import annotations

import argparse
import operator
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from rl.config import load_toml
from rl.errors import run_script

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

EVAL_EPISODES = 20


@dataclass(frozen=True)
class Task:
    env_id: str
    total_steps: int
    agent: str
    """Our agent's name in `agents.registry`."""
    ours: dict[str, Any]
    """Our agent's config for the task (rl-baselines3-zoo's values in our parameter names)."""
    sb3_class: str
    """`module:Class` of the SB3 algorithm."""
    sb3_kwargs: dict[str, Any]
    """Constructor arguments; ("linear", x) stands for a schedule falling linearly from x to 0."""
    sb3_n_envs: int = 1
    updates: int = 0
    """Gradient updates in the run (off-policy agents), for updates per second; 0 when not counted."""
    sb3_policy_kwargs: dict[str, Any] = field(default_factory=dict)


def off_policy_updates(total: int, learning_starts: int, train_frequency: int, gradient_steps: int) -> int:
    return (total - learning_starts) // train_frequency * gradient_steps


PENDULUM_ZOO = dict(
    learning_rate=1e-3,
    buffer_size=200_000,
    learning_starts=10_000,
    batch_size=256,
    gamma=0.98,
    tau=0.005,
    train_freq=(1, "episode"),  # Pendulum's episodes are 200 steps: 200 updates after each
    gradient_steps=-1,
)
PENDULUM_OURS = dict(learning_starts=10_000, gamma=0.98, train_frequency=200, gradient_steps=200, noise_std=0.1,
                     hidden_sizes=(400, 300), batch_size=256, tau=0.005, learning_rate=1e-3)  # fmt: skip


def pendulum_task(agent: str, sb3_class: str) -> Task:
    """DDPG or TD3 on Pendulum-v1: the zoo's values are the same for both."""
    updates = off_policy_updates(20_000, 10_000, 200, 200)
    return Task("Pendulum-v1", 20_000, agent, PENDULUM_OURS, sb3_class, PENDULUM_ZOO,
                updates=updates, sb3_policy_kwargs=dict(net_arch=[400, 300]))  # fmt: skip


TASKS: dict[str, Task] = {
    "a2c_cartpole": Task(
        "CartPole-v1",
        100_000,
        "a2c",
        dict(
            num_envs=8,
            n_steps=5,
            learning_rate=7e-4,
            anneal_lr=False,
            optimizer="rmsprop",
            gae_lambda=1.0,
            ent_coef=0.0,
            vf_coef=1.0,
            max_grad_norm=0.5,
            normalize_advantage=False,
        ),  # fmt: skip
        "stable_baselines3:A2C",
        dict(ent_coef=0.0),
        sb3_n_envs=8,
    ),
    "ppo_cartpole": Task(
        "CartPole-v1",
        100_000,
        "ppo",
        dict(
            num_envs=8,
            n_steps=32,
            batch_size=256,
            n_epochs=20,
            gamma=0.98,
            gae_lambda=0.8,
            ent_coef=0.0,
            learning_rate=1e-3,
            clip_range=0.2,
            anneal_lr=True,
        ),  # fmt: skip
        "stable_baselines3:PPO",
        dict(
            n_steps=32,
            batch_size=256,
            gae_lambda=0.8,
            gamma=0.98,
            n_epochs=20,
            ent_coef=0.0,
            learning_rate=("linear", 1e-3),
            clip_range=("linear", 0.2),
        ),  # fmt: skip
        sb3_n_envs=8,
    ),
    "trpo_cartpole": Task(
        "CartPole-v1",
        100_000,
        "trpo",
        dict(
            num_envs=2,
            n_steps=512,
            batch_size=512,
            cg_damping=1e-3,
            gae_lambda=0.98,
            gamma=0.99,
            critic_learning_rate=1e-3,
            n_critic_updates=20,
        ),  # fmt: skip
        "sb3_contrib:TRPO",
        dict(
            n_steps=512,
            batch_size=512,
            cg_damping=1e-3,
            gae_lambda=0.98,
            gamma=0.99,
            learning_rate=1e-3,
            n_critic_updates=20,
        ),  # fmt: skip
        sb3_n_envs=2,
    ),
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
        updates=off_policy_updates(50_000, 1_000, 256, 128),
        sb3_policy_kwargs=dict(net_arch=[256, 256]),
    ),
    "ddpg_pendulum": pendulum_task("ddpg", "stable_baselines3:DDPG"),
    "td3_pendulum": pendulum_task("td3", "stable_baselines3:TD3"),
    # The zoo's Pendulum entry for SAC sets only the learning rate; our SAC defaults are SB3's.
    "sac_pendulum": Task(
        "Pendulum-v1",
        20_000,
        "sac",
        {},
        "stable_baselines3:SAC",
        dict(learning_rate=1e-3),
        updates=off_policy_updates(20_000, 100, 1, 1),
    ),  # fmt: skip
}
"""Gaussian exploration noise: SB3 adds it to actions scaled to [-1, 1], ours is in units of the half-range: the
zoo's 0.1 is the same width on both sides. SB3's defaults not listed (A2C's RMSprop, PPO's clipping of the value
function off, TD3's target noise 0.2 clipped at 0.5) equal ours."""

LUNAR_LANDER_TASKS: dict[str, Task] = {
    # Our side reads the shipped configs (configs/*_lunarlander.toml), which hold the zoo's values in our names.
    "a2c_lunarlander": Task("LunarLander-v3", 200_000, "a2c", load_toml(CONFIGS / "a2c_lunarlander.toml"),
                            "stable_baselines3:A2C", dict(gamma=0.995, n_steps=5, learning_rate=("linear", 8.3e-4),
                                                          ent_coef=1e-5), sb3_n_envs=8),
    "ppo_lunarlander": Task("LunarLander-v3", 1_000_000, "ppo", load_toml(CONFIGS / "ppo_lunarlander.toml"),
                            "stable_baselines3:PPO", dict(n_steps=1024, batch_size=64, gae_lambda=0.98, gamma=0.999,
                                                          n_epochs=4, ent_coef=0.01), sb3_n_envs=16),
    "trpo_lunarlander": Task("LunarLander-v3", 200_000, "trpo", load_toml(CONFIGS / "trpo_lunarlander.toml"),
                             "sb3_contrib:TRPO", dict(n_steps=512, cg_damping=0.01, gae_lambda=0.98, gamma=0.99,
                                                      learning_rate=1e-3, n_critic_updates=15), sb3_n_envs=2),
    "dqn_lunarlander": Task("LunarLander-v3", 100_000, "dqn", load_toml(CONFIGS / "dqn_lunarlander.toml"),
                            "stable_baselines3:DQN", dict(learning_rate=6.3e-4, batch_size=128, buffer_size=50_000,
                                                          learning_starts=0, gamma=0.99, target_update_interval=250,
                                                          train_freq=4, gradient_steps=-1, exploration_fraction=0.12,
                                                          exploration_final_eps=0.1),
                            updates=off_policy_updates(100_000, 0, 4, 4), sb3_policy_kwargs=dict(net_arch=[256, 256])),
}  # fmt: skip
"""Beyond the issue's rows (`--tasks ..._lunarlander`, `pip install -e ".[box2d]"`): the zoo's LunarLander entries,
with the returns its benchmark table publishes for them (one run each, LunarLander-v2): A2C 155.8, PPO 242.1, TRPO
133.2, DQN 154.4."""
MUJOCO_TASKS: dict[str, Task] = {
    # Our side reads configs/{sac,td3}_mujoco.toml (the zoo's shared MuJoCo entries); 50,000 of the zoo's 1,000,000
    # steps, for a first stretch of the learning curve on two cores.
    "sac_halfcheetah": Task("HalfCheetah-v5", 50_000, "sac", load_toml(CONFIGS / "sac_mujoco.toml"),
                            "stable_baselines3:SAC", dict(learning_starts=10_000),
                            updates=off_policy_updates(50_000, 10_000, 1, 1)),
    "td3_halfcheetah": Task("HalfCheetah-v5", 50_000, "td3", load_toml(CONFIGS / "td3_mujoco.toml"),
                            "stable_baselines3:TD3", dict(learning_starts=10_000, learning_rate=1e-3, batch_size=256,
                                                          train_freq=1, gradient_steps=1),
                            updates=off_policy_updates(50_000, 10_000, 1, 1), sb3_policy_kwargs=dict(net_arch=[400, 300])),
}  # fmt: skip
"""Beyond the issue's rows (`--tasks sac_halfcheetah td3_halfcheetah`, `pip install -e ".[mujoco]"`)."""
ALL_TASKS = TASKS | LUNAR_LANDER_TASKS | MUJOCO_TASKS


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
