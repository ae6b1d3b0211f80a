"""The dissection's latent sample: sample i's z is a fixed function of (seed, i).

Latents are drawn in fixed-size chunks, each from its own ``torch.Generator`` seeded by a hash
of (seed, chunk), so any sample can be regenerated alone (for a report's top images) without
drawing the samples before it, and batch size never changes which z a sample gets.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import torch
from torch import nn

from gandissect.errors import UserError

__all__ = ["CHUNK", "latents", "z_dim_of"]

CHUNK = 256  # samples per generator seed


def _chunk_seed(seed: int, chunk: int) -> int:
    digest = hashlib.blake2b(f"gandissect-latents/{seed}/{chunk}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "little") & (2**63 - 1)


def latents(seed: int, indices: Iterable[int] | torch.Tensor, z_dim: int) -> torch.Tensor:
    """Standard-normal latents ``(len(indices), z_dim)`` (float32, CPU) of samples ``indices``."""
    index = torch.as_tensor(list(indices) if not isinstance(indices, torch.Tensor) else indices,
                            dtype=torch.int64).reshape(-1)
    if index.numel() and int(index.min()) < 0:
        raise UserError("sample indices must be non-negative")
    if z_dim < 1:
        raise UserError(f"z_dim must be positive, got {z_dim}")
    out = torch.empty(index.numel(), z_dim)
    chunk_of = index // CHUNK
    for chunk in torch.unique(chunk_of).tolist():
        generator = torch.Generator().manual_seed(_chunk_seed(seed, chunk))
        block = torch.randn(CHUNK, z_dim, generator=generator)
        here = chunk_of == chunk
        out[here] = block[index[here] % CHUNK]
    return out


def z_dim_of(generator: nn.Module, z_dim: int | None = None) -> int:
    """The latent size: ``z_dim`` if given, else the generator's ``z_dim`` attribute."""
    if z_dim is None:
        z_dim = getattr(generator, "z_dim", None)
    if not isinstance(z_dim, int) or z_dim < 1:
        raise UserError(
            f"cannot tell the latent size of {type(generator).__name__}: give it a `z_dim` "
            "attribute or pass z_dim=..."
        )
    return z_dim
