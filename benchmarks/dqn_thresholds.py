"""DQN's known-good settings against their bar: a greedy CartPole-v1 return of at least 475 within 50,000 steps on
most seeds (the agent's defaults), and Acrobot-v1 learned within 100,000 steps (`configs/dqn_acrobot.toml`): a greedy
return of at least -100, where a uniform policy scores -500.

    python benchmarks/dqn_thresholds.py [--seeds 0 1 2 3 4] [--envs CartPole-v1 Acrobot-v1] [--jobs 2]

Each run trains with the CLI's machinery into a temporary runs directory and prints the mean greedy return over
20 evaluation episodes; the table at the end gives, per env, how many seeds reached the bar.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from rl.errors import run_script

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
SETTINGS = {
    "CartPole-v1": {"total_steps": 50_000, "bar": 475.0, "config": None},
    "Acrobot-v1": {"total_steps": 100_000, "bar": -100.0, "config": CONFIGS / "dqn_acrobot.toml"},
}


def train_one(env_id: str, seed: int) -> tuple[str, int, float, float]:
    import torch

    import envs  # noqa: F401
    from agents import dqn
    from rl.config import build_config, config_dict, load_toml
    from rl.run import Run, RunSpec

    torch.set_num_threads(1)
    setting = SETTINGS[env_id]
    overrides = load_toml(setting["config"]) if setting["config"] else {}
    cfg = build_config(dqn.Config, overrides, "dqn")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as runs_dir:
        spec = RunSpec("dqn", env_id, {}, seed, total_steps=setting["total_steps"], runs_dir=runs_dir,
                       eval_episodes=20, quiet=True)  # fmt: skip
        with Run(spec, config_dict(cfg)) as run:
            returns = dqn.train(cfg, run)
    return env_id, seed, float(returns.mean()), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--envs", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    jobs = [(env_id, seed) for env_id in args.envs for seed in args.seeds]
    results = []
    with ProcessPoolExecutor(args.jobs) as pool:
        for env_id, seed, mean_return, seconds in pool.map(train_one, *zip(*jobs, strict=True)):
            print(f"{env_id:12s} seed {seed}: greedy return {mean_return:8.1f}  ({seconds:.0f} s)", flush=True)
            results.append((env_id, mean_return))
    for env_id in args.envs:
        returns = [r for e, r in results if e == env_id]
        passed = sum(r >= SETTINGS[env_id]["bar"] for r in returns)
        print(f"{env_id}: {passed}/{len(returns)} seeds reach {SETTINGS[env_id]['bar']}")


if __name__ == "__main__":
    run_script(main)
