"""Models by name: ``torchvision:ARCH`` or a plug-in ``package.module:factory``.

Later work adds the shipped SceneWorld models and GAN checkpoint formats to this registry; every
spelling resolves through ``load_model``. Nothing here evaluates user strings: plug-ins are
resolved with ``importlib``, weights load with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import torch
from torch import nn

__all__ = ["load_model", "load_state_dict_file"]

_PLUGIN = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a weights file without executing code; unwrap ``{'state_dict': ...}`` and
    ``module.`` prefixes (DataParallel checkpoints)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a pickle with code, or a corrupt file
        raise ValueError(
            f"cannot read {path} as plain weights ({type(error).__name__}: {error}); "
            "only checkpoints of tensors are accepted (save with torch.save(model.state_dict()))"
        ) from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds {type(state).__name__}, not a state dict")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_model(spec: str, weights: str | Path | None = None) -> nn.Module:
    """Build the model ``spec`` names, in eval mode, with ``weights`` if given.

    ``torchvision:resnet18`` (random initial weights unless ``weights`` is given) or
    ``package.module:factory`` (a function returning an ``nn.Module``).
    """
    kind, _, name = spec.partition(":")
    if kind == "torchvision" and name:
        import torchvision

        try:
            model = torchvision.models.get_model(name, weights=None)
        except (ValueError, KeyError):
            known = ", ".join(sorted(torchvision.models.list_models())[:60])
            raise ValueError(f"unknown torchvision architecture {name!r}; known: {known}") from None
    elif _PLUGIN.match(spec):
        module_name, factory_name = spec.split(":")
        try:
            factory = getattr(importlib.import_module(module_name), factory_name)
        except (ImportError, AttributeError) as error:
            raise ValueError(f"cannot import {spec!r}: {error}") from None
        model = factory()
        if not isinstance(model, nn.Module):
            raise ValueError(f"{spec} returned {type(model).__name__}, not an nn.Module")
    else:
        raise ValueError(
            f"unknown model {spec!r}: use torchvision:ARCH or package.module:factory"
        )
    if weights is not None:
        state = load_state_dict_file(weights)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(
                f"{weights} does not fit {spec}: missing keys {missing[:5]}, "
                f"unexpected keys {unexpected[:5]}"
            )
    return model.eval()
