"""The registry of agents the CLI reads: name, description, config class, train function, checkpoint replay."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from agents import a2c, actor_critic, ddpg, dqn, linear, monte_carlo, ppo, reinforce, sac, td, trpo
from agents.tabular import greedy_act_from_checkpoint, predicted_act_from_checkpoint
from rl.errors import UserError
from rl.run import Run


@dataclass(frozen=True)
class AgentEntry:
    """How the CLI trains an agent and replays its checkpoint."""

    name: str
    description: str
    config: type
    """The agent's frozen Config dataclass."""
    train: Callable[[Any, Run], Any]
    """train(cfg, run) -> result."""
    act_from_checkpoint: Callable[[dict[str, np.ndarray], Any, gym.Env], Callable[[Any], Any]]
    """act_from_checkpoint(arrays, cfg, env): the greedy policy `act(obs) -> action` a checkpoint stores."""


def _tabular(name: str, description: str, config: type, train: Callable[[Any, Run], Any]) -> AgentEntry:
    return AgentEntry(name, description, config, train, greedy_act_from_checkpoint)


AGENTS: dict[str, AgentEntry] = {
    entry.name: entry
    for entry in [
        _tabular(
            "mc_basic",
            "MC Basic: policy iteration with Monte Carlo estimates of q from every (s, a) (book 5.2)",
            monte_carlo.MCBasicConfig,
            monte_carlo.train_mc_basic,
        ),
        _tabular(
            "mc_exploring_starts",
            "Monte Carlo control with exploring starts, first- or every-visit (book 5.3)",
            monte_carlo.MCExploringStartsConfig,
            monte_carlo.train_mc_exploring_starts,
        ),
        _tabular(
            "mc_epsilon_greedy",
            "Monte Carlo control with an epsilon-greedy policy, no exploring starts (book 5.4)",
            monte_carlo.MCEpsilonGreedyConfig,
            monte_carlo.train_mc_epsilon_greedy,
        ),
        AgentEntry(
            "td0",
            "TD(0) prediction of a given policy's state values (book 7.1)",
            td.TD0Config,
            td.train_td0,
            predicted_act_from_checkpoint,
        ),
        AgentEntry(
            "nstep_td",
            "n-step TD prediction of a given policy's state values (S&B 7.1)",
            td.NStepTDConfig,
            td.train_nstep_td,
            predicted_act_from_checkpoint,
        ),
        AgentEntry(
            "mc_prediction",
            "Constant-alpha Monte Carlo prediction of a given policy's state values (S&B 6.1)",
            td.TD0Config,
            td.train_mc_prediction,
            predicted_act_from_checkpoint,
        ),
        _tabular("sarsa", "Sarsa: on-policy TD control (book 7.2)", td.TDConfig, td.train_sarsa),
        _tabular(
            "expected_sarsa",
            "Expected Sarsa: the target averages over the policy (book 7.3.1)",
            td.TDConfig,
            td.train_expected_sarsa,
        ),
        _tabular("nstep_sarsa", "n-step Sarsa (book 7.3.2)", td.NStepSarsaConfig, td.train_nstep_sarsa),
        _tabular(
            "q_learning", "Q-learning with an epsilon-greedy behaviour (book 7.4)", td.TDConfig, td.train_q_learning
        ),
        _tabular(
            "q_learning_offpolicy",
            "Q-learning from a fixed behaviour policy's experience, uniform by default (book 7.4)",
            td.OffPolicyQConfig,
            td.train_q_learning_offpolicy,
        ),
        AgentEntry(
            "td_linear",
            "TD-Linear: semi-gradient TD(0) prediction with linear features (book 8.2, S&B 9.3)",
            linear.PredictionConfig,
            linear.train_td_linear,
            linear.prediction_act_from_checkpoint,
        ),
        AgentEntry(
            "sarsa_linear",
            "Semi-gradient Sarsa with linear features; tile coding by default (book 8.3.1, S&B 10.1)",
            linear.ControlConfig,
            linear.train_sarsa_linear,
            linear.act_from_checkpoint,
        ),
        AgentEntry(
            "q_learning_linear",
            "Q-learning with linear features; tile coding by default (book 8.3.2)",
            linear.ControlConfig,
            linear.train_q_learning_linear,
            linear.act_from_checkpoint,
        ),
        AgentEntry(
            "dqn",
            "Deep Q-network: replay buffer, target network; double, dueling, n-step and prioritized options (book 8.4)",
            dqn.Config,
            dqn.train,
            dqn.act_from_checkpoint,
        ),
        AgentEntry(
            "reinforce",
            "REINFORCE: Monte Carlo policy gradient, optional learned baseline (book 9.4, S&B 13.3-13.4)",
            reinforce.Config,
            reinforce.train,
            reinforce.act_from_checkpoint,
        ),
        AgentEntry(
            "qac",
            "QAC: the simplest actor-critic, a Sarsa critic q(s, a; w) and a policy-gradient actor (book 10.1)",
            actor_critic.QACConfig,
            actor_critic.train_qac,
            actor_critic.qac_act_from_checkpoint,
        ),
        AgentEntry(
            "a2c",
            "A2C: synchronous advantage actor-critic on vector envs, n-step or GAE (Mnih et al. 2016, book 10.2)",
            a2c.Config,
            a2c.train,
            a2c.act_from_checkpoint,
        ),
        AgentEntry(
            "offpolicy_ac",
            "Off-policy actor-critic from a behaviour policy's data, truncated importance weights (book 10.3)",
            actor_critic.OffPolicyACConfig,
            actor_critic.train_offpolicy_ac,
            actor_critic.offpolicy_act_from_checkpoint,
        ),
        AgentEntry(
            "trpo",
            "TRPO: natural gradient by conjugate gradient, line search within max_kl, GAE critic (Schulman 2015)",
            trpo.Config,
            trpo.train,
            trpo.act_from_checkpoint,
        ),
        AgentEntry(
            "ppo",
            "PPO: clipped surrogate, several epochs of minibatches, GAE critic (Schulman et al. 2017)",
            ppo.Config,
            ppo.train,
            ppo.act_from_checkpoint,
        ),
        AgentEntry(
            "ddpg",
            "DDPG: deterministic actor-critic, target networks, Gaussian or OU exploration, Box actions (book 10.4)",
            ddpg.DDPGConfig,
            ddpg.train_ddpg,
            ddpg.act_from_checkpoint,
        ),
        AgentEntry(
            "td3",
            "TD3: DDPG with twin critics, target policy smoothing and delayed actor updates (Fujimoto et al. 2018)",
            ddpg.TD3Config,
            ddpg.train_td3,
            ddpg.act_from_checkpoint,
        ),
        AgentEntry(
            "sac",
            "SAC: squashed-Gaussian actor, twin soft critics, learned entropy temperature, Box actions (Haarnoja 2018)",
            sac.Config,
            sac.train,
            sac.act_from_checkpoint,
        ),
    ]
}


def get_agent(name: str) -> AgentEntry:
    if name not in AGENTS:
        raise UserError(f"unknown agent {name!r}; choose one of: {', '.join(AGENTS)} (see `rl list`).")
    return AGENTS[name]
