"""Data-parallel training: two gloo processes under torchrun, each sampling and updating on half of the problems,
end with the same gradients, parameters and gathered rewards as one process on all of them, both for one hand-made
iteration and for `rl_trainer.train` (Kimi's sequence mean, RLOO's token mean rescaled per rank, and Kimi with
FSDP2's sharded parameters and optimiser, whose gathered checkpoint resumes in one process like an unbroken run);
uneven splits and partial rollouts are refused."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from llm_rl.distributed import Ranks, shard
from llm_rl.hf_io import load_pretrained
from llm_rl.rl_config import RLConfig, RLSpec
from llm_rl.rl_trainer import train
from rl.errors import UserError

WORKER = Path(__file__).with_name("distributed_worker.py")
TRAIN_WORKER = Path(__file__).with_name("distributed_train_worker.py")


def torchrun(worker: Path, processes: int, *args: str) -> subprocess.CompletedProcess:
    """Runs `worker args...` under torchrun with `processes` CPU processes."""
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    done = subprocess.run([*launch, str(worker), *args], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def torchrun_worker(out: Path, processes: int) -> dict[str, torch.Tensor]:
    """What the worker's rank 0 wrote after running under torchrun with `processes` CPU processes."""
    torchrun(WORKER, processes, str(out))
    return load_file(out)


@pytest.mark.usefixtures("one_thread")
def test_two_gloo_processes_take_the_single_process_step(tmp_path):
    worker = load_worker(WORKER)
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


def load_worker(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    worker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(worker)
    return worker


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("algo, parallelism", [("kimi", "ddp"), ("rloo", "ddp"), ("kimi", "fsdp")])
def test_rl_training_in_two_gloo_processes_equals_one_process(algo: str, parallelism: str, warm_model: str, tmp_path):
    worker = load_worker(TRAIN_WORKER)
    worker.main(algo, parallelism, warm_model, str(tmp_path / "alone"), str(tmp_path / "one.safetensors"))
    alone = load_file(tmp_path / "one.safetensors")
    split_args = (algo, parallelism, warm_model, str(tmp_path / "split"), str(tmp_path / "two.safetensors"))
    torchrun(TRAIN_WORKER, 2, *split_args)
    split = load_file(tmp_path / "two.safetensors")
    assert [run.name.startswith(f"addition__{algo}") for run in (tmp_path / "split").iterdir()] == [True]  # rank 0's
    assert split["mean_rewards"].tolist() == alone["mean_rewards"].tolist()  # the same responses were sampled
    assert 0 < alone["mean_rewards"].mean() < 1
    initial = dict(load_pretrained(warm_model)[0].named_parameters())
    for name, value in alone.items():
        if name.startswith("param."):
            assert not torch.equal(value, initial[name.removeprefix("param.")]), name  # every parameter moved
            # unweighted RLOO shards (a mean of each rank's token means) end 4e-4 away; these match to float error
            torch.testing.assert_close(split[name], value, atol=1e-5, rtol=0, msg=name)


def test_partial_rollouts_and_uneven_splits_are_refused_before_a_run_starts(warm_model: str, tmp_path, monkeypatch):
    monkeypatch.setattr("llm_rl.rl_trainer.init_ranks", lambda device: Ranks(0, 2, torch.device("cpu")))
    spec = RLSpec("kimi", warm_model, "addition", runs_dir=str(tmp_path))
    with pytest.raises(UserError, match="partial rollouts run in one process only"):
        train(RLConfig(partial_rollouts=True), spec)
    with pytest.raises(UserError, match="15 problems per iteration do not split evenly over 2 processes"):
        train(RLConfig(problems_per_iteration=15), spec)
    assert not list(tmp_path.iterdir())  # no run directory was made


@pytest.mark.usefixtures("one_thread")
def test_an_fsdp_checkpoint_resumes_in_one_process_like_an_unbroken_run(warm_model: str, tmp_path):
    worker = load_worker(TRAIN_WORKER)  # its CONFIG: 2 iterations
    torchrun(TRAIN_WORKER, 2, "kimi", "fsdp", warm_model, str(tmp_path / "split"), str(tmp_path / "two.safetensors"))
    (cut,) = (tmp_path / "split").iterdir()
    spec = RLSpec("kimi", warm_model, "addition", seed=5, runs_dir=str(tmp_path / "alone"), quiet=True)
    three = replace(worker.CONFIG, iterations=3)
    resumed = train(replace(three, parallelism="fsdp"), spec, resume=cut)  # the gathered model and Adam moments
    straight = train(three, spec)
    assert resumed.mean_rewards == straight.mean_rewards[2:]
    for (name, p), q in zip(resumed.model.named_parameters(), straight.model.parameters(), strict=True):
        torch.testing.assert_close(p, q, atol=1e-5, rtol=0, msg=name)
