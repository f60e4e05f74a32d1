"""Fixtures shared across the test suite."""

from __future__ import annotations

import gymnasium as gym
import pytest
import torch


class TextObservations(gym.Env):
    """A one-step env that observes a string, which no agent here can read (the space-check tests refuse it)."""

    observation_space = gym.spaces.Text(8)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return "hello", {}

    def step(self, action):
        return "bye", 0.0, True, False, {}


if "TextToy-v0" not in gym.registry:
    gym.register("TextToy-v0", entry_point=TextObservations)


@pytest.fixture
def one_thread():
    """Small networks and tiny matrices: a second intra-op thread costs more than it saves, badly so on a busy
    2-core machine. Test modules opt in with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def cli(capsys):
    """`cli("train", "sarsa", ...)` runs the `rl` command in this process and returns (exit code, stdout, stderr)."""
    from rl.cli import main

    def run(*argv: str) -> tuple[int, str, str]:
        code = main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
def logged_steps():
    """`logged_steps(run_dir, tag)`: the sorted steps at which a run logged `tag` (sorted: event files that two
    sessions of a resumed run opened within one second may be read in either order)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    def steps(run_dir, tag: str) -> list[int]:
        return sorted(event.step for event in EventAccumulator(str(run_dir)).Reload().Scalars(tag))

    return steps
