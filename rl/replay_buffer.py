"""The replay buffer every off-policy agent shares: uniform or prioritized sampling, one-step or n-step returns.

Storage is a preallocated NumPy ring of `capacity` rows (the oldest row is overwritten first), one array per field,
so there is no Python object per transition. `add` takes one step of N envs (arrays with a leading N axis, as
`rl.rollout.Rollout` hands them over). `next_obs` is stored next to `obs`: twice the observation memory, but every
row is self-contained across episode ends, env boundaries and n-step windows. With `compact_observations` (for
images) each frame is kept once and the rows hold references to it (`rl.frame_store`), with `frame_stack` = K each
frame of observations that stack K frames along their first axis; sampled batches are the same.

n-step returns (Sutton & Barto 7.1; Rainbow, Hessel et al. 2018) are computed once, when a transition is stored. Each
env keeps a pending window of its last steps. When a window holds n steps its oldest step t is stored as
    (s_t, a_t, R = r_t + gamma r_{t+1} + ... + gamma^{n-1} r_{t+n-1}, next_obs = s_{t+n}, terminated = 0, gamma^n).
When an episode ends, every pending step of that env is stored with k <= n steps to the end: R sums the k rewards,
next_obs is the final observation and the discount is gamma^k. On termination terminated = 1 (the target has no
bootstrap term); on truncation terminated = 0, so the target bootstraps from the final observation. The TD target is
    y = rewards + discounts * (1 - terminated) * max_a Q(next_obs, a).
The last < n steps of a running episode are therefore not sampleable until its window fills or the episode ends.
With n_step = 1 this is ordinary one-step replay (discount gamma, N rows written per add, no pending window).

Prioritized replay (Schaul et al. 2016, proportional variant): row i is drawn with P(i) = p_i^alpha / sum_k p_k^alpha,
where p_i = |TD error| + priority_eps, and new rows get the largest priority seen so far so that each is replayed at
least once soon. A batch is stratified: [0, total) is split into B equal segments and one row drawn in each. The
importance weights are w_i = (N P(i))^-beta / max_j w_j. Annealing beta towards 1 is the caller's job
(`rl.schedules.linear_schedule`):

    batch = buffer.sample(32, rng, beta=linear_schedule(0.4, 1.0, total_steps, global_step))
    td_errors = q_values - (batch.rewards + batch.discounts * (1 - batch.terminated) * next_q_values)
    loss = (batch.weights * td_errors**2).mean()
    buffer.update_priorities(batch.indices, td_errors.abs().detach().cpu().numpy())

Sampling is with replacement (a batch may repeat a row and may be larger than the buffer); all randomness comes from
the generator passed to `sample`, so the same seed gives the same batches.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike, DTypeLike

from rl.frame_store import FrameStore, compact_config
from rl.replay_checks import ExtrasSpec, as_batch, check_config, check_saved_array, check_saved_meta
from rl.sum_tree import SumTree


@dataclass(frozen=True)
class ReplayBatch:
    """B sampled transitions as tensors on the buffer's device."""

    obs: torch.Tensor
    """(B, *obs_shape)"""
    actions: torch.Tensor
    """(B, *action_shape)"""
    rewards: torch.Tensor
    """(B,) float32: the n-step discounted sum r_1 + gamma r_2 + ... (the plain reward when n_step == 1)."""
    next_obs: torch.Tensor
    """(B, *obs_shape) the observation to bootstrap from, k <= n steps later."""
    terminated: torch.Tensor
    """(B,) float32: 1.0 if the episode terminated within those k steps (no bootstrap)."""
    discounts: torch.Tensor
    """(B,) float32: gamma**k, the discount of the bootstrap term."""
    weights: torch.Tensor
    """(B,) float32 importance-sampling weights (ones without prioritized replay)."""
    indices: np.ndarray
    """(B,) int64 storage rows, for `update_priorities`."""
    extras: dict[str, torch.Tensor]
    """The extra per-transition fields given to `add`, each (B, *shape); from step t of an n-step window."""


class ReplayBuffer:
    """A ring buffer of transitions with optional n-step returns and prioritized sampling (see the module doc)."""

    def __init__(
        self,
        capacity: int,
        obs_shape: tuple[int, ...],
        action_shape: tuple[int, ...] = (),
        obs_dtype: DTypeLike = np.float32,
        action_dtype: DTypeLike = np.int64,
        num_envs: int = 1,
        n_step: int = 1,
        gamma: float = 0.99,
        prioritized: bool = False,
        alpha: float = 0.6,
        beta: float = 0.4,
        priority_eps: float = 1e-6,
        extras: ExtrasSpec | None = None,
        device: str | torch.device = "cpu",
        compact_observations: bool = False,
        frame_stack: int = 1,
    ) -> None:
        check_config(capacity, num_envs, n_step, gamma, alpha, beta, priority_eps, extras or {})
        self.capacity, self.num_envs, self.n_step, self.gamma = capacity, num_envs, n_step, gamma
        self.obs_shape, self.action_shape = tuple(obs_shape), tuple(action_shape)
        self.obs_dtype, self.action_dtype = np.dtype(obs_dtype), np.dtype(action_dtype)
        self.prioritized, self.alpha, self.beta, self.priority_eps = prioritized, alpha, beta, priority_eps
        self.extras_spec = {name: (tuple(shape), np.dtype(dtype)) for name, (shape, dtype) in (extras or {}).items()}
        self.device = torch.device(device)
        self.compact_observations = compact_observations
        self._allocate(frame_stack)
        self._tree = SumTree(capacity) if prioritized else None
        self._max_priority = 1.0  # in stored form, (p + eps)^alpha; never decreases, as in Schaul et al.

    def _allocate(self, frame_stack: int) -> None:
        """The empty storage, the pending windows and (compact) the frame store, whose frames outlive every row that
        refers to them (rl.frame_store). A frame stack only changes how compact storage keeps frames."""
        capacity, num_envs, n_step = self.capacity, self.num_envs, self.n_step
        rows = capacity + num_envs * (2 * n_step + 1)
        compact = self.compact_observations
        self._frames = FrameStore(rows, num_envs, self.obs_shape, self.obs_dtype, frame_stack) if compact else None
        # Fields of the step taken at time t: stored as they are, and held in the pending n-step windows. Compact
        # storage keeps int64 references to the frame store in place of the observations.
        stored_obs = (self._frames.ref_shape, np.dtype(np.int64)) if self._frames else (self.obs_shape, self.obs_dtype)
        self._step_fields = {
            "obs": stored_obs,
            "actions": (self.action_shape, self.action_dtype),
            "rewards": ((), np.dtype(np.float32)),
        } | {f"extras.{name}": spec for name, spec in self.extras_spec.items()}
        fields = self._step_fields | {
            "next_obs": stored_obs,
            "terminated": ((), np.dtype(np.float32)),
            "discounts": ((), np.dtype(np.float32)),
        }
        self._storage = {name: np.zeros((capacity, *shape), dtype) for name, (shape, dtype) in fields.items()}
        self._position = 0  # the next row to write
        self._size = 0
        # Pending windows: env i's steps sit at slots head[i], head[i]+1, ... (mod n), count[i] of them (< n).
        self._pending = {
            name: np.zeros((num_envs, n_step, *shape), dtype) for name, (shape, dtype) in self._step_fields.items()
        }
        self._head = np.zeros(num_envs, dtype=np.int64)
        self._count = np.zeros(num_envs, dtype=np.int64)

    def __len__(self) -> int:
        """The number of stored (sampleable) transitions; pending n-step steps are not counted."""
        return self._size

    def add(
        self,
        obs: ArrayLike,
        actions: ArrayLike,
        rewards: ArrayLike,
        next_obs: ArrayLike,
        terminated: ArrayLike,
        truncated: ArrayLike,
        **extras: ArrayLike,
    ) -> None:
        """Adds one step of the N envs: each argument has a leading N axis (with num_envs == 1 a single env's
        unbatched values are accepted too). `next_obs` must be the final observation where an episode ended."""
        if set(extras) != set(self.extras_spec):
            raise ValueError(
                f"add() got extras {sorted(extras)} but the buffer was built with {sorted(self.extras_spec)}; "
                "pass exactly the extras declared in ReplayBuffer(extras=...)."
            )
        obs = as_batch(self.num_envs, "obs", obs, self.obs_shape, self.obs_dtype)
        next_obs = as_batch(self.num_envs, "next_obs", next_obs, self.obs_shape, self.obs_dtype)
        values = {"actions": actions, "rewards": rewards} | {f"extras.{k}": v for k, v in extras.items()}
        step = {name: as_batch(self.num_envs, name, values[name], *spec) for name, spec in self._step_fields.items()
                if name != "obs"}  # fmt: skip
        terminated = as_batch(self.num_envs, "terminated", terminated, (), np.dtype(bool))
        truncated = as_batch(self.num_envs, "truncated", truncated, (), np.dtype(bool))
        if self._frames is not None:  # only once every field has passed its check
            obs, next_obs = self._frames.store(obs, next_obs)
        step["obs"] = obs
        if self.n_step == 1:
            discounts = np.full(self.num_envs, self.gamma, dtype=np.float32)
            self._write(step | {"next_obs": next_obs, "terminated": terminated, "discounts": discounts})
        else:
            self._write(self._advance_windows(step, next_obs, terminated, truncated))

    def sample(self, batch_size: int, rng: np.random.Generator, beta: float | None = None) -> ReplayBatch:
        """Draws `batch_size` stored transitions with replacement; `beta` overrides the buffer's default."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, not {batch_size}.")
        if self._size == 0:
            raise ValueError(
                "cannot sample from an empty replay buffer; add transitions first (with n_step > 1 a step is stored "
                "once its n-step window fills or its episode ends)."
            )
        beta = self.beta if beta is None else beta
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"beta must lie in [0, 1], not {beta}.")
        if self._tree is None:
            indices = rng.integers(0, self._size, size=batch_size, dtype=np.int64)
            weights = np.ones(batch_size, dtype=np.float32)
        else:
            indices, weights = self._tree.sample(batch_size, rng, beta)
        rows = {name: column[indices] for name, column in self._storage.items()}
        if self._frames is not None:
            rows["obs"], rows["next_obs"] = self._frames.gather(rows["obs"]), self._frames.gather(rows["next_obs"])
        columns = {name: self._to_device(row) for name, row in rows.items()}
        return ReplayBatch(
            obs=columns["obs"],
            actions=columns["actions"],
            rewards=columns["rewards"],
            next_obs=columns["next_obs"],
            terminated=columns["terminated"],
            discounts=columns["discounts"],
            weights=self._to_device(weights),
            indices=indices,
            extras={name: columns[f"extras.{name}"] for name in self.extras_spec},
        )

    def update_priorities(self, indices: np.ndarray, priorities: np.ndarray | torch.Tensor) -> None:
        """Sets the priorities of sampled rows, e.g. to |TD error|; stored as (p + priority_eps) ** alpha."""
        if self._tree is None:
            raise ValueError("update_priorities needs a buffer built with prioritized=True.")
        if isinstance(priorities, torch.Tensor):
            priorities = priorities.detach().cpu().numpy()
        indices, priorities = np.asarray(indices), np.asarray(priorities, dtype=np.float64)
        if indices.ndim != 1 or priorities.shape != indices.shape:
            raise ValueError(f"update_priorities needs two (B,) arrays, got {indices.shape} and {priorities.shape}.")
        if indices.size and (indices.min() < 0 or indices.max() >= self._size):
            raise ValueError(f"update_priorities indices must be stored rows in [0, {self._size}).")
        if not np.all(np.isfinite(priorities)) or np.any(priorities < 0):
            raise ValueError("priorities must be finite and >= 0 (pass |TD error|).")
        stored = (priorities + self.priority_eps) ** self.alpha
        self._tree.update(indices, stored)
        if stored.size:
            self._max_priority = max(self._max_priority, float(stored.max()))

    def discard_pending(self) -> None:
        """Ends every env's unfinished n-step window. Call it when envs are reset mid-episode (`Rollout.reset`):
        otherwise the next add would join steps of two different episodes into one return. A plain buffer drops the
        pending steps; a compact one stores them as a truncated episode (k < n rewards, bootstrapping from the
        latest next observation), as its frames must outlive every step taken (`rl.frame_store`)."""
        if self._frames is not None and self._count.any():
            no_end = np.zeros(self.num_envs, dtype=bool)
            self._write(self._emit(self._count.copy(), self._frames.last_refs, no_end, no_end))
        self._head[:] = 0
        self._count[:] = 0

    def state_dict(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Copies of the stored rows, pending windows and priorities, and JSON-able metadata (config, positions).
        A compact buffer's frames come as views (`FrameStore.state_dict`): save or copy them before the next add."""
        arrays = {f"storage.{name}": column[: self._size].copy() for name, column in self._storage.items()}
        arrays |= {f"pending.{name}": column.copy() for name, column in self._pending.items()}
        if self._tree is not None:
            arrays["priorities"] = self._tree.get(np.arange(self._size))
        frames_meta = {}
        if self._frames is not None:
            frame_arrays, frames_meta = self._frames.state_dict()
            arrays |= frame_arrays
        meta = {
            "config": self._config(),
            "position": self._position,
            "size": self._size,
            "max_priority": self._max_priority,
            "pending_head": self._head.tolist(),
            "pending_count": self._count.tolist(),
        } | ({"frames": frames_meta} if self._frames is not None else {})
        return arrays, meta

    def load_state_dict(
        self, arrays: Mapping[str, np.ndarray] | Sequence[Any], meta: Mapping[str, Any] | None = None
    ) -> None:
        """Restores what `state_dict` returned; a ValueError names any config, shape or position that does not fit."""
        if meta is None:  # `Run.track` hands back the (arrays, meta) pair of `state_dict` as one list
            arrays, meta = arrays
        saved_stack = meta.get("config", {}).get("frame_stack", 1)
        if self._frames is None or saved_stack == self._frames.stack or not isinstance(saved_stack, int):
            return self._load(arrays, meta)
        kept = dict(vars(self))  # `_allocate` makes new arrays; the old ones stay as they were
        try:  # keep frames as the saved buffer did (older checkpoints: whole observations)
            self._allocate(saved_stack)
            self._load(arrays, meta)
        except ValueError:
            vars(self).update(kept)
            raise

    def _load(self, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> None:
        """`load_state_dict` into storage of the saved layout: every check before the first write."""
        check_saved_meta(meta, self._config())
        size = meta["size"]
        expected = {f"storage.{name}": (size, column) for name, column in self._storage.items()}
        expected |= {f"pending.{name}": (self.num_envs, column) for name, column in self._pending.items()}
        for key, (rows, column) in expected.items():
            check_saved_array(arrays, key, (rows, *column.shape[1:]), column.dtype)
        if self._tree is not None:
            check_saved_array(arrays, "priorities", (size,), np.dtype(np.float64))
        if self._frames is not None:  # the references in use: stored rows, and each env's pending steps
            windows = enumerate(zip(meta["pending_head"], meta["pending_count"], strict=True))
            pending = [
                arrays["pending.obs"][env, (head + np.arange(count)) % self.n_step] for env, (head, count) in windows
            ]
            refs = [arrays["storage.obs"], arrays["storage.next_obs"], *pending]
            self._frames.load_state_dict(arrays, meta["frames"], refs)
        for name, column in self._storage.items():
            column[:size] = arrays[f"storage.{name}"]
        for name, column in self._pending.items():
            column[:] = arrays[f"pending.{name}"]
        self._size, self._position = size, meta["position"]
        self._head[:], self._count[:] = meta["pending_head"], meta["pending_count"]
        if self._tree is not None:
            self._tree = SumTree(self.capacity)
            self._tree.update(np.arange(size), arrays["priorities"])
            self._max_priority = float(meta["max_priority"])

    def _advance_windows(
        self, step: dict[str, np.ndarray], next_obs: np.ndarray, terminated: np.ndarray, truncated: np.ndarray
    ) -> dict[str, np.ndarray]:
        """Pushes each env's step into its pending window; returns the M transitions that are now complete."""
        n, envs = self.n_step, np.arange(self.num_envs)
        slots = (self._head + self._count) % n
        for name, value in step.items():
            self._pending[name][envs, slots] = value
        self._count += 1
        done = terminated | truncated
        full = ~done & (self._count == n)
        # A full window completes its oldest step; an episode end completes every pending step of that env.
        emitted_per_env = np.where(done, self._count, full.astype(np.int64))  # (N,)
        transitions = self._emit(emitted_per_env, next_obs, terminated, full)
        self._head[done] = 0
        self._count[done] = 0
        return transitions

    def _emit(
        self, emitted_per_env: np.ndarray, next_obs: np.ndarray, terminated: np.ndarray, full: np.ndarray
    ) -> dict[str, np.ndarray]:
        """The oldest `emitted_per_env[i]` pending steps of each env i as transitions bootstrapping from
        `next_obs[i]`; the windows that are `full` move on by one step (the caller clears ended ones)."""
        n, envs = self.n_step, np.arange(self.num_envs)
        env = np.repeat(envs, emitted_per_env)  # (M,)
        offset = np.arange(env.size) - np.repeat(np.cumsum(emitted_per_env) - emitted_per_env, emitted_per_env)
        steps = self._count[env] - offset  # (M,) k: rewards summed, n for a full window, <= n at an episode end
        first = (self._head[env] + offset) % n  # (M,) slot of step t
        returns = np.zeros(env.size, dtype=np.float64)
        for i in range(n):  # R = sum_{i<k} gamma^i r_{t+i}, vectorised over the M transitions
            rewards = self._pending["rewards"][env, (first + i) % n]
            returns += np.where(i < steps, self.gamma**i * rewards, 0.0)
        transitions = {name: window[env, first] for name, window in self._pending.items()}
        transitions |= {
            "rewards": returns,
            "next_obs": next_obs[env],  # s_{t+k}: the step's next_obs, the final observation at an episode end
            "terminated": terminated[env],
            "discounts": self.gamma ** steps.astype(np.float64),
        }
        self._head[full] = (self._head[full] + 1) % n
        self._count[full] -= 1
        return transitions

    def _write(self, transitions: dict[str, np.ndarray]) -> None:
        """Writes M transitions into the next rows of the ring; with M > capacity only the last `capacity` stay."""
        m = len(transitions["rewards"])
        rows = (self._position + np.arange(m)) % self.capacity
        keep = slice(max(0, m - self.capacity), m)
        for name, column in self._storage.items():
            column[rows[keep]] = transitions[name][keep]
        self._position = (self._position + m) % self.capacity
        self._size = min(self._size + m, self.capacity)
        if self._tree is not None and m:
            self._tree.update(rows[keep], np.full(len(rows[keep]), self._max_priority))

    def _to_device(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(array).to(self.device)

    def _config(self) -> dict[str, Any]:
        """What a saved buffer must share with this one to be loaded into it (JSON-able)."""
        return {
            "capacity": self.capacity,
            "obs_shape": list(self.obs_shape),
            "action_shape": list(self.action_shape),
            "obs_dtype": self.obs_dtype.name,
            "action_dtype": self.action_dtype.name,
            "num_envs": self.num_envs,
            "n_step": self.n_step,
            "gamma": self.gamma,
            "prioritized": self.prioritized,
            "alpha": self.alpha,
            "extras": {name: [list(shape), dtype.name] for name, (shape, dtype) in self.extras_spec.items()},
        } | compact_config(self._frames)
