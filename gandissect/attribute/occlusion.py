"""Occlusion (Zeiler & Fergus 2014): slide a patch over the image, record the score's drop.

The arguments may be spelled as in Captum's ``Occlusion.attribute``: ``sliding_window_shapes``
and ``strides`` as ``(C, h, w)`` tuples, ``(h, w)`` or an int, ``baselines`` (a number or a
tensor broadcastable to the input) and ``perturbations_per_eval``; or as ours: ``patch``,
``stride``, ``baseline`` and ``internal_batch_size``.
"""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Integral

import torch

from gandissect.errors import UserError

from .base import (
    Attribution,
    Target,
    _check_input,
    attribution_mode,
    baseline_for,
    either,
    prepare_target,
    resolve_target,
    row_chunks,
)

__all__ = ["COPY_BUDGET", "Occlusion", "default_window", "window_starts"]

# Bytes of occluded copies per forward pass when no chunk size is given: 170 images of 64 px
# or 13 of 224 px (float32). A CNN's activations are tens of times its input, so one chunk's
# forward stays in the hundreds of MB; on a CPU, chunks of 100-200 small images are also
# faster than one forward over every window.
COPY_BUDGET = 8 * 2**20

Window = int | Sequence[int]


def window_starts(size: int, patch: int, stride: int) -> list[int]:
    """Start offsets of the windows along one axis: every ``stride``, plus one flush with the
    far edge when the stride does not land there, so every pixel is covered."""
    if not 1 <= patch <= size or stride < 1:
        raise UserError(f"need 1 <= patch ({patch}) <= size ({size}) and stride ({stride}) >= 1")
    starts = list(range(0, size - patch + 1, stride))
    if starts[-1] != size - patch:
        starts.append(size - patch)
    return starts


def default_window(height: int, width: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """``(patch, stride)`` used when none is given: an eighth of the image every sixteenth, so
    that every image size costs the same 15 x 15 windows (8 px every 4 at 64 px, 28 every 14
    at 224 px)."""
    patch = (max(1, height // 8), max(1, width // 8))
    return patch, (max(1, patch[0] // 2), max(1, patch[1] // 2))


def _spatial(value: Window, channels: int, name: str, window: bool) -> tuple[int, int]:
    """``(h, w)`` of an int, ``(h, w)`` or Captum's ``(C, h, w)``; a window's C must be the
    image's channel count (occlusion hides all channels at once), a stride's C is unused."""
    dims = (value, value) if isinstance(value, Integral) else tuple(value)
    if len(dims) not in (2, 3) or not all(isinstance(d, Integral) and not isinstance(d, bool)
                                          and d >= 1 for d in dims):
        raise UserError(f"{name} must be a positive int, (h, w) or (C, h, w); got {value!r}")
    if window and len(dims) == 3 and dims[0] != channels:
        raise UserError(f"{name} {tuple(dims)} covers {dims[0]} of the image's {channels} "
                        f"channels; occlusion hides all channels at once: pass "
                        f"({channels}, {dims[1]}, {dims[2]}) or ({dims[1]}, {dims[2]})")
    return int(dims[-2]), int(dims[-1])


class Occlusion(Attribution):
    """Input-shaped drop in the target score when a patch covering the pixel is replaced.

    Each ``(h, w)`` window (all channels at once) is set to the baseline and
    ``f(x) - f(x occluded)`` recorded; a pixel's attribution is the mean over the windows that
    cover it, the same for every channel (pixels no window covers, when the stride exceeds
    the patch, get 0). Positive: hiding the pixel lowers the score. This is Captum's
    ``Occlusion`` with a ``(C, h, w)`` window, except at the far edges when the stride does not
    land there: Captum's last window is cut off there, ours is moved back flush with the edge,
    so every window has the full size.

    Example::

        >>> maps = Occlusion(model).attribute(x, target=3)  # 1/8 of the image every 1/16
        >>> maps = Occlusion(model).attribute(x, target=3, sliding_window_shapes=(3, 8, 8),
        ...                                   strides=(3, 4, 4))
    """

    def attribute(self, x: torch.Tensor, target: Target = None,
                  patch: Window | None = None, stride: Window | None = None,
                  baseline: float | torch.Tensor | None = None,
                  internal_batch_size: int | None = None, *,
                  sliding_window_shapes: Window | None = None, strides: Window | None = None,
                  baselines: float | torch.Tensor | None = None,
                  perturbations_per_eval: int | None = None,
                  show_progress: bool = False) -> torch.Tensor:
        """Occlusion map of ``target`` for images ``x`` of shape ``(N, C, H, W)``.

        Args:
            x: the images.
            target: the score to explain (see ``gandissect.attribute.base``).
            patch / sliding_window_shapes: the window, an int, ``(h, w)`` or ``(C, h, w)``
                with C the image's channels; default ``default_window``: 1/8 of the image.
            stride / strides: its step, in the same forms; default half the window, or 1
                (Captum's default) when the window is spelled ``sliding_window_shapes``.
            baseline / baselines: what hidden pixels become, a number or a tensor
                broadcastable to ``x``; default 0.
            internal_batch_size: occluded images per forward pass; default as many as fit in
                ``COPY_BUDGET`` bytes. ``perturbations_per_eval`` (Captum's) counts windows
                per forward instead, each over the whole batch. The result does not depend
                on either.
            show_progress: a tqdm bar over the windows.

        Returns:
            ``(N, C, H, W)``, the map repeated over the channels.
        """
        x = _check_input(x, images=True)
        n, channels, height, width = x.shape
        target = prepare_target(target, n, x.device)
        window = either(patch, sliding_window_shapes, "patch and sliding_window_shapes")
        step = either(stride, strides, "stride and strides")
        if window is None:
            (ph, pw), default_step = default_window(height, width)
        else:
            name = "patch" if patch is not None else "sliding_window_shapes"
            ph, pw = _spatial(window, channels, name, window=True)
            default_step = (1, 1) if patch is None else (max(1, ph // 2), max(1, pw // 2))
        sh, sw = default_step if step is None else _spatial(step, channels, "stride", False)
        fill = baseline_for(either(baseline, baselines, "baseline and baselines"), x)
        masks = torch.stack([self._mask(height, width, top, left, ph, pw, x.device)
                             for top in window_starts(height, ph, sh)
                             for left in window_starts(width, pw, sw)])  # (windows, H, W)
        windows = masks.shape[0]
        rows_per_pass = self._rows(x, internal_batch_size, perturbations_per_eval)
        drop_sum = torch.zeros(n, height, width, dtype=x.dtype, device=x.device)
        from tqdm import tqdm

        with attribution_mode(self.model), torch.no_grad(), \
                tqdm(total=n * windows, desc="occlusion", unit="image",
                     disable=not show_progress, leave=False) as bar:
            base = resolve_target(self.model(x), target)
            for rows in row_chunks(n * windows, rows_per_pass):
                rows = rows.to(x.device)
                owners, window_of = rows // windows, rows % windows
                mask = masks[window_of]
                value = fill if fill.dim() == 0 else fill[owners]
                occluded = torch.where(mask[:, None], value, x[owners])
                drop = base[owners] - resolve_target(self.model(occluded), target, owners)
                drop_sum.index_add_(0, owners, drop[:, None, None] * mask.to(x.dtype))
                bar.update(len(rows))
        coverage = masks.to(x.dtype).sum(0).clamp(min=1)  # stride > patch leaves gaps: 0 there
        return (drop_sum / coverage)[:, None].expand_as(x).clone()

    @staticmethod
    def _mask(height: int, width: int, top: int, left: int, ph: int, pw: int,
              device: torch.device) -> torch.Tensor:
        mask = torch.zeros(height, width, dtype=torch.bool, device=device)
        mask[top:top + ph, left:left + pw] = True
        return mask

    @staticmethod
    def _rows(x: torch.Tensor, internal_batch_size: int | None,
              perturbations_per_eval: int | None) -> int | None:
        """Occluded images per forward pass."""
        if internal_batch_size is not None and perturbations_per_eval is not None:
            raise UserError("pass one of internal_batch_size (images per forward) and "
                            "perturbations_per_eval (windows per forward), not both")
        if perturbations_per_eval is not None:
            if not isinstance(perturbations_per_eval, Integral) or perturbations_per_eval < 1:
                raise UserError(f"perturbations_per_eval must be a positive int, got "
                                f"{perturbations_per_eval!r}")
            return int(perturbations_per_eval) * x.shape[0]
        if internal_batch_size is None:
            return max(1, COPY_BUDGET // (x[0].numel() * x.element_size()))
        return internal_batch_size
