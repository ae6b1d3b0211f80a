"""DCGAN generators in the layout of PyTorch's own DCGAN code, loaded as ``dcgan:PATH``.

The DCGAN of ``pytorch/examples`` (``dcgan/main.py``, the ``netG_epoch_N.pth`` files it writes)
and of the PyTorch DCGAN face tutorial is one ``nn.Sequential`` called ``main``: transposed
convolutions with 4x4 kernels (the first stride 1 and no padding, from the 1x1 latent to 4x4;
the others stride 2, padding 1, doubling the size), each but the last followed by BatchNorm and
ReLU, the last by Tanh. Its state dict has ``main.{i}.weight`` (transposed convolutions:
``(in, out, 4, 4)``), ``main.{i}.weight/bias/running_mean/running_var`` (BatchNorm), and in
files saved by PyTorch 0.4.1 or later ``main.{i}.num_batches_tracked``. Latent size, widths,
image channels (3, or 1 for digits: shown as grey RGB) and resolution (4 * 2^(convolutions-1),
64 px for the published recipe) are read from the shapes; the positions of BatchNorm and the
activations from the indices. A checkpoint dict holding the generator under ``netG``,
``generator``, ``G`` or ``state_dict`` (as training scripts save it) is unwrapped, and so is a
``module.`` prefix (DataParallel).

Layers are ``main.0`` (4x4), ``main.3`` (8x8), ... by their index, as in the original code, with
the BatchNorm and ReLU after each (``main.2`` is the first block's ReLU output). The latent is
given as ``(N, z_dim)``; the original code's ``(N, z_dim, 1, 1)`` is made here. The code
sampled standard-normal latents (``--latent normal``, the default).
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from gandissect.errors import UserError
from gandissect.models.loaders.files import (
    WRAPPER_KEYS,
    existing_file,
    fit_state_dict,
    read_state_dict,
)

__all__ = ["DCGANGenerator", "dcgan_from_state_dict", "load_dcgan"]

_WRAPPERS = ("netG", "generator", "G", *WRAPPER_KEYS)  # where training scripts keep it
_KEY = re.compile(r"^main\.(\d+)\.(weight|bias|running_mean|running_var|num_batches_tracked)$")


class DCGANGenerator(nn.Module):
    """``z (N, z_dim)`` -> images ``(N, channels, R, R)`` in [-1, 1] through ``main``."""

    def __init__(self, main: nn.Sequential, z_dim: int, resolution: int,
                 image_channels: int) -> None:
        super().__init__()
        self.main = main
        self.z_dim, self.resolution, self.image_channels = z_dim, resolution, image_channels

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.dim() != 2 or z.shape[1] != self.z_dim:
            raise UserError(f"latent must be (N, {self.z_dim}), got {tuple(z.shape)}")
        images = self.main(z[:, :, None, None])
        return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images


def _layout(state: Mapping[str, torch.Tensor], source: str) -> OrderedDict[str, nn.Module]:
    """The ``main`` modules by index, rebuilt from the state dict's keys and shapes."""
    keys = {key: _KEY.match(key) for key in state}
    strays = [key for key, match in keys.items() if match is None]
    if strays or not keys:
        raise UserError(f"{source} is not a DCGAN generator of PyTorch's DCGAN code (keys "
                        f"main.N.weight ...; found {', '.join(strays[:4]) or 'nothing'}); for "
                        "another layout, write a plug-in factory (docs/models.md)")
    params: dict[int, dict[str, torch.Tensor]] = {}
    for key, match in keys.items():
        params.setdefault(int(match[1]), {})[match[2]] = state[key]
    convs = [i for i, p in sorted(params.items()) if p.get("weight") is not None
             and p["weight"].dim() == 4]
    if not convs or convs[0] != 0:
        raise UserError(f"{source}: a DCGAN generator starts with a transposed convolution "
                        "main.0.weight (z_dim, width, 4, 4)")
    modules: OrderedDict[str, nn.Module] = OrderedDict()
    for n, index in enumerate(convs):
        weight = params[index]["weight"]
        last = n == len(convs) - 1
        modules[str(index)] = nn.ConvTranspose2d(
            weight.shape[0], weight.shape[1], weight.shape[2], stride=1 if n == 0 else 2,
            padding=0 if n == 0 else (weight.shape[2] - 2) // 2, bias="bias" in params[index])
        after = index + 1
        if not last and "running_mean" in params.get(after, {}):
            modules[str(after)] = nn.BatchNorm2d(weight.shape[1])
            after += 1
        modules[str(after)] = nn.Tanh() if last else nn.ReLU(inplace=True)
        following = convs[n + 1] if not last else after + 1
        if following != after + 1 or any(after < i < following for i in params):
            raise UserError(f"{source}: main.{index} is not followed by [BatchNorm,] ReLU / "
                            "Tanh as in PyTorch's DCGAN; write a plug-in factory for this "
                            "layout (docs/models.md)")
    return modules


def dcgan_from_state_dict(state: Mapping[str, torch.Tensor],
                          source: str = "the state dict") -> DCGANGenerator:
    """A ``DCGANGenerator`` built from and loaded with a ``main.*`` state dict."""
    main = nn.Sequential(_layout(state, source))
    convs = [m for m in main if isinstance(m, nn.ConvTranspose2d)]
    generator = DCGANGenerator(main, convs[0].in_channels, 4 * 2 ** (len(convs) - 1),
                               convs[-1].out_channels)
    if generator.image_channels not in (1, 3):
        raise UserError(f"{source} draws {generator.image_channels}-channel images; gandissect "
                        "shows and segments RGB (3) or grey (1) images")
    fit_state_dict(generator, state, source)
    return generator.eval()


def load_dcgan(path: str | Path, device: str | torch.device = "cpu") -> DCGANGenerator:
    """The DCGAN generator in ``path`` (``.pth``, ``.pt`` or ``.safetensors``), on ``device``,
    in eval mode; read without running code from the file."""
    path = existing_file(path)
    return dcgan_from_state_dict(read_state_dict(path, _WRAPPERS), str(path)).to(device)
