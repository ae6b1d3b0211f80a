"""Style channels (StyleSpace, Wu et al. 2021) as traceable units of a style generator.

A modulated convolution scales its input channel ``i`` by the style ``s_i = A(w)_i`` before the
convolution (weight modulation is the same product moved onto the weights). ``StyleChannels``
makes that product a module of its own: its output ``x * s`` (N, channels, h, w) is what forward
hooks see, what dissection labels (the region each style channel acts on) and what an edit
changes (a style channel switched off, boosted or set, everywhere or where a mask is painted).
A style generator names it ``<layer>.style`` (``layer5.style``, ``to_rgb_8x8.style``).

Demodulation divides each output unit by ``|W s|``, a function of the styles. So that an edit
of the product is an edit of the style, the convolution demodulates with the style the product
carries (``carried_styles``): per sample and channel the least-squares ``s'`` with ``x * s'``
closest to the product. That is ``s`` when nothing edits it, and exactly the edited style when an
edit changes a channel's style over the whole map (switched off, scaled, shifted by ``delta``:
``x * (s + delta)``); a painted region moves it part of the way, by its share of ``x``'s energy.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["StyleChannels", "carried_styles"]


class StyleChannels(nn.Module):
    """``(x (N, C, h, w), s (N, C)) -> x * s``: the input of a modulated convolution scaled by
    its per-sample styles, one unit per style channel."""

    def forward(self, x: torch.Tensor, styles: torch.Tensor) -> torch.Tensor:
        return x * styles[:, :, None, None].to(x.dtype)


def carried_styles(x: torch.Tensor, product: torch.Tensor, styles: torch.Tensor
                   ) -> torch.Tensor:
    """The styles ``(N, C)`` that ``product`` (what ``StyleChannels`` returned, perhaps edited)
    carries on ``x``: ``sum(x * product) / sum(x * x)`` over each map, least squares; a channel
    whose input is zero everywhere keeps its ``styles``.

    Example:
        >>> x, s = torch.randn(2, 3, 4, 4), torch.randn(2, 3)
        >>> torch.allclose(carried_styles(x, x * (s + 1)[..., None, None], s), s + 1)
        True
    """
    exact = torch.promote_types(x.dtype, torch.float32)  # half-precision sums would overflow
    x, product = x.to(exact), product.to(exact)
    energy = x.pow(2).sum((2, 3))
    carried = (x * product).sum((2, 3)) / energy.clamp_min(torch.finfo(exact).tiny)
    return torch.where(energy > 0, carried, styles.to(exact))
