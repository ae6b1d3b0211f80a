"""Activation maps at the segmentation's resolution."""

from __future__ import annotations

import torch
from torch.nn import functional as F

__all__ = ["upsample"]


def _interpolation_matrix(size_in: int, size_out: int, device, dtype) -> torch.Tensor:
    """(size_out, size_in) weights of 1-D linear interpolation, ``align_corners=False``."""
    eye = torch.eye(size_in, device=device, dtype=dtype)[None]  # (1, in, in): one basis per row
    return F.interpolate(eye, size=size_out, mode="linear", align_corners=False)[0].t()


def upsample(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear upsampling of ``(B, U, h, w)`` maps to ``size`` (``align_corners=False``).

    The same weights as ``F.interpolate(..., mode="bilinear")``, applied as two small matrix
    products (rows, then columns): several times faster on a CPU for 8x8 -> 64x64.
    """
    height, width = size
    if maps.shape[-2:] == (height, width):
        return maps
    rows = _interpolation_matrix(maps.shape[-2], height, maps.device, maps.dtype)
    cols = _interpolation_matrix(maps.shape[-1], width, maps.device, maps.dtype)
    return rows @ maps @ cols.t()
