"""Interventions on generator units: ablate ("remove") and insert ("draw"), whole-image or
under a painted mask.

A ``Stroke`` says which units, how (ablate: write 0; insert: write each unit's high quantile),
where (a mask at image resolution, max-pooled to the layer's cells as GANPaint does, or
everywhere) and how strongly. Strokes apply in order at the layer with the edit rule
``x' = x * (1 - a) + v * a``; for strokes that write the same value this composes as
``a = 1 - (1 - a1)(1 - a2)``::

    strokes = [Stroke(units=tree_units, mode="ablate", mask=painted)]
    images = render_edited(generator, z, "layer4", strokes, insert_values=q99)
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from gandissect.hooks import Trace

__all__ = ["Stroke", "compose_alpha", "pool_mask", "render_edited", "stroke_alpha", "stroke_edit"]

MODES = ("ablate", "insert")


@dataclass
class Stroke:
    """One edit: ``units`` ablated or inserted under ``mask`` (None: everywhere).

    ``mask`` is ``(H, W)`` or ``(N, H, W)`` in [0, 1] at image resolution (or already at the
    layer's resolution); ``strength`` scales it. No units, an all-zero mask or strength 0 edit
    nothing (the images come out unchanged); a mask of ones is the same as None.
    """

    units: Sequence[int]
    mode: str = "ablate"
    mask: torch.Tensor | None = None
    strength: float = 1.0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"stroke mode must be one of {MODES}, got {self.mode!r}")
        if not 0 <= self.strength <= 1:
            raise ValueError(f"stroke strength must lie in [0, 1], got {self.strength}")
        try:
            self.units = [operator.index(unit) for unit in self.units]
        except TypeError:
            raise ValueError(f"unit ids must be integers, got {list(self.units)}") from None


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
        raise ValueError(f"mask must be (H, W) or (N, H, W), got shape {tuple(mask.shape)}")
    h, w = mask.shape[1:]
    if (h, w) == tuple(size):
        pooled = mask
    else:
        if h % size[0] or w % size[1]:
            raise ValueError(f"a {h}x{w} mask does not divide into the layer's "
                             f"{size[0]}x{size[1]} cells; paint at a multiple of the layer size")
        pooled = F.max_pool2d(mask[:, None], (h // size[0], w // size[1]))[:, 0]
    if not bool(((pooled >= 0) & (pooled <= 1)).all()):  # NaN fails too
        raise ValueError("mask values must lie in [0, 1] (divide 8-bit masks by 255)")
    return pooled[0] if squeeze else pooled


def stroke_alpha(stroke: Stroke, n_units: int, size: tuple[int, int]) -> torch.Tensor:
    """The stroke's edit weight ``a``: ``(U, h, w)`` or ``(N, U, h, w)``."""
    units = torch.as_tensor(list(stroke.units), dtype=torch.int64)
    if units.numel() and (int(units.min()) < 0 or int(units.max()) >= n_units):
        raise ValueError(f"unit ids must lie in [0, {n_units - 1}], got {units.tolist()}")
    per_unit = torch.zeros(n_units)
    per_unit[units] = stroke.strength
    if stroke.mask is None:
        return per_unit[:, None, None].expand(n_units, *size)
    cells = pool_mask(stroke.mask, size)
    if cells.dim() == 2:
        return per_unit[:, None, None] * cells[None]
    return per_unit[None, :, None, None] * cells[:, None]


def compose_alpha(alphas: Sequence[torch.Tensor]) -> torch.Tensor:
    """Combine edit weights of strokes that write the same value: 1 - prod(1 - a_i)."""
    keep = torch.ones(())
    for alpha in alphas:
        keep = keep * (1 - alpha)
    return 1 - keep


def stroke_edit(strokes: Sequence[Stroke], insert_values: torch.Tensor | None):
    """The function ``output -> edited output`` that applies ``strokes`` in order (for
    ``hooks.Trace(..., edit=...)``)."""

    def apply(output: torch.Tensor) -> torch.Tensor:
        if output.dim() != 4:
            raise ValueError(
                f"edits need a (N, units, h, w) layer output, got {tuple(output.shape)}")
        if not bool(torch.isfinite(output).all()):  # no edit can repair NaN: x * 0 is NaN
            raise ValueError("the edited layer outputs NaN or infinite values; check the "
                             "generator's weights")
        n_units, size = output.shape[1], tuple(output.shape[2:])
        for stroke in strokes:
            alpha = stroke_alpha(stroke, n_units, size).to(output.device, output.dtype)
            if alpha.dim() == 4 and alpha.shape[0] not in (1, output.shape[0]):
                raise ValueError(f"{alpha.shape[0]} masks for a batch of {output.shape[0]} "
                                 "images; give one (H, W) mask or one per image")
            if stroke.mode == "ablate":
                output = output * (1 - alpha)
            else:
                if insert_values is None:
                    raise ValueError("insertion needs insert_values (each unit's high quantile)")
                if insert_values.numel() != n_units:
                    raise ValueError(f"insert_values has {insert_values.numel()} entries for "
                                     f"{n_units} units")
                if not bool(torch.isfinite(insert_values).all()):
                    raise ValueError("insert_values holds NaN or infinite values")
                value = insert_values.to(output.device, output.dtype).view(1, -1, 1, 1)
                output = output * (1 - alpha) + value * alpha
        return output

    return apply


def render_edited(generator: torch.nn.Module, z: torch.Tensor, layer: str,
                  strokes: Sequence[Stroke], insert_values: torch.Tensor | None = None
                  ) -> torch.Tensor:
    """Images from latents ``z`` with ``strokes`` applied at ``layer``, in order."""
    device = next(generator.parameters()).device
    with torch.no_grad(), Trace(generator, layer, retain_output=False,
                                edit=stroke_edit(strokes, insert_values)):
        return generator(z.to(device))
