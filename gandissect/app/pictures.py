"""Pixels for the page: model images to uint8, enlarged for painting, painted regions tinted
for display, uploads checked and loaded.

Display only: what an edit does is decided in ``gandissect``; nothing here changes an image's
content.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from gandissect.errors import UserError
from gandissect.world.dataset import tensor_to_image

__all__ = ["enlarge", "load_upload", "pixels", "save_png", "tint_cells",
           "MIN_UPLOAD", "MAX_UPLOAD"]

MIN_UPLOAD, MAX_UPLOAD = 16, 4096  # accepted side lengths of an uploaded image, in pixels
TINTS = {"remove": np.array([230, 40, 40]), "draw": np.array([40, 200, 60])}


def pixels(image: torch.Tensor) -> np.ndarray:
    """A ``(1, 3, H, W)`` or ``(3, H, W)`` image in [-1, 1] as ``(H, W, 3)`` uint8."""
    if image.dim() == 3:
        image = image[None]
    return tensor_to_image(image)[0]


def enlarge(picture: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour enlargement by an integer ``scale`` (each pixel becomes a block)."""
    if scale == 1:
        return picture
    return np.repeat(np.repeat(picture, scale, 0), scale, 1)


def tint_cells(picture: np.ndarray, strokes: Sequence[tuple[torch.Tensor, str]]) -> np.ndarray:
    """``picture`` with each stroke's layer cells ``(h, w)`` tinted by its mode (remove: red,
    draw: green) in proportion to the cell's weight, to show where edits were made."""
    out = picture.astype(np.float64)
    height, width = picture.shape[:2]
    for cells, mode in strokes:
        weight = cells.float().numpy()
        scale_y, scale_x = height // weight.shape[0], width // weight.shape[1]
        alpha = 0.45 * np.repeat(np.repeat(weight, scale_y, 0), scale_x, 1)[..., None]
        out = out * (1 - alpha) + TINTS[mode] * alpha
    return out.round().clip(0, 255).astype(np.uint8)


def save_png(picture: np.ndarray, path: str | Path) -> Path:
    """Write ``picture`` as a PNG (lossless) and return its path."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(picture).save(path, format="PNG")
    return path


def load_upload(path: str | Path | None, size: int) -> torch.Tensor:
    """An uploaded file as a ``(3, size, size)`` image in [-1, 1] (shorter side resized, centre
    cropped); a ``UserError`` saying what is wrong for anything else."""
    from PIL import Image, UnidentifiedImageError

    from gandissect.netdissect.folder import load_image

    if not path:
        raise UserError("upload an image first (PNG or JPEG)")
    name = Path(path).name
    try:
        with Image.open(path) as image:
            width, height = image.size
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError):
        raise UserError(f"{name} is not an image that can be read; upload a PNG or JPEG "
                        "picture") from None
    if min(width, height) < MIN_UPLOAD or max(width, height) > MAX_UPLOAD:
        raise UserError(f"{name} is {width}x{height} pixels; upload an image between "
                        f"{MIN_UPLOAD} and {MAX_UPLOAD} pixels on each side")
    return load_image(path, size)
