"""Models: the architectures, the loaders of user files and the registry of shipped models.

Every model spelling (``sceneworld``, ``torchvision:ARCH``, ``proggan:PATH``, ``stylegan2:PATH``,
``package.module:factory``, ...) resolves through ``gandissect.models.specs``; weight files are
read by ``gandissect.models.loaders.files.read_state_dict``, which never runs code from them.
``load_model`` and ``load_state_dict_file`` are kept as the short names of those two.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

__all__ = ["load_model", "load_state_dict_file"]


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """``gandissect.models.loaders.files.read_state_dict``: the tensors of a weights file,
    unwrapped, without executing code."""
    from gandissect.models.loaders.files import read_state_dict

    return read_state_dict(path)


def load_model(spec: str, weights: str | Path | None = None,
               device: str | torch.device = "cpu") -> nn.Module:
    """``gandissect.models.specs.resolve_classifier``: the classifier ``spec`` names, in eval
    mode, with ``weights`` loaded into a ``torchvision:`` or plug-in architecture."""
    from gandissect.models.specs import resolve_classifier

    return resolve_classifier(spec, weights, device)
