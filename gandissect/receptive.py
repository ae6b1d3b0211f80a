"""Where a convolutional layer's cells look in the input, and upsampling that respects it.

Plain bilinear upsampling (``align_corners=False``) puts the centre of cell ``i`` of an
``h``-cell map at image row ``(i + 0.5) * H / h - 0.5``. That is not where a ResNet's cell
looks: "same"-padded stride-2 convolutions centre cell ``i`` on input row ``stride * i``, half
a cell higher and further left, and near the borders the receptive field is clipped by the
image, which pulls the effective centre inwards. Network Dissection's original code aligned
maps to receptive fields for this reason; its Lite version and most CAM code do not, and a
CAM peak then lands half a cell below and right of the object.

``cell_centres`` measures each row's and column's effective centre as the centroid of the
input-gradient magnitude of that cell (summed over channels, averaged over a few fixed random
images), so it needs no knowledge of the architecture. ``aligned_upsample`` then places each
cell's value at its measured centre and interpolates bilinearly between centres (holding the
end values beyond the outermost centres).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from gandissect.errors import UserError
from gandissect.hooks import Trace
from gandissect.spatial import first_tensor, spatial_view
from gandissect.torchutil import eval_mode, model_device

__all__ = ["cell_centres", "aligned_upsample"]


def _centroid(weights: torch.Tensor, axis: int) -> float:
    position = torch.arange(weights.shape[axis], dtype=weights.dtype)
    position = position.view(-1, 1) if axis == 0 else position.view(1, -1)
    return float((weights * position).sum() / weights.sum().clamp_min(1e-30))


def cell_centres(model: nn.Module, layer: str, size: tuple[int, int] | int = 64,
                 samples: int = 8, seed: int = 0, low: float = -1.0,
                 high: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(rows, columns)``: the image row of each cell row's effective centre (measured at the
    middle column) and the image column of each cell column's (at the middle row), float64.

    Inputs are ``samples`` uniform random images in ``[low, high]`` drawn from ``seed``; the
    model's mode and parameters' ``requires_grad`` are left as they were.
    """
    height, width = (size, size) if isinstance(size, int) else size
    device = model_device(model)
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(samples, 3, height, width, generator=generator) * (high - low) + low
    images = images.to(device).requires_grad_(True)
    with eval_mode(model):
        with Trace(model, layer, detach=False, clone=False, view=first_tensor) as trace:
            model(images)
        maps = spatial_view(model, layer, trace.output, (height, width))  # tokens: the grid
        h, w = maps.shape[-2:]
        centres = []
        for axis, count, other in ((0, h, w // 2), (1, w, h // 2)):
            found = []
            for i in range(count):
                cell = maps[:, :, i, other] if axis == 0 else maps[:, :, other, i]
                (grad,) = torch.autograd.grad(cell.sum(), images, retain_graph=True)
                found.append(_centroid(grad.abs().sum((0, 1)).double().cpu(), axis))
            centres.append(torch.tensor(found, dtype=torch.float64))
    return centres[0], centres[1]


def _cell_coordinates(centres: torch.Tensor, pixels: int) -> torch.Tensor:
    """For each pixel index, its fractional cell index (piecewise linear between centres)."""
    order = np.argsort(centres.numpy(), kind="stable")
    coords = np.interp(np.arange(pixels, dtype=np.float64), centres.numpy()[order],
                       order.astype(np.float64))
    return torch.from_numpy(coords)


def aligned_upsample(maps: torch.Tensor, size: tuple[int, int],
                     centres: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """``(N, h, w)`` layer maps -> ``(N, H, W)``, each cell's value placed at its measured centre
    (``cell_centres``) and bilinearly interpolated between centres."""
    rows, columns = centres
    h, w = maps.shape[-2:]
    if (len(rows), len(columns)) != (h, w):
        raise UserError(f"centres are for a {len(rows)}x{len(columns)} map, got {h}x{w}")
    u = _cell_coordinates(rows, size[0])
    v = _cell_coordinates(columns, size[1])
    gy = (u / max(h - 1, 1) * 2 - 1) if h > 1 else torch.zeros_like(u)
    gx = (v / max(w - 1, 1) * 2 - 1) if w > 1 else torch.zeros_like(v)
    grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], -1)  # (H, W, [x, y])
    grid = grid.to(maps.device, maps.dtype).expand(maps.shape[0], -1, -1, -1)
    return F.grid_sample(maps[:, None], grid, mode="bilinear", padding_mode="border",
                         align_corners=True)[:, 0]
