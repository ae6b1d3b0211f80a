"""User code as models: ``package.module:factory`` entry points and TorchScript files, and the
checks a generator from either must pass before any long job starts.

A factory is imported with ``importlib`` (never ``eval``) and called without arguments; a
generator declares its latent size as a ``z_dim`` attribute, or it is given, or it is read
from the first weight's shape and confirmed by running latents. Images must come out as
``(N, 3, H, W)`` in about [-1, 1] (the segmenter's input).

Two conventions of older generator code are taken as they are, by hooks on the model that leave
its layers and their names alone: a latent of shape ``(N, z_dim, 1, 1)`` (the DCGAN convention)
is given as ``(N, z_dim)`` and reshaped on the way in (``latent_4d``), and grey images
``(N, 1, H, W)`` come out repeated to RGB (``image_channels`` = 1), so they are shown and
segmented as colour images are.

TorchScript modules take no forward hooks, so a TorchScript generator is wrapped in Python
modules: when running its top-level children one after another reproduces its output (as for
a traced ProGAN), each child becomes a traceable layer under its own name; otherwise the whole
file is one layer, ``model``.
"""

from __future__ import annotations

import importlib
import re
import warnings
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from gandissect.errors import UserError
from gandissect.models.loaders.files import existing_file
from gandissect.torchutil import model_device

__all__ = ["RANGE_LIMIT", "ScriptedGenerator", "ScriptedLayer", "check_generator",
           "import_factory", "is_factory_spec", "load_torchscript", "scripted_generator"]

_FACTORY = re.compile(r"^[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")
RANGE_LIMIT = 3.0  # |pixel| beyond this is not a [-1, 1] image, whatever the weights


def is_factory_spec(spec: str) -> bool:
    """Whether ``spec`` reads ``package.module:factory`` (dotted identifiers, one colon)."""
    return bool(_FACTORY.match(spec))


def import_factory(spec: str) -> Callable[[], object]:
    """The callable ``package.module:factory`` names, imported with ``importlib``."""
    if not is_factory_spec(spec):
        raise UserError(f"{spec!r} is not of the form package.module:factory")
    module_name, _, name = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise UserError(f"cannot import {module_name!r} for {spec!r}: {error}; is the package "
                        "installed or on PYTHONPATH?") from None
    factory = getattr(module, name, None)
    if not callable(factory):
        raise UserError(f"module {module_name} has no function {name!r} (from {spec!r})")
    return factory


def load_torchscript(path: str | Path, device: str | torch.device = "cpu") -> torch.nn.Module:
    """A TorchScript file (``torch.jit.save``) loaded onto ``device``, in eval mode."""
    path = existing_file(path, "TorchScript file")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated, still works
        try:
            module = torch.jit.load(str(path), map_location=device)
        except (RuntimeError, ValueError) as error:
            first = str(error).strip().splitlines()[0] if str(error).strip() else ""
            raise UserError(f"{path} is not a TorchScript file (torch.jit.save): {first}; for "
                            "a state dict use a loader scheme such as proggan:PATH") from None
    return module.eval()


def _latent_candidates(model: nn.Module, z_dim: int | None) -> list[int]:
    declared = getattr(model, "z_dim", None)
    if z_dim is not None and isinstance(declared, int) and declared != z_dim:
        raise UserError(f"latent size {z_dim} was given, but {type(model).__name__} declares "
                        f"z_dim = {declared}")
    if z_dim is not None or isinstance(declared, int):
        return [z_dim or declared]
    first = next((p for p in model.parameters() if p.dim() >= 2), None)
    return list(dict.fromkeys(first.shape[:2][::-1])) if first is not None else []


def _as_latent_4d(module: nn.Module, inputs: tuple) -> tuple:
    """Forward pre-hook: ``(N, z_dim)`` latents to the ``(N, z_dim, 1, 1)`` a DCGAN takes."""
    z, *rest = inputs
    return (z[:, :, None, None], *rest) if z.dim() == 2 else None


def _grey_to_rgb(module: nn.Module, inputs: tuple, images: torch.Tensor) -> torch.Tensor:
    """Forward hook: grey ``(N, 1, H, W)`` images repeated to ``(N, 3, H, W)``."""
    return images.expand(-1, 3, -1, -1) if images.dim() == 4 and images.shape[1] == 1 else None


def _run_latent(model: nn.Module, size: int, count: int) -> torch.Tensor:
    """``model``'s images of ``count`` seeded latents of ``size``; when ``(N, size)`` latents
    fail and ``(N, size, 1, 1)`` ones run, the model learns to take the former."""
    z = torch.randn(count, size, generator=torch.Generator().manual_seed(0))
    z = z.to(model_device(model))
    with torch.no_grad():
        try:
            return model(z)
        except Exception as error:  # any failure of user code: try the DCGAN shape once
            try:
                images = model(z[:, :, None, None])
            except Exception:  # that one fails too: report the first failure
                raise error from None
    model.register_forward_pre_hook(_as_latent_4d)
    model.latent_4d = True
    return images


def _check_images(images: object, name: str, check_range: bool) -> None:
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise UserError(f"{name} must return (N, 3, H, W) images, got {shape}")
    if not images.is_floating_point() or not bool(torch.isfinite(images).all()):
        raise UserError(f"{name} returned non-float or non-finite images")
    low, high = float(images.min()), float(images.max())
    if check_range and (low >= 0 or max(-low, high) > RANGE_LIMIT):
        raise UserError(f"{name} returned pixels in [{low:.3g}, {high:.3g}]; generators must "
                        "return images in about [-1, 1] (e.g. 2 * x - 1 for [0, 1] images)")


def check_generator(model: nn.Module, z_dim: int | None = None, check_range: bool = True,
                    name: str | None = None) -> nn.Module:
    """Run a latent through ``model`` and check its images (two when checking their range); set
    ``z_dim`` and ``resolution`` when it does not declare them. Clear errors for a latent of the
    wrong size, images of the wrong shape or range. A DCGAN-shaped latent and grey images are
    taken (see the module docstring)."""
    name = name or type(model).__name__
    model.eval()
    candidates = _latent_candidates(model, z_dim)
    if not candidates:
        raise UserError(f"cannot tell the latent size of {name}: give it a z_dim attribute")
    failures = []
    for size in candidates:
        try:
            images = _run_latent(model, size, 2 if check_range else 1)
        except Exception as error:  # any failure of user code: report it with the size tried
            first_line = (str(error).strip().splitlines() or [""])[0]
            failures.append(f"z_dim {size}: {type(error).__name__}: {first_line}")
            continue
        if isinstance(images, torch.Tensor) and images.dim() == 4 and images.shape[1] == 1:
            model.register_forward_hook(_grey_to_rgb)
            model.image_channels = 1
            images = images.expand(-1, 3, -1, -1)
        _check_images(images, name, check_range)
        if getattr(model, "z_dim", None) is None:
            model.z_dim = size
        if getattr(model, "resolution", None) is None and images.shape[2] == images.shape[3]:
            model.resolution = int(images.shape[-1])
        return model
    raise UserError(f"{name} does not take a latent of size {' or '.join(map(str, candidates))}"
                    f" ({'; '.join(failures)}); declare the right size as a z_dim attribute")


class ScriptedLayer(nn.Module):
    """One TorchScript module behind a Python module, so that forward hooks can trace it."""

    def __init__(self, compiled: nn.Module) -> None:
        super().__init__()
        self.compiled = compiled

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.compiled(x)


class ScriptedGenerator(nn.Sequential):
    """A TorchScript generator as a sequence of traceable layers (see the module docstring)."""

    def __init__(self, layers: OrderedDict[str, nn.Module], z_dim: int | None = None,
                 latent_4d: bool = False) -> None:
        super().__init__(OrderedDict((key, ScriptedLayer(m)) for key, m in layers.items()))
        self.z_dim = z_dim
        self.latent_4d = latent_4d

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if self.latent_4d and z.dim() == 2:
            z = z[:, :, None, None]
        return super().forward(z)


def _chained(compiled: nn.Module, z_dim: int, resolution: int | None) -> ScriptedGenerator | None:
    """The file's top-level children as a chain, when the chain reproduces the file's output."""
    children = OrderedDict(compiled.named_children())
    if len(children) < 2:
        return None
    z = torch.randn(2, z_dim, generator=torch.Generator().manual_seed(1)).to(model_device(compiled))
    with torch.no_grad():
        expected = compiled(z)
        for latent_4d in (False, True):
            chain = ScriptedGenerator(children, z_dim, latent_4d)
            try:
                output = chain(z)
            except Exception:  # this latent shape does not run through the chain
                continue
            if output.shape == expected.shape and torch.allclose(output, expected, 1e-4, 1e-5):
                chain.resolution = resolution
                return chain.eval()
    return None


def scripted_generator(compiled: nn.Module, z_dim: int | None = None,
                       check_range: bool = True) -> ScriptedGenerator:
    """Wrap a loaded TorchScript generator, checked; its top-level layers traceable if they
    chain (see the module docstring)."""
    whole = ScriptedGenerator(OrderedDict(model=compiled), getattr(compiled, "z_dim", None))
    if not isinstance(whole.z_dim, int):
        whole.z_dim = None
    check_generator(whole, z_dim, check_range, name="the TorchScript generator")
    return _chained(compiled, whole.z_dim, whole.resolution) or whole
