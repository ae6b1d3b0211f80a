"""Feature visualisation: what a unit, channel, layer or class responds to.

Two views of one question:

- **Activation maximisation** (``visualize``): optimise an input image so that an
  ``Objective`` grows. The image is *parametrised* (``PixelImage`` or, by default,
  ``FourierImage``: a learned spectrum scaled by 1 / frequency, colours decorrelated with
  ``SCENEWORLD_COLOR_MATRIX``, squashed into (-1, 1) with tanh) and randomly *transformed*
  at every step (``Jitter``, ``RandomScale``, ``RandomRotate``), so that what survives is a
  pattern the network responds to robustly, not adversarial pixel noise. Penalties are
  objectives too: ``channel("layer3", 5) - 0.05 * total_variation()``.
- **The data-driven view** (``top_activating``, ``sceneworld_top_images``): the dataset images
  on which each unit fires most, streamed through ``gandissect.stats.TopK``.

Objectives are functions of one forward pass (``Activations``: the traced layers' outputs,
the model output and the untransformed image) returning one value per batch element::

    images, history = visualize(model, channel("layer3", 5) + 0.5 * class_logit(2))

Conventions: images are ``(B, 3, H, W)`` in [-1, 1], the models' input range; the model is put
in eval mode with frozen parameters for the duration and restored afterwards, and every hook is
removed, also when the forward or an objective raises.
"""

from __future__ import annotations

import math
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from gandissect.attribute.base import attribution_mode
from gandissect.errors import UserError
from gandissect.hooks import Trace, TraceDict
from gandissect.spatial import first_tensor, units_view
from gandissect.stats import TopK

__all__ = [
    "Activations",
    "Objective",
    "unit",
    "channel",
    "layer",
    "class_logit",
    "total_variation",
    "high_frequency",
    "pixel_l2",
    "objective_value",
    "SCENEWORLD_COLOR_MATRIX",
    "color_matrix",
    "sceneworld_color_matrix",
    "decorrelate_colors",
    "spectrum_scale",
    "PixelImage",
    "FourierImage",
    "make_image",
    "shift",
    "rotate_scale",
    "Jitter",
    "RandomScale",
    "RandomRotate",
    "default_transforms",
    "apply_transforms",
    "visualize",
    "TopActivating",
    "unit_scores",
    "top_activating",
    "sceneworld_top_images",
]


# ---------------------------------------------------------------------------------------------
# Objectives


@dataclass
class Activations:
    """What an objective sees of one forward pass.

    ``layers``: each traced layer's output (with its graph); ``output``: the model output, None
    when no term needs it (the forward then stops after the last traced layer); ``image``: the
    parametrised image before the random transforms (what penalties act on).
    """

    layers: dict[str, torch.Tensor]
    output: torch.Tensor | None
    image: torch.Tensor


class Objective:
    """A score to maximise, one value per batch element: ``fn(Activations) -> (B,)``.

    ``layers`` names the layers ``fn`` reads, ``needs_output`` whether it reads the model
    output. Objectives add (``a + b``, ``a - b``, ``sum([...])``) and scale by numbers
    (``0.5 * a``); the result traces the union of the layers.
    """

    def __init__(self, fn: Callable[[Activations], torch.Tensor], layers: Iterable[str] = (),
                 needs_output: bool = False, name: str = "objective") -> None:
        self.fn = fn
        self.layers = frozenset(layers)
        self.needs_output = needs_output
        self.name = name

    def __call__(self, acts: Activations) -> torch.Tensor:
        return self.fn(acts)

    def __repr__(self) -> str:
        return f"Objective({self.name})"

    def __add__(self, other: Objective | float) -> Objective:
        if isinstance(other, (int, float)):
            return Objective(lambda a: self(a) + other, self.layers, self.needs_output,
                             f"{self.name} + {other}")
        if not isinstance(other, Objective):
            return NotImplemented
        return Objective(lambda a: self(a) + other(a), self.layers | other.layers,
                         self.needs_output or other.needs_output, f"{self.name} + {other.name}")

    def __radd__(self, other: float) -> Objective:
        return self if isinstance(other, (int, float)) and other == 0 else self + other

    def __mul__(self, factor: float) -> Objective:
        if not isinstance(factor, (int, float)):
            return NotImplemented
        return Objective(lambda a: factor * self(a), self.layers, self.needs_output,
                         f"{factor} * ({self.name})")

    __rmul__ = __mul__

    def __neg__(self) -> Objective:
        return -1.0 * self

    def __sub__(self, other: Objective | float) -> Objective:
        return self + (-other)

    def __rsub__(self, other: float) -> Objective:
        return (-self) + other


def _layer_output(acts: Activations, name: str, c: int | None = None) -> torch.Tensor:
    a = acts.layers[name]
    if a.dim() < 2:
        raise UserError(f"layer {name!r} outputs shape {tuple(a.shape)}; objectives need "
                        "(B, channels, ...)")
    if c is not None and not 0 <= c < a.shape[1]:
        raise UserError(f"channel {c} is out of range: layer {name!r} has {a.shape[1]} "
                        f"channels (0 .. {a.shape[1] - 1})")
    return a


def unit(layer: str, channel: int, y: int | None = None, x: int | None = None) -> Objective:
    """One unit's activation at one spatial position ``(y, x)`` (default: the centre,
    ``(H // 2, W // 2)``). For a ``(B, C)`` layer output it is simply column ``channel``."""

    def fn(acts: Activations) -> torch.Tensor:
        a = _layer_output(acts, layer, channel)
        if a.dim() == 2:
            return a[:, channel]
        if a.dim() != 4:
            raise UserError(f"unit() needs a (B, C, H, W) or (B, C) output; layer {layer!r} "
                            f"gives {tuple(a.shape)}")
        h, w = a.shape[2:]
        row, col = h // 2 if y is None else y, w // 2 if x is None else x
        if not (0 <= row < h and 0 <= col < w):
            raise UserError(f"position ({row}, {col}) is outside layer {layer!r}'s {h} x {w}")
        return a[:, channel, row, col]

    return Objective(fn, [layer], name=f"unit({layer!r}, {channel}, {y}, {x})")


def channel(layer: str, c: int) -> Objective:
    """Channel ``c``'s activation averaged over all positions."""

    def fn(acts: Activations) -> torch.Tensor:
        a = _layer_output(acts, layer, c)[:, c]
        return a.reshape(a.shape[0], -1).mean(1)

    return Objective(fn, [layer], name=f"channel({layer!r}, {c})")


def layer(layer: str) -> Objective:
    """DeepDream: the mean of the squared activations of the whole layer."""

    def fn(acts: Activations) -> torch.Tensor:
        return _layer_output(acts, layer).pow(2).flatten(1).mean(1)

    return Objective(fn, [layer], name=f"layer({layer!r})")


def class_logit(c: int) -> Objective:
    """Column ``c`` of the model's ``(B, classes)`` output (a logit, before any softmax)."""

    def fn(acts: Activations) -> torch.Tensor:
        out = acts.output
        if out is None or out.dim() != 2:
            shape = None if out is None else tuple(out.shape)
            raise UserError(f"class_logit needs a (B, classes) model output, got {shape}")
        if not 0 <= c < out.shape[1]:
            raise UserError(f"class {c} is out of range: the model has {out.shape[1]} "
                            f"classes (0 .. {out.shape[1] - 1})")
        return out[:, c]

    return Objective(fn, needs_output=True, name=f"class_logit({c})")


def total_variation() -> Objective:
    """Mean absolute difference between vertically and horizontally adjacent pixels (summed
    over the two directions). Subtract it to penalise high frequencies."""

    def fn(acts: Activations) -> torch.Tensor:
        image = acts.image
        dy = (image[..., 1:, :] - image[..., :-1, :]).abs().flatten(1).mean(1)
        dx = (image[..., :, 1:] - image[..., :, :-1]).abs().flatten(1).mean(1)
        return dy + dx

    return Objective(fn, name="total_variation()")


def _radial_frequency(h: int, w: int) -> torch.Tensor:
    """|f| in cycles per pixel of each ``rfft2`` bin: ``(h, w // 2 + 1)``, float64 on the CPU."""
    fy = torch.fft.fftfreq(h, dtype=torch.float64)[:, None]
    fx = torch.fft.rfftfreq(w, dtype=torch.float64)[None, :]
    return torch.sqrt(fy * fy + fx * fx)


def high_frequency(cutoff: float = 0.25) -> Objective:
    """Energy above ``cutoff`` cycles per pixel: the mean over bins and channels of
    ``|rfft2(image)|^2`` (orthonormal) where ``|f| > cutoff``. Subtract it as a penalty."""

    def fn(acts: Activations) -> torch.Tensor:
        image = acts.image
        spectrum = torch.fft.rfft2(image, norm="ortho").abs().pow(2)
        mask = (_radial_frequency(*image.shape[-2:]) > cutoff).to(image.device)
        return (spectrum * mask).flatten(1).sum(1) / (mask.sum() * image.shape[1]).clamp(min=1)

    return Objective(fn, name=f"high_frequency({cutoff})")


def pixel_l2() -> Objective:
    """Mean squared pixel value (distance from mid grey). Subtract it as a penalty."""
    return Objective(lambda acts: acts.image.pow(2).flatten(1).mean(1), name="pixel_l2()")


def _forward(model: nn.Module, objective: Objective, seen: torch.Tensor,
             image: torch.Tensor) -> torch.Tensor:
    """Run ``model(seen)`` with the objective's layers traced; its ``(B,)`` values."""
    layers = sorted(objective.layers)
    output = None
    if layers:
        with TraceDict(model, layers, stop=not objective.needs_output, detach=False,
                       view=first_tensor) as traces:
            output = model(seen)  # stops early (output stays None) when no term needs it
        # a ViT's tokens as maps on the patch grid, so that units are channels
        traced = {name: units_view(model, name, traces[name].output, seen.shape[-2:])
                  for name in layers}
    else:  # penalties alone need no forward pass
        output, traced = (model(seen) if objective.needs_output else None), {}
    values = objective(Activations(traced, output, image))
    if not isinstance(values, torch.Tensor) or values.shape != (seen.shape[0],):
        shape = tuple(values.shape) if isinstance(values, torch.Tensor) else type(values)
        raise UserError(f"{objective!r} must return one value per image, shape "
                        f"({seen.shape[0]},); got {shape}")
    return values


def objective_value(model: nn.Module, objective: Objective, images: torch.Tensor) -> torch.Tensor:
    """The objective's ``(B,)`` values on ``images`` (eval mode, no gradients, no transforms)."""
    if _has_tensors(model):  # a parameter-free model takes the images as they are
        images = images.to(*_device_dtype(model))
    with attribution_mode(model), torch.no_grad():
        return _forward(model, objective, images, images)


# ---------------------------------------------------------------------------------------------
# Colour decorrelation

# The symmetric square root of the RGB covariance of SceneWorld pixels (model range [-1, 1]),
# scaled so that its largest column has unit norm: ``sceneworld_color_matrix(n=256, seed=0)``
# rounded to 4 decimals. Pixels of rendered scenes are strongly correlated across channels
# (correlations 0.61 R-G, 0.43 R-B, 0.67 G-B; blue varies most, std 0.57 against 0.36 and 0.32),
# so independent noise mapped through this matrix already has SceneWorld's colour statistics,
# and the optimiser's steps are taken in a whitened colour space.
SCENEWORLD_COLOR_MATRIX = torch.tensor([[0.5963, 0.1710, 0.1483],
                                        [0.1710, 0.4777, 0.2464],
                                        [0.1483, 0.2464, 0.9578]])


def color_matrix(pixels: torch.Tensor) -> torch.Tensor:
    """``(N, 3)`` RGB samples -> the symmetric square root ``S`` of their covariance
    (``S @ S.T = cov``, up to scale), divided by its largest column norm; float64."""
    pixels = torch.as_tensor(pixels, dtype=torch.float64).reshape(-1, 3)
    eigenvalues, eigenvectors = torch.linalg.eigh(torch.cov(pixels.T))
    root = eigenvectors @ torch.diag(eigenvalues.clamp(min=0).sqrt()) @ eigenvectors.T
    return root / root.norm(dim=0).max()


def sceneworld_color_matrix(n: int = 256, seed: int = 0, size: int = 64) -> torch.Tensor:
    """``color_matrix`` of the pixels of SceneWorld scenes ``0 .. n - 1`` of world ``seed``
    (how ``SCENEWORLD_COLOR_MATRIX`` was made)."""
    from gandissect.world import render_batch
    from gandissect.world.dataset import image_to_tensor

    images = image_to_tensor(render_batch(seed, range(n), size)["image"])
    return color_matrix(images.movedim(1, -1).reshape(-1, 3))


def decorrelate_colors(raw: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """Apply the colour matrix to every pixel: ``out[:, :, y, x] = matrix @ raw[:, :, y, x]``."""
    return torch.einsum("cd,bdhw->bchw", matrix.to(raw.device, raw.dtype), raw)


# ---------------------------------------------------------------------------------------------
# Image parametrisations


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    h, w = (int(s) for s in size)
    return h, w


class _ImageParam(nn.Module, ABC):
    """``forward() -> tanh(color_matrix @ raw())``: ``(B, 3, H, W)`` images in (-1, 1).

    ``decorrelate``: True uses ``SCENEWORLD_COLOR_MATRIX``, False the identity, or pass a
    ``(3, 3)`` matrix.
    """

    def __init__(self, decorrelate: bool | torch.Tensor = True) -> None:
        super().__init__()
        if isinstance(decorrelate, torch.Tensor):
            matrix = decorrelate.float()
        else:
            matrix = SCENEWORLD_COLOR_MATRIX if decorrelate else torch.eye(3)
        if matrix.shape != (3, 3):
            raise UserError(f"a colour matrix is (3, 3), got {tuple(matrix.shape)}")
        self.register_buffer("color", matrix.clone())

    @abstractmethod
    def raw(self) -> torch.Tensor:
        """The unsquashed, colour-decorrelated image."""

    def forward(self) -> torch.Tensor:
        return torch.tanh(decorrelate_colors(self.raw(), self.color))


def _normal(shape: Sequence[int], generator: torch.Generator | None, std: float) -> torch.Tensor:
    return torch.randn(*shape, generator=generator) * std


class PixelImage(_ImageParam):
    """One free parameter per pixel and (decorrelated) channel, initialised N(0, init_std^2)."""

    def __init__(self, batch: int, size: int | Sequence[int], decorrelate: bool | torch.Tensor
                 = True, generator: torch.Generator | None = None, init_std: float = 0.01):
        super().__init__(decorrelate)
        self.pixels = nn.Parameter(_normal((batch, 3, *_pair(size)), generator, init_std))

    def raw(self) -> torch.Tensor:
        return self.pixels


def spectrum_scale(h: int, w: int, dtype: torch.dtype = torch.float64,
                   device: torch.device | str | None = None) -> torch.Tensor:
    """Per ``rfft2`` bin: ``1 / max(|f|, 1 / max(h, w))`` (|f| in cycles per pixel), divided by
    its root mean square. Natural images have spectra falling as 1 / |f|; scaling a white
    learned spectrum this way starts the image, and each optimiser step, with that fall-off, so
    that low frequencies are not drowned by pixel noise. The normalisation makes a unit-variance
    white spectrum give pixels of about unit variance at any size."""
    scale = 1.0 / _radial_frequency(h, w).clamp(min=1.0 / max(h, w))
    return (scale / scale.pow(2).mean().sqrt()).to(device=device, dtype=dtype)


class FourierImage(_ImageParam):
    """An image made from a learned spectrum: ``raw = irfft2(spectrum * spectrum_scale,
    norm="ortho")``. ``spectrum`` holds real and imaginary parts, ``(B, 3, H, W // 2 + 1, 2)``,
    initialised N(0, init_std^2); a zero spectrum gives a constant (mid grey) image."""

    def __init__(self, batch: int, size: int | Sequence[int], decorrelate: bool | torch.Tensor
                 = True, generator: torch.Generator | None = None, init_std: float = 0.01):
        super().__init__(decorrelate)
        self.size = _pair(size)
        h, w = self.size
        self.spectrum = nn.Parameter(_normal((batch, 3, h, w // 2 + 1, 2), generator, init_std))

    def raw(self) -> torch.Tensor:
        scale = spectrum_scale(*self.size, self.spectrum.dtype, self.spectrum.device)
        spectrum = torch.view_as_complex(self.spectrum.contiguous()) * scale
        return torch.fft.irfft2(spectrum, s=self.size, norm="ortho")


def make_image(param: str | nn.Module, batch: int, size: int | Sequence[int],
               generator: torch.Generator | None = None, device=None, dtype=None,
               decorrelate: bool | torch.Tensor = True, init_std: float = 0.01) -> nn.Module:
    """``"pixel"`` or ``"fourier"`` -> a fresh parametrisation; a module is used as is (its
    ``forward()`` must return ``(B, 3, H, W)`` images and its parameters are optimised)."""
    if isinstance(param, nn.Module):
        return param
    kinds = {"pixel": PixelImage, "fourier": FourierImage}
    if param not in kinds:
        raise UserError(f"unknown parametrisation {param!r}; choose from {sorted(kinds)}")
    image = kinds[param](batch, size, decorrelate, generator, init_std)
    return image.to(device=device, dtype=dtype)


# ---------------------------------------------------------------------------------------------
# Transforms: each is ``(images, generator) -> images``, drawing its randomness from the
# generator (a CPU ``torch.Generator``), so a seed fixes the whole sequence.


def shift(images: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Move the content down by ``dy`` and right by ``dx`` pixels (negative: up / left); the
    uncovered border is filled by reflection, the size is kept:
    ``out[..., i, j] = reflect(images)[..., i - dy, j - dx]``."""
    pad = max(abs(dy), abs(dx))
    if pad == 0:
        return images
    h, w = images.shape[-2:]
    if pad >= min(h, w):
        raise UserError(f"a shift of {pad} pixels needs images larger than {pad}, got {h} x {w}")
    padded = F.pad(images, (pad, pad, pad, pad), mode="reflect")
    return padded[..., pad - dy:pad - dy + h, pad - dx:pad - dx + w]


def rotate_scale(images: torch.Tensor, degrees: torch.Tensor | float,
                 scales: torch.Tensor | float = 1.0) -> torch.Tensor:
    """Rotate each image about its centre by ``degrees`` (counter-clockwise as displayed) and
    magnify it by ``scales`` (> 1 zooms in), one value or one per image; bilinear sampling with
    reflected borders, size kept."""
    n = images.shape[0]
    opts = {"device": images.device, "dtype": images.dtype}
    angle = torch.as_tensor(degrees, **opts).expand(n) * (math.pi / 180)
    zoom = torch.as_tensor(scales, **opts).expand(n)
    cos, sin, zero = torch.cos(angle) / zoom, torch.sin(angle) / zoom, torch.zeros_like(angle)
    # affine_grid maps output positions to input positions (x right, y down).
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection",
                         align_corners=False)


class Jitter:
    """Shift the whole batch by a random ``(dy, dx)``, each uniform in ``-pixels .. pixels``."""

    def __init__(self, pixels: int) -> None:
        self.pixels = int(pixels)

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        dy, dx = torch.randint(-self.pixels, self.pixels + 1, (2,), generator=generator).tolist()
        return shift(images, dy, dx)

    def __repr__(self) -> str:
        return f"Jitter({self.pixels})"


class RandomScale:
    """Magnify each image by a factor uniform in ``[low, high]``, size kept."""

    def __init__(self, low: float = 0.9, high: float = 1.1) -> None:
        self.low, self.high = float(low), float(high)

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        u = torch.rand(images.shape[0], generator=generator, dtype=torch.float64)
        scales = (self.low + (self.high - self.low) * u).to(images.device, images.dtype)
        return rotate_scale(images, 0.0, scales)

    def __repr__(self) -> str:
        return f"RandomScale({self.low}, {self.high})"


class RandomRotate:
    """Rotate each image by an angle uniform in ``[-degrees, degrees]``."""

    def __init__(self, degrees: float = 10.0) -> None:
        self.degrees = float(degrees)

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        u = torch.rand(images.shape[0], generator=generator, dtype=torch.float64)
        angles = (self.degrees * (2 * u - 1)).to(images.device, images.dtype)
        return rotate_scale(images, angles)

    def __repr__(self) -> str:
        return f"RandomRotate({self.degrees})"


Transform = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def default_transforms(size: int | Sequence[int] = 64) -> list[Transform]:
    """Jitter by up to 1/16 of the size, scale by 0.9 .. 1.1, rotate by up to 10 degrees,
    jitter again by up to 1/32 (the last jitter hides the resampling grid)."""
    side = min(_pair(size))
    return [Jitter(max(1, side // 16)), RandomScale(0.9, 1.1), RandomRotate(10.0),
            Jitter(max(1, side // 32))]


def apply_transforms(images: torch.Tensor, transforms: Sequence[Transform],
                     generator: torch.Generator) -> torch.Tensor:
    """Apply the transforms in order, all drawing from ``generator``."""
    for transform in transforms:
        images = transform(images, generator)
    return images


# ---------------------------------------------------------------------------------------------
# Activation maximisation


def _has_tensors(model: nn.Module) -> bool:
    return any(t.is_floating_point() for t in list(model.parameters()) + list(model.buffers()))


def _device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    """Where and in what precision the model computes (CPU float32 for a parameter-free one)."""
    for tensor in list(model.parameters()) + list(model.buffers()):
        if tensor.is_floating_point():
            return tensor.device, tensor.dtype
    return torch.device("cpu"), torch.float32


def visualize(
    model: nn.Module,
    objective: Objective,
    steps: int = 256,
    size: int | Sequence[int] = 64,
    lr: float = 0.05,
    param: str | nn.Module = "fourier",
    transforms: Sequence[Transform] | None = None,
    seed: int = 0,
    batch: int = 1,
    progress: bool = False,
    decorrelate: bool | torch.Tensor = True,
    init_std: float = 0.01,
) -> tuple[torch.Tensor, list[float]]:
    """Optimise ``batch`` images to maximise ``objective`` with Adam for ``steps`` steps.

    Each step draws the parametrised image, applies ``transforms`` (None:
    ``default_transforms(size)``; ``[]`` for none), runs the model and ascends the sum of the
    objective over the batch. Returns the final images ``(batch, 3, H, W)`` in [-1, 1] (before
    transforms) and ``history``: the batch-mean objective at every step, on that step's
    transformed images, before its update. One seeded generator draws the initial image and then
    every transform, so a seed gives the same result on the same device. The model's parameters
    are frozen and it runs in eval mode (BatchNorm statistics untouched); training flags,
    ``requires_grad`` and in-place activation flags are restored afterwards and all hooks
    removed, also on errors. ``steps=0`` returns the initial image.

    ``decorrelate`` and ``init_std`` (the initial spread of the parameters: about the pixel
    spread before tanh) go to the parametrisation when ``param`` is a name. The default starts
    from almost flat grey; a unit behind a ReLU that is off on such images gets no gradient and
    never moves: a warning says so, and ``init_std=0.5`` usually wakes it.
    """
    device, dtype = _device_dtype(model)
    generator = torch.Generator().manual_seed(seed)
    image = make_image(param, batch, size, generator, device, dtype, decorrelate, init_std)
    transforms = default_transforms(size) if transforms is None else list(transforms)
    history: list[float] = []
    with attribution_mode(model):
        optimizer = torch.optim.Adam(image.parameters(), lr=lr)
        for step in tqdm(range(steps), desc=f"visualize {objective.name}", disable=not progress):
            optimizer.zero_grad(set_to_none=True)
            drawn = image()
            values = _forward(model, objective, apply_transforms(drawn, transforms, generator),
                              drawn)
            (-values.sum()).backward()
            if step == 0 and not any(p.grad is not None and bool(p.grad.any())
                                     for p in image.parameters()):
                warnings.warn(f"{objective.name} has zero gradient on the initial image (units "
                              "off behind a ReLU?): it will not change; try a larger init_std "
                              "(0.5), another seed or a layer before the activation",
                              stacklevel=2)
            optimizer.step()
            history.append(values.detach().mean().item())
        with torch.no_grad():
            final = image().detach().clamp(-1, 1)
    return final, history


# ---------------------------------------------------------------------------------------------
# The data-driven view: top-activating dataset images


@dataclass
class TopActivating:
    """Per unit, the ``k`` dataset images with the highest unit score, best first.

    ``units``: ``(U,)`` unit ids; ``scores`` ``(U, k)``; ``indices`` ``(U, k)``: positions in
    the stream of images (for SceneWorld, scene indices); ``images``: ``(U, k, H, W, 3)`` uint8
    when the images were re-rendered (``sceneworld_top_images``), else None.
    """

    layer: str
    units: torch.Tensor
    scores: torch.Tensor
    indices: torch.Tensor
    images: np.ndarray | None = None


def unit_scores(activations: torch.Tensor) -> torch.Tensor:
    """``(N, C, ...)`` layer output -> ``(N, C)`` unit scores: each unit's maximum over all
    spatial positions (``(N, C)`` outputs are their own scores). The maximum, not the mean, so
    that a unit firing strongly on a small object ranks that image high."""
    if activations.dim() < 2:
        raise UserError(f"need (N, units, ...) activations, got {tuple(activations.shape)}")
    return activations.flatten(2).amax(2) if activations.dim() > 2 else activations


def _batches(images, batch_size: int) -> Iterable[torch.Tensor]:
    if isinstance(images, torch.Tensor):
        yield from images.split(batch_size)
        return
    for batch in images:
        if isinstance(batch, dict):
            batch = batch["image"]
        elif isinstance(batch, (tuple, list)):
            batch = batch[0]
        yield batch


def top_activating(model: nn.Module, layer: str, images, k: int = 12,
                   units: Sequence[int] | None = None, batch_size: int = 64) -> TopActivating:
    """Stream images through ``model`` up to ``layer`` and keep each unit's top ``k`` images.

    ``images``: an ``(N, 3, H, W)`` tensor (run in chunks of ``batch_size``) or an iterable of
    batches (tensors, ``(images, ...)`` tuples or dicts with an ``"image"`` key), numbered
    0, 1, ... in stream order. Scores are ``unit_scores`` (max over space). Memory is that of
    one batch plus ``(units, k)``, whatever the number of images. Ties keep the smaller index
    (``gandissect.stats.TopK``), so the result does not depend on batching; with fewer than
    ``k`` images, all are returned. ``units`` restricts to those unit ids (None: all).
    """
    device, dtype = _device_dtype(model)
    top = TopK(k)
    chosen, start = None, 0
    with attribution_mode(model), torch.no_grad():
        for batch in _batches(images, batch_size):
            with Trace(model, layer, stop=True, clone=False, view=first_tensor) as trace:
                model(batch.to(device, dtype))
            scores = unit_scores(units_view(model, layer, trace.output, batch.shape[-2:]))
            if chosen is None:
                chosen = _check_units(units, scores.shape[1], layer).to(scores.device)
            top.add(scores[:, chosen], torch.arange(start, start + len(batch)))
            start += len(batch)
    if chosen is None:
        raise UserError("top_activating got no images")
    scores, ids = top.result()
    return TopActivating(layer, chosen.cpu(), scores.cpu(), ids.cpu())


def _check_units(units: Sequence[int] | None, n_units: int, layer: str) -> torch.Tensor:
    if units is None:
        return torch.arange(n_units)
    chosen = torch.as_tensor(units, dtype=torch.int64).reshape(-1)
    if chosen.numel() and (int(chosen.min()) < 0 or int(chosen.max()) >= n_units):
        raise UserError(f"unit ids must lie in [0, {n_units - 1}] for layer {layer!r}, got "
                        f"{chosen.tolist()}")
    return chosen


def sceneworld_top_images(model: nn.Module, layer: str, n: int = 1000, seed: int = 1001,
                          k: int = 12, units: Sequence[int] | None = None, size: int = 64,
                          batch_size: int = 64) -> TopActivating:
    """``top_activating`` over SceneWorld scenes ``0 .. n - 1`` of world ``seed``, rendered
    ``batch_size`` at a time; the top images are re-rendered into ``.images``.

    The default seed 1001 is the classifier's evaluation world, not a training world
    (``gandissect.models.registry.SEEDS``).
    """
    from gandissect.world import render_batch
    from gandissect.world.dataset import image_to_tensor

    def stream():
        for start in range(0, n, batch_size):
            indices = range(start, min(start + batch_size, n))
            yield image_to_tensor(render_batch(seed, indices, size)["image"])

    result = top_activating(model, layer, stream(), k=k, units=units)
    unique, inverse = torch.unique(result.indices, return_inverse=True)
    rendered = render_batch(seed, unique.tolist(), size)["image"]
    result.images = rendered[inverse.numpy()]
    return result
