"""One seed makes a run repeatable: Python's, NumPy's and torch's generators all start from it."""

from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> np.random.Generator:
    """Seeds the global generators and returns the explicit NumPy generator an agent should draw from."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def generator_state(rng: np.random.Generator) -> dict:
    """A JSON-friendly snapshot of a NumPy generator (its bit generator's state)."""
    return rng.bit_generator.state


def restore_generator(rng: np.random.Generator, state: dict) -> None:
    """Puts a generator back to a snapshot taken by `generator_state`."""
    rng.bit_generator.state = state
