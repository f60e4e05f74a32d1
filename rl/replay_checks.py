"""What `rl.replay_buffer.ReplayBuffer` refuses: constructor arguments out of range, and saved states (a checkpoint's
arrays and metadata) that do not fit the buffer they are loaded into. Each is a ValueError that names the field."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

ExtrasSpec = dict[str, tuple[tuple[int, ...], DTypeLike]]
ADD_ARGUMENTS = ("obs", "actions", "rewards", "next_obs", "terminated", "truncated")
"""The fields `ReplayBuffer.add` takes by name; an extra field may not reuse one."""


def as_batch(num_envs: int, name: str, value: ArrayLike, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """`value` for `ReplayBuffer.add` as an (N, *shape) array of `dtype`, or a ValueError naming the field and the
    shape expected. With one env, a single env's unbatched value is accepted too."""
    array = np.asarray(value)
    if num_envs == 1 and array.shape == shape:  # one env's unbatched step, as a single-env Rollout gives it
        array = array[None]
    expected = (num_envs, *shape)
    if array.shape != expected:
        raise ValueError(f"add(): {name} has shape {array.shape}, expected {expected} (num_envs first).")
    # Flags may come as 0/1 numbers; anything else must cast within its kind (no float observations into uint8).
    if dtype != np.bool_ and not np.can_cast(array.dtype, dtype, casting="same_kind"):
        raise ValueError(f"add(): {name} has dtype {array.dtype}, which does not cast to the buffer's {dtype}.")
    return array.astype(dtype, copy=False)


def check_saved_meta(meta: Mapping[str, Any], config: dict[str, Any]) -> None:
    """A ValueError unless the saved metadata `meta` fits the buffer whose `_config()` is `config`."""
    saved = meta["config"]
    capacity, num_envs, n_step = config["capacity"], config["num_envs"], config["n_step"]
    keys = [*config, *(key for key in saved if key not in config)]
    mismatched = [
        f"{key} {saved.get(key)!r} != {config.get(key)!r}" for key in keys if saved.get(key) != config.get(key)
    ]
    if mismatched:
        raise ValueError(
            f"the saved replay buffer does not fit this one (saved != built: {'; '.join(mismatched)}); "
            "build the buffer with the config it was saved with."
        )
    size, position = meta["size"], meta["position"]
    if not (0 <= size <= capacity and 0 <= position < capacity):
        raise ValueError(f"the saved replay buffer has an impossible size {size} or position {position}.")
    if size < capacity and position != size:
        raise ValueError(f"the saved replay buffer is not full (size {size}) but its position is {position}.")
    head, count = np.asarray(meta["pending_head"]), np.asarray(meta["pending_count"])
    in_range = (head >= 0) & (head < n_step) & (count >= 0) & (count < n_step)
    if head.shape != (num_envs,) or count.shape != (num_envs,) or not in_range.all():
        raise ValueError("the saved replay buffer's pending n-step windows do not fit num_envs and n_step.")


def check_saved_array(arrays: Mapping[str, np.ndarray], key: str, shape: tuple[int, ...], dtype: np.dtype) -> None:
    """A ValueError unless the saved `arrays` hold `key` with this shape and dtype."""
    if key not in arrays:
        raise ValueError(f"the saved replay buffer lacks the array {key!r}; was it saved by ReplayBuffer.state_dict?")
    array = arrays[key]
    if array.shape != shape or array.dtype != dtype:
        raise ValueError(
            f"saved replay buffer array {key!r} is {array.dtype}{list(array.shape)}, expected {dtype}{list(shape)}."
        )


def check_config(
    capacity: int, num_envs: int, n_step: int, gamma: float, alpha: float, beta: float, eps: float, extras: ExtrasSpec
) -> None:
    """A ValueError naming the first of the ReplayBuffer constructor's arguments that is out of range."""
    problems = {
        f"capacity must be >= 1, not {capacity}": capacity < 1,
        f"num_envs must be >= 1, not {num_envs}": num_envs < 1,
        f"n_step must be >= 1, not {n_step}": n_step < 1,
        f"gamma must lie in [0, 1], not {gamma}": not 0.0 <= gamma <= 1.0,
        f"alpha must be >= 0, not {alpha}": alpha < 0,
        f"beta must lie in [0, 1], not {beta}": not 0.0 <= beta <= 1.0,
        # eps > 0 keeps every stored row's priority positive, so each stays sampleable and the min weight is defined.
        f"priority_eps must be > 0, not {eps}": eps <= 0,
    }
    for name in extras:
        problems[f"extra {name!r} must be a Python identifier other than {ADD_ARGUMENTS}"] = (
            not name.isidentifier() or name in ADD_ARGUMENTS
        )
    for message, failed in problems.items():
        if failed:
            raise ValueError(f"ReplayBuffer: {message}.")
