"""Data-parallel training: two gloo processes under torchrun, each sampling and updating on half of the problems,
end with the same gradients, parameters and gathered rewards as one process on all of them; uneven splits are
refused."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from llm_rl.distributed import Ranks, shard
from rl.errors import UserError

WORKER = Path(__file__).with_name("distributed_worker.py")


def torchrun_worker(out: Path, processes: int) -> dict[str, torch.Tensor]:
    """What the worker's rank 0 wrote after running under torchrun with `processes` CPU processes."""
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    done = subprocess.run([*launch, str(WORKER), str(out)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return load_file(out)


@pytest.mark.usefixtures("one_thread")
def test_two_gloo_processes_take_the_single_process_step(tmp_path):
    spec = importlib.util.spec_from_file_location("distributed_worker", WORKER)
    worker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(worker)
    assert "WORLD_SIZE" not in os.environ  # in this process: one rank, no process group
    worker.main(str(tmp_path / "one.safetensors"))
    alone = load_file(tmp_path / "one.safetensors")
    split = torchrun_worker(tmp_path / "two.safetensors", 2)
    assert alone.keys() == split.keys()
    torch.testing.assert_close(split["rewards"], alone["rewards"], atol=0, rtol=0)
    assert 0 < alone["rewards"].mean() < 1  # some groups have a reward spread, so the loss has a gradient
    for name, value in alone.items():
        if name.startswith("grad."):
            assert value.abs().sum() > 0, name
        torch.testing.assert_close(split[name], value, atol=1e-6, rtol=0, msg=name)


def test_shards_are_contiguous_and_even():
    assert [shard(range(6), Ranks(r, 3, torch.device("cpu"))) for r in range(3)] == [[0, 1], [2, 3], [4, 5]]
    with pytest.raises(UserError, match="5 problems per iteration do not split evenly over 2 processes"):
        shard(range(5), Ranks(0, 2, torch.device("cpu")))
