"""Schedules for exploration rates and step sizes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def linear_schedule(start: float, end: float, duration: int, t: int) -> float:
    """Moves linearly from `start` to `end` over `duration` steps, then stays at `end`."""
    if duration <= 0:
        return end
    fraction = min(t / duration, 1.0)
    return start + fraction * (end - start)


class Periodic:
    """When a phase of training is due: first at env step `first`, then `interval` steps after the step it last ran
    at (with N envs stepping together a phase can run up to N - 1 steps late). Its state goes into the checkpoint
    (`Run.track`), so a resumed run trains and copies its target network at the steps an uninterrupted run does."""

    def __init__(self, first: int, interval: int) -> None:
        self.next, self.interval = first, interval

    def due(self, step: int) -> bool:
        """Whether the phase runs at `step`; when it does, the next one is due `interval` steps later."""
        if step < self.next:
            return False
        self.next = step + self.interval
        return True

    def state_dict(self) -> dict[str, int]:
        return {"next": self.next}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.next = int(state["next"])
