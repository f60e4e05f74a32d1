"""The run context: directory layout, config.json, TensorBoard tags, budgets, stop signal and learned state."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import tracemalloc

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import envs  # noqa: F401
from rl.checkpoint import load_checkpoint
from rl.errors import UserError
from rl.replay_buffer import ReplayBuffer
from rl.run import Run, RunSpec


def spec(tmp_path, **overrides):
    fields = dict(agent="walker", env_id="GridWorld-v0", seed=3, total_steps=250, runs_dir=str(tmp_path), quiet=True)
    return RunSpec(**{**fields, **overrides})


def walk(run: Run) -> np.ndarray:
    visits = run.state("visits", np.zeros(25, dtype=np.int64))
    while run.keep_going():
        visits[int(run.rollout.obs)] += 1
        run.rollout.step(int(run.rng.integers(5)))
    return visits


def test_run_directory_config_and_tags(tmp_path):
    with Run(spec(tmp_path, env_kwargs={"start": [1, 1]}), {"alpha": 0.1}) as run:
        visits = walk(run)
        run.log("losses/td_loss", 0.5)
    assert re.fullmatch(r"GridWorld-v0__walker__s3__\d{8}-\d{6}", run.run_dir.name)
    config = json.loads((run.run_dir / "config.json").read_text())
    assert config["agent_config"] == {"alpha": 0.1}
    assert config["spec"]["env_kwargs"] == {"start": [1, 1]} and config["spec"]["seed"] == 3
    events = EventAccumulator(str(run.run_dir))
    events.Reload()
    returns = events.Scalars("charts/episodic_return")
    assert len(returns) == 2  # 250 steps with a 100-step limit: two finished episodes
    assert [e.step for e in returns] == [100, 200]
    assert events.Scalars("losses/td_loss")[0].step == 250
    assert "config/text_summary" in events.Tags()["tensors"]
    assert [e.step for e in events.Scalars("charts/SPS")] == [250]  # a run under print_every logs it at its end
    arrays, meta = load_checkpoint(run.run_dir)
    np.testing.assert_array_equal(arrays["visits"], visits)
    assert meta["global_step"] == 250 and meta["episodes"] == 2


def test_episode_budget(tmp_path):
    with Run(spec(tmp_path, total_steps=None, total_episodes=3), {}) as run:
        walk(run)
    assert run.rollout.episodes == 3 and run.rollout.global_step == 300


def test_a_stop_signal_ends_the_loop_and_saves(tmp_path):
    with Run(spec(tmp_path, total_steps=10_000), {}) as run:
        visits = run.state("visits", np.zeros(25, dtype=np.int64))
        while run.keep_going():
            visits[int(run.rollout.obs)] += 1
            run.rollout.step(0)
            if run.rollout.global_step == 42:
                os.kill(os.getpid(), signal.SIGTERM)
        assert run.evaluate(lambda obs: 0).size == 0  # no greedy episodes after a stop signal: Ctrl-C ends promptly
    assert run.stop_requested and run.rollout.global_step == 42
    arrays, meta = load_checkpoint(run.run_dir)
    assert meta["global_step"] == 42 and arrays["visits"].sum() == 42
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # handlers restored


def test_a_stop_signal_during_the_final_evaluation_ends_it_after_the_running_episode(tmp_path):
    with Run(spec(tmp_path, total_steps=50, eval_episodes=5), {}) as run:
        walk(run)
        steps = 0

        def act(obs):  # GridWorld episodes last 100 steps; the signal comes in the second episode
            nonlocal steps
            steps += 1
            if steps == 150:
                os.kill(os.getpid(), signal.SIGINT)
            return 4

        returns = run.evaluate(act)
    assert len(returns) == 2 and steps == 200  # the second episode finished, no third one started
    events = EventAccumulator(str(run.run_dir))
    events.Reload()
    assert "eval/episodic_return" not in events.Tags()["scalars"]  # a partial evaluation is not logged


def test_resume_restores_state_rng_and_counters(tmp_path):
    with Run(spec(tmp_path, total_steps=150), {}) as first:
        walk(first)
    with Run(spec(tmp_path, total_steps=250), {}, run_dir=first.run_dir) as resumed:
        assert resumed.resumed and resumed.rollout.global_step == 150
        visits = walk(resumed)
    assert visits.sum() == 250


def test_a_config_dataclass_is_recorded_as_its_fields(tmp_path):
    @dataclasses.dataclass(frozen=True)
    class WalkerConfig:
        alpha: float = 0.1
        sizes: tuple[int, ...] = (4, 4)

    with Run(spec(tmp_path), WalkerConfig(alpha=0.5)) as run:
        walk(run)
    assert json.loads((run.run_dir / "config.json").read_text())["agent_config"] == {"alpha": 0.5, "sizes": [4, 4]}


def test_resume_after_a_crash_purges_the_steps_logged_after_the_checkpoint(tmp_path):
    """A process killed at step 300 whose last checkpoint was at step 200 (simulated with two runs of one seed: the
    longer run's events in the shorter run's directory): the resumed run keeps the points up to 200, drops 300, and
    logs its own."""
    with Run(spec(tmp_path / "a", total_steps=200), {}) as checkpointed:
        walk(checkpointed)
    with Run(spec(tmp_path / "b", total_steps=300), {}) as killed:
        walk(killed)
    for events in checkpointed.run_dir.glob("events.*"):
        events.unlink()
    for events in killed.run_dir.glob("events.*"):
        shutil.copy(events, checkpointed.run_dir)
    with Run(spec(tmp_path, total_steps=400), {}, run_dir=checkpointed.run_dir) as resumed:
        walk(resumed)
    events = EventAccumulator(str(resumed.run_dir))
    events.Reload()
    # Episodes end every 100 steps; without the purge the killed process's 300 would appear twice.
    assert [e.step for e in events.Scalars("charts/episodic_return")] == [100, 200, 300, 400]


def test_resume_with_a_different_table_shape_is_refused(tmp_path):
    with Run(spec(tmp_path), {}) as first:
        first.state("q", np.zeros((25, 5)))
    with Run(spec(tmp_path), {}, run_dir=first.run_dir) as resumed:
        with pytest.raises(UserError, match="shape"):
            resumed.state("q", np.zeros((16, 4)))


def test_budget_is_required_and_positive(tmp_path):
    with pytest.raises(UserError, match="--total-steps"):
        spec(tmp_path, total_steps=None)
    with pytest.raises(UserError, match="positive"):
        spec(tmp_path, total_steps=-5)


def test_progress_lines_say_when_no_episode_has_ended_yet(tmp_path, capsys):
    from rl.rollout import EpisodeStats
    from rl.run_logger import RunLogger

    logger = RunLogger(tmp_path, {}, total=30, print_every=10)
    logger.progress(10)
    logger.episodes([EpisodeStats(3.0, 5), EpisodeStats(4.0, 6)], 15)
    logger.progress(20)
    logger.close()
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("step")]
    assert lines[0].startswith("step 10 | return - (no episode has ended yet) |") and "nan" not in lines[0]
    assert lines[1].startswith("step 20 | return 3.5 |")


def test_a_resumed_run_keeps_no_second_copy_of_the_checkpoint_arrays(tmp_path):
    def filled_buffer() -> ReplayBuffer:
        return ReplayBuffer(2_000, obs_shape=(1_000,))  # obs and next_obs: 16 MB together

    with Run(spec(tmp_path, total_steps=10), {}) as first:
        buffer = filled_buffer()
        for _ in range(2_000):
            obs = np.ones((1, 1_000), np.float32)
            buffer.add(obs, np.zeros(1, np.int64), np.zeros(1), obs, np.zeros(1, bool), np.zeros(1, bool))
        first.track("buffer", buffer)
        walk(first)
    del buffer
    stored = 2 * 2_000 * 1_000 * 4

    tracemalloc.start()
    with Run(spec(tmp_path, total_steps=20), {}, run_dir=first.run_dir) as resumed:
        restored = filled_buffer()
        resumed.track("buffer", restored)
        held, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert len(restored) == 2_000
    assert held < 1.2 * stored  # the buffer's own storage, not the checkpoint's copy besides
    assert peak < 2.2 * stored  # while loading: the checkpoint's arrays and the storage they are copied into


def test_more_envs_than_the_step_budget_is_refused(tmp_path):
    with Run(spec(tmp_path, env_id="CartPole-v1", total_steps=100), {}) as run:
        with pytest.raises(UserError, match="num_envs=101 is more than the budget of 100 steps"):
            run.vector_rollout(101)
        assert run.vector_rollout(100).num_envs == 100
