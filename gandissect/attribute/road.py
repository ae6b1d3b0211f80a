"""ROAD, remove and debias (Rong et al. 2022): pixels removed in the order of an attribution
map and filled by noisy linear imputation, so that the filled image does not tell the model
where pixels were removed.

    ranks = pixel_ranks(maps)                      # gandissect.attribute.evaluate
    morf, lerf = road_curves(model, images, ranks, target)   # (N, 9) each, 10% .. 90%

**Noisy linear imputation.** Each removed pixel takes the weighted mean of its eight
neighbours that lie inside the image, direct neighbours weighing 1/6 and diagonal ones 1/12
(the paper's weights, which sum to 1 over a full neighbourhood). Removed neighbours are
unknowns themselves, so the removed pixels of one image solve one sparse linear system,
for each removed pixel ``i`` with in-image neighbours ``N(i)``:

    sum_{j in N(i)} w_ij * x_i  -  sum_{j in N(i), removed} w_ij * x_j
        =  sum_{j in N(i), kept} w_ij * v_j

(``v``: the image's values), one right-hand side per colour channel. It has one solution
whenever at least one pixel is kept. Then Gaussian noise of standard deviation ``noise``
(0.01, as the paper's code, absolute: images here are in [-1, 1]) is added to the imputed
pixels only.

**Curves.** At each removal fraction ``p`` (10% to 90%), *MoRF* removes the
``round(p * H * W)`` most relevant pixels (rank 0 first) and *LeRF* the as many least
relevant ones; the softmax probability of the target class is read on each imputed image.
``road_auc`` is the trapezoid area under a curve over its fractions divided by their span,
the curve's mean height: MoRF lower is better, LeRF higher.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from gandissect.errors import UserError

__all__ = ["NEIGHBOUR_WEIGHTS", "ROAD_FRACTIONS", "ROAD_NOISE", "road_auc", "road_curves",
           "road_impute"]

# (row offset, column offset) -> weight, the ROAD paper's linear imputation
NEIGHBOUR_WEIGHTS: dict[tuple[int, int], float] = {
    (-1, 0): 1 / 6, (1, 0): 1 / 6, (0, -1): 1 / 6, (0, 1): 1 / 6,
    (-1, -1): 1 / 12, (-1, 1): 1 / 12, (1, -1): 1 / 12, (1, 1): 1 / 12,
}
ROAD_FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
ROAD_NOISE = 0.01


def _linear_system(removed: np.ndarray, values: np.ndarray):
    """The sparse system of the imputation: matrix ``(m, m)`` over the ``m`` removed pixels
    (raster order) and right-hand sides ``(m, C)``, from a ``(H, W)`` bool mask and ``(C, H, W)``
    values."""
    from scipy.sparse import csc_matrix

    height, width = removed.shape
    rows, cols = np.nonzero(removed)
    unknown = -np.ones((height, width), dtype=np.int64)
    unknown[rows, cols] = np.arange(len(rows))
    diagonal = np.zeros(len(rows))
    rhs = np.zeros((len(rows), values.shape[0]))
    entries_i, entries_j, entries_w = [], [], []
    for (dr, dc), weight in NEIGHBOUR_WEIGHTS.items():
        r, c = rows + dr, cols + dc
        inside = (r >= 0) & (r < height) & (c >= 0) & (c < width)
        own = np.nonzero(inside)[0]
        r, c = r[inside], c[inside]
        diagonal[own] += weight
        other = unknown[r, c]
        kept = other < 0
        rhs[own[kept]] += weight * values[:, r[kept], c[kept]].T
        entries_i.append(own[~kept])
        entries_j.append(other[~kept])
        entries_w.append(np.full((~kept).sum(), -weight))
    index = np.arange(len(rows))
    matrix = csc_matrix((np.concatenate([diagonal, *entries_w]),
                         (np.concatenate([index, *entries_i]),
                          np.concatenate([index, *entries_j]))),
                        shape=(len(rows), len(rows)))
    return matrix, rhs


def road_impute(image: torch.Tensor, removed: torch.Tensor, noise: float = ROAD_NOISE,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """``image`` ``(C, H, W)`` with the pixels of ``removed`` ``(H, W)`` (bool) replaced by
    ROAD's noisy linear imputation (module docstring); kept pixels are unchanged."""
    from scipy.sparse.linalg import spsolve

    if removed.shape != image.shape[-2:]:
        raise UserError(f"mask {tuple(removed.shape)} and image {tuple(image.shape)} differ")
    mask = removed.detach().cpu().numpy().astype(bool)
    if not mask.any():
        return image.clone()
    if mask.all():
        raise UserError("ROAD's imputation needs at least one kept pixel")
    values = image.detach().cpu().double().numpy()
    matrix, rhs = _linear_system(mask, values)
    solved = spsolve(matrix, rhs).reshape(len(rhs), -1)  # (m, C)
    filled = torch.from_numpy(solved.T.copy())  # (C, m)
    if noise:
        filled = filled + noise * torch.randn(filled.shape, generator=generator,
                                              dtype=filled.dtype)
    out = image.detach().clone()
    where = torch.from_numpy(mask).to(image.device)
    out[:, where] = filled.to(out)
    return out


@torch.no_grad()
def road_curves(model: nn.Module, images: torch.Tensor, ranks: torch.Tensor,
                target: torch.Tensor, fractions: Sequence[float] = ROAD_FRACTIONS,
                noise: float = ROAD_NOISE, generator: torch.Generator | None = None,
                chunk: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """``(morf, lerf)``, each ``(N, len(fractions))``: the target's softmax probability after
    imputing the most (MoRF) or least (LeRF) relevant ``round(p * H * W)`` pixels of each
    image, ``ranks`` ``(N, H, W)`` giving each pixel's place (0: most relevant, as
    ``gandissect.attribute.evaluate.pixel_ranks``). The model must be in eval mode."""
    if not fractions or any(not 0 < p < 1 for p in fractions):
        raise UserError(f"ROAD fractions must lie strictly between 0 and 1, got {fractions}")
    n, _, height, width = images.shape
    pixels = height * width
    imputed = []
    for most in (True, False):
        for i in range(n):
            for p in fractions:
                count = round(p * pixels)
                removed = ranks[i] < count if most else ranks[i] >= pixels - count
                imputed.append(road_impute(images[i], removed, noise, generator))
    probed = torch.stack(imputed)
    probs = torch.cat([model(part).softmax(1) for part in probed.split(chunk)])
    owners = torch.arange(n, device=images.device).repeat_interleave(len(fractions)).repeat(2)
    picked = probs.gather(1, target[owners][:, None])[:, 0].reshape(2, n, len(fractions))
    return picked[0], picked[1]


def road_auc(curves: torch.Tensor, fractions: Sequence[float] = ROAD_FRACTIONS
             ) -> torch.Tensor:
    """``(N,)``: trapezoid area under ``(N, K)`` curves sampled at ``fractions``, divided by
    the fractions' span (the curve's mean height; one fraction: its value)."""
    x = torch.tensor(list(fractions), dtype=curves.dtype, device=curves.device)
    if len(fractions) == 1:
        return curves[:, 0]
    area = ((curves[:, 1:] + curves[:, :-1]) / 2 * (x[1:] - x[:-1])).sum(1)
    return area / (x[-1] - x[0])
