"""Small generators and segmenters with known answers, for the dissection tests."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def _rect(x0, y0, w, h, size=8):
    cells = torch.arange(size)
    cols = (cells >= x0[:, None]) & (cells < (x0 + w)[:, None])
    rows = (cells >= y0[:, None]) & (cells < (y0 + h)[:, None])
    return rows[:, :, None] & cols[:, None, :]  # (N, 8, 8)


class PlantedGenerator(nn.Module):
    """Draws a rectangle of concept A (left half) and one of B (right half) on an 8x8 grid.

    Layer ``units`` (8x8): unit 0 is +1 on A's cells and -1 on the ring around them (a
    centre-surround detector of A), unit 1 the same for B, unit 2 noise on the bottom row
    (never covered by a rectangle). Layer ``mirror`` is ``units`` flipped left-right (other
    numbers, for cache tests). Images are 32x32: channel 0 = A, 1 = B, 2 = A's top row when
    z[9] > 0 (a "part" present in some images only).
    """

    z_dim = 10
    resolution = 32

    def __init__(self) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.ones(()))  # gives the module a device and an identity
        self.units = nn.Identity()
        self.mirror = nn.Identity()

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        u = torch.special.ndtr(z)
        step = lambda v, k: (v * k).long().clamp(max=k - 1)  # noqa: E731
        a = _rect(step(u[:, 0], 2), step(u[:, 2], 5), 2 + step(u[:, 1], 2), 2 + step(u[:, 3], 2))
        b = _rect(4 + step(u[:, 4], 2), step(u[:, 6], 5), 2 + step(u[:, 5], 2),
                  2 + step(u[:, 7], 2))
        maps = []
        for rect in (a, b):
            inside = rect.float()[:, None]
            ring = (F.max_pool2d(inside, 3, 1, 1) > 0).float() - inside
            maps.append(inside - ring)
        noise = torch.zeros(z.shape[0], 1, 8, 8)
        noise[:, 0, 7] = torch.sin(z[:, 8:9] * 3 + torch.arange(8) * 1.7 + z[:, 9:10])
        units = self.units(torch.cat([*maps, noise], 1) * self.gain)
        self.mirror(units.flip(-1))
        top_row = a & (a.cumsum(1) == 1)
        part = top_row & (z[:, 9] > 0)[:, None, None]
        planes = torch.stack([a, b, part], 1).float() * 2 - 1
        return planes.repeat_interleave(4, 2).repeat_interleave(4, 3)


class PlantedSegmenter:
    """Reads the rectangles back from the images: object A / B, and part P."""

    concepts = {"object": ["none", "A", "B"], "part": ["none", "P"]}
    categories = ["object", "part"]

    def segment(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        objects = torch.zeros(images.shape[0], *images.shape[2:], dtype=torch.long)
        objects[images[:, 0] > 0] = 1
        objects[images[:, 1] > 0] = 2
        return {"object": objects, "part": (images[:, 2] > 0).long()}


class TinyGenerator(nn.Module):
    """A random small conv generator: z (8) -> 4x4 -> ``units`` (6 units, 8x8) -> 32x32."""

    z_dim = 8

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.fc = nn.Linear(8, 4 * 4 * 4)
        self.units = nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(4, 6, 3, padding=1),
                                   nn.LeakyReLU(0.2))
        self.head = nn.Sequential(nn.Upsample(scale_factor=4), nn.Conv2d(6, 3, 3, padding=1),
                                  nn.Tanh())

    def forward(self, z):
        return self.head(self.units(self.fc(z).view(-1, 4, 4, 4)))


class ChannelSegmenter:
    """Labels from pixel values: object red/green by channel; part "bright" only in images
    whose mean blue is positive (so the part category is absent from some images)."""

    concepts = {"object": ["none", "red", "green"], "part": ["none", "bright"]}
    categories = ["object", "part"]

    def segment(self, images):
        objects = torch.zeros(images.shape[0], *images.shape[2:], dtype=torch.long)
        objects[images[:, 1] > images[:, 1].median()] = 2
        objects[images[:, 0] > images[:, 0].quantile(0.7)] = 1
        blue = images[:, 2]
        bright = (blue > blue.mean((1, 2), keepdim=True)) & (blue.mean((1, 2)) > blue.mean())[
            :, None, None]
        return {"object": objects, "part": bright.long()}
