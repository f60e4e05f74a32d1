"""`--eval-every N`: the greedy policy evaluated while a run trains, at the steps it says, leaving what is learned
exactly as it would have been, and refused where there is no improving policy to evaluate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import envs  # noqa: F401
from agents.registry import get_agent
from rl.checkpoint import load_checkpoint
from rl.cli import main
from rl.config import build_config
from rl.errors import UserError
from rl.run import Run, RunSpec

CASES = [
    # agent, env, step budget, config, and the steps between two `keep_going` calls (the evaluations' granularity):
    # one of each family of training loop, small enough for a few seconds
    ("sarsa", "GridWorld-v0", 3_000, {}, 1),
    ("mc_exploring_starts", "GridWorld-v0", 3_000, {"episode_length": 30}, 30),
    ("sarsa_linear", "MountainCar-v0", 2_100, {}, 1),
    ("dqn", "CartPole-v1", 1_500, {"learning_starts": 200, "train_frequency": 4, "gradient_steps": 1}, 1),
    ("ppo", "CartPole-v1", 1_536, {"num_envs": 4, "n_steps": 32, "batch_size": 64, "n_epochs": 2}, 128),
    ("reinforce", "CartPole-v1", 1_500, {}, 1),
    ("qac", "CartPole-v1", 960, {}, 8),
    ("sac", "Pendulum-v1", 600, {"learning_starts": 200, "hidden_sizes": [32, 32], "batch_size": 32}, 1),
]


@pytest.fixture(autouse=True)
def one_torch_thread():
    """As `rl train` runs (--threads 1): with more, some of torch's CPU reductions are not bit-reproducible."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def train(tmp_path: Path, agent: str, env_id: str, steps: int, overrides: dict, eval_every: int | None) -> Path:
    entry = get_agent(agent)
    cfg = build_config(entry.config, overrides, agent)
    spec = RunSpec(agent, env_id, seed=4, total_steps=steps, runs_dir=str(tmp_path / str(eval_every)),
                   eval_episodes=2, eval_every=eval_every, quiet=True)  # fmt: skip
    torch.manual_seed(0)  # the run seeds torch itself; this only makes the two runs' surroundings alike
    with Run(spec, cfg) as run:
        entry.train(cfg, run)
    return run.run_dir


def scalars(run_dir: Path, tag: str) -> list[tuple[int, float]]:
    events = EventAccumulator(str(run_dir))
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars(tag)] if tag in events.Tags()["scalars"] else []


@pytest.mark.parametrize(("agent", "env_id", "steps", "overrides", "granularity"), CASES, ids=[c[0] for c in CASES])
def test_evaluating_while_training_changes_nothing_learned(tmp_path, agent, env_id, steps, overrides, granularity):
    every = steps // 3
    plain = train(tmp_path, agent, env_id, steps, overrides, None)
    watched = train(tmp_path, agent, env_id, steps, overrides, every)

    (plain_arrays, plain_meta), (watched_arrays, watched_meta) = load_checkpoint(plain), load_checkpoint(watched)
    assert plain_arrays.keys() == watched_arrays.keys()
    for name in plain_arrays:  # every learned array, buffer and optimiser state, and torch's generator
        np.testing.assert_array_equal(plain_arrays[name], watched_arrays[name], err_msg=name)
    assert plain_meta["rng"] == watched_meta["rng"] and plain_meta["global_step"] == watched_meta["global_step"]
    assert scalars(plain, "charts/episodic_return") == scalars(watched, "charts/episodic_return")

    # One point per crossing of a multiple of `every`, then the final evaluation, which is the plain run's.
    final_step = plain_meta["global_step"]
    plain_points, watched_points = scalars(plain, "eval/episodic_return"), scalars(watched, "eval/episodic_return")
    steps_seen = [step for step, _ in watched_points]
    assert len(steps_seen) == 3 and steps_seen[-1] == final_step
    for k, step in enumerate(steps_seen[:-1], start=1):
        assert k * every <= step < k * every + granularity  # at the first keep_going at or past k * every
    assert watched_points[-1] == plain_points[-1] and len(plain_points) == 1


def test_the_evaluations_follow_the_policy_as_it_learns(tmp_path):
    """Q-learning on the grid world: early greedy policies wander off (the 100-step limit's -100-odd returns), the
    last ones reach the target; the points are not one value repeated."""
    run_dir = train(tmp_path, "q_learning", "GridWorld-v0", 5_000, {"alpha": 0.1}, 250)
    points = scalars(run_dir, "eval/episodic_return")
    assert [step for step, _ in points] == [*range(250, 5_000, 250), 5_000]
    returns = [value for _, value in points]
    assert returns[0] < 0 < returns[-1] and len(set(returns)) > 3


def test_a_resumed_run_evaluates_at_the_next_multiple(capsys, tmp_path):
    argv = ["train", "sarsa", "--env", "GridWorld-v0", "--runs-dir", str(tmp_path), "--quiet", "--eval-episodes", "1"]
    assert main([*argv, "--total-steps", "2500", "--eval-every", "1000"]) == 0
    run_dir = Path(capsys.readouterr().out.strip().splitlines()[-1].removeprefix("run directory: "))
    assert main(["train", "--resume", str(run_dir), "--total-steps", "6000", "--eval-every", "1500", "--quiet"]) == 0
    capsys.readouterr()
    assert [step for step, _ in scalars(run_dir, "eval/episodic_return")] == [1000, 2000, 2500, 3000, 4500, 6000]


def test_resume_takes_new_evaluation_and_checkpoint_settings(capsys, tmp_path):
    argv = ["train", "sarsa", "--env", "GridWorld-v0", "--runs-dir", str(tmp_path), "--quiet", "--eval-episodes", "1"]
    assert main([*argv, "--total-steps", "1000", "--checkpoint-every", "400"]) == 0
    run_dir = Path(capsys.readouterr().out.strip().splitlines()[-1].removeprefix("run directory: "))
    resume = ["train", "--resume", str(run_dir), "--total-steps", "2000", "--eval-episodes", "3"]
    assert main([*resume, "--checkpoint-every", "700"]) == 0
    spec = json.loads((run_dir / "config.json").read_text())["spec"]
    assert spec["eval_episodes"] == 3 and spec["checkpoint_every"] == 700
    assert "over 3 episodes" in capsys.readouterr().out


def test_a_stop_signal_during_an_evaluation_ends_the_run_after_it(tmp_path):
    spec = RunSpec("walker", "GridWorld-v0", total_steps=5_000, runs_dir=str(tmp_path), eval_every=1_000, quiet=True)
    with Run(spec, {}) as run:

        def act(obs):
            run.stop_requested = True  # as SIGINT's handler does, mid-episode
            return 0

        run.evaluate_during_training(act)
        while run.keep_going():
            run.rollout.step(int(run.rng.integers(5)))
    assert run.rollout.global_step == 1_000  # no step after the evaluation that the signal interrupted
    assert load_checkpoint(run.run_dir)[1]["global_step"] == 1_000


@pytest.mark.parametrize("agent", ["td0", "td_linear", "mc_prediction", "nstep_td"])
def test_a_prediction_agent_refuses_it_before_training(capsys, tmp_path, agent):
    argv = ["train", agent, "--env", "GridWorld-v0", "--total-steps", "500", "--eval-every", "100"]
    assert main([*argv, "--runs-dir", str(tmp_path), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {agent} learns the values of a policy it is given") and "\n" not in err
    assert "drop --eval-every" in err and not list(tmp_path.iterdir())  # no run directory left behind


def test_eval_every_must_be_positive(tmp_path):
    with pytest.raises(UserError, match="eval_every must be at least 1"):
        RunSpec("sarsa", "GridWorld-v0", total_steps=10, runs_dir=str(tmp_path), eval_every=0)
