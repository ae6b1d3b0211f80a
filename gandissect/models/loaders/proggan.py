"""ProGAN checkpoints in the GAN Dissection layout -> ``ProGANGenerator``.

Keys ``layer{i}.conv.weight`` / ``layer{i}.wscale.b`` and ``output_{R}x{R}.conv.weight`` /
``.wscale.b`` (the released LSUN models), or the legacy ``features.{i-1}.*`` / ``output.*``
names; bare or wrapped in ``{'state_dict': ...}``. The latent size, the channels per
resolution and the resolution are read from the weight shapes; the weight scale is computed,
never stored, so the file's ``wscale.b`` is the whole of each ``WScale``'s state.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from gandissect.errors import UserError
from gandissect.models.loaders.files import fit_state_dict, read_state_dict
from gandissect.models.proggan import ProGANGenerator

__all__ = ["load_proggan", "proggan_from_state_dict", "proggan_sizes", "rename_legacy_keys"]

_LEGACY = re.compile(r"^features\.(\d+)\.(.+)$")
_CONV = re.compile(r"^layer(\d+)\.conv\.weight$")


def _resolution(n_layers: int) -> int:
    return 4 * 2 ** (n_layers // 2 - 1)


def rename_legacy_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``features.{i}.*`` -> ``layer{i+1}.*`` and ``output.*`` -> ``output_{R}x{R}.*``."""
    if not any(_LEGACY.match(key) for key in state):
        return state
    n_layers = sum(1 for key in state if _LEGACY.match(key) and key.endswith(".conv.weight"))
    size = _resolution(n_layers)
    renamed = {}
    for key, value in state.items():
        legacy = _LEGACY.match(key)
        if legacy:
            key = f"layer{int(legacy.group(1)) + 1}.{legacy.group(2)}"
        elif key.startswith("output."):
            key = f"output_{size}x{size}." + key.removeprefix("output.")
        renamed[key] = value
    return renamed


def proggan_sizes(state: dict[str, torch.Tensor]) -> tuple[int, list[int]]:
    """``(z_dim, channels per resolution)`` read from a state dict in the modern layout."""
    numbers = sorted(int(m.group(1)) for m in map(_CONV.match, state) if m)
    if not numbers or numbers != list(range(1, len(numbers) + 1)) or len(numbers) % 2:
        shown = ", ".join(list(state)[:5])
        raise UserError(
            "not a ProGAN checkpoint in the GAN Dissection layout: expected an even number of "
            f"layers layer1.conv.weight ... layerN.conv.weight; found keys {shown} ...")
    flat = [f"layer{i}.conv.weight" for i in numbers if state[f"layer{i}.conv.weight"].dim() != 4]
    if flat:
        raise UserError(f"not a ProGAN checkpoint: {', '.join(flat[:5])} should be 4-D "
                        "convolution weights (out, in, k, k)")
    z_dim = int(state["layer1.conv.weight"].shape[1])
    channels = [int(state[f"layer{i}.conv.weight"].shape[0])
                for i in range(2, len(numbers) + 1, 2)]
    return z_dim, channels


def proggan_from_state_dict(state: dict[str, torch.Tensor],
                            source: str = "the state dict") -> ProGANGenerator:
    """A ``ProGANGenerator`` sized by and loaded with ``state`` (modern or legacy names)."""
    state = rename_legacy_keys(state)
    z_dim, channels = proggan_sizes(state)
    generator = ProGANGenerator(z_dim, channels)
    fit_state_dict(generator, state, source)
    return generator


def load_proggan(path: str | Path, device: str | torch.device = "cpu") -> ProGANGenerator:
    """The ProGAN generator of a ``.pth`` / ``.pt`` / ``.safetensors`` file, in eval mode."""
    return proggan_from_state_dict(read_state_dict(path), str(path)).to(device).eval()
