"""Pictures for the report: top images with the unit's mask, heatmaps, data URIs.

Top images are produced again from their sample ids (the dissection stores no images) by a
*sample source*, ``samples(ids, layer) -> (images, activations)``: ``generator_samples`` for a
generator (ids -> latents -> images, the layer traced), or one for a probe set of real images
(``gandissect.netdissect``). Each shows the image with the region where the unit's upsampled
activation exceeds its threshold kept bright and outlined, the rest dimmed.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F

from gandissect.dissect.latents import latent_law, latents
from gandissect.dissect.maps import upsample
from gandissect.dissect.results import LayerDissection
from gandissect.hooks import Trace
from gandissect.torchutil import model_device
from gandissect.world.dataset import tensor_to_image

__all__ = ["data_uri", "colormap", "outline_mask", "heatmap", "top_image_strips",
           "generator_samples", "image_grid", "SampleSource"]

# ids, layer name -> ((N, 3, H, W) images in [-1, 1], (N, C, h, w) activations of that layer)
SampleSource = Callable[[list[int], str], tuple[torch.Tensor, torch.Tensor]]

# A perceptually ordered dark-blue -> teal -> yellow ramp (anchor colours, linearly blended).
_RAMP = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]],
                 dtype=np.float64)
_OUTLINE = np.array([255, 224, 0], dtype=np.uint8)
_DIM = 0.45
_GAP = 2  # pixels between images of a strip


def image_grid(images: torch.Tensor, columns: int = 8) -> np.ndarray:
    """(N, 3, H, W) images in [-1, 1] -> one (rows*H, columns*W, 3) uint8 grid."""
    n, _, h, w = images.shape
    rows = math.ceil(n / columns)
    grid = torch.full((3, rows * h, columns * w), -1.0)
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        grid[:, r * h:(r + 1) * h, c * w:(c + 1) * w] = image
    return tensor_to_image(grid[None])[0]


def data_uri(pixels: np.ndarray, kind: str = "png") -> str:
    """An ``(H, W, 3)`` uint8 image as a ``data:image/...;base64,`` URI (png or jpeg)."""
    buffer = io.BytesIO()
    image = Image.fromarray(np.ascontiguousarray(pixels))
    if kind == "jpeg":
        image.save(buffer, format="JPEG", quality=88)
    else:
        image.save(buffer, format="PNG", optimize=True)
    return f"data:image/{kind};base64,{base64.b64encode(buffer.getvalue()).decode()}"


def colormap(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] -> uint8 RGB of the same shape plus a colour axis."""
    position = np.clip(np.nan_to_num(values), 0, 1) * (len(_RAMP) - 1)
    low = np.floor(position).astype(int).clip(0, len(_RAMP) - 2)
    fraction = (position - low)[..., None]
    return (_RAMP[low] * (1 - fraction) + _RAMP[low + 1] * fraction).round().astype(np.uint8)


def heatmap(activation: torch.Tensor, size: int = 64) -> np.ndarray:
    """An ``(h, w)`` map, scaled to its own range, colour-mapped and enlarged (nearest)."""
    values = activation.float()
    span = float(values.max() - values.min())
    scaled = (values - values.min()) / span if span > 0 else torch.zeros_like(values)
    enlarged = F.interpolate(scaled[None, None], size=(size, size), mode="nearest")[0, 0]
    return colormap(enlarged.numpy())


def outline_mask(pixels: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Dim the image outside ``mask`` and draw the mask's inner boundary."""
    out = pixels.astype(np.float64)
    out[~mask] *= _DIM
    shrunk = mask.copy()
    shrunk[1:] &= mask[:-1]
    shrunk[:-1] &= mask[1:]
    shrunk[:, 1:] &= mask[:, :-1]
    shrunk[:, :-1] &= mask[:, 1:]
    out = out.round().astype(np.uint8)
    out[mask & ~shrunk] = _OUTLINE
    return out


def _to_pixels(images: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) in [-1, 1] -> (N, H, W, 3) uint8."""
    return tensor_to_image(images)


def generator_samples(generator: nn.Module, seed: int, z_dim: int) -> SampleSource:
    """The sample source of a dissected generator: sample ``i`` is drawn from
    ``latents(seed, [i], z_dim)`` in the generator's own law, as during dissection."""
    device = model_device(generator)
    law = latent_law(generator)

    def samples(ids: list[int], layer: str) -> tuple[torch.Tensor, torch.Tensor]:
        with Trace(generator, layer) as trace:
            images = generator(latents(seed, ids, z_dim, law).to(device))
        return images, trace.output

    return samples


@torch.no_grad()
def top_image_strips(samples: SampleSource, layer: LayerDissection, count: int,
                     batch: int = 32) -> dict[int, np.ndarray]:
    """Per unit, its ``count`` top images side by side, each masked by the unit's threshold.

    Each needed sample is produced once (samples shared by several units are reused).
    """
    wanted: dict[int, list[tuple[int, int]]] = {}  # sample id -> [(unit, rank)]
    for score in layer.units:
        for rank, sample in enumerate(score.top_images[:count]):
            wanted.setdefault(sample, []).append((score.unit, rank))
    thresholds = {score.unit: score.threshold for score in layer.units}
    strips: dict[int, np.ndarray] = {}
    ids = sorted(wanted)
    for start in range(0, len(ids), batch):
        chunk = ids[start:start + batch]
        images, acts = samples(chunk, layer.layer)
        pixels = _to_pixels(images)
        height, width = pixels.shape[1:3]
        for i, sample in enumerate(chunk):
            for unit, rank in wanted[sample]:
                up = upsample(acts[i:i + 1, unit:unit + 1], (height, width))[0, 0]
                mask = (up > thresholds[unit]).cpu().numpy()
                strip = strips.get(unit)
                if strip is None:
                    strip = np.full((height, count * (width + _GAP) - _GAP, 3), 255, np.uint8)
                    strips[unit] = strip
                left = rank * (width + _GAP)
                strip[:, left:left + width] = outline_mask(pixels[i], mask)
    return strips
