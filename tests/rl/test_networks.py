"""The observation encoder every network starts with: what each kind of space becomes."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch

from rl.networks import ObservationEncoder


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
