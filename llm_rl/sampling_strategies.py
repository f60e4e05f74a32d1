"""Which problems an RL iteration trains on: uniform, curriculum and prioritized sampling (Kimi k1.5, section 2.3.4).

Every sampler draws indices into a fixed pool of problems and is told afterwards which of its sampled responses were
correct, so it can track success rates:

    uniform       every problem equally likely.
    curriculum    "start with easier tasks and gradually progress to harder ones": only problems whose level is at
                  most the current level are drawn (uniformly); the current level moves up one when the tracked
                  success rate on it reaches `advance_at`.
    prioritized   problem i is drawn with probability proportional to 1 - s_i, s_i its tracked success rate, so the
                  problems the model fails most get the most practice.

Success rates are exponential moving averages of the batch success (the share of a problem's k responses that were
correct): s <- decay * s + (1 - decay) * batch_success. A problem never tried has s = 0.

Deviations:
1. The paper does not say how s_i is tracked; the moving average (rather than all-time counts) lets the rate follow
   a policy that improves.
2. Prioritized sampling adds `floor` to every weight, so a problem solved every time is still drawn now and then
   (the paper's 1 - s_i would never revisit it).
3. The curriculum keeps the easier levels in the mix (draws up to the current level, not at it), against forgetting.
All samplers draw with replacement from an explicit NumPy generator, and keep their state in `state_dict()` (arrays
and numbers only) for checkpoints.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np


class ProblemSampler(Protocol):
    """Draws problem indices for an iteration and learns from how they went."""

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray: ...

    def update(self, indices: np.ndarray, success: np.ndarray) -> None: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def moving_average(old: np.ndarray, new: np.ndarray, decay: float) -> np.ndarray:
    """decay * old + (1 - decay) * new, elementwise."""
    return decay * old + (1.0 - decay) * new


class SuccessRates:
    """Per-problem success rates s_i, exponential moving averages of each batch's share of correct responses."""

    def __init__(self, num_problems: int, decay: float) -> None:
        if not 0 <= decay < 1:
            raise ValueError(f"decay={decay} must be in [0, 1)")
        self.decay = decay
        self.rates = np.zeros(num_problems)  # (N,)
        self.attempts = np.zeros(num_problems, dtype=np.int64)  # (N,) iterations each problem was drawn in

    def update(self, indices: np.ndarray, success: np.ndarray) -> None:
        """indices (P,) problems drawn (repeats allowed, applied in order), success (P,) share correct in [0, 1]."""
        for index, value in zip(np.asarray(indices), np.asarray(success, dtype=float), strict=True):
            self.rates[index] = moving_average(self.rates[index], value, self.decay)
            self.attempts[index] += 1

    def state_dict(self) -> dict[str, Any]:
        return {"rates": self.rates.copy(), "attempts": self.attempts.copy()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if np.shape(state["rates"]) != self.rates.shape:
            raise ValueError(f"saved success rates are for {len(state['rates'])} problems, not {len(self.rates)}")
        self.rates = np.array(state["rates"], dtype=float)
        self.attempts = np.array(state["attempts"], dtype=np.int64)


class UniformSampler:
    """Every problem of the pool equally likely."""

    def __init__(self, num_problems: int, decay: float = 0.5) -> None:
        self.success = SuccessRates(num_problems, decay)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return rng.integers(0, len(self.success.rates), size=n)

    def update(self, indices: np.ndarray, success: np.ndarray) -> None:
        self.success.update(indices, success)

    def state_dict(self) -> dict[str, Any]:
        return self.success.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.success.load_state_dict(state)


def prioritized_probabilities(rates: np.ndarray, floor: float) -> np.ndarray:
    """P(i) = (1 - s_i + floor) / sum_j (1 - s_j + floor); (N,) -> (N,)."""
    weights = 1.0 - np.clip(rates, 0.0, 1.0) + floor
    return weights / weights.sum()


class PrioritizedSampler:
    """Problem i drawn with probability proportional to 1 - s_i (+ floor)."""

    def __init__(self, num_problems: int, decay: float = 0.5, floor: float = 0.05) -> None:
        if floor <= 0:
            raise ValueError(f"floor={floor} must be > 0, or solved problems could never be drawn")
        self.success = SuccessRates(num_problems, decay)
        self.floor = floor

    def probabilities(self) -> np.ndarray:
        return prioritized_probabilities(self.success.rates, self.floor)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return rng.choice(len(self.success.rates), size=n, p=self.probabilities())

    def update(self, indices: np.ndarray, success: np.ndarray) -> None:
        self.success.update(indices, success)

    def state_dict(self) -> dict[str, Any]:
        return self.success.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.success.load_state_dict(state)


class CurriculumSampler:
    """Problems up to the current level, uniformly; the level rises when its success rate reaches `advance_at`."""

    def __init__(self, levels: Sequence[int], decay: float = 0.5, advance_at: float = 0.8) -> None:
        if not levels:
            raise ValueError("a curriculum needs at least one problem")
        self.levels = np.asarray(levels)  # (N,) level of each problem of the pool
        self.steps = np.unique(self.levels)  # the distinct levels, easiest first
        self.success = SuccessRates(len(self.levels), decay)
        self.decay, self.advance_at = decay, advance_at
        self.stage = 0  # index into self.steps of the current (hardest allowed) level
        self.level_rate = 0.0  # moving average of the batch success at the current level

    @property
    def current_level(self) -> int:
        return int(self.steps[self.stage])

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        allowed = np.flatnonzero(self.levels <= self.current_level)
        return rng.choice(allowed, size=n)

    def update(self, indices: np.ndarray, success: np.ndarray) -> None:
        self.success.update(indices, success)
        indices, success = np.asarray(indices), np.asarray(success, dtype=float)
        at_level = self.levels[indices] == self.current_level
        if not at_level.any():
            return
        self.level_rate = float(moving_average(self.level_rate, success[at_level].mean(), self.decay))
        if self.level_rate >= self.advance_at and self.stage < len(self.steps) - 1:
            self.stage += 1
            self.level_rate = 0.0

    def state_dict(self) -> dict[str, Any]:
        return {**self.success.state_dict(), "stage": self.stage, "level_rate": self.level_rate}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.success.load_state_dict(state)
        self.stage, self.level_rate = int(state["stage"]), float(state["level_rate"])


def make_sampler(name: str, levels: Sequence[int], decay: float, floor: float, advance_at: float) -> ProblemSampler:
    """The sampler called `name` ("uniform", "curriculum", "prioritized") over a pool with these problem levels."""
    if name == "uniform":
        return UniformSampler(len(levels), decay)
    if name == "prioritized":
        return PrioritizedSampler(len(levels), decay, floor)
    if name == "curriculum":
        return CurriculumSampler(levels, decay, advance_at)
    raise ValueError(f"unknown sampler {name!r}; use uniform, curriculum or prioritized")


SAMPLERS = ("uniform", "curriculum", "prioritized")
