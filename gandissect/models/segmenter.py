"""The SceneWorld segmenter: one small U-Net, one 1x1-conv head per learned pixel category.

Learned categories: ``object`` (none + 12 objects), ``part`` (none + window, door, roof) and
``material`` (none + 6 materials). ``color`` is not learned: ``segment`` computes it from the
pixel values with the world's own rule (``gandissect.world.colors.color_labels``), so colour
labels are exact for any image, generated or rendered.

Layout (state-dict names): ``encoder{i}`` blocks at 64, 32, 16, 8 px (two 3x3 conv +
BatchNorm + ReLU each, 2x2 max pooling between them), ``decoder{i}`` blocks that upsample
(bilinear), concatenate the encoder's skip features of the same resolution and apply two convs,
down to full resolution, then ``heads.{category}``.
Images are float (N, 3, H, W) in [-1, 1] of any size: a side that the pooling does not divide
(8 for the four shipped levels) is padded by repeating the border pixels, and the labels are
cropped back to the image.

``probabilities`` (and ``log_probabilities``) give the learned categories' per-pixel
probabilities, differentiable in the images, as causal learning needs them.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["Segmenter", "LEARNED_CATEGORIES"]

LEARNED_CATEGORIES = ("object", "part", "material")


def _concept_names(category: str) -> list[str]:
    from gandissect.world import concepts

    return ["none"] + [c.name for c in concepts(category)]


class ConvBlock(nn.Sequential):
    """Two 3x3 convolutions, each followed by BatchNorm and ReLU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True),
        )


class Segmenter(nn.Module):
    """Images in [-1, 1] -> per-category label logits at input resolution.

    ``concepts[category][code]`` names a label code (code 0 is ``"none"``); ``categories`` lists
    the categories ``segment`` returns (the learned ones and ``color``).
    """

    def __init__(self, channels: list[int] | tuple[int, ...] = (24, 48, 96, 160)) -> None:
        super().__init__()
        self.channels = [int(c) for c in channels]
        self.concepts = {c: _concept_names(c) for c in (*LEARNED_CATEGORIES, "color")}
        self.categories = [*LEARNED_CATEGORIES, "color"]
        previous = 3
        for i, width in enumerate(self.channels):
            self.add_module(f"encoder{i + 1}", ConvBlock(previous, width))
            previous = width
        for i in reversed(range(len(self.channels) - 1)):
            self.add_module(f"decoder{i + 1}", ConvBlock(previous + self.channels[i],
                                                         self.channels[i]))
            previous = self.channels[i]
        self.heads = nn.ModuleDict({
            category: nn.Conv2d(previous, len(self.concepts[category]), 1)
            for category in LEARNED_CATEGORIES
        })

    def config(self) -> dict:
        """The JSON config that ``gandissect.models.registry.build`` rebuilds this from."""
        return {"architecture": "segmenter", "channels": self.channels}

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """(N, 3, H, W) images in [-1, 1] -> {category: (N, classes, H, W) logits}."""
        height, width = images.shape[-2:]
        step = 2 ** (len(self.channels) - 1)
        pad_h, pad_w = -height % step, -width % step
        if pad_h or pad_w:
            padded = F.pad(images, (0, pad_w, 0, pad_h), mode="replicate")
            return {c: logits[..., :height, :width] for c, logits in self(padded).items()}
        skips = []
        x = images
        for i in range(len(self.channels)):
            if i:
                x = F.max_pool2d(x, 2)
            x = getattr(self, f"encoder{i + 1}")(x)
            skips.append(x)
        for i in reversed(range(len(self.channels) - 1)):
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
            x = getattr(self, f"decoder{i + 1}")(torch.cat([x, skips[i]], 1))
        return {category: head(x) for category, head in self.heads.items()}

    def probabilities(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """{learned category: (N, codes, H, W) per-pixel probabilities}, differentiable."""
        return {category: F.softmax(logits, 1) for category, logits in self(images).items()}

    def log_probabilities(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Their logarithms (``log_softmax``: exact where the probabilities underflow)."""
        return {category: F.log_softmax(logits, 1) for category, logits in self(images).items()}

    @torch.no_grad()
    def segment(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """(N, 3, H, W) images in [-1, 1] -> {category: (N, H, W) long label codes}.

        object, part and material are the argmax of the logits; color is computed from the
        pixels (images are clamped to [-1, 1] and rounded to uint8 first).
        """
        from gandissect.world.colors import color_labels
        from gandissect.world.dataset import tensor_to_image

        labels = {c: logits.argmax(1) for c, logits in self(images).items()}
        pixels = tensor_to_image(images)
        labels["color"] = torch.from_numpy(color_labels(pixels)).long().to(images.device)
        return labels
