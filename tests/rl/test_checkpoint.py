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
