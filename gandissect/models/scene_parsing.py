"""CSAIL's scene-parsing networks, with the module names of their published checkpoints.

Encoders (``forward(x) -> list of feature maps``, finest first):

    DeepStemResNet   ResNet-18/50/101 whose stem is three 3x3 convolutions (``conv1``..``conv3``,
                     64, 64, 128 channels); ``dilated=True`` turns the strides of layer3 and
                     layer4 into dilations (output stride 8, CSAIL's ``resnet50dilated``)
    MobileNetV2      the ``features`` of MobileNetV2 without its last 1x1 convolution, dilated
                     the same way (``mobilenetv2dilated``)

Decoders (``forward(features) -> logits`` at the resolution of their finest input):

    PyramidPooling   ``ppm_deepsup``: pooling at 1, 2, 3 and 6 cells, then ``conv_last``
    OneConv          ``c1_deepsup``: one 3x3 convolution, then ``conv_last``
    UPerNet          ``upernet``: pyramid pooling on the top map, a feature pyramid, fusion
    UnifiedUPerNet   the UPerNet of Unified Perceptual Parsing (``unifiedparsing``): object and
                     part heads on the fused pyramid, a material head on its finest level, a
                     scene head on the pooled top; its pyramid pooling is precise RoI pooling
                     (``precise_pool``), the exact average of the bilinearly interpolated map

Every width is read from a checkpoint's shapes (``from_state``), so the published files and
smaller ones with the same names and layout build alike. Only inference is computed; the
deep-supervision layers, used in training only, exist so that the files load.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["Bottleneck", "DeepStemResNet", "MobileNetV2", "OneConv", "POOL_SCALES",
           "PyramidPooling", "UPerNet", "UnifiedUPerNet", "dilate", "precise_pool"]

POOL_SCALES = (1, 2, 3, 6)  # cells per side of the pyramid pooling
State = Mapping[str, torch.Tensor]


def _width(state: State, key: str, dim: int = 0) -> int:
    return int(state[key].shape[dim])


def _count(state: State, prefix: str) -> int:
    """How many numbered children ``prefix.0``, ``prefix.1``, ... the state holds."""
    found = {key[len(prefix) + 1:].split(".")[0] for key in state if key.startswith(prefix + ".")}
    return len([index for index in found if index.isdigit()])


def conv_bn_relu(c_in: int, c_out: int, kernel: int = 3, stride: int = 1) -> nn.Sequential:
    """Convolution (no bias), BatchNorm, ReLU: the ``conv3x3_bn_relu`` unit of the decoders."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


def dilate(module: nn.Module, rate: int) -> None:
    """Trade strides for dilation in ``module``, as CSAIL's dilated encoders do: a convolution
    of stride 2 gets stride 1 (and, if 3x3, dilation ``rate // 2``); every other 3x3
    convolution gets dilation ``rate``. Paddings follow the dilations, so sizes are kept."""
    for conv in module.modules():
        if not isinstance(conv, nn.Conv2d):
            continue
        three = conv.kernel_size == (3, 3)
        if conv.stride == (2, 2):
            conv.stride = (1, 1)
            if three:
                conv.dilation = conv.padding = (rate // 2, rate // 2)
        elif three:
            conv.dilation = conv.padding = (rate, rate)


# ------------------------------------------------------------------------------- encoders
class BasicBlock(nn.Module):
    """Two 3x3 convolutions and a shortcut (ResNet-18)."""

    def __init__(self, c_in: int, planes: int, stride: int, shortcut: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(c_in, planes, stride) if shortcut else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class Bottleneck(nn.Module):
    """1x1, 3x3 (strided), 1x1 convolutions and a shortcut (ResNet-50 / 101)."""

    def __init__(self, c_in: int, planes: int, c_out: int, stride: int, shortcut: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, c_out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(c_in, c_out, stride) if shortcut else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


def _shortcut(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))


class DeepStemResNet(nn.Module):
    """ResNet with a three-convolution stem; ``forward`` returns layer1..layer4's outputs
    (strides 4, 8, 16, 32, or 4, 8, 8, 8 when ``dilated``).

    Args:
        stem: the widths of ``conv1``, ``conv2``, ``conv3``.
        layers: per layer, ``(blocks, planes, out_channels, shortcut_first)``.
        bottleneck: Bottleneck blocks (ResNet-50/101) or basic ones (ResNet-18).
        dilated: output stride 8 (``resnet50dilated``) instead of 32.
    """

    def __init__(self, stem: tuple[int, int, int], layers: list[tuple[int, int, int, bool]],
                 bottleneck: bool, dilated: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, stem[0], 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem[0])
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(stem[0], stem[1], 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(stem[1])
        self.relu2 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(stem[1], stem[2], 3, 1, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(stem[2])
        self.relu3 = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        c_in = stem[2]
        for index, (blocks, planes, c_out, shortcut) in enumerate(layers):
            stride = 1 if index == 0 else 2
            chain = []
            for block in range(blocks):
                first = block == 0
                chain.append(Bottleneck(c_in, planes, c_out, stride if first else 1,
                                        shortcut and first) if bottleneck else
                             BasicBlock(c_in, planes, stride if first else 1, shortcut and first))
                c_in = c_out
            self.add_module(f"layer{index + 1}", nn.Sequential(*chain))
        if dilated:
            dilate(self.layer3, 2)
            dilate(self.layer4, 4)

    @classmethod
    def from_state(cls, state: State, dilated: bool = False) -> DeepStemResNet:
        """The network whose widths and depths ``state`` (an encoder checkpoint) holds."""
        stem = tuple(_width(state, f"conv{i}.weight") for i in (1, 2, 3))
        bottleneck = "layer1.0.conv3.weight" in state
        last = "conv3" if bottleneck else "conv2"
        layers = [(_count(state, f"layer{i}"), _width(state, f"layer{i}.0.conv1.weight"),
                   _width(state, f"layer{i}.0.{last}.weight"),
                   f"layer{i}.0.downsample.0.weight" in state) for i in (1, 2, 3, 4)]
        return cls(stem, layers, bottleneck, dilated)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.relu1(self.bn1(self.conv1(x)))
        x = self.relu2(self.bn2(self.conv2(x)))
        x = self.maxpool(self.relu3(self.bn3(self.conv3(x))))
        features = []
        for index in (1, 2, 3, 4):
            x = getattr(self, f"layer{index}")(x)
            features.append(x)
        return features


class InvertedResidual(nn.Module):
    """MobileNetV2's block: 1x1 expansion (absent when its ratio is 1), 3x3 depthwise, 1x1
    projection, BatchNorm after each, ReLU6 after the first two; a residual when the stride
    is 1 and the widths match."""

    def __init__(self, c_in: int, hidden: int, c_out: int, stride: int, expands: bool) -> None:
        super().__init__()
        self.residual = stride == 1 and c_in == c_out
        layers: list[nn.Module] = []
        if expands:
            layers += [nn.Conv2d(c_in, hidden, 1, bias=False), nn.BatchNorm2d(hidden),
                       nn.ReLU6(inplace=True)]
        layers += [nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
                   nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True),
                   nn.Conv2d(hidden, c_out, 1, bias=False), nn.BatchNorm2d(c_out)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.residual else self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2's ``features[0:18]`` (stem and 17 blocks, strides as published); dilated,
    blocks 7-13 and 14-17 trade their strides for dilation 2 and 4 (output stride 8).
    ``forward`` returns the outputs of blocks 2, 4, 7 and 14 and of the last one."""

    STRIDES = {1: 1, 2: 2, 4: 2, 7: 2, 14: 2}  # block -> stride (others 1)
    TAPS = (2, 4, 7, 14)
    BLOCKS = 17

    def __init__(self, stem: int, blocks: list[tuple[int, int, bool]],
                 dilated: bool = True) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Sequential(nn.Conv2d(3, stem, 3, 2, 1, bias=False),
                                                 nn.BatchNorm2d(stem), nn.ReLU6(inplace=True))]
        c_in = stem
        for index, (hidden, c_out, expands) in enumerate(blocks, start=1):
            layers.append(InvertedResidual(c_in, hidden, c_out, self.STRIDES.get(index, 1),
                                           expands))
            c_in = c_out
        self.features = nn.Sequential(*layers)
        if dilated:
            for index in range(7, 14):
                dilate(self.features[index], 2)
            for index in range(14, len(self.features)):
                dilate(self.features[index], 4)

    @classmethod
    def from_state(cls, state: State, dilated: bool = True) -> MobileNetV2:
        """The network whose widths ``state`` (an encoder checkpoint) holds."""
        count = _count(state, "features")
        if count != cls.BLOCKS + 1:
            raise KeyError(f"features.{cls.BLOCKS}")  # the published layout has 18 features
        blocks = []
        for index in range(1, count):
            expands = f"features.{index}.conv.6.weight" in state
            hidden = _width(state, f"features.{index}.conv.0.weight")
            blocks.append((hidden, _width(state, f"features.{index}.conv."
                                                 f"{6 if expands else 3}.weight"), expands))
        return cls(_width(state, "features.0.0.weight"), blocks, dilated)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in self.TAPS:
                features.append(x)
        return [*features, x]


# ------------------------------------------------------------------------------- decoders
def _upsample(x: torch.Tensor, size) -> torch.Tensor:
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


def _hat_integral(t: torch.Tensor) -> torch.Tensor:
    """The integral of the hat function max(0, 1 - |u|) from -infinity to ``t``."""
    t = t.clamp(-1, 1)
    return torch.where(t < 0, (1 + t) ** 2 / 2, 1 - (1 - t) ** 2 / 2)


def _bin_weights(length: int, bins: int, like: torch.Tensor) -> torch.Tensor:
    """``(bins, length)``: the mean over bin ``p`` (of ``bins`` equal ones covering
    [0, length]) of the hat function centred on sample ``i`` (zero beyond the samples)."""
    edges = torch.arange(bins + 1, dtype=like.dtype, device=like.device) * (length / bins)
    samples = torch.arange(length, dtype=like.dtype, device=like.device)
    area = _hat_integral(edges[1:, None] - samples) - _hat_integral(edges[:-1, None] - samples)
    return area / (length / bins)


def precise_pool(x: torch.Tensor, cells: int) -> torch.Tensor:
    """Precise RoI pooling of the whole map into ``cells x cells`` bins: the exact mean of the
    bilinear interpolation of ``x`` (samples at integer positions, zero outside) over each
    bin of the box [0, W] x [0, H]. Separable, so two small matrix products."""
    rows = _bin_weights(x.shape[-2], cells, x)
    columns = _bin_weights(x.shape[-1], cells, x)
    return torch.einsum("pi,ncij,qj->ncpq", rows, x, columns)


class PyramidPooling(nn.Module):
    """``ppm_deepsup``: the top map, concatenated with its averages over 1, 2, 3 and 6 cells
    (each through 1x1 conv + BN + ReLU, upsampled back), then 3x3 conv + BN + ReLU, dropout
    and the 1x1 classifier ``conv_last.4``."""

    def __init__(self, c_in: int, pooled: int, width: int, classes: int,
                 deep: tuple[int, int] | None) -> None:
        super().__init__()
        self.classes = classes
        self.ppm = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(scale), nn.Conv2d(c_in, pooled, 1, bias=False),
                          nn.BatchNorm2d(pooled), nn.ReLU(inplace=True))
            for scale in POOL_SCALES)
        if deep is not None:
            self.cbr_deepsup = conv_bn_relu(deep[0], deep[1])
        self.conv_last = nn.Sequential(
            nn.Conv2d(c_in + len(POOL_SCALES) * pooled, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width), nn.ReLU(inplace=True), nn.Dropout2d(0.1),
            nn.Conv2d(width, classes, 1))
        if deep is not None:
            self.conv_last_deepsup = nn.Conv2d(deep[1], classes, 1)
            self.dropout_deepsup = nn.Dropout2d(0.1)

    @classmethod
    def from_state(cls, state: State) -> PyramidPooling:
        """The decoder whose widths and classes ``state`` (a decoder checkpoint) holds."""
        deep = ((_width(state, "cbr_deepsup.0.weight", 1), _width(state, "cbr_deepsup.0.weight"))
                if "cbr_deepsup.0.weight" in state else None)
        return cls(_width(state, "ppm.0.1.weight", 1), _width(state, "ppm.0.1.weight"),
                   _width(state, "conv_last.0.weight"), _width(state, "conv_last.4.weight"), deep)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        top = features[-1]
        pooled = [top] + [_upsample(stage(top), top.shape[2:]) for stage in self.ppm]
        return self.conv_last(torch.cat(pooled, 1))


class OneConv(nn.Module):
    """``c1_deepsup``: 3x3 conv + BN + ReLU on the top map and the 1x1 classifier
    ``conv_last``."""

    def __init__(self, c_in: int, width: int, classes: int,
                 deep: tuple[int, int] | None) -> None:
        super().__init__()
        self.classes = classes
        self.cbr = conv_bn_relu(c_in, width)
        if deep is not None:
            self.cbr_deepsup = conv_bn_relu(deep[0], deep[1])
        self.conv_last = nn.Conv2d(width, classes, 1)
        if deep is not None:
            self.conv_last_deepsup = nn.Conv2d(deep[1], classes, 1)

    @classmethod
    def from_state(cls, state: State) -> OneConv:
        """The decoder whose widths and classes ``state`` (a decoder checkpoint) holds."""
        deep = ((_width(state, "cbr_deepsup.0.weight", 1), _width(state, "cbr_deepsup.0.weight"))
                if "cbr_deepsup.0.weight" in state else None)
        return cls(_width(state, "cbr.0.weight", 1), _width(state, "cbr.0.weight"),
                   _width(state, "conv_last.weight"), deep)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.conv_last(self.cbr(features[-1]))


class UPerNet(nn.Module):
    """``upernet``: pyramid pooling of the top map (``ppm_conv``, ``ppm_last_conv``), a
    top-down feature pyramid (``fpn_in`` laterals, ``fpn_out``), its levels upsampled to the
    finest and concatenated, then ``conv_last`` (3x3 conv + BN + ReLU and the classifier).

    ``pool`` averages the top map over ``n x n`` cells: adaptive average pooling
    (semantic-segmentation-pytorch) or ``precise_pool`` (Unified Perceptual Parsing).
    """

    def __init__(self, c_in: int, pooled: int, width: int, laterals: list[int],
                 classes: int | None, precise: bool = False) -> None:
        super().__init__()
        self.precise, self.classes = precise, classes
        self.ppm_conv = nn.ModuleList(conv_bn_relu(c_in, pooled, 1) for _ in POOL_SCALES)
        self.ppm_last_conv = conv_bn_relu(c_in + len(POOL_SCALES) * pooled, width)
        self.fpn_in = nn.ModuleList(conv_bn_relu(c, width, 1) for c in laterals)
        self.fpn_out = nn.ModuleList(nn.Sequential(conv_bn_relu(width, width)) for _ in laterals)
        if classes is not None:
            self.conv_last = nn.Sequential(conv_bn_relu((len(laterals) + 1) * width, width),
                                           nn.Conv2d(width, classes, 1))

    @classmethod
    def _widths(cls, state: State) -> tuple[int, int, int, list[int]]:
        laterals = [_width(state, f"fpn_in.{i}.0.weight", 1)
                    for i in range(_count(state, "fpn_in"))]
        return (_width(state, "ppm_conv.0.0.weight", 1), _width(state, "ppm_conv.0.0.weight"),
                _width(state, "ppm_last_conv.0.weight"), laterals)

    @classmethod
    def from_state(cls, state: State) -> UPerNet:
        """The decoder whose widths and classes ``state`` (a decoder checkpoint) holds."""
        return cls(*cls._widths(state), _width(state, "conv_last.1.weight"))

    def _pool(self, x: torch.Tensor, cells: int) -> torch.Tensor:
        return precise_pool(x, cells) if self.precise else F.adaptive_avg_pool2d(x, cells)

    def pyramid(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        """The pyramid's levels, finest first; the coarsest is the pooled top map."""
        top = features[-1]
        pooled = [top] + [conv(_upsample(self._pool(top, cells), top.shape[2:]))
                          for cells, conv in zip(POOL_SCALES, self.ppm_conv)]
        f = self.ppm_last_conv(torch.cat(pooled, 1))
        levels = [f]
        for index in reversed(range(len(features) - 1)):
            lateral = self.fpn_in[index](features[index])
            f = lateral + _upsample(f, lateral.shape[2:])
            levels.append(self.fpn_out[index](f))
        return levels[::-1]

    @staticmethod
    def fuse(levels: list[torch.Tensor]) -> torch.Tensor:
        """Every level upsampled to the finest one's size, concatenated."""
        size = levels[0].shape[2:]
        return torch.cat([levels[0]] + [_upsample(level, size) for level in levels[1:]], 1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.conv_last(self.fuse(self.pyramid(features)))


class UnifiedUPerNet(UPerNet):
    """The Unified Perceptual Parsing decoder: ``conv_fusion`` of the pyramid feeds
    ``object_head`` and ``part_head`` (all objects' parts side by side), the finest level
    feeds ``material_head``, the pooled top feeds ``scene_head`` (global average). Pyramid
    pooling is precise RoI pooling. ``forward`` returns object, part and material logits."""

    def __init__(self, c_in: int, pooled: int, width: int, laterals: list[int],
                 heads: dict[str, int]) -> None:
        super().__init__(c_in, pooled, width, laterals, None, precise=True)
        self.heads = dict(heads)
        self.conv_fusion = conv_bn_relu((len(laterals) + 1) * width, width)
        self.scene_head = nn.Sequential(conv_bn_relu(width, width), nn.AdaptiveAvgPool2d(1),
                                        nn.Conv2d(width, heads["scene"], 1))
        for name in ("object", "part", "material"):
            self.add_module(f"{name}_head", nn.Sequential(conv_bn_relu(width, width),
                                                          nn.Conv2d(width, heads[name], 1)))

    @classmethod
    def from_state(cls, state: State) -> UnifiedUPerNet:
        """The decoder whose widths and head sizes ``state`` (a decoder checkpoint) holds."""
        heads = {"scene": _width(state, "scene_head.2.weight")}
        heads.update({name: _width(state, f"{name}_head.1.weight")
                      for name in ("object", "part", "material")})
        return cls(*cls._widths(state), heads)

    def forward(self, features: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        levels = self.pyramid(features)
        fused = self.conv_fusion(self.fuse(levels))
        return {"object": self.object_head(fused), "part": self.part_head(fused),
                "material": self.material_head(levels[0])}
