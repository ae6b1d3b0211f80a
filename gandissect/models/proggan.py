"""ProGAN generators (Karras et al. 2018) in the layout of the GAN Dissection checkpoints.

An ``nn.Sequential`` whose children are ``layer1 ... layerN`` and ``output_RxR``. Each block
applies pixel norm, then (odd layers from layer3 on) nearest 2x upsampling, a bias-free
convolution, the equalised-learning-rate weight scale ``x * gain / sqrt(fan_in) + b`` (the scale
is computed, never stored) and LeakyReLU(0.2). ``layer1`` is a 4x4 convolution with padding 3
applied to z reshaped to ``(N, D, 1, 1)``; pixel norm is applied to z as well. State-dict keys:
``layer{i}.conv.weight``, ``layer{i}.wscale.b``, ``output_{R}x{R}.conv.weight`` and
``output_{R}x{R}.wscale.b``, exactly as the released LSUN models, so the same class loads
them and the generator the project trains on SceneWorld.

Optional latent classes (the SceneWorld generator; the released models have none): with
``class_offsets`` b (K values), a latent's class is ``argmax_k(z_k + b_k)`` over its first K
values, and a learnt vector per class (``class_embedding``, K x z_dim) is added to z before
``layer1``. Every latent is still a standard normal draw; the offsets set how often each class
comes up. Two more state-dict keys, ``class_embedding`` and ``class_offsets``.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
from torch import nn
from torch.nn import functional as F

from gandissect.errors import UserError

__all__ = ["ProGANGenerator", "PixelNorm", "WScale", "proggan_channels"]


class PixelNorm(nn.Module):
    """Normalise each pixel's feature vector to unit root-mean-square."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(1, keepdim=True) + 1e-8)


class WScale(nn.Module):
    """Equalised learning rate: multiply by ``gain / sqrt(fan_in)`` and add a per-unit bias."""

    def __init__(self, conv: nn.Conv2d, gain: float = math.sqrt(2)) -> None:
        super().__init__()
        fan_in = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
        self.scale = gain / math.sqrt(fan_in)
        self.b = nn.Parameter(torch.zeros(conv.out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.b.view(1, -1, 1, 1)


class Block(nn.Module):
    """Pixel norm, optional nearest 2x upsampling, conv, weight scale, LeakyReLU(0.2)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, padding: int,
                 upsample: bool = False) -> None:
        super().__init__()
        self.norm = PixelNorm()
        self.upsample = upsample
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, bias=False)
        self.wscale = WScale(self.conv)
        self.relu = nn.LeakyReLU(0.2)
        nn.init.normal_(self.conv.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x)
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.relu(self.wscale(self.conv(x)))


class OutputBlock(nn.Module):
    """Pixel norm, 1x1 conv to RGB, weight scale with gain 1; output unclamped, about [-1, 1]."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.norm = PixelNorm()
        self.conv = nn.Conv2d(in_channels, 3, 1, bias=False)
        self.wscale = WScale(self.conv, gain=1.0)
        nn.init.normal_(self.conv.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.wscale(self.conv(self.norm(x)))


def proggan_channels(resolution: int) -> list[int]:
    """The released LSUN models' channels per resolution (4x4 first) for a given output size."""
    table = [512, 512, 512, 512, 256, 128, 64, 32, 16]
    steps = int(math.log2(resolution)) - 1
    if 2 ** (steps + 1) != resolution or not 1 <= steps <= len(table):
        raise UserError(f"resolution must be a power of two from 4 to 1024, got {resolution}")
    return table[:steps]


class ProGANGenerator(nn.Sequential):
    """A ProGAN generator: ``z (N, z_dim)`` or ``(N, z_dim, 1, 1)`` -> image ``(N, 3, R, R)``.

    ``channels`` lists the units at 4x4, 8x8, ... up to the output resolution; two layers per
    resolution, so ``layer4`` is the second 8x8 layer (the painting layer of GANPaint).
    """

    def __init__(self, z_dim: int = 512, channels: list[int] | None = None,
                 class_offsets: list[float] | None = None) -> None:
        channels = list(channels or proggan_channels(256))
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        layers["layer1"] = Block(z_dim, channels[0], kernel_size=4, padding=3)
        layers["layer2"] = Block(channels[0], channels[0], kernel_size=3, padding=1)
        for previous, current in zip(channels[:-1], channels[1:]):
            n = len(layers)
            layers[f"layer{n + 1}"] = Block(previous, current, 3, 1, upsample=True)
            layers[f"layer{n + 2}"] = Block(current, current, 3, 1)
        resolution = 4 * 2 ** (len(channels) - 1)
        layers[f"output_{resolution}x{resolution}"] = OutputBlock(channels[-1])
        super().__init__(layers)
        self.z_dim = z_dim
        self.channels = channels
        self.resolution = resolution
        if class_offsets is None:
            self.register_buffer("class_offsets", None)
            self.register_parameter("class_embedding", None)
        else:
            if not 2 <= len(class_offsets) <= z_dim:
                raise UserError(f"need 2 to z_dim={z_dim} class offsets, "
                                f"got {len(class_offsets)}")
            self.register_buffer("class_offsets", torch.tensor(class_offsets,
                                                               dtype=torch.float32))
            self.class_embedding = nn.Parameter(torch.zeros(len(class_offsets), z_dim))

    def latent_classes(self, z: torch.Tensor) -> torch.Tensor:
        """``(N,)`` class of each latent ``(N, z_dim[, 1, 1])``: ``argmax_k(z_k + b_k)``."""
        if self.class_offsets is None:
            raise UserError("this generator has no latent classes")
        return (z.flatten(1)[:, :len(self.class_offsets)] + self.class_offsets).argmax(1)

    def condition(self, z: torch.Tensor) -> torch.Tensor:
        """``(N, z_dim, 1, 1)``: z checked and, with latent classes, plus its class's vector;
        the input of ``layer1``."""
        if z.dim() == 2:
            z = z[:, :, None, None]
        if z.dim() != 4 or z.shape[1:] != (self.z_dim, 1, 1):
            raise UserError(f"latent must be (N, {self.z_dim}) or (N, {self.z_dim}, 1, 1), "
                            f"got {tuple(z.shape)}")
        if self.class_offsets is not None:
            z = z + self.class_embedding[self.latent_classes(z)][:, :, None, None]
        return z

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return super().forward(self.condition(z))

    def config(self) -> dict:
        """What it takes to rebuild this architecture."""
        config = {"architecture": "proggan", "z_dim": self.z_dim, "channels": self.channels}
        if self.class_offsets is not None:
            config["class_offsets"] = [float(b) for b in self.class_offsets]
        return config
