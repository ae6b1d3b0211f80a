"""StyleGAN2 checkpoints in rosinality's ``stylegan2-pytorch`` layout -> ``StyleGAN2Generator``.

The format of that project's ``train.py`` and ``convert_weight.py`` (the most used PyTorch
StyleGAN2 files): a ``.pt`` dict with the generator's state dict under ``g_ema`` (the averaged
weights), perhaps ``g`` and ``d`` (training copies), ``latent_avg`` (the mean ``w`` of converted
official models) and training state (``g_optim``, ``d_optim``, ``args``, ``ada_aug_p``). Only
``g_ema`` and ``latent_avg`` are read; a bare generator state dict, or a ``.safetensors`` file
with those keys (``g_ema.`` prefixed or not), loads too. Reading never runs code from the file:
``args`` (an ``argparse.Namespace``) is the one class allowed besides tensors and containers.

Generator keys: ``style.{1..n_mlp}.weight`` / ``.bias`` (mapping network), ``input.input``,
``conv1.*`` and ``convs.{j}.*`` (``conv.weight``, ``conv.modulation.weight`` / ``.bias``,
``conv.blur.kernel`` on upsampling layers, ``noise.weight``, ``activate.bias``), ``to_rgb1.*``
and ``to_rgbs.{j}.*`` (``conv.weight``, ``conv.modulation.*``, ``bias``, ``upsample.kernel``)
and ``noises.noise_{i}``. They become ``mapping.*``, ``layer1`` ... ``layerN``,
``to_rgb_{r}x{r}`` / ``output_{R}x{R}`` and each layer's ``noise.fixed``. The mapping width,
depth, channels per resolution and resolution are read from the weight shapes; the mapping's
learning-rate multiplier (0.01 in every released model) is not stored and is assumed.
"""

from __future__ import annotations

import argparse
import contextlib
import re
from collections.abc import Mapping
from pathlib import Path

import torch

from gandissect.errors import UserError
from gandissect.models.loaders.files import (
    _torch_load,
    existing_file,
    fit_state_dict,
    read_state_dict,
)
from gandissect.models.stylegan2 import StyleGAN2Generator

__all__ = ["allowing_namespace", "load_stylegan2", "read_stylegan2_checkpoint",
           "rename_rosinality_keys", "stylegan2_from_state_dict", "stylegan2_sizes"]

_STYLE = re.compile(r"^style\.(\d+)\.weight$")
_CONVS = re.compile(r"^convs\.(\d+)\.conv\.weight$")
_RENAMES = [
    (re.compile(r"^style\.(.+)$"), lambda m, r: f"mapping.{m[1]}"),
    (re.compile(r"^conv1\.(.+)$"), lambda m, r: f"layer1.{m[1]}"),
    (re.compile(r"^convs\.(\d+)\.(.+)$"), lambda m, r: f"layer{int(m[1]) + 2}.{m[2]}"),
    (re.compile(r"^noises\.noise_(\d+)$"), lambda m, r: f"layer{int(m[1]) + 1}.noise.fixed"),
    (re.compile(r"^to_rgb1\.(.+)$"), lambda m, r: f"to_rgb_4x4.{m[1]}"),
    (re.compile(r"^to_rgbs\.(\d+)\.(.+)$"), lambda m, r: _rgb_name(8 * 2 ** int(m[1]), r)
     + f".{m[2]}"),
]


def _rgb_name(size: int, resolution: int) -> str:
    return f"output_{size}x{size}" if size == resolution else f"to_rgb_{size}x{size}"


def _shown(state: Mapping[str, object]) -> str:
    keys = list(state)
    return ", ".join(keys[:5]) + (" ..." if len(keys) > 5 else "")


def stylegan2_sizes(state: Mapping[str, torch.Tensor]) -> dict[str, int | list[int]]:
    """``style_dim``, ``n_mlp``, ``channels`` (4x4 first) and ``blur_size`` of a state dict in
    rosinality's layout, read from the weight shapes."""
    mapping = sorted(int(m[1]) for m in map(_STYLE.match, state) if m)
    convs = sorted(int(m[1]) for m in map(_CONVS.match, state) if m)
    if (not mapping or mapping != list(range(1, len(mapping) + 1)) or "input.input" not in state
            or "conv1.conv.weight" not in state or convs != list(range(len(convs)))
            or len(convs) % 2):
        raise UserError(
            "not a StyleGAN2 generator in rosinality's stylegan2-pytorch layout: expected "
            "style.1.weight ... style.N.weight, input.input, conv1.conv.weight and pairs of "
            f"convs.J.conv.weight; found keys {_shown(state)}")
    dims = {"style.1.weight": 2, "input.input": 4, "convs.0.conv.blur.kernel": 2,
            **{f"convs.{j}.conv.weight": 5 for j in convs}}
    misshapen = [f"{key} {tuple(state[key].shape)}" for key, dim in dims.items()
                 if key in state and state[key].dim() != dim]
    if misshapen:
        raise UserError("not a StyleGAN2 generator in rosinality's layout: weights of the wrong "
                        f"shape: {', '.join(misshapen[:5])}")
    channels = [int(state["input.input"].shape[1])]
    channels += [int(state[f"convs.{j}.conv.weight"].shape[1]) for j in range(0, len(convs), 2)]
    blur = state.get("convs.0.conv.blur.kernel")
    return {"style_dim": int(state["style.1.weight"].shape[1]), "n_mlp": len(mapping),
            "channels": channels, "blur_size": int(blur.shape[0]) if blur is not None else 4}


def rename_rosinality_keys(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """rosinality's top-level names -> ``StyleGAN2Generator``'s (see the module docstring);
    other keys are kept, for ``fit_state_dict`` to report."""
    n_rgbs = sum(1 for key in state if re.match(r"^to_rgbs\.\d+\.bias$", key))
    resolution = 4 * 2 ** n_rgbs
    renamed = {}
    for key, value in state.items():
        for pattern, rename in _RENAMES:
            found = pattern.match(key)
            if found:
                key = rename(found, resolution)
                break
        renamed[key] = value
    return renamed


def allowing_namespace():
    """``torch.load`` may rebuild ``argparse.Namespace`` (``args`` of training checkpoints)."""
    safe_globals = getattr(torch.serialization, "safe_globals", None)
    return safe_globals([argparse.Namespace]) if safe_globals else contextlib.nullcontext()


def _tensors(state: object, path: Path, what: str) -> dict[str, torch.Tensor]:
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor)
                                                 for v in state.values()):
        raise UserError(f"{path}: {what} is not a state dict of tensors")
    return {str(key): value for key, value in state.items()}


def read_stylegan2_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor],
                                                          torch.Tensor | None]:
    """``(generator state dict, latent_avg or None)`` of a file in rosinality's format."""
    path = existing_file(path)
    if path.suffix == ".safetensors":
        state = read_state_dict(path)
        latent_avg = state.pop("latent_avg", None)
        if any(key.startswith("g_ema.") for key in state):
            state = {k.removeprefix("g_ema."): v for k, v in state.items()
                     if k.startswith("g_ema.")}
        return state, latent_avg
    with allowing_namespace():
        checkpoint = _torch_load(path)
    if not isinstance(checkpoint, Mapping):
        raise UserError(f"{path} holds a {type(checkpoint).__name__}, not a StyleGAN2 "
                        "checkpoint")
    latent_avg = checkpoint.get("latent_avg")
    if latent_avg is not None and not isinstance(latent_avg, torch.Tensor):
        raise UserError(f"{path}: latent_avg is a {type(latent_avg).__name__}, not a tensor")
    for key in ("g_ema", "g"):  # the averaged generator is the one to dissect
        if isinstance(checkpoint.get(key), Mapping):
            return _tensors(checkpoint[key], path, key), latent_avg
    if "style.1.weight" in checkpoint:  # a bare generator state dict
        state = {k: v for k, v in checkpoint.items() if k != "latent_avg"}
        return _tensors(state, path, "the file"), latent_avg
    raise UserError(f"{path} is not a StyleGAN2 checkpoint in rosinality's layout: no g_ema "
                    f"generator; top-level keys: {_shown(checkpoint)}")


def stylegan2_from_state_dict(state: Mapping[str, torch.Tensor],
                              latent_avg: torch.Tensor | None = None,
                              source: str = "the state dict") -> StyleGAN2Generator:
    """A ``StyleGAN2Generator`` sized by and loaded with ``state`` (rosinality's names); its
    ``w_avg`` is ``latent_avg``, or the mean of 4096 mapped latents when that is None."""
    generator = StyleGAN2Generator(**stylegan2_sizes(state))
    renamed = rename_rosinality_keys(state)
    renamed["w_avg"] = generator.w_avg  # not part of the generator's state dict in the file
    fit_state_dict(generator, renamed, source)
    if latent_avg is None:
        generator.w_avg.copy_(generator.mean_w())
    elif latent_avg.numel() != generator.style_dim:
        raise UserError(f"{source}: latent_avg has {latent_avg.numel()} values, the mapping "
                        f"network {generator.style_dim}")
    else:
        generator.w_avg.copy_(latent_avg.reshape(-1))
    return generator


def load_stylegan2(path: str | Path, device: str | torch.device = "cpu",
                   truncation: float = 1.0) -> StyleGAN2Generator:
    """The ``g_ema`` generator of a rosinality ``stylegan2-pytorch`` file, in eval mode, with
    truncation psi ``truncation`` (1: none)."""
    if not 0 <= truncation <= 1:
        raise UserError(f"truncation must lie in [0, 1], got {truncation}")
    state, latent_avg = read_stylegan2_checkpoint(path)
    generator = stylegan2_from_state_dict(state, latent_avg, str(path))
    generator.truncation = float(truncation)
    return generator.to(device).eval()
