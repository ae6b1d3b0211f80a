"""The discriminator used to train the SceneWorld generator (ProGAN-style, equalised LR)."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from gandissect.errors import UserError


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


class Discriminator(nn.Module):
    """fromRGB, then two 3x3 convs and 2x average pooling per resolution down to 4x4, then the
    minibatch standard deviation, a 3x3 conv, a dense layer and the score.

    Equalised-learning-rate layers throughout (for the logistic loss with R1).

    ``in_channels`` other than 3 scores other per-pixel maps than RGB images (the semantic
    critic of generator training scores the segmenter's label probabilities).

    ``classes > 0`` adds a projection term (Miyato & Koyama 2018): given ``labels``, the score
    gains ``<e[label], h>`` with ``h`` the last hidden features and ``e`` a learnt embedding
    per class, zero at the start (so the discriminator starts as the unconditional one) and
    scaled at run time like the other equalised layers.
    """

    def __init__(self, resolution: int = 64, channels: list[int] | None = None,
                 classes: int = 0, in_channels: int = 3) -> None:
        super().__init__()
        steps = int(math.log2(resolution)) - 2  # resolutions above 4x4
        channels = list(channels or [32, 64, 128, 256, 256][-steps - 1:])
        if len(channels) != steps + 1:
            raise UserError(f"need {steps + 1} channel counts for {resolution} px")
        conv, linear = EqualConv2d, EqualLinear
        self.from_rgb = conv(in_channels, channels[0], 1)
        # For progressive growing: from-RGB layers for images at R/2, R/4, ..., 4 px.
        self.from_rgb_at = nn.ModuleList(conv(in_channels, c, 1) for c in channels[1:])
        self.blocks = nn.ModuleList(
            nn.ModuleList([conv(cin, cin, 3, 1), conv(cin, cout, 3, 1)])
            for cin, cout in zip(channels[:-1], channels[1:])
        )
        last = channels[-1]
        self.final_conv = conv(last + 1, last, 3, 1)
        self.final_dense = linear(last * 16, last)
        self.score = linear(last, 1, gain=1.0)
        self.channels, self.resolution, self.classes = channels, resolution, classes
        if classes:
            self.class_embedding = nn.Parameter(torch.zeros(classes, last))
            self.class_scale = 1 / math.sqrt(last)

    def forward(self, image: torch.Tensor, alpha: float = 1.0,
                labels: torch.Tensor | None = None) -> torch.Tensor:
        """Score images at the full resolution or, while growing, at ``R / 2**k``; ``alpha < 1``
        fades in the lowest block used (ProGAN): its input is mixed with the image halved and
        passed through the next from-RGB layer. ``labels`` (N,) class indices, for a
        discriminator built with ``classes``: the class-conditional score."""
        if labels is not None and not self.classes:
            raise UserError("this discriminator has no classes; build it with classes=K")
        k = round(math.log2(self.resolution / image.shape[-1]))
        if image.shape[-1] * 2 ** k != self.resolution or not 0 <= k < len(self.channels):
            raise UserError(f"image size {image.shape[-1]} is not {self.resolution} / 2**k")
        from_rgb = self.from_rgb_at[k - 1] if k else self.from_rgb
        x = F.leaky_relu(from_rgb(image), 0.2)
        for j in range(k, len(self.blocks)):
            first, second = self.blocks[j]
            x = F.leaky_relu(first(x), 0.2)
            x = F.leaky_relu(second(x), 0.2)
            x = F.avg_pool2d(x, 2)
            if j == k and alpha < 1:
                skip = F.leaky_relu(self.from_rgb_at[k](F.avg_pool2d(image, 2)), 0.2)
                x = torch.lerp(skip, x, alpha)
        x = minibatch_stddev(x)
        x = F.leaky_relu(self.final_conv(x), 0.2)
        x = F.leaky_relu(self.final_dense(x.flatten(1)), 0.2)
        score = self.score(x).squeeze(1)
        if labels is not None:
            score = score + (self.class_embedding[labels] * x).sum(1) * self.class_scale
        return score
