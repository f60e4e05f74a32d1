"""Checkpoints: round trip, atomic replacement, and clear errors for missing or corrupt files."""

from __future__ import annotations

import os

import numpy as np
import pytest

from rl import checkpoint
from rl.checkpoint import CHECKPOINT_FILE, load_checkpoint, save_checkpoint
from rl.errors import UserError


def test_round_trip(tmp_path):
    q = np.arange(12.0).reshape(4, 3)
    counts = np.array([1, 2, 3], dtype=np.int64)
    meta = {"global_step": 7, "rng": {"state": {"state": 2**100 + 1}}}
    save_checkpoint(tmp_path, {"q": q, "counts": counts}, meta)
    arrays, loaded_meta = load_checkpoint(tmp_path)
    np.testing.assert_array_equal(arrays["q"], q)
    assert arrays["counts"].dtype == np.int64
    assert loaded_meta == meta


def test_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    save_checkpoint(tmp_path, {"q": np.zeros(3)}, {"global_step": 1})

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.os, "replace", broken_replace)
    with pytest.raises(OSError):
        save_checkpoint(tmp_path, {"q": np.ones(3)}, {"global_step": 2})
    monkeypatch.undo()
    arrays, meta = load_checkpoint(tmp_path)
    assert meta["global_step"] == 1 and arrays["q"].sum() == 0
    assert os.listdir(tmp_path) == [CHECKPOINT_FILE]  # no temporary file left behind


def test_missing_checkpoint(tmp_path):
    with pytest.raises(UserError, match="no checkpoint"):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize("damage", [b"not a safetensors file", b""])
def test_corrupt_checkpoint(tmp_path, damage):
    (tmp_path / CHECKPOINT_FILE).write_bytes(damage)
    with pytest.raises(UserError, match="corrupt"):
        load_checkpoint(tmp_path)


def test_truncated_checkpoint(tmp_path):
    path = save_checkpoint(tmp_path, {"q": np.arange(1000.0)}, {"global_step": 1})
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(UserError, match="corrupt"):
        load_checkpoint(tmp_path)


def test_torch_state_dicts_round_trip_through_a_checkpoint(tmp_path):
    import torch

    from rl.checkpoint import flatten_state, unflatten_state

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    net(torch.randn(5, 3)).sum().backward()
    optimizer.step()
    arrays = {}
    meta = {
        "net": flatten_state(net.state_dict(), "net", arrays),
        "opt": flatten_state(optimizer.state_dict(), "opt", arrays),
    }
    save_checkpoint(tmp_path, arrays, meta)
    loaded_arrays, loaded_meta = load_checkpoint(tmp_path)
    twin = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    twin_optimizer = torch.optim.Adam(twin.parameters(), lr=1e-3)
    twin.load_state_dict(unflatten_state(loaded_meta["net"], loaded_arrays))
    twin_optimizer.load_state_dict(unflatten_state(loaded_meta["opt"], loaded_arrays))
    for a, b in zip(net.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # The restored optimiser continues exactly as the original would.
    for model, opt in ((net, optimizer), (twin, twin_optimizer)):
        opt.zero_grad()
        model(torch.ones(2, 3)).sum().backward()
        opt.step()
    for a, b in zip(net.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    bf16 = flatten_state({"w": torch.tensor([1.5, -2.0], dtype=torch.bfloat16)}, "x", arrays)
    assert unflatten_state(bf16, arrays)["w"].dtype == torch.bfloat16
