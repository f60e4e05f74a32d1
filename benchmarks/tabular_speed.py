"""How fast the tabular agents learn per second of wall-clock time, against the env's own cost.

    python benchmarks/tabular_speed.py [--agents sarsa q_learning ...] [--envs CliffWalking-v1 GridWorld-v0]
                                       [--steps 50000] [--repeats 3]

Each agent of the registry's tabular families (TD and Monte Carlo) trains with its default config for a fixed number
of environment steps through the machinery `rl train` uses (`Run`, `Rollout`, `keep_going`, TensorBoard logging of
every episode), quiet, in one thread, with the same seed every repeat so every repeat does the same work. The clock
runs from the call to `train(cfg, run)` to the start of its final greedy evaluation, and counts the process's CPU
time (`time.process_time`), which other people's load on a shared machine disturbs less than wall-clock time does;
on an idle machine the two agree. The repeats go round all agents in turn, so a burst of load spreads over them
rather than landing on one. The table gives the median over the repeats of:

- env steps/s: environment steps taken per second of training;
- updates/s: value-table updates per second. A TD agent updates one entry per step (n-step Sarsa's count includes
  the at most n-1 pairs still pending at the end); the every- or first-visit Monte Carlo agents update one entry per
  counted visit (the checkpoint's `returns_count`); MC Basic sets one q(s, a) per `episodes_per_pair` episodes;
- of env: steps/s as a fraction of the bare env loop's, so 0.5 means the agent costs as much as the env itself.

Two floors come first: `env.step only` steps the env made by `rl.environments.make_env` with random actions drawn
ahead, resetting on episode end (the env's own cost); `rollout only` takes the same random actions through `Run`,
`Rollout` and `keep_going` (the machinery's cost, with no learning). The planners are not agents of a run: their
value-iteration sweeps per second on each env's model are printed after the table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from typing import Any

from rl.errors import run_script

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one thread, before numpy and torch load their thread pools
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

AGENTS = (
    "td0",
    "sarsa",
    "expected_sarsa",
    "nstep_sarsa",
    "q_learning",
    "q_learning_offpolicy",
    "mc_basic",
    "mc_exploring_starts",
    "mc_epsilon_greedy",
)
ENVS = ("CliffWalking-v1", "GridWorld-v0")
MC_VISIT_COUNTERS = ("mc_exploring_starts", "mc_epsilon_greedy")
"""Agents whose checkpoint holds `returns_count`, one count per table update."""


def bare_env_steps_per_second(env_id: str, steps: int, seed: int) -> float:
    """Steps/s of the env alone: random actions drawn ahead, a reset at each episode end."""
    import numpy as np

    import envs  # noqa: F401  (registers GridWorld-v0)
    from rl.environments import make_env

    env = make_env(env_id)
    actions = np.random.default_rng(seed).integers(env.action_space.n, size=steps).tolist()
    env.reset(seed=seed)
    start = time.process_time()
    for action in actions:
        _, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            env.reset()
    seconds = time.process_time() - start
    env.close()
    return steps / seconds


def train_random(cfg: Any, run: Any) -> None:
    """The `rollout only` floor: random actions drawn ahead, through the run's loop, learning nothing."""
    actions = run.rng.integers(run.env.action_space.n, size=run.spec.total_steps + 1).tolist()
    while run.keep_going():
        run.rollout.step(actions[run.rollout.global_step])
    run.evaluate(lambda obs: 0, episodes=1)


def timed_run(agent: str, env_id: str, steps: int, seed: int) -> tuple[float, int, int]:
    """(seconds, env steps, table updates) of one training run, up to its final evaluation."""
    import numpy as np
    import torch

    import envs  # noqa: F401  (registers GridWorld-v0)
    from agents.registry import get_agent
    from rl.checkpoint import load_checkpoint
    from rl.config import build_config, config_dict
    from rl.run import Run, RunSpec

    class TimedRun(Run):
        """A Run that notes when the training loop ends: the agent's `finish` calls `evaluate` next."""

        def evaluate(self, act: Any, episodes: int | None = None) -> np.ndarray:
            self.loop_end = time.process_time()
            self.loop_steps = self.rollout.global_step
            self.loop_episodes = self.rollout.episodes
            return super().evaluate(act, episodes)

    torch.set_num_threads(1)
    entry = get_agent(agent) if agent != "random" else None
    cfg = build_config(entry.config, {}, agent) if entry else None
    with tempfile.TemporaryDirectory() as runs_dir:
        spec = RunSpec(agent, env_id, {}, seed, total_steps=steps, runs_dir=runs_dir, eval_episodes=1, quiet=True)
        with TimedRun(spec, config_dict(cfg) if cfg else {}) as run:
            start = time.process_time()
            (entry.train if entry else train_random)(cfg, run)
        seconds, loop_steps = run.loop_end - start, run.loop_steps
        if agent in MC_VISIT_COUNTERS:
            updates = int(load_checkpoint(run.run_dir)[0]["returns_count"].sum())
        elif agent == "mc_basic":
            updates = run.loop_episodes // cfg.episodes_per_pair
        elif agent == "random":
            updates = 0
        else:
            updates = loop_steps
    return seconds, loop_steps, updates


def planner_sweeps_per_second(env_id: str, repeats: int) -> tuple[float, int]:
    """(value-iteration sweeps/s, sweeps to converge) on the env's model at gamma 0.9."""
    import envs  # noqa: F401
    from agents.planning import value_iteration
    from rl.environments import make_env
    from rl.mdp import require_model

    model = require_model(make_env(env_id), env_id)
    rates, sweeps = [], 0
    for _ in range(repeats):
        start = time.process_time()
        sweeps = value_iteration(model, 0.9).iterations
        rates.append(sweeps / (time.process_time() - start))
    return statistics.median(rates), sweeps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", nargs="+", default=list(AGENTS), choices=AGENTS)
    parser.add_argument("--envs", nargs="+", default=list(ENVS))
    parser.add_argument("--steps", type=int, default=50_000, help="environment steps per run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rows = ["env.step only", "random", *args.agents]
    steps_rates: dict[tuple[str, str], list[float]] = {(row, env_id): [] for row in rows for env_id in args.envs}
    update_rates: dict[tuple[str, str], list[float]] = {key: [] for key in steps_rates}
    for repeat in range(args.repeats):
        for env_id in args.envs:
            steps_rates["env.step only", env_id].append(bare_env_steps_per_second(env_id, args.steps, args.seed))
            for agent in rows[1:]:
                seconds, steps, updates = timed_run(agent, env_id, args.steps, args.seed)
                steps_rates[agent, env_id].append(steps / seconds)
                update_rates[agent, env_id].append(updates / seconds)
        print(f"repeat {repeat + 1}/{args.repeats} done", flush=True)
    print(f"{'agent':22s} {'env':16s} {'env steps/s':>12s} {'updates/s':>12s} {'of env':>7s}")
    for env_id in args.envs:
        bare = statistics.median(steps_rates["env.step only", env_id])
        for row in rows:
            steps_per_second = statistics.median(steps_rates[row, env_id])
            updates = f"{statistics.median(update_rates[row, env_id]):12,.0f}" if row in args.agents else " " * 12
            name = "rollout only" if row == "random" else row
            print(f"{name:22s} {env_id:16s} {steps_per_second:12,.0f} {updates} {steps_per_second / bare:7.2f}")
    for env_id in args.envs:
        rate, sweeps = planner_sweeps_per_second(env_id, args.repeats)
        print(f"value_iteration on {env_id}: {rate:,.0f} sweeps/s ({sweeps} sweeps to converge at gamma 0.9)")


if __name__ == "__main__":
    run_script(main)
