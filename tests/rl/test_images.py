"""Image observations: layouts read from the space, the convolutional torsos, the encoders built on them, and a
policy-gradient agent that learns from pixels."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

from agents import ppo
from rl.errors import UserError
from rl.images import FEATURES, ImageLayout, image_layout
from rl.networks import ActorCritic, ObservationEncoder, check_normalizable
from rl.run import Run, RunSpec


def pixels(*shape: int) -> gym.spaces.Box:
    return gym.spaces.Box(0, 255, shape=shape, dtype=np.uint8)


def test_layouts_are_read_from_the_shape():
    assert image_layout(pixels(4, 84, 84)) == ImageLayout(4, 84, 84, channels_last=False)  # stacked Atari frames
    assert image_layout(pixels(96, 96, 3)) == ImageLayout(3, 96, 96, channels_last=True)  # CarRacing
    assert image_layout(pixels(84, 84)) == ImageLayout(1, 84, 84, channels_last=False)  # one grey frame
    assert image_layout(pixels(2, 2, 1)) is None  # too small to be a picture: flattened
    assert image_layout(pixels(16)) is None
    assert image_layout(gym.spaces.Box(0, 10, shape=(3, 16, 16), dtype=np.uint8)) is None  # counts, not pixels
    assert image_layout(gym.spaces.Box(0.0, 1.0, shape=(3, 16, 16), dtype=np.float32)) is None


def conv_shapes(encoder: ObservationEncoder) -> list[tuple[int, int]]:
    return [(m.kernel_size[0], m.stride[0]) for m in encoder.modules() if isinstance(m, nn.Conv2d)]


def test_the_nature_torso_for_large_images_and_a_small_one_below_36_pixels():
    large, small = ObservationEncoder(pixels(4, 84, 84)), ObservationEncoder(pixels(3, 20, 20))
    assert conv_shapes(large) == [(8, 4), (4, 2), (3, 1)] and conv_shapes(small) == [(3, 2), (3, 2)]
    # The Nature torso leaves 64 maps of 7x7 from 84x84 frames, as in Mnih et al. (2015).
    assert large.torso[1].in_features == 64 * 7 * 7
    obs = torch.randint(0, 256, (5, 4, 84, 84), dtype=torch.uint8)
    assert large.out_features == FEATURES and large(obs).shape == (5, FEATURES)


def test_channels_last_images_give_what_the_same_images_channels_first_give():
    first, last = ObservationEncoder(pixels(3, 40, 48)), ObservationEncoder(pixels(40, 48, 3))
    last.load_state_dict(first.state_dict())
    images = torch.randint(0, 256, (2, 3, 40, 48), dtype=torch.uint8)
    torch.testing.assert_close(last(images.permute(0, 2, 3, 1)), first(images))
    grey, one_channel = ObservationEncoder(pixels(40, 48)), ObservationEncoder(pixels(1, 40, 48))
    grey.load_state_dict(one_channel.state_dict())
    torch.testing.assert_close(grey(images[:, 0]), one_channel(images[:, :1]))
    # Pixels are scaled to [0, 1] first: 255 everywhere equals 1.0 fed to the torso itself.
    white = torch.full((1, 3, 40, 48), 255, dtype=torch.uint8)
    torch.testing.assert_close(first(white), first.torso(torch.ones(1, 3, 40, 48)))


def test_actor_and_critic_learn_separate_torsos():
    network = ActorCritic(pixels(3, 36, 36), gym.spaces.Discrete(2), (64,), "trpo", "Images-v0")
    actor, critic = network.actor_parameters(), network.critic_parameters()
    assert {id(p) for p in actor}.isdisjoint(id(p) for p in critic)
    assert {id(p) for p in actor} | {id(p) for p in critic} == {id(p) for p in network.parameters()}
    assert any(p.dim() == 4 for p in actor) and any(p.dim() == 4 for p in critic)  # each has its convolutions
    vector = ActorCritic(gym.spaces.Box(-1, 1, (4,)), gym.spaces.Discrete(2), (64,), "ppo", "Vector-v0")
    assert vector.critic_encoder is None  # vector observations: one shared, parameter-free encoder as before


def test_a2c_and_ppo_share_one_torso_that_both_losses_train():
    space = pixels(3, 36, 36)
    network = ppo.build_network(ppo.Config(), space, gym.spaces.Discrete(3), "Images-v0")
    assert network.critic_encoder is None and sum(p.dim() == 4 for p in network.parameters()) == 3  # one torso
    obs = torch.as_tensor(np.stack([space.sample() for _ in range(5)]))
    distribution, values = network.distribution_and_value(obs)
    torch.testing.assert_close(distribution.logits, network.distribution(obs).logits, rtol=0, atol=0)
    torch.testing.assert_close(values, network.value(obs), rtol=0, atol=0)
    first_filters = network.encoder.torso[0][0].weight
    for loss in (distribution.log_prob(torch.zeros(5, dtype=torch.long)).sum(), values.sum()):
        network.zero_grad()
        loss.backward(retain_graph=True)
        assert first_filters.grad is not None and first_filters.grad.abs().sum() > 0
    separate = ActorCritic(space, gym.spaces.Discrete(3), (64,), "trpo", "Images-v0")
    distribution, values = separate.distribution_and_value(obs)
    torch.testing.assert_close(values, separate.value(obs), rtol=0, atol=0)


def test_normalising_images_is_a_user_error():
    with pytest.raises(UserError, match="images"):
        check_normalizable(pixels(4, 84, 84), True, "dqn", "Images-v0")


class BrightSide(gym.Env):
    """One-step episodes: a noisy 36x36 RGB image (channels last) with a white 8x8 square in its left or right half;
    action 0 says left, 1 right; reward 1 when right about it. Guessing earns 0.5."""

    observation_space = pixels(36, 36, 3)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.side = int(self.np_random.integers(2))
        image = self.np_random.integers(0, 60, size=(36, 36, 3), dtype=np.uint8)
        row, col = self.np_random.integers(0, 28), self.np_random.integers(0, 10) + 18 * self.side
        image[row : row + 8, col : col + 8] = 255
        return image, {}

    def step(self, action):
        reward = float(action == self.side)
        return np.zeros((36, 36, 3), np.uint8), reward, True, False, {}  # the episode ends: nothing bootstraps


if "BrightSide-v0" not in gym.registry:
    gym.register("BrightSide-v0", entry_point=BrightSide)


@pytest.mark.slow
def test_ppo_learns_from_pixels(tmp_path):
    spec = RunSpec("ppo", "BrightSide-v0", total_steps=2_048, runs_dir=str(tmp_path), quiet=True, eval_episodes=200)
    cfg = ppo.Config(num_envs=4, n_steps=64, batch_size=64, n_epochs=4, learning_rate=3e-4)
    with Run(spec, {}) as run:
        returns = ppo.train(cfg, run)
    assert returns.mean() >= 0.9  # the greedy policy tells the sides apart; guessing scores 0.5
