"""Schedules for exploration rates and step sizes."""

from __future__ import annotations


def linear_schedule(start: float, end: float, duration: int, t: int) -> float:
    """Moves linearly from `start` to `end` over `duration` steps, then stays at `end`."""
    if duration <= 0:
        return end
    fraction = min(t / duration, 1.0)
    return start + fraction * (end - start)
