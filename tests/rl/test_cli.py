"""The `rl` command end to end: train, eval, plan, compare, resume, interruption and the error cases."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import envs  # noqa: F401
from agents.planning import value_iteration
from envs.grid_world import GridWorld
from rl.checkpoint import load_checkpoint
from rl.cli import main


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def run_dir_from(out: str) -> Path:
    return Path(out.strip().splitlines()[-1].removeprefix("run directory: "))


def test_train_then_eval_round_trip(capsys, tmp_path):
    code, out, _ = run_cli(
        capsys, "train", "q_learning", "--env", "FrozenLake-v1", "--env-kwargs", "is_slippery=false",
        "--total-steps", "8000", "--runs-dir", str(tmp_path), "--set", "alpha=0.5", "epsilon=0.2", "--quiet",
    )  # fmt: skip
    assert code == 0
    run_dir = run_dir_from(out)
    assert run_dir.parent == tmp_path and run_dir.name.startswith("FrozenLake-v1__q_learning__s0__")
    config = json.loads((run_dir / "config.json").read_text())
    assert config["agent_config"]["alpha"] == 0.5 and config["spec"]["env_kwargs"] == {"is_slippery": False}
    code, out, _ = run_cli(capsys, "eval", str(run_dir), "--episodes", "5")
    assert code == 0
    assert json.loads(out.strip().splitlines()[-1]) == {"mean_return": 1.0, "std_return": 0.0, "episodes": 5}


def test_several_seeds_make_separate_runs_and_compare_them(capsys, tmp_path):
    code, out, _ = run_cli(
        capsys, "train", "sarsa", "--env", "GridWorld-v0", "--total-steps", "3000", "--seed", "0", "1",
        "--runs-dir", str(tmp_path), "--quiet",
    )  # fmt: skip
    assert code == 0
    run_dirs = [Path(line.removeprefix("run directory: ")) for line in out.splitlines() if line.startswith("run dir")]
    assert [d.name.split("__")[2] for d in run_dirs] == ["s0", "s1"]
    png = tmp_path / "curves.png"
    code, out, _ = run_cli(capsys, "compare", *map(str, run_dirs), "--out", str(png))
    assert code == 0
    assert "sarsa" in out and "GridWorld-v0" in out
    assert png.read_bytes().startswith(b"\x89PNG")


def test_config_file_and_set_override(capsys, tmp_path):
    config = tmp_path / "sarsa.toml"
    config.write_text("alpha = 0.3\nepsilon = 0.2\n[env_kwargs]\nstart = [1, 1]\n")
    code, out, _ = run_cli(
        capsys, "train", "sarsa", "--env", "GridWorld-v0", "--total-episodes", "2", "--config", str(config),
        "--set", "epsilon=0.05", "--runs-dir", str(tmp_path), "--quiet",
    )  # fmt: skip
    assert code == 0
    saved = json.loads((run_dir_from(out) / "config.json").read_text())
    assert saved["agent_config"]["alpha"] == 0.3 and saved["agent_config"]["epsilon"] == 0.05
    assert saved["spec"]["env_kwargs"] == {"start": [1, 1]} and saved["spec"]["total_episodes"] == 2


def test_plan_json_matches_the_planner(capsys):
    code, out, _ = run_cli(capsys, "plan", "--env", "GridWorld-v0", "--gamma", "0.9", "--json")
    assert code == 0
    plan = json.loads(out.strip().splitlines()[-1])
    expected = value_iteration(GridWorld().model(), 0.9)
    np.testing.assert_allclose(plan["values"], expected.values)
    assert plan["policy"] == expected.policy.tolist()


def test_plan_prints_the_grid(capsys):
    code, out, _ = run_cli(capsys, "plan", "--env", "GridWorld-v0", "--algo", "policy_iteration")
    assert code == 0
    assert "10.0" in out and "→" in out


def test_resume_continues_the_run(capsys, tmp_path):
    code, out, _ = run_cli(
        capsys, "train", "expected_sarsa", "--env", "GridWorld-v0", "--total-steps", "1000",
        "--runs-dir", str(tmp_path), "--quiet",
    )  # fmt: skip
    run_dir = run_dir_from(out)
    code, out, _ = run_cli(capsys, "train", "--resume", str(run_dir), "--total-steps", "3000", "--quiet")
    assert code == 0 and run_dir_from(out) == run_dir
    _, meta = load_checkpoint(run_dir)
    assert meta["global_step"] == 3000


def small_dqn_run(capsys, tmp_path) -> Path:
    code, out, _ = run_cli(
        capsys, "train", "dqn", "--env", "CartPole-v1", "--total-steps", "300", "--set", "learning_starts=100",
        "hidden_sizes=[16]", "--eval-episodes", "1", "--runs-dir", str(tmp_path), "--quiet",
    )  # fmt: skip
    assert code == 0
    return run_dir_from(out)


def edit_config(run_dir: Path, section: str, key: str, value: object) -> None:
    path = run_dir / "config.json"
    saved = json.loads(path.read_text())
    saved[section][key] = value
    path.write_text(json.dumps(saved))


@pytest.mark.parametrize(
    "section, key, value, message",
    [
        ("agent_config", "hidden_sizes", [32], "does not fit this run"),
        ("spec", "env_id", "Acrobot-v1", "does not fit this run"),
    ],
)
def test_a_resume_that_does_not_fit_leaves_the_checkpoint_as_it_was(capsys, tmp_path, section, key, value, message):
    run_dir = small_dqn_run(capsys, tmp_path / "runs")
    before, events = (run_dir / "checkpoint.safetensors").read_bytes(), sorted(run_dir.glob("events.*"))
    edit_config(run_dir, section, key, value)
    config = (run_dir / "config.json").read_bytes()
    code, _, err = run_cli(capsys, "train", "--resume", str(run_dir), "--total-steps", "400", "--quiet")
    assert code == 2 and err.startswith("error: ") and message in err
    assert len(err.strip().splitlines()) == 1
    assert (run_dir / "checkpoint.safetensors").read_bytes() == before
    assert sorted(run_dir.glob("events.*")) == events and (run_dir / "config.json").read_bytes() == config
    code, _, err = run_cli(capsys, "eval", str(run_dir), "--episodes", "1")
    assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1


def test_a_checkpoint_of_another_agent_is_refused(capsys, tmp_path):
    code, out, _ = run_cli(capsys, "train", "sarsa", "--env", "GridWorld-v0", "--total-steps", "100",
                           "--runs-dir", str(tmp_path), "--quiet")  # fmt: skip
    run_dir = run_dir_from(out)
    before = (run_dir / "checkpoint.safetensors").read_bytes()
    edit_config(run_dir, "spec", "agent", "q_learning")  # the same config class: only the checkpoint tells
    for argv in (["train", "--resume", str(run_dir), "--total-steps", "200"], ["eval", str(run_dir)]):
        code, _, err = run_cli(capsys, *argv)
        assert code == 2 and "saved by 'sarsa'" in err and "names 'q_learning'" in err
    assert (run_dir / "checkpoint.safetensors").read_bytes() == before


@pytest.mark.parametrize(
    "extra, message",
    [
        ([], "already reached total_steps 300"),
        (["--total-steps", "200"], "pass --total-steps above 300"),
        (["--total-steps", "400", "--set", "gamma=0.5"], "--set cannot change it"),
        (["--total-steps", "400", "--env-kwargs", "sutton_barto_reward=true"], "--env-kwargs cannot change it"),
    ],
)
def test_resume_refuses_what_it_would_ignore(capsys, tmp_path, extra, message):
    run_dir = small_dqn_run(capsys, tmp_path / "runs")
    events = sorted(run_dir.glob("events.*"))
    code, _, err = run_cli(capsys, "train", "--resume", str(run_dir), "--quiet", *extra)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert sorted(run_dir.glob("events.*")) == events  # nothing re-evaluated or logged


def test_an_llm_run_directory_is_not_an_agent_run(capsys, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"spec": {"algo": "kimi"}, "rl_config": {}}))
    for argv in (["train", "--resume", str(tmp_path)], ["eval", str(tmp_path)]):
        code, _, err = run_cli(capsys, *argv)
        assert code == 2 and "was not written by `rl train`" in err


def test_list_names_agents_and_envs(capsys):
    code, out, _ = run_cli(capsys, "list")
    assert code == 0
    for name in ["mc_basic", "mc_exploring_starts", "mc_epsilon_greedy", "td0", "sarsa", "expected_sarsa",
                 "nstep_sarsa", "q_learning", "q_learning_offpolicy", "GridWorld-v0"]:  # fmt: skip
        assert name in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "sarsa", "--env", "NoSuchEnv-v0", "--total-steps", "10"], "unknown env id 'NoSuchEnv-v0'"),
        (["train", "sarsa_lambda", "--env", "GridWorld-v0", "--total-steps", "10"], "unknown agent 'sarsa_lambda'"),
        (["train", "sarsa", "--env", "GridWorld-v0", "--total-steps", "10", "--set", "gama=0.9"], "no config key"),
        (["train", "sarsa", "--env", "GridWorld-v0", "--total-steps", "10", "--set", "alpha=fast"], "must be float"),
        (["train", "sarsa", "--env", "CartPole-v1", "--total-steps", "10"], "Discrete observation space"),
        (["train", "sarsa", "--env", "GridWorld-v0"], "--total-steps"),
        (["train", "sarsa", "--env", "GridWorld-v0", "--total-steps", "10", "--env-kwargs", "rows=-1"], "rows"),
        (["train", "sarsa", "--env", "GridWorld-v0", "--total-steps", "10", "--threads", "0"], "--threads"),
        (["eval", "/nonexistent/run"], "does not exist"),
        (["plan", "--env", "CartPole-v1"], "does not expose its model"),
        (["train", "dqn", "--env", "CartPole-v1", "--total-steps", "10", "--set", "learning_rate=-1"], "positive"),
        (["train", "td3", "--env", "Pendulum-v1", "--total-steps", "10", "--set", "learning_rate=0"], "positive"),
        (["train", "dqn", "--env", "CartPole-v1", "--total-steps", "10", "--set", "device=foo"], "not a torch device"),
        (["train", "sarsa", "--env", "GridWorld-v0", "--total-steps", "10", "--seed", "-1"], "--seed"),
        (["train", "sarsa", "--env", "GridWorld-v0", "--total-steps", "10", "--eval-episodes", "0"], "--eval-episodes"),
        (["train", "sarsa", "--env", "GridWorld-v0", "--total-steps", "10", "--bogus"], "unrecognized arguments"),
        (
            ["train", "q_learning", "--env", "FrozenLake-v1", "--total-steps", "10", "--env-kwargs", "map_name=9x9"],
            "map_name",
        ),
        (["eval", "/nonexistent/run", "--episodes", "0"], "--episodes"),
        (["compare", "/nonexistent/run", "--out", "/"], "is a directory"),
        (["train", "dqn", "--env", "CartPole-v1", "--total-steps", "10", "--set", "learning_rate=Infinity"], "finite"),
        (["train", "ppo", "--env", "CartPole-v1", "--total-steps", "10", "--set", "ent_coef=NaN"], "must be a number"),
        (["train", "a2c", "--env", "CartPole-v1", "--total-steps", "10", "--set", "optimizer_eps=-1"], "negative"),
        (["train", "dqn", "--env", "CartPole-v1", "--total-steps", "10", "--set", "hidden_sizes=[0]"], "layer widths"),
        (["train", "dqn", "--env", "CartPole-v1", "--total-steps", "10", "--set", "prioritized_beta=5"], "beta"),
        (["train", "dqn", "--env", "CartPole-v1", "--total-steps", "10", "--set", "exploration_steps=-10"], "negative"),
        (["train", "sarsa", "--env", "GridWorld-v0", "--total-steps", "10", "--set", "epsilon_end=5"], "[0, 1]"),
        (
            ["train", "sarsa_linear", "--env", "CartPole-v1", "--total-steps", "10", "--set", "alpha=NaN"],
            "alpha must be",
        ),
        (
            ["train", "dqn", "--env", "CartPole-v1", "--total-steps", "10", "--set", "buffer_size=100000000000000"],
            "out of memory",
        ),
        (["train", "ppo", "--env", "Pendulum-v1", "--total-steps", "10", "--env-kwargs", "g=abc"], "defaults to 10.0"),
        (
            ["train", "sarsa", "--env", "FrozenLake-v1", "--total-steps", "10", "--env-kwargs", "is_slippery=maybe"],
            "is_slippery",
        ),
        (
            ["train", "sarsa", "--env", "FrozenLake-v1", "--total-steps", "10", "--env-kwargs", "render_mode=foo"],
            "no render_mode 'foo'",
        ),
        (["train", "sarsa", "--env", "GridWorld-v0", "--total-steps", "10", "--seed", str(2**64)], "--seed"),
        (["train", "sarsa", "--env", "GridWorld-v0", "--total-steps", "10", "--threads", "100000"], "--threads"),
        (["train", "ppo", "--env", "Pendulum-v1", "--total-steps", "10", "--set", "log_std_init=1000"], "[-20, 5]"),
        (["train", "dqn", "--env", "CartPole-v1", "--total-steps", "10", "--set", "clip_reward=-1"], "not be negative"),
        (
            ["train", "dqn", "--env", "CartPole-v1", "--total-steps", "10", "--set", "hidden_sizes=[100000000000]"],
            "out of memory",
        ),
        (["eval", "/dev/null"], "is not a directory"),
    ],
)
def test_user_errors_are_one_line_and_exit_2(capsys, tmp_path, argv, message):
    code, out, err = run_cli(capsys, *argv, *(["--runs-dir", str(tmp_path)] if argv[0] == "train" else []))
    assert code == 2
    assert err.startswith("error: ") and message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not list(tmp_path.iterdir())  # no half-made run directory left behind
    assert str(tmp_path) not in out  # nor a line naming one


class NeedsAMissingExtra(gym.Env):
    """An env whose first reset fails as a renderer without its extra does (render_mode="human", no pygame)."""

    observation_space = gym.spaces.Discrete(2)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        raise gym.error.DependencyNotInstalled("pygame is not installed")


def test_an_env_that_fails_on_reset_is_one_line_and_leaves_no_run(capsys, tmp_path):
    gym.register("NeedsAMissingExtra-v0", entry_point=NeedsAMissingExtra)
    code, _, err = run_cli(capsys, "train", "sarsa", "--env", "NeedsAMissingExtra-v0", "--total-steps", "10",
                           "--runs-dir", str(tmp_path))  # fmt: skip
    assert code == 2 and err.startswith("error: cannot reset env") and "pygame" in err
    assert len(err.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())


def test_runs_dir_that_is_a_file_is_one_line(capsys, tmp_path):
    (tmp_path / "a_file").write_text("")
    code, _, err = run_cli(capsys, "train", "sarsa", "--env", "GridWorld-v0", "--total-steps", "10",
                           "--runs-dir", str(tmp_path / "a_file"))  # fmt: skip
    assert code == 2 and "pass a writable --runs-dir" in err and len(err.strip().splitlines()) == 1


def test_diverging_linear_weights_stop_the_run_with_one_line(capsys, tmp_path):
    """Fourier features of order 3 on Acrobot's 6 dimensions with alpha 0.5: semi-gradient Sarsa blows up."""
    code, _, err = run_cli(capsys, "train", "sarsa_linear", "--env", "Acrobot-v1", "--total-steps", "300",
                           "--set", "features=fourier", "order=3", "--runs-dir", str(tmp_path), "--quiet")  # fmt: skip
    assert code == 2 and err.startswith("error: the linear weights diverged") and len(err.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())  # no checkpoint of non-finite weights, and no run without a checkpoint


def test_eval_checks_a_table_against_the_env(capsys, tmp_path):
    code, out, _ = run_cli(capsys, "train", "sarsa", "--env", "GridWorld-v0", "--total-steps", "100",
                           "--runs-dir", str(tmp_path), "--quiet")  # fmt: skip
    run_dir = run_dir_from(out)
    edit_config(run_dir, "spec", "env_id", "FrozenLake-v1")  # 16 states, 4 actions against the table's (25, 5)
    code, _, err = run_cli(capsys, "eval", str(run_dir))
    assert code == 2 and "has shape (25, 5)" in err and "(16, 4)" in err


def test_a_benchmark_script_reports_a_user_error_in_one_line(tmp_path):
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "llm_gradient_steps.py"
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "missing")], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.startswith("error: ") and "config.json" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


def test_corrupt_checkpoint_is_reported(capsys, tmp_path):
    code, out, _ = run_cli(
        capsys, "train", "sarsa", "--env", "GridWorld-v0", "--total-steps", "100", "--runs-dir", str(tmp_path),
        "--quiet",
    )  # fmt: skip
    run_dir = run_dir_from(out)
    (run_dir / "checkpoint.safetensors").write_bytes(b"garbage")
    code, _, err = run_cli(capsys, "eval", str(run_dir))
    assert code == 2 and "corrupt" in err


def test_sigint_saves_a_checkpoint_and_resume_finishes(tmp_path):
    """A real process: Ctrl-C mid-run saves the learned table, exits 130, and --resume picks it up."""
    command = [sys.executable, "-m", "rl.cli", "train", "q_learning_offpolicy", "--env", "GridWorld-v0",
               "--total-steps", "50000000", "--runs-dir", str(tmp_path), "--quiet"]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not list(tmp_path.glob("*/config.json")) and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(1.5)  # let it learn something
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "resume with: rl train --resume" in err
    (run_dir,) = tmp_path.iterdir()
    arrays, meta = load_checkpoint(run_dir)
    assert 0 < meta["global_step"] < 50_000_000 and np.abs(arrays["q"]).sum() > 0
    resumed = subprocess.run(
        [
            sys.executable,
            "-m",
            "rl.cli",
            "train",
            "--resume",
            str(run_dir),
            "--total-steps",
            str(meta["global_step"] + 1000),
            "--quiet",
        ],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ},
    )
    assert resumed.returncode == 0, resumed.stderr
    _, meta_after = load_checkpoint(run_dir)
    assert meta_after["global_step"] == meta["global_step"] + 1000


def test_an_env_module_in_the_working_directory_is_found(capsys, tmp_path, monkeypatch):
    # The `rl` script's sys.path starts at its own directory, not the working one that `python -m` would add.
    (tmp_path / "local_envs_for_cli_test.py").write_text(
        "import gymnasium as gym\n"
        "gym.register('LocalLake-v0', entry_point='gymnasium.envs.toy_text:FrozenLakeEnv', max_episode_steps=50)\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".", str(tmp_path))])
    code, out, _ = run_cli(capsys, "train", "q_learning", "--env", "local_envs_for_cli_test:LocalLake-v0",
                           "--total-steps", "200", "--runs-dir", str(tmp_path / "runs"), "--quiet")  # fmt: skip
    assert code == 0 and "run directory" in out


def test_output_cut_short_by_its_reader_is_no_traceback():
    # `rl plan ... | head -1`: the pipe closes after one line.
    process = subprocess.Popen([sys.executable, "-m", "rl.cli", "plan", "--env", "GridWorld-v0", "--gamma", "0.9"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    process.stdout.readline()
    process.stdout.close()
    _, err = process.communicate(timeout=120)
    assert b"Traceback" not in err and b"BrokenPipe" not in err
