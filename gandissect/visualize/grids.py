"""Grids of small pictures: first-layer filters.

Grids of images in the models' [-1, 1] range are ``gandissect.report.images.image_grid``; this
module builds on it rather than keeping a second copy.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gandissect.errors import UserError

__all__ = ["filter_grid"]


def filter_grid(conv_weight: torch.Tensor | nn.Module, columns: int | None = None, pad: int = 1,
                zoom: int = 1) -> np.ndarray:
    """First-layer RGB filters ``(O, 3, kh, kw)`` (or the conv module) -> an ``(H, W, 3)`` uint8
    grid, filter ``i`` at row ``i // columns``, column ``i % columns`` (default columns:
    ``ceil(sqrt(O))``).

    Each filter is divided by its own largest absolute weight, so its values lie in [-1, 1]
    with 0 at mid grey (128): a colour brighter than grey is a positive weight on that channel,
    darker a negative one, and an all-zero filter is plain grey. Compare patterns within a
    filter, not brightness across filters. Each weight becomes a ``zoom x zoom`` block; filters
    are separated, and the grid framed, by ``pad`` black pixels; unused cells are black.
    """
    from gandissect.report.images import image_grid

    weight = conv_weight.weight if isinstance(conv_weight, nn.Module) else conv_weight
    weight = torch.as_tensor(weight).detach().cpu().float()
    if weight.dim() != 4 or weight.shape[1] != 3:
        raise UserError(f"filter_grid shows RGB filters (out, 3, kh, kw), got "
                        f"{tuple(weight.shape)}")
    if pad < 0 or zoom < 1:
        raise UserError("pad must be >= 0 and zoom >= 1")
    peak = weight.abs().flatten(1).amax(1)
    tiles = weight / torch.where(peak > 0, peak, torch.ones_like(peak))[:, None, None, None]
    tiles = tiles.repeat_interleave(zoom, 2).repeat_interleave(zoom, 3)
    tiles = F.pad(tiles, (pad, 0, pad, 0), value=-1.0)  # black line before each tile
    columns = columns or math.ceil(math.sqrt(len(tiles)))
    grid = image_grid(tiles, columns)
    return np.pad(grid, ((0, pad), (0, pad), (0, 0)))  # close the frame on the right and bottom
