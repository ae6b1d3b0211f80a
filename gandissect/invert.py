"""Invert an image into a generator, so that its units can edit a real picture.

The method of Bau et al. ("Semantic photo manipulation with a generative image prior",
SIGGRAPH 2019; "Seeing what a GAN cannot generate", ICCV 2019), in four stages:

1. ``start``: the latent an encoder gives, or the best of several latents drawn from the
   generator's own law (each briefly optimised);
2. ``latent``: the latent optimised for pixel error;
3. ``features``: the output of ``layer`` optimised directly, the layers after it fixed, by
   gradient descent at one pace for all units (so that the units the generator draws an
   object with are those that draw it in the image, and the dissected units can edit it);
4. ``adapt``: the parameters of the layers after ``layer`` nudged towards the image, with an
   L2 penalty that keeps them near the generator's own, so that the units still mean what they
   meant (edits behave).

The result's ``generator`` is a copy of the generator whose ``layer`` outputs the optimised
features (a forward hook registered first, so later ``Trace`` and edit hooks on that layer see
and edit the inverted features) and whose later layers carry the adapted parameters::

    inv = invert(generator, image, layer="layer4")
    inv.generator(inv.z)                     # == inv.reconstruction
    render_edited(inv.generator, inv.z, "layer4", strokes, insert_values)
    blend(inv.target, edited, cells)         # unpainted pixels stay the image's
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from gandissect.errors import UserError
from gandissect.hooks import forward_from, get_layer, partial_forward
from gandissect.torchutil import model_device

__all__ = ["DEFAULT_STEPS", "Inversion", "blend", "edit", "invert", "label_agreement", "psnr",
           "adapted_modules"]

# Step counts per stage (``starts``: random latents drawn when there is no encoder; ``search``:
# steps on the best few of them), and the learning rates, as chosen on 64 px SceneWorld scenes
# of world seed 1000 (benchmarks/bench_invert.py for the reconstruction,
# benchmarks/bench_invert_edit.py for the edits). Tests pass fewer steps.
DEFAULT_STEPS = {"starts": 16, "search": 10, "latent": 30, "features": 100, "adapt": 100}
KEEP_STARTS = 4            # random starts kept for the search stage
LATENT_LR = 0.05
FEATURE_LR = 0.0125        # a step of the features' normalised gradient descent
FEATURE_MOMENTUM = 0.9
ADAPT_LR = 0.001
ADAPT_PENALTY = 1.0        # weight of the mean squared parameter change
LATENT_PRIOR = 1e-3        # keeps an optimised normal latent's norm near its law's
FEATURE_PENALTY = 1e-2     # keeps the optimised features near those the latent gives

Progress = Callable[[int, int, str], None]


@dataclass
class Inversion:
    """An image inverted into a generator.

    Attributes:
        generator: a copy of the generator that draws the reconstruction from ``z``; ``layer``
            outputs ``features`` (whatever comes in) and the layers after it are adapted.
            Hooks on ``layer`` registered later see and edit these features.
        z: ``(1, z_dim)`` the optimised latent.
        layer: the layer whose output was optimised.
        features: ``(1, C, h, w)`` the optimised output of ``layer``.
        reconstruction: ``(1, 3, H, W)`` ``generator(z)``, in about [-1, 1].
        target: ``(1, 3, H, W)`` the image, in [-1, 1].
        psnr: the reconstruction's PSNR against the target (dB).
        stages: the PSNR after each stage that ran (``start``, ``latent``, ``features``,
            ``adapt``).
        seconds: wall time of the inversion.
        adapted: names of the parameters that adaptation changed (empty without it).
        own: ``(1, C, h, w)`` the generator's own output of ``layer`` for ``z``, before the
            features were optimised (what ``edit`` takes back where it removes).
    """

    generator: nn.Module
    z: torch.Tensor
    layer: str
    features: torch.Tensor
    reconstruction: torch.Tensor
    target: torch.Tensor
    psnr: float
    stages: dict[str, float]
    seconds: float
    adapted: list[str] = field(default_factory=list)
    own: torch.Tensor | None = None


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Peak signal-to-noise ratio (dB) of images ``a`` and ``b`` in [-1, 1], over the [0, 1]
    range: both are clamped to [-1, 1] and mapped to [0, 1]; ``10 log10(1 / MSE)`` over every
    pixel and channel (infinite when they are equal)."""
    a = (a.detach().float().clamp(-1, 1) + 1) / 2
    b = (b.detach().float().to(a.device).clamp(-1, 1) + 1) / 2
    if a.shape != b.shape:
        raise UserError(f"images of shapes {tuple(a.shape)} and {tuple(b.shape)} differ")
    mse = float((a - b).pow(2).mean())
    return float("inf") if mse == 0 else 10 * float(np.log10(1 / mse))


def label_agreement(segmenter, a: torch.Tensor, b: torch.Tensor,
                    category: str = "object") -> float:
    """The share of pixels whose ``category`` label (``segmenter.segment(images)``) is the same
    in images ``a`` and ``b`` (both ``(N, 3, H, W)`` in [-1, 1])."""
    if a.shape != b.shape:
        raise UserError(f"images of shapes {tuple(a.shape)} and {tuple(b.shape)} differ")
    device = model_device(segmenter)
    with torch.no_grad():
        labels = segmenter.segment(torch.cat([a, b]).detach().float().to(device))
    if category not in labels:
        raise UserError(f"the segmenter has no {category!r} labels; it has "
                        f"{', '.join(labels)}")
    codes = labels[category]
    n = len(a)
    return float((codes[:n] == codes[n:]).float().mean())


def blend(image: torch.Tensor, edited: torch.Tensor, cells: torch.Tensor,
          dilate: int = 0) -> torch.Tensor:
    """``edited`` where the painted layer ``cells`` are, ``image`` elsewhere.

    Args:
        image, edited: ``(1, 3, H, W)`` images.
        cells: ``(h, w)`` weights in [0, 1] at the layer's grid (e.g. ``intervene.pool_mask``
            of a painted mask); upsampled to pixels by nearest neighbour (``H``, ``W`` must be
            multiples of ``h``, ``w``).
        dilate: grow the painted cells by this many cells each way first (a max filter).

    Returns:
        ``(1, 3, H, W)``: ``image * (1 - m) + edited * m`` where the upsampled weight ``m`` is
        positive, and exactly ``image`` where it is 0.
    """
    if image.shape != edited.shape or image.dim() != 4:
        raise UserError(f"blend needs two (N, 3, H, W) images of one shape, got "
                        f"{tuple(image.shape)} and {tuple(edited.shape)}")
    cells = torch.as_tensor(cells, dtype=torch.float32).to(image.device)
    if cells.dim() != 2:
        raise UserError(f"cells must be (h, w), got shape {tuple(cells.shape)}")
    (h, w), (height, width) = cells.shape, image.shape[2:]
    if height % h or width % w:
        raise UserError(f"a {h}x{w} grid of cells does not divide a {height}x{width} image")
    if dilate < 0:
        raise UserError(f"dilate must be 0 or more cells, got {dilate}")
    if dilate:
        cells = F.max_pool2d(cells[None, None], 2 * dilate + 1, stride=1, padding=dilate)[0, 0]
    weight = F.interpolate(cells[None, None], size=(height, width), mode="nearest")
    weight = weight.to(image.dtype)
    mixed = image * (1 - weight) + edited.to(image.dtype) * weight
    return torch.where(weight > 0, mixed, image)


def _as_target(image, resolution: int, device: torch.device) -> torch.Tensor:
    """``(1, 3, R, R)`` in [-1, 1] from an ``(R, R, 3)`` uint8 array or a ``(1, 3, R, R)``
    tensor."""
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise UserError(f"an image array must be (H, W, 3) uint8, got {image.shape} "
                            f"{image.dtype}")
        target = torch.from_numpy(image.astype(np.float32) / 127.5 - 1).permute(2, 0, 1)[None]
    elif isinstance(image, torch.Tensor):
        if image.dim() == 3:
            image = image[None]
        if image.dim() != 4 or image.shape[:2] != (1, 3):
            raise UserError(f"an image tensor must be (1, 3, H, W) in [-1, 1], got "
                            f"{tuple(image.shape)}")
        target = image.detach().float()
    else:
        raise UserError(f"the image must be a numpy array or a tensor, got {type(image).__name__}")
    if tuple(target.shape[2:]) != (resolution, resolution):
        raise UserError(f"the image is {target.shape[3]}x{target.shape[2]} but the generator "
                        f"draws {resolution}x{resolution}; resize it first")
    return target.to(device)


def _resolution(generator: nn.Module, z_dim: int, device: torch.device) -> int:
    size = getattr(generator, "resolution", None)
    if isinstance(size, int):
        return size
    with torch.no_grad():
        return int(generator(torch.zeros(1, z_dim, device=device)).shape[-1])


def adapted_modules(generator: nn.Module, layer: str, z: torch.Tensor) -> list[str]:
    """Names of the modules whose parameters adaptation may change: those that run after
    ``layer`` and never before it.

    For an ``nn.Sequential`` generator (ProGAN) whose child is ``layer``: the children after it.
    For any other generator: every module holding parameters of its own whose forward starts
    after ``layer``'s ends, in one forward pass of ``z`` (for StyleGAN2, the later synthesis
    blocks with their style affines and toRGB layers). Raises ``UserError`` when there are none.
    """
    names = [name for name, _ in generator.named_children()]
    if isinstance(generator, nn.Sequential) and layer in names:
        after = names[names.index(layer) + 1:]
    else:
        after = _modules_run_after(generator, layer, z)
    if not any(p.numel() for name in after for p in generator.get_submodule(name).parameters()):
        raise UserError(f"no layer with parameters runs after {layer!r} in "
                        f"{type(generator).__name__}, so it cannot be adapted; invert without "
                        "adaptation (adapt=False, --no-adapt)")
    return after


def _modules_run_after(generator: nn.Module, layer: str, z: torch.Tensor) -> list[str]:
    target = get_layer(generator, layer)
    state = {"done": False}
    before: set[str] = set()
    after: list[str] = []

    def started(name: str):
        def hook(module, inputs):
            if not state["done"]:
                before.add(name)
            elif name not in after:
                after.append(name)
        return hook

    def finished(module, inputs, output):
        state["done"] = True

    handles = [target.register_forward_hook(finished)]
    try:
        for name, module in generator.named_modules():
            if name and any(True for _ in module.parameters(recurse=False)):
                handles.append(module.register_forward_pre_hook(started(name)))
        with torch.no_grad():
            generator(z)
    finally:
        for handle in handles:
            handle.remove()
    return [name for name in after if name not in before]


def _replace_output(module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
    features = module.inverted_features
    return features.expand(output.shape[0], *features.shape[1:]).to(output.dtype).clone()


class _Steps:
    """Counts optimisation steps across stages and reports them to a progress function."""

    def __init__(self, total: int, progress: Progress | None) -> None:
        self.total, self.done, self.progress = total, 0, progress
        self.bar = None
        if progress is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc="invert", unit="step", disable=None, leave=False)

    def step(self, stage: str) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.set_postfix_str(stage, refresh=False)
            self.bar.update(1)
        else:
            self.progress(self.done, self.total, stage)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _steps(steps: dict | None, encoder) -> dict[str, int]:
    counts = dict(DEFAULT_STEPS)
    for name, value in (steps or {}).items():
        if name not in counts:
            raise UserError(f"unknown inversion stage {name!r}; stages: {', '.join(counts)}")
        if not isinstance(value, int) or value < 0:
            raise UserError(f"steps[{name!r}] must be a whole number >= 0, got {value!r}")
        counts[name] = value
    if encoder is not None:
        counts["starts"] = counts["search"] = 0
    else:
        counts["starts"] = max(1, counts["starts"])
    return counts


def _mse(images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image mean squared error ``(N,)``."""
    return (images - target).pow(2).flatten(1).mean(1)


def _prior(z: torch.Tensor) -> torch.Tensor:
    """Per-latent penalty on a normal latent's mean square straying from 1."""
    return LATENT_PRIOR * (z.pow(2).flatten(1).mean(1) - 1).pow(2)


def _optimise_latents(generator, z, target, n_steps, counter, stage) -> torch.Tensor:
    """``n_steps`` of Adam on a batch of latents; returns them (detached)."""
    z = z.clone().requires_grad_(True)
    optimiser = torch.optim.Adam([z], lr=LATENT_LR)
    for _ in range(n_steps):
        optimiser.zero_grad(set_to_none=True)
        loss = (_mse(generator(z), target) + _prior(z)).sum()
        loss.backward()
        optimiser.step()
        counter.step(stage)
    return z.detach()


def _start(generator, target, encoder, counts, seed, counter) -> torch.Tensor:
    """The starting latent ``(1, z_dim)``: the encoder's, else the best random start after
    a short search."""
    from gandissect.dissect.latents import sample_latents

    device = target.device
    if encoder is not None:
        with torch.no_grad():
            z = encoder(target.to(model_device(encoder)))
        return z.reshape(1, -1).float().to(device)
    z = sample_latents(generator, seed, range(counts["starts"])).to(device)
    with torch.no_grad():
        errors = torch.cat([_mse(generator(chunk), target) for chunk in z.split(8)])
    z = z[errors.argsort()[:KEEP_STARTS]]
    z = _optimise_latents(generator, z, target, counts["search"], counter, "search")
    with torch.no_grad():
        best = _mse(generator(z), target).argmin()
    return z[best:best + 1]


def invert(generator: nn.Module, image, layer: str = "layer4", encoder: nn.Module | None = None,
           adapt: bool = True, progress: Progress | None = None, steps: dict | None = None,
           seed: int = 0) -> Inversion:
    """Invert ``image`` into ``generator``: latent, then ``layer``'s features, then (with
    ``adapt``) the layers after ``layer``.

    Args:
        generator: a generator ``z (N, z_dim) -> (N, 3, R, R)`` with a ``z_dim`` attribute;
            it is left unchanged (the result holds a copy).
        image: ``(R, R, 3)`` uint8 array or ``(1, 3, R, R)`` tensor in [-1, 1], at the
            generator's resolution.
        layer: the layer whose output is optimised and later edited.
        encoder: a module ``(1, 3, R, R) image -> (1, z_dim)`` giving the starting latent;
            None draws ``steps["starts"]`` latents from the generator's law (``seed``) and
            optimises the best few.
        adapt: nudge the parameters of the layers after ``layer`` (see ``adapted_modules``).
        progress: ``progress(done, total, stage)`` after every step; None shows a tqdm bar
            on a terminal.
        steps: step counts for some stages (``DEFAULT_STEPS`` gives the rest).
        seed: the seed of the random starts.

    Returns:
        An ``Inversion``.

    Example:
        >>> inv = invert(generator, render(1000, 0, 64).image)
        >>> inv.psnr, inv.stages
    """
    began = time.perf_counter()
    counts = _steps(steps, encoder)
    device = model_device(generator)
    z_dim = getattr(generator, "z_dim", None)
    if not isinstance(z_dim, int):
        raise UserError(f"{type(generator).__name__} has no z_dim attribute; inversion needs "
                        "the latent size")
    get_layer(generator, layer)
    target = _as_target(image, _resolution(generator, z_dim, device), device)
    work = copy.deepcopy(generator).eval()
    for parameter in work.parameters():
        parameter.requires_grad_(False)
    tail = adapted_modules(work, layer, torch.zeros(1, z_dim, device=device)) if adapt else []
    stage_steps = counts["search"] + counts["latent"] + counts["features"]
    counter = _Steps(stage_steps + (counts["adapt"] if adapt else 0), progress)
    stages: dict[str, float] = {}
    try:
        with torch.enable_grad():
            z = _start(work, target, encoder, counts, seed, counter)
            with torch.no_grad():
                stages["start"] = psnr(work(z), target)
            z = _optimise_latents(work, z, target, counts["latent"], counter, "latent")
            with torch.no_grad():
                initial = partial_forward(work, layer, z).detach().clone()
                stages["latent"] = psnr(forward_from(work, layer, initial, z), target)
            features = _optimise_features(work, layer, z, initial, target, counts["features"],
                                          counter)
            with torch.no_grad():
                stages["features"] = psnr(forward_from(work, layer, features, z), target)
            adapted: list[str] = []
            if adapt:
                adapted = _adapt(work, layer, z, features, tail, target, counts["adapt"],
                                 counter)
                with torch.no_grad():
                    stages["adapt"] = psnr(forward_from(work, layer, features, z), target)
    finally:
        counter.close()
    for parameter in work.parameters():
        parameter.requires_grad_(False)
    module = get_layer(work, layer)
    module.register_buffer("inverted_features", features.detach().clone())
    module.register_forward_hook(_replace_output)
    with torch.no_grad():
        reconstruction = work(z)
    return Inversion(generator=work, z=z, layer=layer, features=features.detach().clone(),
                     reconstruction=reconstruction, target=target,
                     psnr=psnr(reconstruction, target), stages=stages,
                     seconds=time.perf_counter() - began, adapted=adapted, own=initial)


def _optimise_features(generator, layer, z, initial, target, n_steps, counter) -> torch.Tensor:
    """Gradient descent with momentum on ``layer``'s output, each step the gradient divided by
    its root mean square.

    One step size for the whole gradient, not one per unit as Adam takes: the features move
    most in the units that change the missing pixels most, rather than every unit at the same
    pace; on SceneWorld this reconstructs better before adaptation and leaves more of an
    object to the units the brushes edit."""
    features = initial.clone().requires_grad_(True)
    optimiser = torch.optim.SGD([features], lr=FEATURE_LR, momentum=FEATURE_MOMENTUM)
    scale = initial.pow(2).mean().clamp_min(1e-8)
    for _ in range(n_steps):
        optimiser.zero_grad(set_to_none=True)
        drift = (features - initial).pow(2).mean() / scale
        loss = _mse(forward_from(generator, layer, features, z), target).sum() \
            + FEATURE_PENALTY * drift
        loss.backward()
        features.grad /= features.grad.pow(2).mean().sqrt().clamp_min(1e-12)
        optimiser.step()
        counter.step("features")
    return features.detach()


def _adapt(generator, layer, z, features, modules: Sequence[str], target, n_steps,
           counter) -> list[str]:
    """Adam on the parameters of ``modules`` (in place), penalised by their mean squared change;
    returns the names of the parameters changed."""
    named, seen = [], set()
    for name in modules:
        for key, p in generator.get_submodule(name).named_parameters():
            if id(p) not in seen:
                seen.add(id(p))
                named.append((f"{name}.{key}", p))
    if not named:
        return []
    originals = [p.detach().clone() for _, p in named]
    parameters = [p.requires_grad_(True) for _, p in named]
    optimiser = torch.optim.Adam(parameters, lr=ADAPT_LR)
    count = sum(p.numel() for p in parameters)
    for _ in range(n_steps):
        optimiser.zero_grad(set_to_none=True)
        change = sum((p - o).pow(2).sum() for p, o in zip(parameters, originals)) / count
        loss = _mse(forward_from(generator, layer, features, z), target).sum() \
            + ADAPT_PENALTY * change
        loss.backward()
        optimiser.step()
        counter.step("adapt")
    return [name for name, _ in named]


def _cells(stroke, size: tuple[int, int], device) -> torch.Tensor:
    """A stroke's ``(h, w)`` weight at the layer's cells: its pooled mask times its strength
    (everywhere without a mask)."""
    from gandissect.intervene import pool_mask

    if stroke.mask is None:
        return torch.full(size, float(stroke.strength), device=device)
    mask = torch.as_tensor(stroke.mask, dtype=torch.float32)
    if mask.dim() != 2:
        raise UserError(f"a stroke on an inverted image needs an (H, W) mask, got shape "
                        f"{tuple(mask.shape)}")
    return pool_mask(mask, size).to(device) * float(stroke.strength)


def edit(inversion: Inversion, strokes: Sequence, insert_values: torch.Tensor | None = None,
         ) -> torch.Tensor:
    """The inverted image with ``strokes`` (``gandissect.intervene.Stroke``) applied in order
    at its layer, blended into the image: ``(1, 3, H, W)``, exactly the image outside the
    union of the strokes' cells.

    A Remove (``ablate``) stroke first takes back, in its cells, what inversion added beyond
    the generator's own features for the latent (``inversion.own``), then ablates its units:
    the optimised features draw what the latent could not with any units, the dissected ones
    included, so ablating them alone leaves much of an object that the generator itself would
    lose (on SceneWorld scenes of world 1000, trees, clouds and doors match the true
    counterfactual far more often this way; ``benchmarks/bench_invert_edit.py``). A Draw
    (``insert``) stroke writes its units on the inverted features, as on a generated scene.
    """
    from gandissect.hooks import Trace
    from gandissect.intervene import stroke_edit

    strokes = list(strokes)
    if not strokes:
        return inversion.target.clone()
    own = inversion.own if inversion.own is not None else inversion.features
    size = tuple(inversion.features.shape[2:])
    device = inversion.features.device
    weights = [_cells(stroke, size, device) for stroke in strokes]

    def apply(output: torch.Tensor) -> torch.Tensor:
        for stroke, weight in zip(strokes, weights):
            if stroke.mode == "ablate":
                output = output * (1 - weight) + own.to(output.dtype) * weight
            output = stroke_edit([stroke], insert_values)(output)
        return output

    with torch.no_grad(), Trace(inversion.generator, inversion.layer, retain_output=False,
                                edit=apply):
        edited = inversion.generator(inversion.z)
    painted = torch.stack(weights).amax(0)
    return blend(inversion.target, edited.to(inversion.target.device), painted)
