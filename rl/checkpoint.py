"""Checkpoint I/O: arrays in safetensors, metadata as JSON, in one file written atomically; nothing is unpickled.

A checkpoint is `checkpoint.safetensors` in the run directory. Its arrays are the learned state (tables, network
weights, optimiser and replay-buffer state); its JSON metadata (stored in the safetensors header under "meta") holds
counters, RNG state and the skeletons that `flatten_state` makes of nested state dicts. Writing goes to a temporary
file that replaces the old one in a single rename, so a crash mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from rl.errors import UserError

CHECKPOINT_FILE = "checkpoint.safetensors"


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary file beside `path` for the block to write; once the block ends, it is synced to disk and renamed
    over `path` in one step, so readers see either the old file or the whole new one. On an error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Writes `data` to `path` so that readers see either the old file or the whole new one."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_json(path: Path, obj: object) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def save_checkpoint(run_dir: Path, arrays: Mapping[str, np.ndarray], meta: Mapping[str, object]) -> Path:
    """Saves named arrays and JSON-serialisable metadata to `run_dir/checkpoint.safetensors`. The arrays go to the
    file straight from their memory (no serialised copy in between: a replay buffer of Atari frames is gigabytes)."""
    contiguous = {name: np.ascontiguousarray(array) for name, array in arrays.items()}
    path = Path(run_dir) / CHECKPOINT_FILE
    with atomic_path(path) as tmp:
        save_file(contiguous, tmp, metadata={"meta": json.dumps(meta)})
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
        if not isinstance(meta, dict):
            raise ValueError("its metadata is not a JSON object")
    except (SafetensorError, OSError, ValueError, KeyError, TypeError) as error:
        raise UserError(
            f"checkpoint {path} is corrupt or not ours ({error}); retrain, or restore the file from a backup."
        ) from None
    return arrays, meta


def flatten_state(state: Any, prefix: str, arrays: dict[str, np.ndarray]) -> Any:
    """Splits a nested state (a torch `state_dict()`, say) into arrays and a JSON-able skeleton.

    Tensors and arrays move into `arrays` under dotted names starting with `prefix`; the skeleton keeps their place
    with a marker. Dicts with non-string keys (an optimiser's per-parameter state) are kept as key-value pairs, since
    JSON would turn their integer keys into strings.
    """
    if isinstance(state, torch.Tensor):
        tensor = state.detach().cpu()
        dtype = str(tensor.dtype).removeprefix("torch.")
        if tensor.dtype == torch.bfloat16:  # NumPy has no bfloat16; float32 holds every bfloat16 value exactly
            tensor = tensor.float()
        arrays[prefix] = tensor.numpy()
        return {"__tensor__": prefix, "dtype": dtype}
    if isinstance(state, np.ndarray):
        arrays[prefix] = state
        return {"__array__": prefix}
    if isinstance(state, np.generic):
        return state.item()
    if isinstance(state, dict):
        if all(isinstance(key, str) for key in state):
            return {key: flatten_state(value, f"{prefix}.{key}", arrays) for key, value in state.items()}
        return {"__items__": [[key, flatten_state(value, f"{prefix}.{key}", arrays)] for key, value in state.items()]}
    if isinstance(state, (list, tuple)):
        return [flatten_state(value, f"{prefix}.{i}", arrays) for i, value in enumerate(state)]
    return state


def unflatten_state(skeleton: Any, arrays: Mapping[str, np.ndarray]) -> Any:
    """The inverse of `flatten_state`."""
    if isinstance(skeleton, dict):
        if "__tensor__" in skeleton:
            tensor = torch.from_numpy(np.array(arrays[skeleton["__tensor__"]]))
            return tensor.to(getattr(torch, skeleton["dtype"]))
        if "__array__" in skeleton:
            return arrays[skeleton["__array__"]]  # no copy: an owner copies it into its own storage on loading
        if "__items__" in skeleton:
            return {key: unflatten_state(value, arrays) for key, value in skeleton["__items__"]}
        return {key: unflatten_state(value, arrays) for key, value in skeleton.items()}
    if isinstance(skeleton, list):
        return [unflatten_state(value, arrays) for value in skeleton]
    return skeleton


def check_saved_by(meta: Mapping[str, Any], agent: str, run_dir: Path, doing: str) -> None:
    """A UserError unless the checkpoint's metadata names `agent`, the agent of the run's config.json (a checkpoint
    copied between runs, or a config.json edited, would load weights into the wrong network)."""
    if meta.get("agent") != agent:
        raise UserError(
            f"the checkpoint in {run_dir} was saved by {meta.get('agent')!r}, but its config.json names {agent!r}; "
            f"{doing} a run directory whose checkpoint and config.json belong together."
        )


def check_budget_left(run_dir: Path, done: int, budget: int, name: str, flag: str) -> None:
    """A UserError when a resumed run has already done its budget: going on would train nothing yet rewrite the run's
    config.json and checkpoint (and evaluate again)."""
    if done >= budget:
        raise UserError(
            f"{run_dir} already reached {name} {done} (its budget is {budget}); pass {flag} above {done} to train it "
            "further."
        )
