"""The tasks of `vs_sb3.py`: for each, the env, the budget, our agent's config and the Stable-Baselines3 (or
sb3-contrib) constructor arguments that match it, from rl-baselines3-zoo's hyperparameters."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rl.config import load_toml

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@dataclass(frozen=True)
class Task:
    env_id: str
    total_steps: int
    agent: str
    """Our agent's name in `agents.registry`."""
    ours: dict[str, Any]
    """Our agent's config for the task (rl-baselines3-zoo's values in our parameter names)."""
    sb3_class: str
    """`module:Class` of the SB3 algorithm."""
    sb3_kwargs: dict[str, Any]
    """Constructor arguments; ("linear", x) stands for a schedule falling linearly from x to 0."""
    sb3_n_envs: int = 1
    updates: int = 0
    """Gradient updates in the run (off-policy agents), for updates per second; 0 when not counted."""
    sb3_policy_kwargs: dict[str, Any] = field(default_factory=dict)


def off_policy_updates(total: int, learning_starts: int, train_frequency: int, gradient_steps: int) -> int:
    return (total - learning_starts) // train_frequency * gradient_steps


PENDULUM_ZOO = dict(
    learning_rate=1e-3,
    buffer_size=200_000,
    learning_starts=10_000,
    batch_size=256,
    gamma=0.98,
    tau=0.005,
    train_freq=(1, "episode"),  # Pendulum's episodes are 200 steps: 200 updates after each
    gradient_steps=-1,
)
PENDULUM_OURS = dict(learning_starts=10_000, gamma=0.98, train_frequency=200, gradient_steps=200, noise_std=0.1,
                     hidden_sizes=(400, 300), batch_size=256, tau=0.005, learning_rate=1e-3)  # fmt: skip


def pendulum_task(agent: str, sb3_class: str) -> Task:
    """DDPG or TD3 on Pendulum-v1: the zoo's values are the same for both."""
    updates = off_policy_updates(20_000, 10_000, 200, 200)
    return Task("Pendulum-v1", 20_000, agent, PENDULUM_OURS, sb3_class, PENDULUM_ZOO,
                updates=updates, sb3_policy_kwargs=dict(net_arch=[400, 300]))  # fmt: skip


TASKS: dict[str, Task] = {
    "a2c_cartpole": Task(
        "CartPole-v1",
        100_000,
        "a2c",
        dict(
            num_envs=8,
            n_steps=5,
            learning_rate=7e-4,
            anneal_lr=False,
            optimizer="rmsprop",
            gae_lambda=1.0,
            ent_coef=0.0,
            vf_coef=1.0,
            max_grad_norm=0.5,
            normalize_advantage=False,
        ),  # fmt: skip
        "stable_baselines3:A2C",
        dict(ent_coef=0.0),
        sb3_n_envs=8,
    ),
    "ppo_cartpole": Task(
        "CartPole-v1",
        100_000,
        "ppo",
        dict(
            num_envs=8,
            n_steps=32,
            batch_size=256,
            n_epochs=20,
            gamma=0.98,
            gae_lambda=0.8,
            ent_coef=0.0,
            learning_rate=1e-3,
            clip_range=0.2,
            anneal_lr=True,
        ),  # fmt: skip
        "stable_baselines3:PPO",
        dict(
            n_steps=32,
            batch_size=256,
            gae_lambda=0.8,
            gamma=0.98,
            n_epochs=20,
            ent_coef=0.0,
            learning_rate=("linear", 1e-3),
            clip_range=("linear", 0.2),
        ),  # fmt: skip
        sb3_n_envs=8,
    ),
    "trpo_cartpole": Task(
        "CartPole-v1",
        100_000,
        "trpo",
        dict(
            num_envs=2,
            n_steps=512,
            batch_size=512,
            cg_damping=1e-3,
            gae_lambda=0.98,
            gamma=0.99,
            critic_learning_rate=1e-3,
            n_critic_updates=20,
        ),  # fmt: skip
        "sb3_contrib:TRPO",
        dict(
            n_steps=512,
            batch_size=512,
            cg_damping=1e-3,
            gae_lambda=0.98,
            gamma=0.99,
            learning_rate=1e-3,
            n_critic_updates=20,
        ),  # fmt: skip
        sb3_n_envs=2,
    ),
    "dqn_cartpole": Task(
        "CartPole-v1",
        50_000,
        "dqn",
        {},
        "stable_baselines3:DQN",
        dict(
            learning_rate=2.3e-3,
            batch_size=64,
            buffer_size=100_000,
            learning_starts=1_000,
            gamma=0.99,
            target_update_interval=10,
            train_freq=256,
            gradient_steps=128,
            exploration_fraction=0.16,
            exploration_final_eps=0.04,
        ),
        updates=off_policy_updates(50_000, 1_000, 256, 128),
        sb3_policy_kwargs=dict(net_arch=[256, 256]),
    ),
    "ddpg_pendulum": pendulum_task("ddpg", "stable_baselines3:DDPG"),
    "td3_pendulum": pendulum_task("td3", "stable_baselines3:TD3"),
    # The zoo's Pendulum entry for SAC sets only the learning rate; our SAC defaults are SB3's.
    "sac_pendulum": Task(
        "Pendulum-v1",
        20_000,
        "sac",
        {},
        "stable_baselines3:SAC",
        dict(learning_rate=1e-3),
        updates=off_policy_updates(20_000, 100, 1, 1),
    ),  # fmt: skip
}
"""Gaussian exploration noise: SB3 adds it to actions scaled to [-1, 1], ours is in units of the half-range: the
zoo's 0.1 is the same width on both sides. SB3's defaults not listed (A2C's RMSprop, PPO's clipping of the value
function off, TD3's target noise 0.2 clipped at 0.5) equal ours."""

LUNAR_LANDER_TASKS: dict[str, Task] = {
    # Our side reads the shipped configs (configs/*_lunarlander.toml), which hold the zoo's values in our names.
    "a2c_lunarlander": Task("LunarLander-v3", 200_000, "a2c", load_toml(CONFIGS / "a2c_lunarlander.toml"),
                            "stable_baselines3:A2C", dict(gamma=0.995, n_steps=5, learning_rate=("linear", 8.3e-4),
                                                          ent_coef=1e-5), sb3_n_envs=8),
    "ppo_lunarlander": Task("LunarLander-v3", 1_000_000, "ppo", load_toml(CONFIGS / "ppo_lunarlander.toml"),
                            "stable_baselines3:PPO", dict(n_steps=1024, batch_size=64, gae_lambda=0.98, gamma=0.999,
                                                          n_epochs=4, ent_coef=0.01), sb3_n_envs=16),
    "trpo_lunarlander": Task("LunarLander-v3", 200_000, "trpo", load_toml(CONFIGS / "trpo_lunarlander.toml"),
                             "sb3_contrib:TRPO", dict(n_steps=512, cg_damping=0.01, gae_lambda=0.98, gamma=0.99,
                                                      learning_rate=1e-3, n_critic_updates=15), sb3_n_envs=2),
    "dqn_lunarlander": Task("LunarLander-v3", 100_000, "dqn", load_toml(CONFIGS / "dqn_lunarlander.toml"),
                            "stable_baselines3:DQN", dict(learning_rate=6.3e-4, batch_size=128, buffer_size=50_000,
                                                          learning_starts=0, gamma=0.99, target_update_interval=250,
                                                          train_freq=4, gradient_steps=-1, exploration_fraction=0.12,
                                                          exploration_final_eps=0.1),
                            updates=off_policy_updates(100_000, 0, 4, 4), sb3_policy_kwargs=dict(net_arch=[256, 256])),
}  # fmt: skip
"""Beyond the issue's rows (`--tasks ..._lunarlander`, `pip install -e ".[box2d]"`): the zoo's LunarLander entries,
with the returns its benchmark table publishes for them (one run each, LunarLander-v2): A2C 155.8, PPO 242.1, TRPO
133.2, DQN 154.4."""
MUJOCO_TASKS: dict[str, Task] = {
    # Our side reads configs/{sac,td3}_mujoco.toml (the zoo's shared MuJoCo entries); 50,000 of the zoo's 1,000,000
    # steps, for a first stretch of the learning curve on two cores.
    "sac_halfcheetah": Task("HalfCheetah-v5", 50_000, "sac", load_toml(CONFIGS / "sac_mujoco.toml"),
                            "stable_baselines3:SAC", dict(learning_starts=10_000),
                            updates=off_policy_updates(50_000, 10_000, 1, 1)),
    "td3_halfcheetah": Task("HalfCheetah-v5", 50_000, "td3", load_toml(CONFIGS / "td3_mujoco.toml"),
                            "stable_baselines3:TD3", dict(learning_starts=10_000, learning_rate=1e-3, batch_size=256,
                                                          train_freq=1, gradient_steps=1),
                            updates=off_policy_updates(50_000, 10_000, 1, 1),
                            sb3_policy_kwargs=dict(net_arch=[400, 300])),
}  # fmt: skip
"""Beyond the issue's rows (`--tasks sac_halfcheetah td3_halfcheetah`, `pip install -e ".[mujoco]"`)."""
ALL_TASKS = TASKS | LUNAR_LANDER_TASKS | MUJOCO_TASKS
