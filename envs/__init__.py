"""Gymnasium environments of our own, registered on import so `gymnasium.make` finds them."""

from __future__ import annotations

import gymnasium

ENV_DESCRIPTIONS: dict[str, str] = {
    "GridWorld-v0": "Zhao's 5x5 textbook grid world: a target, six forbidden cells, moves up/right/down/left/stay.",
    "WindyGridWorld-v0": "S&B's windy grid world (Example 6.5); king_moves, stochastic_wind: Exercises 6.9, 6.10.",
}
"""One line per env, for `rl list`."""
REGISTERED_ENVS: list[str] = list(ENV_DESCRIPTIONS)

# Importing twice (or reloading) must not register twice: Gymnasium would warn about overriding the id.
if "GridWorld-v0" not in gymnasium.registry:
    gymnasium.register(id="GridWorld-v0", entry_point="envs.grid_world:GridWorld", max_episode_steps=100)
if "WindyGridWorld-v0" not in gymnasium.registry:
    gymnasium.register(
        id="WindyGridWorld-v0", entry_point="envs.windy_grid_world:WindyGridWorld", max_episode_steps=10_000
    )
