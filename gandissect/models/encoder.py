"""An image -> latent encoder for a generator: ``(N, 3, R, R)`` images in [-1, 1] -> ``(N, z_dim)``.

A small convolutional network: per stage a stride-2 3x3 convolution and a 3x3 convolution, each
followed by LeakyReLU(0.2), halving the resolution from R down to 4 px, then one linear layer
from the flattened 4x4 features, scaled onto the sphere of radius ``sqrt(z_dim)``, where
standard normal latents lie. A pixel-normalising generator (ProGAN) reads little but a latent's
direction, and near the origin that direction is noise, so outputs never go there. It gives the
starting latent when an image is inverted into the generator (``gandissect.invert``);
``gandissect train encoder`` trains the one shipped for the SceneWorld generator
(``registry.load_encoder``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from gandissect.errors import UserError

__all__ = ["LatentEncoder"]


class LatentEncoder(nn.Module):
    """Images ``(N, 3, resolution, resolution)`` in [-1, 1] -> latents ``(N, z_dim)``.

    ``channels`` lists the units of each stage; stage i works at ``resolution / 2**(i+1)`` px, so
    there must be ``log2(resolution) - 2`` stages (4 for 64 px), the last one at 4x4.
    """

    def __init__(self, z_dim: int = 256, resolution: int = 64,
                 channels: list[int] | None = None) -> None:
        super().__init__()
        stages = int(math.log2(resolution)) - 2
        if 2 ** (stages + 2) != resolution or stages < 1:
            raise UserError(f"encoder resolution must be a power of two from 8 on, "
                            f"got {resolution}")
        channels = list(channels or [32, 64, 128, 192][:stages])
        if len(channels) != stages:
            raise UserError(f"a {resolution} px encoder has {stages} stages, got "
                            f"{len(channels)} channel counts")
        layers: list[nn.Module] = []
        previous = 3
        for width in channels:
            layers += [nn.Conv2d(previous, width, 3, stride=2, padding=1), nn.LeakyReLU(0.2),
                       nn.Conv2d(width, width, 3, padding=1), nn.LeakyReLU(0.2)]
            previous = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(previous * 4 * 4, z_dim)
        self.z_dim, self.resolution, self.channels = z_dim, resolution, channels

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4 or images.shape[1:] != (3, self.resolution, self.resolution):
            raise UserError(f"the encoder takes (N, 3, {self.resolution}, {self.resolution}) "
                            f"images, got {tuple(images.shape)}")
        z = self.head(self.features(images).flatten(1))
        return z * math.sqrt(self.z_dim) / z.norm(dim=1, keepdim=True).clamp_min(1e-8)

    def config(self) -> dict:
        """What it takes to rebuild this architecture."""
        return {"architecture": "encoder", "z_dim": self.z_dim, "resolution": self.resolution,
                "channels": self.channels}
