"""The SceneWorld scene classifier: a small ResNet for 64 px images, CAM-ready.

Layout as torchvision's ResNet (so layer names carry over): ``conv1`` (3x3, stride 2) + ``bn1`` +
``relu``, ``layer1`` .. ``layer4`` (basic residual blocks with the first conv's stride given by
``strides``), ``avgpool`` (global average pooling) and one linear ``fc``. Because the pooled
features feed a single linear layer, class activation maps apply: the CAM of class k is
``fc.weight[k] @ layer4 output``. The shipped model keeps ``layer3`` and ``layer4`` at 16x16
(strides 1, 2, 1, 1: 32, 16, 16, 16 px), as the CAM paper removes the last downsamplings of its
networks so that the maps localise (14x14 cells of 16 px at 224 px there, 4 px cells here);
the default strides 1, 2, 2, 2 end at 4x4. Output: 6 logits, class index i is scene code
i + 1.
"""

from __future__ import annotations

import torch
from torch import nn

from gandissect.errors import UserError

__all__ = ["SceneClassifier", "BasicBlock"]


class BasicBlock(nn.Module):
    """Two 3x3 convs with BatchNorm, plus a (projected when needed) identity shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class SceneClassifier(nn.Module):
    """Images in [-1, 1] (N, 3, 64, 64) -> (N, 6) scene logits."""

    def __init__(self, channels: list[int] | tuple[int, ...] = (32, 64, 96, 160),
                 blocks: int = 1, num_classes: int = 6,
                 strides: list[int] | tuple[int, ...] = (1, 2, 2, 2)) -> None:
        super().__init__()
        from gandissect.world import concepts

        if len(strides) != len(channels) or any(s not in (1, 2) for s in strides):
            raise UserError(f"strides must give 1 or 2 for each of the {len(channels)} layers "
                            f"(got {list(strides)})")
        self.channels, self.blocks = [int(c) for c in channels], int(blocks)
        self.strides = [int(s) for s in strides]
        self.scene_names = [c.name for c in concepts("scene")][:num_classes]
        self.conv1 = nn.Conv2d(3, self.channels[0], 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(self.channels[0])
        self.relu = nn.ReLU(inplace=True)
        previous = self.channels[0]
        for i, width in enumerate(self.channels):
            layer = [BasicBlock(previous, width, self.strides[i])]
            layer += [BasicBlock(width, width) for _ in range(self.blocks - 1)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*layer))
            previous = width
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(previous, num_classes)

    def config(self) -> dict:
        """The JSON config that ``gandissect.models.registry.build`` rebuilds this from."""
        return {"architecture": "scene_classifier", "channels": self.channels,
                "blocks": self.blocks, "num_classes": self.fc.out_features,
                "strides": self.strides}

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) images -> (N, D) globally pooled ``layer4`` features (fc's input)."""
        x = self.relu(self.bn1(self.conv1(images)))
        for i in range(len(self.channels)):
            x = getattr(self, f"layer{i + 1}")(x)
        return self.avgpool(x).flatten(1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) images in [-1, 1] -> (N, classes) logits; class i = scene code i + 1."""
        return self.fc(self.features(images))
