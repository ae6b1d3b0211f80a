"""Interventions on generator units: ablate ("remove") and insert ("draw"), whole-image or
under a painted mask.

A ``Stroke`` says which units, how (ablate: write 0; insert: write each unit's high quantile),
where (a mask at image resolution, max-pooled to the layer's cells as GANPaint does, or
everywhere) and how strongly. Strokes apply in order at the layer with the library's one edit
rule ``x' = x * (1 - a) + v * a`` (``hooks.apply_edit``)::

    strokes = [Stroke(units=tree_units, mode="ablate", mask=painted)]
    images = render_edited(generator, z, "layer4", strokes, insert_values=q99)
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from gandissect.errors import UserError
from gandissect.hooks import Trace, apply_edit, edit_alpha
from gandissect.torchutil import model_device

__all__ = ["Stroke", "pool_mask", "render_edited", "stroke_alpha", "stroke_edit"]

MODES = ("ablate", "insert")


@dataclass
class Stroke:
    """One edit: ``units`` ablated or inserted under ``mask`` (None: everywhere).

    ``mask`` is ``(H, W)`` or ``(N, H, W)`` in [0, 1] at image resolution (or already at the
    layer's resolution); ``strength`` scales it. No units, an all-zero mask or strength 0 edit
    nothing (the images come out unchanged); a mask of ones is the same as None. ``values``:
    what an insertion writes, one value per unit of the layer (None: the ``insert_values``
    the stroke is rendered with, each unit's high quantile); ``weights``: how strongly each
    unit of the layer is edited, in [0, 1] (None: fully). A learned drawing brings both.
    """

    units: Sequence[int]
    mode: str = "ablate"
    mask: torch.Tensor | None = None
    strength: float = 1.0
    values: torch.Tensor | None = None
    weights: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise UserError(f"stroke mode must be one of {MODES}, got {self.mode!r}")
        if not 0 <= self.strength <= 1:
            raise UserError(f"stroke strength must lie in [0, 1], got {self.strength}")
        try:
            self.units = [operator.index(unit) for unit in self.units]
        except TypeError:
            raise UserError(f"unit ids must be integers, got {list(self.units)}") from None


def pool_mask(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Max-pool an ``(H, W)`` or ``(N, H, W)`` mask to the layer's ``size`` (h, w).

    A layer cell is edited as strongly as the strongest painted pixel inside it (GANPaint's
    rule), so a stroke never vanishes between cells. Sizes must divide evenly.
    """
    mask = torch.as_tensor(mask, dtype=torch.float32)
    squeeze = mask.dim() == 2
    if squeeze:
        mask = mask[None]
    if mask.dim() != 3:
        raise UserError(f"mask must be (H, W) or (N, H, W), got shape {tuple(mask.shape)}")
    h, w = mask.shape[1:]
    if (h, w) == tuple(size):
        pooled = mask
    else:
        if h % size[0] or w % size[1]:
            raise UserError(f"a {h}x{w} mask does not divide into the layer's "
                            f"{size[0]}x{size[1]} cells; paint at a multiple of the layer size")
        pooled = F.max_pool2d(mask[:, None], (h // size[0], w // size[1]))[:, 0]
    if not bool(((pooled >= 0) & (pooled <= 1)).all()):  # NaN fails too
        raise UserError("mask values must lie in [0, 1] (divide 8-bit masks by 255)")
    return pooled[0] if squeeze else pooled


def stroke_alpha(stroke: Stroke, n_units: int, size: tuple[int, int]) -> torch.Tensor:
    """The stroke's edit weight ``a`` (``hooks.edit_alpha`` of its units, its mask pooled to
    the layer's ``size`` and its strength): ``(U, 1, 1)`` without a mask, else ``(U, h, w)``
    or ``(N, U, h, w)``."""
    mask = None if stroke.mask is None else pool_mask(stroke.mask, size)
    return edit_alpha(stroke.units, n_units, mask, stroke.strength, stroke.weights)


def stroke_edit(strokes: Sequence[Stroke], insert_values: torch.Tensor | None):
    """The function ``output -> edited output`` that applies ``strokes`` in order with
    ``hooks.apply_edit`` (for ``hooks.Trace(..., edit=...)``)."""

    def apply(output: torch.Tensor) -> torch.Tensor:
        if output.dim() != 4:
            raise UserError(
                f"edits need a (N, units, h, w) layer output, got {tuple(output.shape)}")
        if not bool(torch.isfinite(output).all()):  # no edit can repair NaN: x * 0 is NaN
            raise UserError("the edited layer outputs NaN or infinite values; check the "
                            "generator's weights")
        n_units, size = output.shape[1], tuple(output.shape[2:])
        for stroke in strokes:
            alpha = stroke_alpha(stroke, n_units, size)
            if alpha.dim() == 4 and alpha.shape[0] not in (1, output.shape[0]):
                raise UserError(f"{alpha.shape[0]} masks for a batch of {output.shape[0]} "
                                "images; give one (H, W) mask or one per image")
            written = insert_values if stroke.values is None else stroke.values
            value = 0.0 if stroke.mode == "ablate" else _checked_values(written, n_units)
            output = apply_edit(output, alpha, value)
        return output

    return apply


def _checked_values(insert_values: torch.Tensor | None, n_units: int) -> torch.Tensor:
    if insert_values is None:
        raise UserError("insertion needs insert_values (each unit's high quantile)")
    if insert_values.numel() != n_units:
        raise UserError(f"insert_values has {insert_values.numel()} entries for {n_units} units")
    if not bool(torch.isfinite(insert_values).all()):
        raise UserError("insert_values holds NaN or infinite values")
    return insert_values.reshape(-1)


def render_edited(generator: torch.nn.Module, z: torch.Tensor, layer: str,
                  strokes: Sequence[Stroke], insert_values: torch.Tensor | None = None
                  ) -> torch.Tensor:
    """Images from latents ``z`` with ``strokes`` applied at ``layer``, in order."""
    device = model_device(generator)
    with torch.no_grad(), Trace(generator, layer, retain_output=False,
                                edit=stroke_edit(strokes, insert_values)):
        return generator(z.to(device))
