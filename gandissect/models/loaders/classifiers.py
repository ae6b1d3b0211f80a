"""torchvision classifiers by architecture name, with a user weights file.

The model is built with ``weights=None`` (nothing is downloaded) and ``num_classes`` read from
the file's output layer (``fc`` / ``classifier`` shapes), so a Places365 ResNet-18 and an
ImageNet one load alike. Each model declares its preprocessing as attributes, which
``gandissect.models.inputs.preprocess_for`` turns into a normalisation of [-1, 1] images:
``input_size`` (pixels), ``input_mean`` / ``input_std`` (on [0, 1] pixels; the Places365 models
were trained with the ImageNet values too). DenseNet files saved before torchvision 0.3
(``denselayer1.norm.1.weight`` for ``denselayer1.norm1.weight``) are renamed. A 1000-class
model's outputs are named with ImageNet-1k's classes (``class_names``).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

from gandissect.errors import UserError
from gandissect.models.loaders.files import fit_state_dict, read_state_dict

__all__ = ["INPUT_SIZE", "declare_preprocessing", "head_classes", "imagenet_class_names",
           "infer_num_classes", "rename_old_densenet_keys", "torchvision_classifier"]

INPUT_SIZE = {"inception_v3": 299}  # every other architecture: 224
_OLD_DENSENET = re.compile(r"^(.*\.denselayer\d+\.(?:norm|relu|conv))\.([12]\.\w+)$")


def _build(arch: str, **kwargs) -> nn.Module:
    import torchvision

    try:
        return torchvision.models.get_model(arch, weights=None, **kwargs)
    except (ValueError, KeyError):
        known = ", ".join(torchvision.models.list_models(module=torchvision.models))
        raise UserError(f"unknown torchvision classifier {arch!r}; known: {known}") from None


def rename_old_densenet_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``denselayer{i}.norm.1.weight`` -> ``denselayer{i}.norm1.weight`` (torchvision < 0.3)."""
    return {_OLD_DENSENET.sub(r"\1\2", key): value for key, value in state.items()}


def infer_num_classes(arch: str, state: dict[str, torch.Tensor]) -> int | None:
    """The class count the weights' output layer implies; None when they match the default.

    Builds the default architecture on the meta device (no memory, no time) and compares
    shapes: every mismatch must be the first dimension of an output layer.
    """
    with torch.device("meta"):
        default = _build(arch)
    return head_classes(default, state)


def head_classes(default: nn.Module, state: dict[str, torch.Tensor]) -> int | None:
    """The class count ``state`` implies for an architecture built with its default head
    (``default``, on any device, the meta device included); None when the shapes match.
    Every mismatch must be the first dimension of an output layer."""
    mismatched = {key: (tuple(state[key].shape), tuple(value.shape))
                  for key, value in default.state_dict().items()
                  if key in state and tuple(state[key].shape) != tuple(value.shape)}
    same_but_first = all(len(file) == len(model) > 0 and file[1:] == model[1:]
                         for file, model in mismatched.values())
    counts = {file[0] for file, _ in mismatched.values()} if same_but_first else set()
    if mismatched and len(counts) == 1:
        return counts.pop()
    return None  # no mismatch, or one fit_state_dict will report


def imagenet_class_names(num_classes: int) -> list[str] | None:
    """The ImageNet-1k class names (torchvision's, read offline) for a 1000-class model; None
    for any other class count."""
    if num_classes != 1000:
        return None
    from torchvision.models import ResNet18_Weights

    return list(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


def declare_preprocessing(model: nn.Module, arch: str) -> nn.Module:
    """Set ``input_size``, ``input_mean`` and ``input_std`` (ImageNet / Places365 values)."""
    from gandissect.models.inputs import IMAGENET_MEAN, IMAGENET_STD

    model.input_size = INPUT_SIZE.get(arch, 224)
    model.input_mean, model.input_std = IMAGENET_MEAN, IMAGENET_STD
    return model


def torchvision_classifier(arch: str, weights: str | Path | None = None,
                           device: str | torch.device = "cpu") -> nn.Module:
    """torchvision ``arch`` in eval mode, random unless ``weights`` (a state dict file; wrapped
    dicts and ``module.`` prefixes are fine) is given, with its preprocessing declared."""
    state = rename_old_densenet_keys(read_state_dict(weights)) if weights is not None else None
    num_classes = infer_num_classes(arch, state) if state is not None else None
    model = _build(arch, **({"num_classes": num_classes} if num_classes else {}))
    if state is not None:
        fit_state_dict(model, state, str(weights))
    names = imagenet_class_names(num_classes or 1000)
    if names is not None:
        model.class_names = names
    return declare_preprocessing(model, arch).to(device).eval()
