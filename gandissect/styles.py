"""StyleSpace edits (Wu et al. 2021) on the style layers of a style generator.

A style layer (``layer5.style``, a ``models.stylespace.StyleChannels`` module) multiplies its
convolution's input ``x`` by the styles ``s (N, C)``; its units are the style channels. Tracing,
dissecting, ablating and inserting work on it as on any layer (its output is ``x * s``).
StyleSpace's own manipulation moves a channel's style by a multiple of its spread over the
latents, ``s_c + alpha * sigma_c``: ``style_statistics`` measures each channel's mean and
spread, ``style_shift`` builds the shift and ``StyleShift`` applies it while the generator
runs (the layer then outputs ``x * (s + shift)``, and the convolution demodulates with the
shifted style)::

    mean, sigma = style_statistics(generator, "layer5.style")
    with StyleShift(generator, "layer5.style", style_shift([12], sigma, alpha=5.0)):
        images = generator(z)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from gandissect.dissect.latents import sample_latents
from gandissect.errors import UserError
from gandissect.hooks import StopForward, Trace, edit_alpha, get_layer, layer_names
from gandissect.intervene import pool_mask
from gandissect.models.stylespace import StyleChannels
from gandissect.torchutil import model_device

__all__ = ["STYLE_SAMPLES", "StyleShift", "check_style_layer", "style_layers", "style_shift",
           "style_statistics", "style_vectors"]

STYLE_SAMPLES = 2000  # latents behind each channel's spread: its std to about 2%


def style_layers(model: nn.Module) -> list[str]:
    """The dotted names of ``model``'s style layers, in the order they run."""
    return [name for name in layer_names(model)
            if isinstance(model.get_submodule(name), StyleChannels)]


def check_style_layer(model: nn.Module, layer: str) -> StyleChannels:
    """The style layer called ``layer``; a ``UserError`` naming the style layers otherwise."""
    module = get_layer(model, layer)
    if not isinstance(module, StyleChannels):
        names = style_layers(model)
        shown = ", ".join(names[:8]) + (" ..." if len(names) > 8 else "")
        hint = (f"style layers of this generator: {shown}" if names
                else "this generator has none (StyleGAN2's are layerK.style)")
        raise UserError(f"{layer!r} is not a style layer, so it has no styles to shift; {hint}")
    return module


def style_vectors(generator: nn.Module, layer: str, z: torch.Tensor,
                  truncation: float | None = None) -> torch.Tensor:
    """The styles ``s (N, C)`` that style layer ``layer`` multiplies by, for latents ``z``.

    From the generator's ``styles(z, truncation)`` method when it has one (from ``w`` alone,
    no image drawn; ``truncation``, psi, instead of the generator's own, None: its own), else
    from a forward pass stopped as the layer is entered (the generator as configured).
    """
    module = check_style_layer(generator, layer)
    z = z.to(model_device(generator))
    with torch.no_grad():
        if callable(getattr(generator, "styles", None)):
            return generator.styles(z, truncation)[layer]
        seen: list[torch.Tensor] = []

        def capture(_module: nn.Module, inputs: tuple) -> None:
            seen.append(inputs[1])
            raise StopForward(layer)

        handle = module.register_forward_pre_hook(capture)
        try:
            generator(z)
        except StopForward:
            pass
        finally:
            handle.remove()
    if not seen:
        raise UserError(f"style layer {layer!r} did not run in the generator's forward pass")
    return seen[0]


def style_statistics(generator: nn.Module, layer: str, n: int = STYLE_SAMPLES, seed: int = 0,
                     batch: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """Each style channel's mean and standard deviation ``(C,)``, ``(C,)`` over ``n`` latents
    of ``seed`` (the generator's own latent law), untruncated where the generator can say
    (see ``style_vectors``): StyleSpace's ``sigma_c``."""
    if n < 2:
        raise UserError(f"a spread needs at least two latents, got n={n}")
    total = squares = None
    for start in range(0, n, batch):
        z = sample_latents(generator, seed, range(start, min(start + batch, n)))
        s = style_vectors(generator, layer, z, truncation=1.0).double().cpu()
        total = s.sum(0) if total is None else total + s.sum(0)
        squares = s.pow(2).sum(0) if squares is None else squares + s.pow(2).sum(0)
    mean = total / n
    variance = (squares - n * mean.pow(2)).clamp_min(0) / (n - 1)
    return mean.float(), variance.sqrt().float()


def style_shift(units: Sequence[int], sigma: torch.Tensor, alpha: float) -> torch.Tensor:
    """StyleSpace's shift ``(C,)``: ``alpha * sigma_c`` for the channels ``units``, 0 for the
    others (``sigma`` from ``style_statistics``)."""
    sigma = torch.as_tensor(sigma, dtype=torch.float32).reshape(-1)
    return edit_alpha(units, sigma.numel()).reshape(-1) * float(alpha) * sigma


class StyleShift(Trace):
    """Shift the styles of a style layer while the model runs: ``s -> s + shift * m``, so the
    layer outputs ``x * (s + shift * m)``; every other hook on the layer sees that value.

    Args:
        model: a generator with style layers.
        layer: a style layer's name (``"layer5.style"``).
        shift: ``(C,)``, added to each channel's style (0: unchanged); ``style_shift`` builds
            StyleSpace's ``alpha * sigma_c``.
        mask: None (``m = 1``: the whole image), or ``m``, ``(H, W)`` or ``(N, H, W)`` in
            [0, 1] at the image's or the layer's resolution, max-pooled to the layer's cells
            as a painted stroke is (``intervene.pool_mask``).

    Example:
        >>> with StyleShift(generator, "layer5.style", style_shift([12], sigma, 5.0)):
        ...     images = generator(z)
    """

    def __init__(self, model: nn.Module, layer: str, shift: torch.Tensor,
                 mask: torch.Tensor | None = None, **kwargs: Any) -> None:
        check_style_layer(model, layer)
        kwargs.setdefault("retain_output", False)
        super().__init__(model, layer, **kwargs)
        self.shift = torch.as_tensor(shift, dtype=torch.float32).reshape(-1)
        if not bool(torch.isfinite(self.shift).all()):
            raise UserError("the style shift holds NaN or infinite values")
        self.mask = mask

    def _hook(self, module: nn.Module, inputs: tuple, output: Any) -> Any:
        x = inputs[0]
        if self.shift.numel() != x.shape[1]:
            raise UserError(f"the style shift has {self.shift.numel()} entries but "
                            f"{self.layer!r} has {x.shape[1]} style channels")
        shift = self.shift.to(x.device, x.dtype)[:, None, None]
        if self.mask is not None:
            mask = pool_mask(self.mask, tuple(x.shape[2:])).to(x.device, x.dtype)
            shift = shift * (mask[None] if mask.dim() == 2 else mask[:, None])
        return super()._hook(module, inputs, output + x * shift)
