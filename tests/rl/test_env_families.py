"""Gymnasium env families that need an extra (Box2D, MuJoCo): a missing one names the extra that installs it, the
tuned configs shipped in `configs/` are valid configs of the agent their name starts with, and the MuJoCo ones run."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from agents.registry import get_agent
from rl.checkpoint import load_checkpoint
from rl.cli import main
from rl.config import build_config, load_toml
from rl.environments import make_env
from rl.errors import UserError

CONFIGS = sorted(Path(__file__).resolve().parents[2].joinpath("configs").glob("*.toml"))


def missing_box2d() -> gym.Env:
    raise gym.error.DependencyNotInstalled('Box2D is not installed, run `pip install "gymnasium[box2d]"`')


if "MissingBox2D-v0" not in gym.registry:
    gym.register("MissingBox2D-v0", entry_point=missing_box2d)


def test_a_missing_env_family_names_the_extra_that_installs_it():
    with pytest.raises(UserError) as caught:
        make_env("MissingBox2D-v0")
    message = str(caught.value)
    assert "Box2D is not installed" in message and 'pip install -e ".[box2d]"' in message and "\n" not in message


def test_lunar_lander_comes_with_the_dev_install():
    discrete, continuous = make_env("LunarLander-v3"), make_env("LunarLanderContinuous-v3")
    assert discrete.observation_space.shape == (8,) and discrete.action_space == gym.spaces.Discrete(4)
    assert continuous.action_space.shape == (2,)
    obs, _ = discrete.reset(seed=0)
    assert obs.shape == (8,) and np.isfinite(obs).all()


@pytest.mark.parametrize("path", CONFIGS, ids=[path.name for path in CONFIGS])
def test_every_shipped_config_builds_for_its_agent(path: Path):
    agent = get_agent(path.stem.split("_")[0])
    fields = {key: value for key, value in load_toml(path).items() if key != "env_kwargs"}
    cfg = build_config(agent.config, fields, agent.name)
    assert all(getattr(cfg, key) == (tuple(v) if isinstance(v, list) else v) for key, v in fields.items())


def test_mujoco_comes_with_the_dev_install():
    env = make_env("Hopper-v5")
    assert env.observation_space.shape == (11,) and env.action_space.shape == (3,)
    obs, _ = env.reset(seed=0)
    assert np.isfinite(obs).all()


@pytest.mark.parametrize("agent", ["sac", "td3"])
def test_the_mujoco_configs_train_evaluate_and_resume(capsys, tmp_path, agent):
    config = Path(__file__).resolve().parents[2] / "configs" / f"{agent}_mujoco.toml"
    argv = ["train", agent, "--env", "Hopper-v5", "--config", str(config), "--set", "learning_starts=150"]
    assert main([*argv, "--total-steps", "200", "--runs-dir", str(tmp_path), "--quiet", "--eval-episodes", "1"]) == 0
    run_dir = Path(capsys.readouterr().out.strip().splitlines()[-1].removeprefix("run directory: "))
    assert main(["train", "--resume", str(run_dir), "--total-steps", "300", "--quiet", "--eval-episodes", "1"]) == 0
    assert load_checkpoint(run_dir)[1]["global_step"] == 300
    capsys.readouterr()
    assert main(["eval", str(run_dir), "--episodes", "1"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["episodes"] == 1


@pytest.mark.parametrize(
    ("kwargs", "cause"), [({"frame_skip": 0}, "ZeroDivisionError"), ({"xml_file": "nope.xml"}, "OSError")]
)
def test_mujoco_kwargs_it_cannot_build_with_are_one_user_error(kwargs, cause):
    with pytest.raises(UserError) as caught:
        make_env("Hopper-v5", kwargs)
    message = str(caught.value)
    assert message.startswith(f"cannot make env 'Hopper-v5' with env kwargs {kwargs}: {cause}") and "\n" not in message
