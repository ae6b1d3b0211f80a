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


def _sn_conv(in_channels: int, out_channels: int, kernel_size: int, padding: int = 0,
             stride: int = 1):
    return spectral_norm(nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding))


def _sn_linear(in_features: int, out_features: int, gain: float = 1.0):
    return spectral_norm(nn.Linear(in_features, out_features))


class Discriminator(nn.Module):
    """fromRGB, then two 3x3 convs and 2x average pooling per resolution down to 4x4, then the
    minibatch standard deviation, a 3x3 conv, a dense layer and the score.

    ``spectral_norm=True`` uses spectrally normalised plain layers (for the hinge loss);
    otherwise equalised-learning-rate layers (for the logistic loss with R1).

    ``in_channels`` other than 3 scores other per-pixel maps than RGB images (the semantic
    critic of generator training scores the segmenter's label probabilities).

    ``classes > 0`` adds a projection term (Miyato & Koyama 2018): given ``labels``, the score
    gains ``<e[label], h>`` with ``h`` the last hidden features and ``e`` a learnt embedding
    per class, zero at the start (so the discriminator starts as the unconditional one) and
    scaled at run time like the other equalised layers.
    """

    def __init__(self, resolution: int = 64, channels: list[int] | None = None,
                 spectral_norm: bool = False, classes: int = 0, in_channels: int = 3) -> None:
        super().__init__()
        steps = int(math.log2(resolution)) - 2  # resolutions above 4x4
        channels = list(channels or [32, 64, 128, 256, 256][-steps - 1:])
        if len(channels) != steps + 1:
            raise ValueError(f"need {steps + 1} channel counts for {resolution} px")
        conv, linear = (_sn_conv, _sn_linear) if spectral_norm else (EqualConv2d, EqualLinear)
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
            raise ValueError("this discriminator has no classes; build it with classes=K")
        k = round(math.log2(self.resolution / image.shape[-1]))
        if image.shape[-1] * 2 ** k != self.resolution or not 0 <= k < len(self.channels):
            raise ValueError(f"image size {image.shape[-1]} is not {self.resolution} / 2**k")
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


class PatchDiscriminator(nn.Module):
    """A texture discriminator for full-size images: a score per image patch, no pooling to
    one number (the PatchGAN idea of pix2pix, here with equalised-learning-rate layers).

    from-RGB (1x1) to ``channels[0]``, then per entry of ``channels[1:]`` one 3x3 conv at the
    current width, 2x average pooling and one 3x3 conv to that entry's width; a last 1x1 conv
    gives one logit per cell. With the default ``(32, 64)`` at 64 px: a 32x32 map of logits,
    each seeing 8x8 px, small enough to judge a wall's texture and not the scene."""

    def __init__(self, channels: list[int] | tuple[int, ...] = (32, 64)) -> None:
        super().__init__()
        if len(channels) < 2:
            raise ValueError(f"need at least two channel counts, got {list(channels)}")
        self.from_rgb = EqualConv2d(3, channels[0], 1)
        self.blocks = nn.ModuleList(
            nn.ModuleList([EqualConv2d(cin, cin, 3, 1), EqualConv2d(cin, cout, 3, 1)])
            for cin, cout in zip(channels[:-1], channels[1:])
        )
        self.score = EqualConv2d(channels[-1], 1, 1, gain=1.0)
        self.channels = list(channels)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) images to (N, H / 2**k, W / 2**k) patch logits."""
        x = F.leaky_relu(self.from_rgb(image), 0.2)
        for first, second in self.blocks:
            x = F.avg_pool2d(F.leaky_relu(first(x), 0.2), 2)
            x = F.leaky_relu(second(x), 0.2)
        return self.score(x).squeeze(1)


class ProjectedDiscriminator(nn.Module):
    """A Projected GAN discriminator (Sauer et al., NeurIPS 2021) over a frozen feature network.

    The encoder of a trained network (here the SceneWorld segmenter's ``encoder1..4``, one
    feature map per resolution, the shallowest only feeding the deeper ones) is frozen; its
    maps are mixed across channels (random, fixed 1x1 convolutions) and across scales (random,
    fixed 3x3 convolutions of the upsampled deeper map, added top-down), and one small
    spectrally normalised discriminator per scale scores them: stride-2 4x4 convolutions down
    to 4x4, the minibatch standard deviation, a last 4x4 convolution. ``forward`` returns the
    per-scale logits concatenated, ``(N, scales)``.

    Only the per-scale discriminators train (``trainable_parameters``); the feature network
    stays in eval mode whatever ``train()`` is asked.
    """

    def __init__(self, encoder: nn.Module, stages: list[str], feature_channels: list[int],
                 widths: list[int] | tuple[int, ...] = (64, 128, 256),
                 resolution: int = 64, seed: int = 0) -> None:
        super().__init__()
        if len(stages) != len(feature_channels):
            raise ValueError("need one feature width per stage")
        if not 1 <= len(widths) <= len(stages):
            raise ValueError(f"need 1 to {len(stages)} mixing widths, one per scored stage")
        self.encoder = encoder.eval().requires_grad_(False)
        self.stages = list(stages)
        skipped = len(stages) - len(widths)  # the shallowest stages only feed deeper ones
        feature_channels = feature_channels[skipped:]
        generator = torch.Generator().manual_seed(seed)

        def fixed_conv(cin: int, cout: int, kernel: int) -> nn.Conv2d:
            conv = nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False)
            with torch.no_grad():  # Kaiming-uniform, drawn from our own generator
                bound = math.sqrt(6 / (cin * kernel * kernel))
                conv.weight.copy_(torch.rand(conv.weight.shape, generator=generator)
                                  * 2 * bound - bound)
            return conv.requires_grad_(False)

        self.channel_mix = nn.ModuleList(fixed_conv(c, w, 1)
                                         for c, w in zip(feature_channels, widths))
        self.scale_mix = nn.ModuleList(fixed_conv(deep, shallow, 3)
                                       for shallow, deep in zip(widths[:-1], widths[1:]))
        self.heads = nn.ModuleList()
        for i, width in enumerate(widths):
            size = resolution // 2 ** (i + skipped)
            layers, channels = [], width
            while size > 4:
                out = min(channels * 2, 256)
                layers += [_sn_conv(channels, out, 4, 1, stride=2), nn.LeakyReLU(0.2)]
                channels, size = out, size // 2
            self.heads.append(nn.ModuleDict({
                "down": nn.Sequential(*layers),
                "out": _sn_conv(channels + 1, 1, 4),
            }))

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for head in self.heads for p in head.parameters()]

    def train(self, mode: bool = True) -> ProjectedDiscriminator:
        super().train(mode)
        self.encoder.eval()
        return self

    def features(self, image: torch.Tensor) -> list[torch.Tensor]:
        maps, x = [], image
        for i, stage in enumerate(self.stages):
            if i:
                x = F.max_pool2d(x, 2)
            x = getattr(self.encoder, stage)(x)
            maps.append(x)
        maps = maps[len(maps) - len(self.channel_mix):]
        mixed = [mix(m) for mix, m in zip(self.channel_mix, maps)]
        for i in reversed(range(len(mixed) - 1)):
            deeper = F.interpolate(mixed[i + 1], scale_factor=2, mode="bilinear",
                                   align_corners=False)
            mixed[i] = mixed[i] + self.scale_mix[i](deeper)
        return mixed

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        scores = []
        for head, x in zip(self.heads, self.features(image)):
            x = minibatch_stddev(head["down"](x))
            scores.append(head["out"](x).flatten(1).mean(1))
        return torch.stack(scores, 1)


def segmenter_projected_discriminator(segmenter, resolution: int = 64,
                                      seed: int = 0) -> ProjectedDiscriminator:
    """A ``ProjectedDiscriminator`` over a ``Segmenter``'s encoder blocks."""
    stages = [f"encoder{i + 1}" for i in range(len(segmenter.channels))]
    return ProjectedDiscriminator(segmenter, stages, segmenter.channels,
                                  widths=[64, 128, 256][-(len(stages) - 1):],
                                  resolution=resolution, seed=seed)
