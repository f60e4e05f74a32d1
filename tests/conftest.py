"""Fixtures shared across the test suite."""

from __future__ import annotations

import pytest
import torch


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
