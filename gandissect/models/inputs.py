"""What a classifier expects as input: probe images come in [-1, 1] and are mapped to it.

Preprocessing is a function of the image batch: ``None`` keeps [-1, 1] (the SceneWorld
models' range); a model may declare ``input_range = (low, high)`` or ImageNet-style
``input_mean`` / ``input_std`` (on [0, 1] pixels) as attributes; torchvision classifiers get
ImageNet normalisation.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "Preprocess", "normalize", "rescale",
           "preprocess_for", "preprocess_inside"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Preprocess = Callable[[torch.Tensor], torch.Tensor]


def rescale(low: float, high: float) -> Preprocess:
    """Map images from [-1, 1] linearly onto [low, high]."""
    def apply(images: torch.Tensor) -> torch.Tensor:
        return low + (images + 1) * ((high - low) / 2)
    return apply


def normalize(mean: tuple[float, ...], std: tuple[float, ...]) -> Preprocess:
    """Images from [-1, 1] to [0, 1], then ``(x - mean) / std`` per channel."""
    def apply(images: torch.Tensor) -> torch.Tensor:
        m = torch.as_tensor(mean, dtype=images.dtype, device=images.device)[:, None, None]
        s = torch.as_tensor(std, dtype=images.dtype, device=images.device)[:, None, None]
        return ((images + 1) / 2 - m) / s
    return apply


def preprocess_for(model: nn.Module, spec: str | None = None) -> Preprocess | None:
    """The model's declared input mapping (see the module docstring); None for [-1, 1]."""
    if getattr(model, "input_range", None) is not None:
        low, high = model.input_range
        return rescale(float(low), float(high))
    if getattr(model, "input_mean", None) is not None:
        return normalize(tuple(model.input_mean), tuple(model.input_std))
    if spec is not None and spec.startswith("torchvision:"):
        return normalize(IMAGENET_MEAN, IMAGENET_STD)
    return None


def preprocess_inside(model: nn.Module, preprocess: Preprocess | None) -> nn.Module:
    """``model`` taking [-1, 1] images: ``preprocess`` runs as its first step (a forward
    pre-hook), so that gradients and attributions stay with respect to the images themselves.
    None leaves the model as it is."""
    if preprocess is not None:
        model.register_forward_pre_hook(lambda _, inputs: (preprocess(inputs[0]), *inputs[1:]))
    return model
