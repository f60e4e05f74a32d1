"""DDPG's, TD3's and SAC's known-good settings against their bar: a greedy (noise-free) Pendulum-v1 return better
than -200 within 20,000 environment steps on most seeds, with each agent's defaults (rl-baselines3-zoo's Pendulum
values; SAC's are SB3's with the zoo's learning rate). A uniform random policy scores about -1,200.

    python benchmarks/ddpg_thresholds.py [--seeds 0 1 2 3 4] [--agents ddpg td3 sac] [--jobs 2]

Each run trains with the CLI's machinery into a temporary runs directory on one torch thread and prints the mean
greedy return over 20 evaluation episodes; the table at the end gives, per agent, how many seeds beat the bar.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor

from rl.errors import run_script

ENV_ID, TOTAL_STEPS, BAR = "Pendulum-v1", 20_000, -200.0
AGENTS = ("ddpg", "td3", "sac")


def train_one(agent: str, seed: int) -> tuple[str, int, float, float]:
    import torch

    from agents.registry import get_agent
    from rl.config import build_config, config_dict
    from rl.run import Run, RunSpec

    torch.set_num_threads(1)
    entry = get_agent(agent)
    cfg = build_config(entry.config, {}, agent)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as runs_dir:
        spec = RunSpec(agent, ENV_ID, {}, seed, total_steps=TOTAL_STEPS, runs_dir=runs_dir, eval_episodes=20,
                       quiet=True)  # fmt: skip
        with Run(spec, config_dict(cfg)) as run:
            returns = entry.train(cfg, run)
    return agent, seed, float(returns.mean()), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--agents", nargs="+", default=list(AGENTS), choices=AGENTS)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    jobs = [(agent, seed) for agent in args.agents for seed in args.seeds]
    results = []
    with ProcessPoolExecutor(args.jobs) as pool:
        for agent, seed, mean_return, seconds in pool.map(train_one, *zip(*jobs, strict=True)):
            print(f"{agent:5s} {ENV_ID} seed {seed}: greedy return {mean_return:8.1f}  ({seconds:.0f} s)", flush=True)
            results.append((agent, mean_return))
    for agent in args.agents:
        returns = [r for a, r in results if a == agent]
        passed = sum(r > BAR for r in returns)
        print(f"{agent}: {passed}/{len(returns)} seeds beat {BAR} within {TOTAL_STEPS} steps")


if __name__ == "__main__":
    run_script(main)
