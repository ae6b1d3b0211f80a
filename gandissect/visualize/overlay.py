"""Show an attribution map over its image: the only place where maps get normalised."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from gandissect.errors import UserError

__all__ = ["COLORMAPS", "apply_colormap", "overlay"]

# Colour maps as evenly spaced RGB anchors in [0, 1], interpolated linearly.
COLORMAPS: dict[str, np.ndarray] = {
    # blue (negative) - white (zero) - red (positive): for signed maps
    "diverging": np.array([[0.02, 0.19, 0.38], [0.26, 0.58, 0.76], [1.0, 1.0, 1.0],
                           [0.84, 0.38, 0.30], [0.40, 0.0, 0.05]]),
    # black - red - yellow - white: for magnitudes
    "heat": np.array([[0.0, 0.0, 0.0], [0.7, 0.0, 0.0], [1.0, 0.6, 0.0], [1.0, 1.0, 0.6]]),
    # dark purple - teal - yellow (a viridis-like ramp)
    "viridis": np.array([[0.27, 0.00, 0.33], [0.23, 0.32, 0.55], [0.13, 0.57, 0.55],
                         [0.37, 0.79, 0.38], [0.99, 0.91, 0.14]]),
    "gray": np.array([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]),
}

Colormap = str | np.ndarray | Callable[[np.ndarray], np.ndarray]


def apply_colormap(values: np.ndarray, colormap: Colormap) -> np.ndarray:
    """Values in [0, 1] -> RGB floats in [0, 1] (shape ``values.shape + (3,)``).

    ``colormap``: a name in ``COLORMAPS``, a ``(K, 3)`` array of evenly spaced anchors, or a
    callable doing the mapping itself.
    """
    values = np.clip(np.nan_to_num(np.asarray(values, dtype=np.float64)), 0.0, 1.0)
    if callable(colormap):
        return np.clip(np.asarray(colormap(values), dtype=np.float64), 0.0, 1.0)
    if isinstance(colormap, str):
        if colormap not in COLORMAPS:
            raise UserError(f"unknown colormap {colormap!r}; choose from {sorted(COLORMAPS)}")
        colormap = COLORMAPS[colormap]
    anchors = np.asarray(colormap, dtype=np.float64)
    if anchors.ndim != 2 or anchors.shape[1] != 3 or anchors.shape[0] < 2:
        raise UserError("a colormap array must be (K >= 2, 3) RGB anchors")
    position = values * (anchors.shape[0] - 1)
    low = np.minimum(position.astype(int), anchors.shape[0] - 2)
    frac = (position - low)[..., None]
    return anchors[low] * (1 - frac) + anchors[low + 1] * frac


def _as_numpy(array) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        return array.detach().cpu().to(torch.float64 if array.is_floating_point() else
                                        array.dtype).numpy()
    return np.asarray(array)


def _image_rgb(image, value_range: tuple[float, float]) -> np.ndarray:
    """Any of (3, H, W), (1, 3, H, W), (H, W, 3), (H, W); uint8 or floats in ``value_range``
    -> (H, W, 3) floats in [0, 1]."""
    array = _as_numpy(image)
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3):
        array = array.transpose(1, 2, 0)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3):
        raise UserError(f"image must be (3, H, W), (H, W, 3) or (H, W), got {array.shape}")
    if array.dtype == np.uint8:
        rgb = array / 255.0
    else:
        low, high = value_range
        rgb = (array.astype(np.float64) - low) / (high - low)
    return np.clip(np.broadcast_to(rgb, (*rgb.shape[:2], 3)), 0.0, 1.0)


def _map_2d(attribution, mode: str, size: tuple[int, int]) -> np.ndarray:
    """Reduce to one (H, W) map (channels summed; absolute mode sums magnitudes), resized."""
    a = torch.as_tensor(_as_numpy(attribution), dtype=torch.float64)
    while a.dim() > 3 and a.shape[0] == 1:
        a = a[0]
    if a.dim() not in (2, 3):
        raise UserError(f"attribution must be (H, W) or (C, H, W), got {tuple(a.shape)}")
    a = torch.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)
    if mode == "absolute":
        a = a.abs()
    if a.dim() == 3:
        a = a.sum(0)
    if tuple(a.shape) != size:
        a = F.interpolate(a[None, None], size=size, mode="bilinear", align_corners=False)[0, 0]
    return a.numpy()


def overlay(image, attribution, mode: str = "signed", colormap: Colormap | None = None,
            alpha: float = 0.5, value_range: tuple[float, float] = (-1.0, 1.0),
            bar_height: int | None = None) -> np.ndarray:
    """Blend a colour-coded attribution over an image; ``(H + 1 + bar, W, 3)`` uint8 RGB.

    ``mode="signed"`` scales by the largest magnitude so 0 sits mid-scale (white in the
    default ``"diverging"`` map), positive to red, negative to blue; ``mode="absolute"``
    shows ``|attribution| / max`` on ``"heat"``. Maps of another size (a CAM at the layer's
    resolution) are upsampled bilinearly; multi-channel maps are summed over channels. An
    all-zero map is shown as zero, not divided by zero. A strip of the colour map runs under the
    image, from the lowest value (left) to the highest (right), after a one-pixel black gap.
    Float images are read in ``value_range`` (the project's [-1, 1] by default), uint8 as is.
    """
    if mode not in ("signed", "absolute"):
        raise UserError(f"mode must be 'signed' or 'absolute', got {mode!r}")
    rgb = _image_rgb(image, value_range)
    height, width = rgb.shape[:2]
    values = _map_2d(attribution, mode, (height, width))
    peak = float(np.abs(values).max())
    scaled = values / (peak if peak > 0 else 1.0)
    if mode == "signed":
        scaled = (scaled + 1) / 2
    colormap = colormap if colormap is not None else (
        "diverging" if mode == "signed" else "heat")
    blended = (1 - alpha) * rgb + alpha * apply_colormap(scaled, colormap)
    bar_height = max(3, height // 8) if bar_height is None else bar_height
    ramp = apply_colormap(np.linspace(0.0, 1.0, width), colormap)
    strip = np.broadcast_to(ramp[None], (bar_height, width, 3))
    gap = np.zeros((1, width, 3))
    picture = np.concatenate([blended, gap, strip]) if bar_height > 0 else blended
    return (np.clip(picture, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
