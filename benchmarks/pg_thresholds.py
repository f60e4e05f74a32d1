"""REINFORCE, QAC and off-policy actor-critic (book chapters 9 and 10) against their bars, each with its agent's
default config:

    reinforce     CartPole-v1, 50,000 steps: greedy return >= 200 (a uniform policy scores about 22)
    reinforce     the same without baseline and normalisation (the book's plain Algorithm 9.1), and with S&B's
                  gamma^t weights (`reinforce_book`, `reinforce_gamma_t`; reported, same bar)
    qac           CartPole-v1, 150,000 steps: greedy return >= 200
    offpolicy_ac  GridWorld-v0 (terminal target, r_other -1, forbidden and boundary -10, start (1, 1)), 30,000 steps
                  of uniform-behaviour data: the greedy target policy reaches the target, return >= -13 (the best
                  path scores -10, the best one through a forbidden cell -13, a policy that never arrives <= -100)
    offpolicy_ac  CartPole-v1, 100,000 steps of uniform-behaviour data: greedy return >= 100

    python benchmarks/pg_thresholds.py [--seeds 0 1 2 3 4] [--cases reinforce qac ...] [--jobs 2]

Each run trains (with the agent's defaults unless the case names overrides) into a temporary runs directory
and prints the mean greedy return over 20 evaluation episodes and the mean return of the last 20 training
episodes; the table at the end gives, per case, how many seeds passed.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor

from rl.errors import run_script

GRID = {"terminal_target": True, "r_target": 0, "r_forbidden": -10, "r_boundary": -10, "r_other": -1, "start": [1, 1]}
CASES = {
    "reinforce": {"agent": "reinforce", "env_id": "CartPole-v1", "env_kwargs": {}, "total_steps": 50_000, "bar": 200.0},
    "reinforce_book": {
        "agent": "reinforce",
        "env_id": "CartPole-v1",
        "env_kwargs": {},
        "total_steps": 50_000,
        "bar": 200.0,
        "config": {"baseline": False, "normalize_advantages": False},
    },
    "reinforce_gamma_t": {
        "agent": "reinforce",
        "env_id": "CartPole-v1",
        "env_kwargs": {},
        "total_steps": 50_000,
        "bar": 200.0,
        "config": {"discount_score": True},
    },
    "qac": {"agent": "qac", "env_id": "CartPole-v1", "env_kwargs": {}, "total_steps": 150_000, "bar": 200.0},
    "offpolicy_ac_grid": {
        "agent": "offpolicy_ac",
        "env_id": "GridWorld-v0",
        "env_kwargs": GRID,
        "total_steps": 30_000,
        "bar": -13.0,
    },
    "offpolicy_ac_cartpole": {
        "agent": "offpolicy_ac",
        "env_id": "CartPole-v1",
        "env_kwargs": {},
        "total_steps": 100_000,
        "bar": 100.0,
    },
}


def train_one(case: str, seed: int) -> tuple[str, int, float, float, float]:
    import torch

    import envs  # noqa: F401
    from agents import actor_critic, reinforce
    from rl.config import build_config, config_dict
    from rl.run import Run, RunSpec

    torch.set_num_threads(1)
    setting = CASES[case]
    config, train = {
        "reinforce": (reinforce.Config, reinforce.train),
        "qac": (actor_critic.QACConfig, actor_critic.train_qac),
        "offpolicy_ac": (actor_critic.OffPolicyACConfig, actor_critic.train_offpolicy_ac),
    }[setting["agent"]]
    cfg = build_config(config, setting.get("config", {}), setting["agent"])
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as runs_dir:
        spec = RunSpec(setting["agent"], setting["env_id"], setting["env_kwargs"], seed,
                       total_steps=setting["total_steps"], runs_dir=runs_dir, eval_episodes=20, quiet=True)  # fmt: skip
        with Run(spec, config_dict(cfg)) as run:
            returns = train(cfg, run)
            training_return = run.logger.mean_recent_return()
    return case, seed, float(returns.mean()), training_return, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    jobs = [(case, seed) for case in args.cases for seed in args.seeds]
    results = []
    with ProcessPoolExecutor(args.jobs) as pool:
        for case, seed, greedy, training, seconds in pool.map(train_one, *zip(*jobs, strict=True)):
            print(f"{case:22s} seed {seed}: greedy return {greedy:8.1f}  last training episodes {training:8.1f}"
                  f"  ({seconds:.0f} s)", flush=True)  # fmt: skip
            results.append((case, greedy))
    for case in args.cases:
        returns = [r for c, r in results if c == case]
        passed = sum(r >= CASES[case]["bar"] for r in returns)
        print(f"{case}: {passed}/{len(returns)} seeds reach {CASES[case]['bar']}")


if __name__ == "__main__":
    run_script(main)
