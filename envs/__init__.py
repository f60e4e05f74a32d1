"""Gymnasium environments of our own, registered on import so `gymnasium.make` finds them."""

from __future__ import annotations

import gymnasium

ENV_DESCRIPTIONS: dict[str, str] = {
    "GridWorld-v0": "Zhao's 5x5 textbook grid world: a target, six forbidden cells, moves up/right/down/left/stay.",
    "WindyGridWorld-v0": "S&B's windy grid world (Example 6.5); king_moves, stochastic_wind: Exercises 6.9, 6.10.",
    "RandomWalk-v0": "S&B's random walk: 5 states (Example 6.2); n_states=19 left_reward=-1 for Example 7.1.",
    "GamblersProblem-v0": "S&B's gambler's problem (Example 4.3): stake on coin flips to reach $100; p_heads=0.4.",
    "JumpGridWorld-v0": "S&B's 5x5 grid world (Example 3.5): A jumps to A' for +10, B to B' for +5; continuing.",
}
"""One line per env, for `rl list`."""
REGISTERED_ENVS: list[str] = list(ENV_DESCRIPTIONS)

# Importing twice (or reloading) must not register twice: Gymnasium would warn about overriding the id.
for env_id, entry_point in [("GridWorld-v0", "envs.grid_world:GridWorld"),
                             ("JumpGridWorld-v0", "envs.jump_grid_world:JumpGridWorld")]:  # fmt: skip
    if env_id not in gymnasium.registry:  # continuing tasks, cut into 100-step episodes
        gymnasium.register(id=env_id, entry_point=entry_point, max_episode_steps=100)
ENTRY_POINTS = {
    "WindyGridWorld-v0": "envs.windy_grid_world:WindyGridWorld",
    "RandomWalk-v0": "envs.random_walk:RandomWalk",
    "GamblersProblem-v0": "envs.gamblers_problem:GamblersProblem",
}
"""Envs whose episodes the book does not cap; a 10,000-step limit ends a greedy policy that would go round forever."""
for env_id, entry_point in ENTRY_POINTS.items():
    if env_id not in gymnasium.registry:
        gymnasium.register(id=env_id, entry_point=entry_point, max_episode_steps=10_000)
