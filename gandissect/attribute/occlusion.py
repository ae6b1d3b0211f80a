"""Occlusion (Zeiler & Fergus 2014): slide a patch over the image, record the score's drop."""

from __future__ import annotations

import torch

from gandissect.errors import UserError

from .base import (
    Attribution,
    Target,
    _check_input,
    attribution_mode,
    prepare_target,
    resolve_target,
    row_chunks,
)

__all__ = ["Occlusion", "window_starts"]


def window_starts(size: int, patch: int, stride: int) -> list[int]:
    """Start offsets of the windows along one axis: every ``stride``, plus one flush with the
    far edge when the stride does not land there, so every pixel is covered."""
    if not 1 <= patch <= size or stride < 1:
        raise UserError(f"need 1 <= patch ({patch}) <= size ({size}) and stride ({stride}) >= 1")
    starts = list(range(0, size - patch + 1, stride))
    if starts[-1] != size - patch:
        starts.append(size - patch)
    return starts


def _pair(value: int | tuple[int, int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


class Occlusion(Attribution):
    """Input-shaped drop in the target score when a patch covering the pixel is replaced.

    Each ``(patch_h, patch_w)`` window (all channels at once) is set to ``baseline`` and
    ``f(x) - f(x occluded)`` recorded; a pixel's attribution is the mean over the windows that
    cover it, the same for every channel (pixels no window covers, when the stride exceeds
    the patch, get 0). Positive: hiding the pixel lowers the score.
    """

    def attribute(self, x: torch.Tensor, target: Target = None,
                  patch: int | tuple[int, int] = 8, stride: int | tuple[int, int] = 4,
                  baseline: float = 0.0, internal_batch_size: int | None = None
                  ) -> torch.Tensor:
        """Occlusion map of ``target`` for images ``x`` of shape ``(N, C, H, W)``.

        ``internal_batch_size`` bounds the occluded copies per forward pass.
        """
        x = _check_input(x)
        if x.dim() != 4:
            raise UserError(f"occlusion takes (N, C, H, W) images, got {tuple(x.shape)}")
        n, _, height, width = x.shape
        target = prepare_target(target, n, x.device)
        (ph, pw), (sh, sw) = _pair(patch), _pair(stride)
        masks = []
        for top in window_starts(height, ph, sh):
            for left in window_starts(width, pw, sw):
                mask = torch.zeros(height, width, dtype=torch.bool, device=x.device)
                mask[top:top + ph, left:left + pw] = True
                masks.append(mask)
        masks = torch.stack(masks)  # (windows, H, W)
        windows = masks.shape[0]
        drop_sum = torch.zeros(n, height, width, dtype=x.dtype, device=x.device)
        with attribution_mode(self.model), torch.no_grad():
            base = resolve_target(self.model(x), target)
            for rows in row_chunks(n * windows, internal_batch_size):
                rows = rows.to(x.device)
                owners, window = rows // windows, rows % windows
                mask = masks[window][:, None]
                occluded = torch.where(mask, torch.as_tensor(baseline, dtype=x.dtype,
                                                             device=x.device), x[owners])
                drop = base[owners] - resolve_target(self.model(occluded), target, owners)
                drop_sum.index_add_(0, owners, drop[:, None, None] * masks[window].to(x.dtype))
        coverage = masks.to(x.dtype).sum(0).clamp(min=1)  # stride > patch leaves gaps: 0 there
        return (drop_sum / coverage)[:, None].expand_as(x).clone()
