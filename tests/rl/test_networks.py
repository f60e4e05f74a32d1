"""The observation encoder every network starts with: what each kind of space becomes, and its running
normalisation."""

from __future__ import annotations

import importlib

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

from rl.errors import UserError
from rl.networks import ActorCritic, ObservationEncoder, frozen


def test_discrete_states_are_one_hot_from_the_space_start():
    encoder = ObservationEncoder(gym.spaces.Discrete(3, start=1))
    np.testing.assert_array_equal(encoder(torch.tensor([1, 3])).numpy(), [[1, 0, 0], [0, 0, 1]])


def test_a_uint8_image_is_scaled_to_the_unit_interval_and_flattened():
    image = gym.spaces.Box(0, 255, shape=(2, 2, 1), dtype=np.uint8)
    obs = torch.tensor([[[[0], [255]], [[51], [102]]]], dtype=torch.uint8)
    np.testing.assert_allclose(ObservationEncoder(image)(obs).numpy(), [[0.0, 1.0, 0.2, 0.4]], rtol=1e-6)


def test_other_boxes_pass_through_unscaled():
    counts = gym.spaces.Box(0, 10, shape=(2,), dtype=np.uint8)  # small integer counts, not pixels
    floats = gym.spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
    np.testing.assert_array_equal(ObservationEncoder(counts)(torch.tensor([[3, 7]], dtype=torch.uint8)).numpy(),
                                  [[3.0, 7.0]])  # fmt: skip
    np.testing.assert_array_equal(ObservationEncoder(floats)(torch.tensor([[0.5, -0.5]])).numpy(), [[0.5, -0.5]])


def test_running_statistics_are_the_mean_and_variance_of_every_observation_folded_in():
    encoder = ObservationEncoder(gym.spaces.Box(-np.inf, np.inf, shape=(2, 3), dtype=np.float32), normalize=True)
    rng = np.random.default_rng(0)
    batches = [rng.normal(5.0, 3.0, size=(n, 2, 3)).astype(np.float32) for n in (1, 7, 40)]
    for batch in batches:
        encoder.update_statistics(torch.from_numpy(batch))
    seen = np.concatenate(batches).reshape(-1, 6).astype(np.float64)
    assert encoder.obs_count.item() == 48
    np.testing.assert_allclose(encoder.obs_mean.numpy(), seen.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(encoder.obs_var.numpy(), seen.var(axis=0), rtol=1e-12)

    obs = rng.normal(5.0, 3.0, size=(4, 2, 3)).astype(np.float32)
    obs[0, 0, 0] = 1e6  # far outside: clipped to +10
    expected = np.clip((obs.reshape(4, 6) - seen.mean(axis=0)) / np.sqrt(seen.var(axis=0) + 1e-8), -10.0, 10.0)
    normalised = encoder(torch.from_numpy(obs))
    assert normalised.dtype == torch.float32 and normalised[0, 0].item() == 10.0
    np.testing.assert_allclose(normalised.numpy(), expected, rtol=1e-5, atol=1e-6)


def test_the_statistics_start_as_the_identity_and_travel_in_the_state_dict():
    encoder = ObservationEncoder(gym.spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32), normalize=True)
    np.testing.assert_allclose(encoder(torch.tensor([[0.5, -0.25]])).numpy(), [[0.5, -0.25]], rtol=1e-6)
    assert {"obs_mean", "obs_var", "obs_count"} <= set(encoder.state_dict())
    assert "obs_mean" not in ObservationEncoder(gym.spaces.Box(-1.0, 1.0, shape=(2,))).state_dict()


def test_observation_normalisation_of_discrete_states_is_a_user_error():
    with pytest.raises(UserError, match="normalize_observation=true needs Box observations.*Discrete"):
        ActorCritic(gym.spaces.Discrete(5), gym.spaces.Discrete(2), (8,), "ppo", "FrozenLake-v1",
                    normalize_observation=True)  # fmt: skip


def test_frozen_module_passes_gradients_to_its_inputs_only():
    torch.manual_seed(0)
    actor, critic = nn.Linear(3, 2), nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 1))
    obs = torch.randn(16, 3)
    critic(actor(obs)).sum().backward()
    expected = actor.weight.grad.clone()
    actor.zero_grad(), critic.zero_grad(set_to_none=True)
    with frozen(critic):
        loss = critic(actor(obs)).sum()
    assert all(p.requires_grad for p in critic.parameters())  # restored on leaving the block
    loss.backward()
    torch.testing.assert_close(actor.weight.grad, expected)  # the same gradient reaches the actor
    assert all(p.grad is None for p in critic.parameters())  # and none was computed for the critic


@pytest.mark.parametrize("activation, reference", [("tanh", torch.tanh), ("relu", torch.relu)])
def test_actor_critic_hidden_layers_apply_the_chosen_activation(activation, reference):
    torch.manual_seed(0)
    network = ActorCritic(gym.spaces.Box(-1, 1, (3,)), gym.spaces.Discrete(2), (16, 8), "ppo", "Box-v0",
                          activation=activation)  # fmt: skip
    obs = torch.randn(5, 3)
    hidden = obs
    for layer in (network.actor_body[0][0], network.actor_body[0][2]):  # Linear(3, 16), Linear(16, 8)
        hidden = reference(hidden @ layer.weight.T + layer.bias)
    logits = hidden @ network.policy_head.logits.weight.T + network.policy_head.logits.bias
    torch.testing.assert_close(network.distribution(obs).logits, torch.log_softmax(logits, -1))
    value = obs
    for layer in network.critic[:-1:2]:  # the hidden Linear layers
        value = reference(value @ layer.weight.T + layer.bias)
    torch.testing.assert_close(
        network.value(obs), (value @ network.critic[-1].weight.T + network.critic[-1].bias)[:, 0]
    )
    assert isinstance(network.critic[1], nn.ReLU if activation == "relu" else nn.Tanh)


def test_without_orthogonal_init_the_layers_keep_pytorchs_default_initialisation():
    torch.manual_seed(0)
    network = ActorCritic(gym.spaces.Box(-1, 1, (4,)), gym.spaces.Discrete(2), (64,), "ppo", "Box-v0",
                          orthogonal_init=False)  # fmt: skip
    torch.manual_seed(0)
    default = nn.Linear(4, 64)  # the first layer built, from the same seed
    torch.testing.assert_close(network.actor_body[0][0].weight, default.weight)
    assert network.policy_head.logits.bias.abs().sum() > 0  # orthogonal_init_ would zero every bias


@pytest.mark.parametrize("agent", ["a2c", "ppo", "trpo"])
def test_an_unknown_activation_is_refused_naming_the_choices(agent):
    config = importlib.import_module(f"agents.{agent}").Config
    with pytest.raises(ValueError, match="activation must be one of 'tanh', 'relu', not 'gelu'"):
        config(activation="gelu")
