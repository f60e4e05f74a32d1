"""Checkpoint I/O: arrays in safetensors, metadata as JSON, in one file written atomically; nothing is unpickled.

A checkpoint is `checkpoint.safetensors` in the run directory. Its arrays are the learned state (tables now, network
weights, optimiser and buffer state later); its JSON metadata (stored in the safetensors header under "meta") holds
counters and RNG state. Writing goes to a temporary file that replaces the old one in a single rename, so a crash
mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save as save_arrays

from rl.errors import UserError

CHECKPOINT_FILE = "checkpoint.safetensors"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Writes `data` to `path` so that readers see either the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: object) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def save_checkpoint(run_dir: Path, arrays: Mapping[str, np.ndarray], meta: Mapping[str, object]) -> Path:
    """Saves named arrays and JSON-serialisable metadata to `run_dir/checkpoint.safetensors`."""
    contiguous = {name: np.ascontiguousarray(array) for name, array in arrays.items()}
    data = save_arrays(contiguous, metadata={"meta": json.dumps(meta)})
    path = Path(run_dir) / CHECKPOINT_FILE
    atomic_write_bytes(path, data)
    return path


def load_checkpoint(run_dir: Path) -> tuple[dict[str, np.ndarray], dict]:
    """Reads what `save_checkpoint` wrote; a missing or corrupt file is a UserError naming it."""
    path = Path(run_dir) / CHECKPOINT_FILE
    if not path.is_file():
        raise UserError(f"no checkpoint at {path}; pass a run directory written by `rl train`.")
    try:
        with safe_open(path, framework="numpy") as f:
            meta = json.loads((f.metadata() or {})["meta"])
            arrays = {name: f.get_tensor(name) for name in f.keys()}
    except (SafetensorError, OSError, ValueError, KeyError, TypeError) as error:
        raise UserError(
            f"checkpoint {path} is corrupt or not ours ({error}); retrain, or restore the file from a backup."
        ) from None
    return arrays, meta
