"""The on-policy agents' known-good settings against their bar: a greedy CartPole-v1 return of at least 475 within
100,000 environment steps on most seeds, for each of a2c, ppo and trpo with its defaults (rl-baselines3-zoo's
CartPole-v1 values, adjusted for a2c: see its docstring); and, with `--pendulum`, a short Pendulum-v1 run of each
to show the continuous path works.

    python benchmarks/onpolicy_thresholds.py [--agents a2c ppo trpo] [--seeds 0 1 2 3 4] [--jobs 2] [--pendulum]

Each run trains with the CLI's machinery into a temporary runs directory and prints the mean greedy return over
20 evaluation episodes and the environment steps it took; the table at the end gives, per agent, how many seeds
reached the bar. Runs use one torch thread each, at most `--jobs` at once.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor

from rl.errors import run_script

AGENTS = ("a2c", "ppo", "trpo")
SETTINGS = {
    "CartPole-v1": {"total_steps": 100_000, "bar": 475.0},
    "Pendulum-v1": {"total_steps": 20_000, "bar": None},
}


def train_one(agent: str, env_id: str, seed: int) -> tuple[str, str, int, float, int, float]:
    import importlib

    import torch

    from rl.config import build_config, config_dict
    from rl.run import Run, RunSpec

    torch.set_num_threads(1)
    module = importlib.import_module(f"agents.{agent}")
    cfg = build_config(module.Config, {}, agent)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as runs_dir:
        spec = RunSpec(agent, env_id, {}, seed, total_steps=SETTINGS[env_id]["total_steps"], runs_dir=runs_dir,
                       eval_episodes=20, quiet=True)  # fmt: skip
        with Run(spec, config_dict(cfg)) as run:
            returns = module.train(cfg, run)
            steps = run.rollout.global_step
    return agent, env_id, seed, float(returns.mean()), steps, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", nargs="+", default=list(AGENTS), choices=AGENTS)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--pendulum", action="store_true", help="also run each agent briefly on Pendulum-v1")
    args = parser.parse_args()
    envs = ["CartPole-v1", "Pendulum-v1"] if args.pendulum else ["CartPole-v1"]
    jobs = [(agent, env_id, seed) for env_id in envs for agent in args.agents for seed in args.seeds]
    results = []
    with ProcessPoolExecutor(args.jobs) as pool:
        for agent, env_id, seed, mean_return, steps, seconds in pool.map(train_one, *zip(*jobs, strict=True)):
            print(f"{agent:5s} {env_id:12s} seed {seed}: greedy return {mean_return:8.1f} after {steps} steps "
                  f"({seconds:.0f} s)", flush=True)  # fmt: skip
            results.append((agent, env_id, mean_return))
    for agent in args.agents:
        returns = [r for a, e, r in results if a == agent and e == "CartPole-v1"]
        bar = SETTINGS["CartPole-v1"]["bar"]
        print(f"{agent}: {sum(r >= bar for r in returns)}/{len(returns)} seeds reach {bar} on CartPole-v1")


if __name__ == "__main__":
    run_script(main)
