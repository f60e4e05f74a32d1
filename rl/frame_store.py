"""Compact observation storage for the replay buffer: every frame kept once, not twice or (stacked) eight times.

A plain replay row holds its observation s_t and its next observation s_{t+k} in full, so each observation of an
episode is stored twice (as one step's next observation and the following step's observation). Atari observations
are stacks of the last K = 4 frames, so each frame is in four consecutive observations as well: 100,000 Atari
transitions of (4, 84, 84) bytes are 5.6 GB stored plainly, 2.8 GB with each observation once, and 0.7 GB with each
frame once. A `FrameStore` keeps frames in two rings and hands the buffer integer references instead, one per
observation (K = 1: the observation is one frame) or K per observation (a stack of K frames along its first axis):

    next observations:  a next observation that is the step's observation moved on by one frame (its first K - 1
                        frames are the observation's last K - 1; always so for K = 1) adds its newest frame to
                        `ring` and refers to the observation's frames for the rest;
    first observations: an observation that is not the same env's previous next observation (the first step, the
                        first step after an episode end or an env reset), and a next observation that does not move
                        on by one frame, go into `side` whole (K frames), written far less often for frame stacks.

A frame reference r >= 0 is row r of `ring`, r < 0 is row -1 - r of `side`. Both tests compare the values, so any
sequence of `store` calls is stored faithfully, whatever its observations are; only the memory saved depends on
them. Stacks that do not move on by one frame fill `side`, which is twice the size of `ring` in stacks, so K > 1 is
for observations built as frame stacks (Gymnasium's FrameStackObservation: `rl.environments.frame_stack_size`).

How long a row must live: a replay row stays until `capacity` more rows are written, and a step is written at most
n - 1 stores after it was taken (its n-step window filling), while the windows of the N envs hold at most N (n - 1)
pending steps. So the observations of a stored row were made at most C / N + 2n - 1 stores ago, C the capacity, and
their frames at most K - 1 stores before that. A store adds at most N frames to `ring` and 2N stacks to `side`, so
rings of C + N (2n + K) frames and twice as many stacks never overwrite a frame a stored row refers to. That holds as
long as every step taken is eventually stored, which is why a compact buffer stores its pending windows as
truncated episodes where a plain one drops them (`ReplayBuffer.discard_pending`). NumPy's zero-filled arrays take
memory only where written, so the side ring costs what is written into it, up to its size, not its size.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class FrameStore:
    """Frames of N envs' observations in two rings, referred to by int64 references (see the module doc)."""

    def __init__(
        self, rows: int, num_envs: int, obs_shape: tuple[int, ...], obs_dtype: np.dtype, stack: int = 1
    ) -> None:
        """`rows` = C + N (2n + 1), the ring a K = 1 store needs; `stack` = K, the frames along obs_shape[0]."""
        if stack < 1 or (stack > 1 and (len(obs_shape) < 2 or obs_shape[0] != stack)):
            raise ValueError(f"a stack of {stack} frames needs observations of shape ({stack}, ...), not {obs_shape}")
        self.num_envs, self.stack, self.obs_shape = num_envs, stack, tuple(obs_shape)
        frame_shape = self.obs_shape[1:] if stack > 1 else self.obs_shape
        self.ring_rows = rows + num_envs * (stack - 1)
        self.side_rows = self.ring_rows * stack * (2 if stack > 1 else 1)  # frames: whole stacks, twice as many
        self.ring = np.zeros((self.ring_rows, *frame_shape), obs_dtype)
        self.side = np.zeros((self.side_rows, *frame_shape), obs_dtype)
        self.ring_written = 0  # frames written so far, ever; the next row is ring_written % ring_rows
        self.side_written = 0
        self._last_refs = np.full((num_envs, stack), -1, dtype=np.int64)  # (N, K); meaningless before the first store

    @property
    def last_refs(self) -> np.ndarray:
        """(N, *ref_shape) each env's references to its latest next observation."""
        return self._external(self._last_refs)

    @property
    def ref_shape(self) -> tuple[int, ...]:
        """The shape of one observation's references in the buffer's rows: () for K = 1, (K,) for stacks."""
        return () if self.stack == 1 else (self.stack,)

    def store(self, obs: np.ndarray, next_obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Keeps one step of N envs, (N, *O) each; returns the references to obs and to next_obs, (N, *ref_shape)."""
        n, k = self.num_envs, self.stack
        obs_refs = self._last_refs.copy()
        if self.ring_written + self.side_written:  # last_refs point at frames
            continued = same_bytes(self.gather(self._last_refs), obs)
        else:
            continued = np.zeros(n, dtype=bool)
        fresh = np.flatnonzero(~continued)
        obs_refs[fresh] = self._store_whole(obs[fresh])
        obs_frames, next_frames = obs.reshape(n, k, -1), next_obs.reshape(n, k, -1)
        moved_on = same_bytes(next_frames[:, :-1], obs_frames[:, 1:])  # all True for K = 1
        next_refs = np.empty_like(obs_refs)
        next_refs[:, :-1] = obs_refs[:, 1:]
        on = np.flatnonzero(moved_on)
        ring_rows = (self.ring_written + np.arange(on.size)) % self.ring_rows
        self.ring[ring_rows] = next_obs[on, -1] if k > 1 else next_obs[on]
        self.ring_written += on.size
        next_refs[on, -1] = ring_rows
        off = np.flatnonzero(~moved_on)
        next_refs[off] = self._store_whole(next_obs[off])
        self._last_refs = next_refs
        return self._external(obs_refs), self._external(next_refs)

    def _store_whole(self, observations: np.ndarray) -> np.ndarray:
        """Writes M observations' frames into `side`; returns their (M, K) references."""
        rows = (self.side_written + np.arange(observations.shape[0] * self.stack)) % self.side_rows
        self.side[rows] = observations.reshape(-1, *self.side.shape[1:])
        self.side_written += rows.size
        return (-1 - rows).reshape(-1, self.stack)

    def _external(self, refs: np.ndarray) -> np.ndarray:
        return refs[:, 0].copy() if self.stack == 1 else refs.copy()

    def gather(self, refs: np.ndarray) -> np.ndarray:
        """The observations that (B, *ref_shape) references point to, as one (B, *O) array."""
        flat = refs.reshape(-1)
        in_ring = flat >= 0
        if in_ring.all():
            frames = self.ring[flat]
        else:
            frames = np.empty((flat.size, *self.ring.shape[1:]), self.ring.dtype)
            frames[in_ring] = self.ring[flat[in_ring]]
            frames[~in_ring] = self.side[-1 - flat[~in_ring]]
        return frames.reshape(-1, *self.obs_shape)

    def state_dict(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """The written rows of both rings (no zero padding) and the positions, as arrays and JSON-able metadata. The
        arrays are views, not copies (gigabytes for Atari frames): save them before the next `store`."""
        arrays = {
            "frames.ring": self.ring[: min(self.ring_written, self.ring_rows)],
            "frames.side": self.side[: min(self.side_written, self.side_rows)],
        }
        meta = {
            "ring_written": self.ring_written,
            "side_written": self.side_written,
            "last_refs": self.last_refs.tolist(),
        }
        return arrays, meta

    def load_state_dict(self, arrays: dict[str, np.ndarray], meta: dict[str, Any], refs: list[np.ndarray]) -> None:
        """Restores `state_dict`'s output; a ValueError names what does not fit, `refs` (the saved rows' references)
        included, which must point at saved frames."""
        ring_written, side_written = int(meta["ring_written"]), int(meta["side_written"])
        last_refs = np.asarray(meta["last_refs"], dtype=np.int64)
        expected = {"frames.ring": min(ring_written, self.ring_rows), "frames.side": min(side_written, self.side_rows)}
        for key, rows in expected.items():
            if key not in arrays:
                raise ValueError(f"the saved replay buffer lacks the array {key!r} of its compact observations.")
            array = arrays[key]
            if array.shape != (rows, *self.ring.shape[1:]) or array.dtype != self.ring.dtype:
                raise ValueError(
                    f"saved replay buffer array {key!r} is {array.dtype}{list(array.shape)}, expected "
                    f"{self.ring.dtype}{[rows, *self.ring.shape[1:]]}."
                )
        if ring_written < 0 or side_written < 0 or last_refs.shape != (self.num_envs, *self.ref_shape):
            raise ValueError("the saved replay buffer's compact observation positions do not fit this buffer.")
        ring_rows, side_rows = expected["frames.ring"], expected["frames.side"]
        for ref in [last_refs if ring_written + side_written else last_refs[:0], *refs]:
            if ref.size and not ((ref >= -side_rows) & (ref < ring_rows)).all():
                raise ValueError("the saved replay buffer's observation references point outside its saved frames.")
        self.ring[:ring_rows] = arrays["frames.ring"]
        self.side[:side_rows] = arrays["frames.side"]
        self.ring_written, self.side_written = ring_written, side_written
        self._last_refs = last_refs.reshape(self.num_envs, self.stack)


def same_bytes(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N,) whether a[i] and b[i] hold the same values, for (N, ...) arrays (True where they are empty)."""
    return (a == b).reshape(len(a), -1).all(axis=1)


def compact_config(frames: FrameStore | None) -> dict[str, Any]:
    """The config keys of compact storage; older checkpoints lack them (plain storage, frame stacks of 1)."""
    if frames is None:
        return {}
    return {"compact_observations": True} | ({"frame_stack": frames.stack} if frames.stack > 1 else {})
