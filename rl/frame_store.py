"""Compact observation storage for the replay buffer: every observation kept once, not twice.

A plain replay row holds its observation s_t and its next observation s_{t+k} in full, so each frame of an episode
is stored twice (as one step's next observation and the following step's observation). For images that doubles
the largest part of the buffer: 100,000 Atari transitions of (4, 84, 84) bytes are 5.6 GB with both, 2.8 GB with
one. A `FrameStore` keeps the observations in two rings and hands the buffer integer references instead:

    next observations:  every `store` writes the N envs' next observations into the next N rows of `ring`;
    first observations: an observation that is not the same env's previous next observation (the first step, the
                        first step after an episode end or an env reset) goes into `side`, written far less often.

A reference r >= 0 is row r of `ring`, r < 0 is row -1 - r of `side`. Whether s_t is the previous next observation
is decided by comparing the bytes, so any sequence of `store` calls is stored faithfully; consecutive steps of an
episode share their frame.

How long a row must live: a replay row stays until `capacity` more rows are written, and a step is written at most
n - 1 stores after it was taken (its n-step window filling), while the windows of the N envs hold at most N (n - 1)
pending steps. So the frames of a stored row were written at most C / N + 2n - 1 stores ago, C the capacity, and
rings of C + N (2n + 1) rows never overwrite a frame a stored row refers to. That holds as long as every step taken
is eventually stored, which is why a compact buffer stores its pending windows as truncated episodes where a plain
one drops them (`ReplayBuffer.discard_pending`). NumPy's zero-filled arrays take memory only where written, so the
side ring costs one frame per episode start up to its size, not its size.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class FrameStore:
    """Observations of N envs in two rings, referred to by int64 references (see the module doc)."""

    def __init__(self, rows: int, num_envs: int, obs_shape: tuple[int, ...], obs_dtype: np.dtype) -> None:
        self.rows, self.num_envs = rows, num_envs
        self.ring = np.zeros((rows, *obs_shape), obs_dtype)
        self.side = np.zeros((rows, *obs_shape), obs_dtype)
        self.ring_written = 0  # rows written so far, ever; the next row is ring_written % rows
        self.side_written = 0
        self.last_refs = np.full(num_envs, -1, dtype=np.int64)
        """Each env's reference to its latest next observation (ring rows); meaningless before the first store."""

    def store(self, obs: np.ndarray, next_obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Keeps one step of N envs, (N, *O) each; returns the (N,) references to obs and to next_obs."""
        obs_refs = self.last_refs.copy()
        if self.ring_written:
            previous = self.ring[self.last_refs]
            same = (previous == obs).reshape(self.num_envs, -1).all(axis=1)
        else:
            same = np.zeros(self.num_envs, dtype=bool)
        fresh = np.flatnonzero(~same)
        side_rows = (self.side_written + np.arange(fresh.size)) % self.rows
        self.side[side_rows] = obs[fresh]
        self.side_written += fresh.size
        obs_refs[fresh] = -1 - side_rows
        ring_rows = (self.ring_written + np.arange(self.num_envs)) % self.rows
        self.ring[ring_rows] = next_obs
        self.ring_written += self.num_envs
        self.last_refs = ring_rows.astype(np.int64)
        return obs_refs, self.last_refs.copy()

    def gather(self, refs: np.ndarray) -> np.ndarray:
        """The observations that (B,) references point to, as one (B, *O) array."""
        in_ring = refs >= 0
        if in_ring.all():
            return self.ring[refs]
        out = np.empty((refs.size, *self.ring.shape[1:]), self.ring.dtype)
        out[in_ring] = self.ring[refs[in_ring]]
        out[~in_ring] = self.side[-1 - refs[~in_ring]]
        return out

    def state_dict(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """The written rows of both rings (no zero padding) and the positions, as arrays and JSON-able metadata. The
        arrays are views, not copies (gigabytes for Atari frames): save them before the next `store`."""
        arrays = {
            "frames.ring": self.ring[: min(self.ring_written, self.rows)],
            "frames.side": self.side[: min(self.side_written, self.rows)],
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
        expected = {"frames.ring": min(ring_written, self.rows), "frames.side": min(side_written, self.rows)}
        for key, rows in expected.items():
            if key not in arrays:
                raise ValueError(f"the saved replay buffer lacks the array {key!r} of its compact observations.")
            array = arrays[key]
            if array.shape != (rows, *self.ring.shape[1:]) or array.dtype != self.ring.dtype:
                raise ValueError(
                    f"saved replay buffer array {key!r} is {array.dtype}{list(array.shape)}, expected "
                    f"{self.ring.dtype}{[rows, *self.ring.shape[1:]]}."
                )
        if ring_written < 0 or side_written < 0 or last_refs.shape != (self.num_envs,):
            raise ValueError("the saved replay buffer's compact observation positions do not fit this buffer.")
        ring_rows, side_rows = expected["frames.ring"], expected["frames.side"]
        for ref in [last_refs if ring_written else last_refs[:0], *refs]:
            if ref.size and not ((ref >= -side_rows) & (ref < ring_rows)).all():
                raise ValueError("the saved replay buffer's observation references point outside its saved frames.")
        self.ring[:ring_rows] = arrays["frames.ring"]
        self.side[:side_rows] = arrays["frames.side"]
        self.ring_written, self.side_written, self.last_refs = ring_written, side_written, last_refs
