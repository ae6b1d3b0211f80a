"""Real images in the Paint tab: an upload, or a rendered SceneWorld scene, inverted into the
generator (``gandissect.invert``) and then painted with the same brushes.

A stroke on an inverted image edits the inverted features at the painting layer
(``gandissect.invert.edit``: Remove takes back in its cells what inversion added beyond the
generator's own features, then ablates its units; Draw writes its units); the result is blended
into the image over the union of the painted cells, so every pixel outside them stays exactly
the image's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gandissect.app.messages import whole_number
from gandissect.app.pictures import load_upload, pixels
from gandissect.app.scenes import MAX_SEED
from gandissect.app.session import PaintStroke
from gandissect.app.workspace import Workspace
from gandissect.errors import UserError
from gandissect.invert import Inversion, edit, invert

__all__ = ["WORLD_SEED", "edited_picture", "invert_picture", "upload_picture",
           "world_picture", "inversion_lines"]

# The SceneWorld world the "Rendered SceneWorld scene" number picks from: held out, as no model
# was trained on it (generator 101, segmenter 102, classifier 103, encoder 104) and inversion
# was tuned on world 1000 only.
WORLD_SEED = 1001

Progress = Callable[[int, int, str], None]


def upload_picture(upload: str | Path | None, size: int) -> tuple[np.ndarray, str]:
    """An uploaded file as the ``(size, size, 3)`` uint8 picture to invert (shorter side
    resized, centre cropped; a picture of that size keeps its pixels) and its name for the
    status, saying when it was resized; a ``UserError`` for a missing or unreadable file."""
    from PIL import Image

    picture = pixels(load_upload(upload, size))  # checks the file, in the user's words
    with Image.open(upload) as image:
        width, height = image.size
    name = f"Uploaded image {Path(upload).name}"
    if (width, height) != (size, size):
        name += (f" (resized from {width}x{height} to the generator's {size}x{size}: shorter "
                 f"side scaled, centre cropped)")
    return picture, name


def world_picture(index: Any, size: int) -> tuple[np.ndarray, str]:
    """Scene ``index`` of SceneWorld world ``WORLD_SEED`` rendered at ``size`` pixels, and its
    name for the status."""
    from gandissect.world import render

    index = whole_number(index, "the SceneWorld scene number", 0, MAX_SEED)
    return render(WORLD_SEED, index, size).image, f"SceneWorld scene {index} (world {WORLD_SEED})"


def _encoder(ws: Workspace) -> torch.nn.Module | None:
    """The shipped generator's encoder where it is installed; None (optimisation from several
    starts) for any other generator."""
    from gandissect.models.registry import load_encoder, shipped_path

    if ws.config.generator != "sceneworld" or not shipped_path("encoder").is_file():
        return None
    return load_encoder("sceneworld", ws.config.device)


def invert_picture(ws: Workspace, picture: np.ndarray,
                   progress: Progress | None = None) -> Inversion:
    """Invert a ``(H, W, 3)`` uint8 picture at the generator's resolution into the generator,
    at the painting layer (the steps ``ws.config.invert_steps`` names, or the library's)."""
    scenes = ws.scenes
    if picture.shape != (scenes.resolution, scenes.resolution, 3):
        raise UserError(f"the picture is {picture.shape[1]}x{picture.shape[0]}; the generator "
                        f"draws {scenes.resolution}x{scenes.resolution}")
    with scenes.lock:  # inversion traces the shared generator
        return invert(scenes.generator, picture, layer=scenes.layer, encoder=_encoder(ws),
                      progress=progress, steps=ws.config.invert_steps)


def edited_picture(ws: Workspace, inversion: Inversion,
                   strokes: Sequence[PaintStroke]) -> np.ndarray:
    """The inverted image with ``strokes`` applied, ``(H, W, 3)`` uint8: the edited
    reconstruction inside the union of the painted cells, the image's own pixels elsewhere
    (``gandissect.invert.edit``: a Remove stroke also takes back there what inversion added
    beyond the generator's own features)."""
    scenes = ws.scenes
    with scenes.lock:
        edited = edit(inversion, [s.stroke() for s in strokes], scenes.insert_values)
    return pixels(edited.cpu())


def inversion_lines(inversion: Inversion) -> list[str]:
    """What the status says of an inversion: its reconstruction's PSNR and its time."""
    return [f"Inverted into the generator in {inversion.seconds:.1f} s: reconstruction PSNR "
            f"{inversion.psnr:.1f} dB. Strokes edit the reconstruction inside the painted cells; "
            f"every other pixel stays the image's."]
