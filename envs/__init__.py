"""Gymnasium environments of our own, registered on import so `gymnasium.make` finds them."""

from __future__ import annotations

import gymnasium

ENV_DESCRIPTIONS: dict[str, str] = {
    "GridWorld-v0": "Zhao's 5x5 textbook grid world: a target, six forbidden cells, moves up/right/down/left/stay.",
}
"""One line per env, for `rl list`."""
REGISTERED_ENVS: list[str] = list(ENV_DESCRIPTIONS)

# Importing twice (or reloading) must not register twice: Gymnasium would warn about overriding the id.
if "GridWorld-v0" not in gymnasium.registry:
    gymnasium.register(id="GridWorld-v0", entry_point="envs.grid_world:GridWorld", max_episode_steps=100)
