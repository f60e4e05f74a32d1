"""Image observations: which Box spaces hold images, and the convolutional torso that turns them into features.

An image space is a Box of uint8 with bounds 0 to 255 shaped (H, W) (grey), (C, H, W) or (H, W, C), H and W at least
8: Atari frames after Gymnasium's AtariPreprocessing and FrameStackObservation are (4, 84, 84), CarRacing's (96, 96,
3). The layout is read from the shape: the channel axis is the shorter of the first and the last. Pixels are scaled to
[0, 1] (`rl.networks.ObservationEncoder`) and go through

    images of at least 36 x 36:  the torso of Mnih et al. (2015): 32 filters 8x8 stride 4, 64 4x4 stride 2,
                                 64 3x3 stride 1, each followed by ReLU;
    smaller images:              32 filters 3x3 stride 2 and 64 3x3 stride 2, each followed by ReLU
                                 (the Nature torso's strides would shrink them to nothing);

then a ReLU layer of 512 units, as in the paper, whose output the agent's own layers take.
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
from torch import nn

MIN_SIDE = 8
"""Smallest height and width read as an image; smaller uint8 arrays are flattened like any other Box."""
NATURE_MIN_SIDE = 36
"""Smallest height and width the Nature torso's 8x8/4, 4x4/2 and 3x3/1 filters leave at least one pixel of."""
FEATURES = 512


@dataclass(frozen=True)
class ImageLayout:
    """How an image space lays out its pixels."""

    channels: int
    height: int
    width: int
    channels_last: bool
    """(H, W, C) rather than (C, H, W); a grey (H, W) image is channels-first with one channel."""


def is_pixels(space: gym.Space) -> bool:
    """Whether `space` is a Box of uint8 with bounds 0 to 255, whatever its shape."""
    return (
        isinstance(space, gym.spaces.Box)
        and space.dtype == np.uint8
        and bool(np.all(space.low == 0) and np.all(space.high == 255))
    )


def image_layout(space: gym.Space) -> ImageLayout | None:
    """The layout of an image space (see the module doc); None for any other space."""
    if not is_pixels(space):
        return None
    shape = space.shape
    if len(shape) == 2:
        layout = ImageLayout(1, shape[0], shape[1], channels_last=False)
    elif len(shape) == 3 and shape[-1] < shape[0]:
        layout = ImageLayout(shape[2], shape[0], shape[1], channels_last=True)
    elif len(shape) == 3:
        layout = ImageLayout(shape[0], shape[1], shape[2], channels_last=False)
    else:
        return None
    return layout if min(layout.height, layout.width) >= MIN_SIDE else None


def convolutional_torso(layout: ImageLayout) -> nn.Sequential:
    """(B, C, H, W) pixels in [0, 1] -> (B, FEATURES) features: the convolutions of the module doc, then 512 ReLUs."""
    if min(layout.height, layout.width) >= NATURE_MIN_SIDE:
        convolutions = [nn.Conv2d(layout.channels, 32, 8, stride=4), nn.ReLU(), nn.Conv2d(32, 64, 4, stride=2),
                        nn.ReLU(), nn.Conv2d(64, 64, 3, stride=1), nn.ReLU()]  # fmt: skip
    else:
        convolutions = [nn.Conv2d(layout.channels, 32, 3, stride=2), nn.ReLU(), nn.Conv2d(32, 64, 3, stride=2),
                        nn.ReLU()]  # fmt: skip
    torso = nn.Sequential(*convolutions, nn.Flatten())
    with torch.no_grad():  # the flattened size, from one blank image
        flat = torso(torch.zeros(1, layout.channels, layout.height, layout.width)).shape[1]
    return nn.Sequential(torso, nn.Linear(flat, FEATURES), nn.ReLU())


def channels_first(pixels: torch.Tensor, layout: ImageLayout) -> torch.Tensor:
    """A batch of images (B, *space shape) as (B, C, H, W)."""
    if layout.channels_last:
        return pixels.permute(0, 3, 1, 2)
    return pixels.reshape(len(pixels), layout.channels, layout.height, layout.width)
