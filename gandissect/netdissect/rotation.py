"""A random change of basis of a layer that leaves the network's function unchanged.

Network Dissection's "interpretability is not discriminative power" test: rotate the units of
layer L by an orthogonal ``Q`` (``z = Q x`` over the channel dimension) and un-rotate before the
rest of the network (``Q^T z = x``). Accuracy cannot change, but the rotated units are no
longer the network's own axes, and their alignment with concepts falls. Partial rotations
``Q^alpha`` (0: identity, 1: ``Q``) interpolate along the rotation's own one-parameter path::

    wrapped = RotatedBasis(model, "layer4", fractional_rotation(random_rotation(160, 1), 0.5))
    wrapped(images)                      # == model(images) (to float rounding)
    netdissect(wrapped, "rotated", probe)   # the rotated units, z = Q x
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from gandissect.errors import UserError
from gandissect.hooks import get_layer

__all__ = ["random_rotation", "fractional_rotation", "BasisRotation", "RotatedBasis"]


def random_rotation(units: int, seed: int = 0) -> torch.Tensor:
    """A Haar-random rotation ``(units, units)`` float64 with determinant +1 (so that a path
    of rotations joins it to the identity)."""
    if units < 1:
        raise UserError(f"need at least one unit, got {units}")
    generator = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(units, units, generator=generator, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))[None, :]
    if torch.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def fractional_rotation(rotation: torch.Tensor, alpha: float) -> torch.Tensor:
    """``rotation ** alpha`` for a rotation matrix: every rotation angle scaled by ``alpha``.

    Computed from the eigendecomposition ``Q = V diag(e^{i theta}) V^H`` (V unitary for a
    normal matrix) and re-orthogonalised; alpha 0 gives the identity, 1 the rotation itself.
    """
    q = rotation.double()
    if alpha == 0:
        return torch.eye(q.shape[0], dtype=torch.float64)
    if alpha == 1:
        return q.clone()
    values, vectors = torch.linalg.eig(q)
    power = torch.polar(torch.ones_like(values.real), values.angle() * alpha)
    result = (vectors @ torch.diag(power) @ vectors.conj().t()).real
    u, _, vh = torch.linalg.svd(result)  # nearest orthogonal matrix: remove rounding
    return u @ vh


class BasisRotation(nn.Module):
    """``x -> Q x`` over dimension 1 of ``(B, U, ...)``; ``unrotate`` is ``Q^T``."""

    def __init__(self, rotation: torch.Tensor) -> None:
        super().__init__()
        if rotation.dim() != 2 or rotation.shape[0] != rotation.shape[1]:
            raise UserError(f"a rotation is a square matrix, got {tuple(rotation.shape)}")
        self.register_buffer("rotation", rotation.float().clone())

    def _apply_matrix(self, matrix: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 2 or x.shape[1] != matrix.shape[1]:
            raise UserError(f"the rotation is {tuple(matrix.shape)} but the layer's output is "
                            f"{tuple(x.shape)} (units on dimension 1)")
        return torch.einsum("uv,bv...->bu...", matrix.to(x.dtype), x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._apply_matrix(self.rotation, x)

    def unrotate(self, z: torch.Tensor) -> torch.Tensor:
        return self._apply_matrix(self.rotation.t(), z)


class RotatedBasis(nn.Module):
    """``model`` whose layer ``layer`` is rotated by ``rotation`` and un-rotated at once.

    The submodule ``rotated`` outputs the rotated units ``Q x`` (dissect it by that name); the
    network continues from ``Q^T (Q x) = x``, so outputs equal the model's to float rounding.
    The hook lives only during each forward. ``scene_names`` is passed through.
    """

    def __init__(self, model: nn.Module, layer: str, rotation: torch.Tensor) -> None:
        super().__init__()
        get_layer(model, layer)
        self.model, self.layer = model, layer
        self.rotated = BasisRotation(rotation)
        if hasattr(model, "scene_names"):
            self.scene_names = list(model.scene_names)

    def _hook(self, module: nn.Module, inputs: tuple, output: Any) -> torch.Tensor:
        return self.rotated.unrotate(self.rotated(output))

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        handle = get_layer(self.model, self.layer).register_forward_hook(self._hook)
        try:
            return self.model(*args, **kwargs)
        finally:
            handle.remove()
