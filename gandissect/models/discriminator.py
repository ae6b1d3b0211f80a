"""The discriminator used to train the SceneWorld generator (ProGAN-style, equalised LR)."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.parametrizations import spectral_norm


class EqualConv2d(nn.Module):
    """Conv with the equalised-learning-rate scale applied at run time."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int,
                 padding: int = 0, gain: float = math.sqrt(2)) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size,
                                               kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.scale = gain / math.sqrt(in_channels * kernel_size * kernel_size)
        self.padding = padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.scale, self.bias, padding=self.padding)


class EqualLinear(nn.Module):
    def __init__(self, in_features: int, out_features: int, gain: float = math.sqrt(2)) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features))
        self.scale = gain / math.sqrt(in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.scale, self.bias)


def minibatch_stddev(x: torch.Tensor, group: int = 4) -> torch.Tensor:
    """Append the mean standard deviation over groups of samples as one more feature map."""
    n, c, h, w = x.shape
    group = min(group, n)
    if n % group:
        group = 1
    y = x.view(group, -1, c, h, w)
    y = (y - y.mean(0)).pow(2).mean(0).add(1e-8).sqrt().mean((1, 2, 3))  # (n / group,)
    y = y.view(-1, 1, 1, 1).repeat(group, 1, h, w)
    return torch.cat([x, y], 1)


def _sn_conv(in_channels: int, out_channels: int, kernel_size: int, padding: int = 0):
    return spectral_norm(nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding))


def _sn_linear(in_features: int, out_features: int, gain: float = 1.0):
    return spectral_norm(nn.Linear(in_features, out_features))


class Discriminator(nn.Module):
    """fromRGB, then two 3x3 convs and 2x average pooling per resolution down to 4x4, then the
    minibatch standard deviation, a 3x3 conv, a dense layer and the score.

    ``spectral_norm=True`` uses spectrally normalised plain layers (for the hinge loss);
    otherwise equalised-learning-rate layers (for the logistic loss with R1).
    """

    def __init__(self, resolution: int = 64, channels: list[int] | None = None,
                 spectral_norm: bool = False) -> None:
        super().__init__()
        steps = int(math.log2(resolution)) - 2  # resolutions above 4x4
        channels = list(channels or [32, 64, 128, 256, 256][-steps - 1:])
        if len(channels) != steps + 1:
            raise ValueError(f"need {steps + 1} channel counts for {resolution} px")
        conv, linear = (_sn_conv, _sn_linear) if spectral_norm else (EqualConv2d, EqualLinear)
        self.from_rgb = conv(3, channels[0], 1)
        self.blocks = nn.ModuleList(
            nn.ModuleList([conv(cin, cin, 3, 1), conv(cin, cout, 3, 1)])
            for cin, cout in zip(channels[:-1], channels[1:])
        )
        last = channels[-1]
        self.final_conv = conv(last + 1, last, 3, 1)
        self.final_dense = linear(last * 16, last)
        self.score = linear(last, 1, gain=1.0)
        self.channels, self.resolution = channels, resolution

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = F.leaky_relu(self.from_rgb(image), 0.2)
        for first, second in self.blocks:
            x = F.leaky_relu(first(x), 0.2)
            x = F.leaky_relu(second(x), 0.2)
            x = F.avg_pool2d(x, 2)
        x = minibatch_stddev(x)
        x = F.leaky_relu(self.final_conv(x), 0.2)
        x = F.leaky_relu(self.final_dense(x.flatten(1)), 0.2)
        return self.score(x).squeeze(1)
