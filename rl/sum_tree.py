"""A sum tree over priorities, the data structure behind prioritized replay (Schaul et al. 2016, Appendix B.2.1).

An array-based complete binary tree: node 1 is the root, node i has children 2i and 2i+1, and the leaves are
nodes `size .. 2*size - 1`, where `size` is the capacity rounded up to a power of two (the padding leaves hold 0).
Each inner node holds the sum of its children, so the total is the root and a draw proportional to priority is one
walk from the root to a leaf. A second tree holds the minimum over the positive leaves, which prioritized replay
needs to normalise its importance weights by the largest one.

Every operation is vectorised over a batch of indices or values with NumPy: the Python loops run over the tree's
depth (log2 of the capacity), never over the batch.
"""

from __future__ import annotations

import numpy as np


class SumTree:
    """Priorities of `capacity` items, with their total, their positive minimum and proportional lookup."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"a SumTree needs capacity >= 1, not {capacity}.")
        self.capacity = capacity
        self.size = 1 << (capacity - 1).bit_length()
        """Number of leaves: the capacity rounded up to a power of two."""
        self.depth = self.size.bit_length() - 1
        # float64 so that long runs of updates do not drift; every inner node is recomputed from its children on
        # each update rather than adjusted by a difference, so a tree is a pure function of its leaves.
        self._sums = np.zeros(2 * self.size, dtype=np.float64)
        # Leaves of priority 0 (unwritten rows, padding) are +inf here, so the minimum is over positive priorities.
        self._mins = np.full(2 * self.size, np.inf, dtype=np.float64)

    @property
    def total(self) -> float:
        """The sum of all priorities."""
        return float(self._sums[1])

    @property
    def min(self) -> float:
        """The smallest positive priority; +inf while every priority is 0."""
        return float(self._mins[1])

    def get(self, indices: np.ndarray) -> np.ndarray:
        """The priorities of `indices` (any shape)."""
        return self._sums[self.size + self._check_indices(indices)]

    def update(self, indices: np.ndarray, priorities: np.ndarray) -> None:
        """Sets the priority of each index; with repeated indices the last priority given wins."""
        indices = self._check_indices(indices).ravel()
        priorities = np.asarray(priorities, dtype=np.float64).ravel()
        if priorities.shape != indices.shape:
            raise ValueError(f"got {indices.size} indices but {priorities.size} priorities; pass one per index.")
        if not np.all(np.isfinite(priorities)) or np.any(priorities < 0):
            raise ValueError("priorities must be finite and >= 0.")
        if indices.size == 0:
            return
        # Keep the last occurrence of each index, so the result does not hinge on NumPy's order of fancy writes.
        unique, first_from_end = np.unique(indices[::-1], return_index=True)
        priorities = priorities[indices.size - 1 - first_from_end]
        nodes = unique + self.size
        self._sums[nodes] = priorities
        self._mins[nodes] = np.where(priorities > 0, priorities, np.inf)
        for _ in range(self.depth):
            # Repeated parents need no dedupe: their children are final, so every copy writes the same value.
            nodes >>= 1
            self._sums[nodes] = self._sums[2 * nodes] + self._sums[2 * nodes + 1]
            self._mins[nodes] = np.minimum(self._mins[2 * nodes], self._mins[2 * nodes + 1])

    def find_prefix_sum(self, values: np.ndarray) -> np.ndarray:
        """For each value v in [0, total), the index i with sum(p[:i]) <= v < sum(p[:i+1]).

        That is `np.searchsorted(np.cumsum(p), v, side="right")`: index i is found for a v drawn uniformly from
        [0, total) with probability p[i] / total, and an index of priority 0 is never returned. A v at or past the
        total (a rounding artefact of v = u * total) lands on the last positive priority.
        """
        values = np.asarray(values, dtype=np.float64)
        if self._sums[1] <= 0:
            raise ValueError("cannot look up a prefix sum while every priority is 0.")
        if np.any(values < 0) or not np.all(np.isfinite(values)):
            raise ValueError("prefix-sum values must be finite and >= 0.")
        values = values.copy()
        nodes = np.ones(values.shape, dtype=np.int64)
        for _ in range(self.depth):
            left = self._sums[2 * nodes]
            # Go right only into a subtree with positive mass: the walk then stays in positive subtrees even when
            # rounding leaves v a hair above a subtree's sum, and never ends on an empty (unwritten) leaf.
            go_right = (values >= left) & (self._sums[2 * nodes + 1] > 0)
            values -= np.where(go_right, left, 0.0)
            nodes = 2 * nodes + go_right
        return nodes - self.size

    def sample(self, batch_size: int, rng: np.random.Generator, beta: float) -> tuple[np.ndarray, np.ndarray]:
        """Prioritized replay's draw: B indices, one uniform draw in each of B equal segments of [0, total) (Schaul
        et al. 2016, B.2.1), and their importance weights w_i = (N P(i))^-beta / max_j w_j as float32."""
        values = (np.arange(batch_size) + rng.random(batch_size)) * (self.total / batch_size)
        indices = self.find_prefix_sum(values)
        # The largest weight belongs to the smallest probability, so N and the total cancel: w_i = (p_i / p_min)^-beta.
        weights = (self.get(indices) / self.min) ** -beta
        return indices, weights.astype(np.float32)

    def _check_indices(self, indices: np.ndarray) -> np.ndarray:
        indices = np.asarray(indices)
        if indices.size == 0:
            return indices.astype(np.int64)
        if not np.issubdtype(indices.dtype, np.integer):
            raise ValueError(f"SumTree indices must be integers, not {indices.dtype}.")
        if indices.min() < 0 or indices.max() >= self.capacity:
            raise ValueError(f"SumTree indices must lie in [0, {self.capacity}).")
        return indices.astype(np.int64, copy=False)
