"""The dissection's latent sample: sample i's z is a fixed function of (seed, i).

Latents are drawn in fixed-size chunks, each from its own ``torch.Generator`` seeded by a hash
of (seed, chunk), so any sample can be regenerated alone (for a report's top images) without
drawing the samples before it, and batch size never changes which z a sample gets.

The law of z belongs to the generator (``latent_law``): the generator's own
``sample_latent(n, generator) -> (n, z_dim)`` method when it has one, else its ``latent``
attribute: ``"normal"`` (standard normal, the default) or ``"uniform"`` (uniform on [-1, 1], as
much DCGAN code samples). ``sample_latents(generator, seed, indices)`` draws with it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable

import torch
from torch import nn

from gandissect.errors import UserError

__all__ = ["CHUNK", "LAWS", "latent_law", "latents", "law_name", "sample_latents",
           "z_dim_of"]

CHUNK = 256  # samples per generator seed
LAWS = ("normal", "uniform")  # the named latent laws

Law = str | Callable[[int, torch.Generator], torch.Tensor]


def _chunk_seed(seed: int, chunk: int) -> int:
    digest = hashlib.blake2b(f"gandissect-latents/{seed}/{chunk}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "little") & (2**63 - 1)


def _block(law: Law, z_dim: int, generator: torch.Generator) -> torch.Tensor:
    """One chunk of ``CHUNK`` latents drawn from ``law`` with ``generator``."""
    if law == "normal":
        return torch.randn(CHUNK, z_dim, generator=generator)
    if law == "uniform":
        return torch.rand(CHUNK, z_dim, generator=generator) * 2 - 1
    if isinstance(law, str):
        raise UserError(f"unknown latent law {law!r}; use one of {', '.join(LAWS)}")
    block = law(CHUNK, generator)
    if not isinstance(block, torch.Tensor) or tuple(block.shape) != (CHUNK, z_dim) \
            or not block.is_floating_point():
        shape = tuple(block.shape) if isinstance(block, torch.Tensor) else type(block).__name__
        raise UserError(f"sample_latent({CHUNK}, generator) must return a float tensor "
                        f"({CHUNK}, {z_dim}), got {shape}")
    return block.detach().float().cpu()


def latents(seed: int, indices: Iterable[int] | torch.Tensor, z_dim: int,
            law: Law = "normal") -> torch.Tensor:
    """Latents ``(len(indices), z_dim)`` (float32, CPU) of samples ``indices``, drawn from
    ``law`` (``"normal"``, ``"uniform"`` or a ``sample_latent(n, generator)`` function)."""
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
        block = _block(law, z_dim, generator)
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


def latent_law(generator: nn.Module) -> Law:
    """The law of ``generator``'s latents: its ``sample_latent`` method, else its ``latent``
    attribute (``"normal"`` when it has none)."""
    own = getattr(generator, "sample_latent", None)
    if callable(own):
        return own
    law = getattr(generator, "latent", None) or "normal"
    if law not in LAWS:
        raise UserError(f"unknown latent law {law!r}; use one of {', '.join(LAWS)}")
    return law


def law_name(generator: nn.Module) -> str:
    """How ``latent_law`` is spelled in settings and reports (``sample_latent`` for a method)."""
    law = latent_law(generator)
    return law if isinstance(law, str) else "sample_latent"


def sample_latents(generator: nn.Module, seed: int,
                   indices: Iterable[int] | torch.Tensor) -> torch.Tensor:
    """``generator``'s latents of samples ``indices`` (see ``latents``), from its own law."""
    return latents(seed, indices, z_dim_of(generator), latent_law(generator))
