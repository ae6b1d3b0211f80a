"""Reading a user's picture and painted mask from image files, at a generator's resolution.

    pixels, note = read_image("photo.png", 64)    # (64, 64, 3) uint8; note says if resized
    mask = read_mask("mask.png", 64)              # (64, 64) float in [0, 1]: white edits
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from gandissect.errors import UserError

__all__ = ["read_image", "read_mask"]


def _open(path: str | Path, what: str, mode: str, hint: str) -> np.ndarray:
    from PIL import Image

    if not Path(path).is_file():
        raise UserError(f"the {what} {path} does not exist")
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert(mode))
    except OSError as error:  # not an image, or a damaged one
        raise UserError(f"cannot read the {what} {path} ({error}); give {hint}") from None


def read_image(path: str | Path, size: int) -> tuple[np.ndarray, str | None]:
    """The picture in ``path`` as ``(size, size, 3)`` uint8, read as every command reads images
    (``netdissect.folder.load_image``: the shorter side resized, the centre cropped; a picture
    of that size keeps its pixels), and a note saying so when its size differs, else None."""
    from PIL import Image

    from gandissect.netdissect.folder import load_image

    if not Path(path).is_file():
        raise UserError(f"the image {path} does not exist")
    image = load_image(path, size)  # one clear line for what cannot be read
    with Image.open(path) as opened:
        width, height = opened.size
    pixels = ((image + 1) * 127.5).round().clamp(0, 255).byte().permute(1, 2, 0).numpy()
    if (width, height) == (size, size):
        return pixels, None
    return pixels, (f"resized {path} from {width}x{height} to the generator's {size}x{size}: "
                    "shorter side scaled, centre cropped")


def read_mask(path: str | Path, size: int, resize: bool = False) -> torch.Tensor:
    """The ``(size, size)`` mask in [0, 1] of a grayscale image: white edits, black keeps.

    With ``resize``, a square mask whose side is a multiple or a whole fraction of ``size`` is
    resized to it (a larger one by the maximum over each block of pixels, a smaller one by
    repeating its pixels); any other size is refused in one line.
    """
    gray = _open(path, "mask", "L", "a grayscale PNG")
    if gray.shape != (size, size):
        side = gray.shape[0]
        if not (resize and gray.shape[0] == gray.shape[1]
                and (side % size == 0 or size % side == 0)):
            multiple = " or a multiple of it" if resize else ""
            raise UserError(f"the mask {path} is {gray.shape[1]}x{gray.shape[0]}; paint it at "
                            f"the generator's {size}x{size}{multiple}")
        if side > size:  # every painted pixel counts, as when pooled to a layer's cells
            k = side // size
            gray = gray.reshape(size, k, size, k).max(axis=(1, 3))
        else:
            gray = gray.repeat(size // side, 0).repeat(size // side, 1)
    if not gray.any():
        raise UserError(f"the mask {path} is all black, so it edits nothing; paint the region "
                        "to edit in white")
    return torch.from_numpy(gray.astype(np.float32) / 255)
