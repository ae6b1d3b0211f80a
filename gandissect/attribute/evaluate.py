"""Attribution methods measured against SceneWorld's exact labels.

    evaluate_attribution(load_classifier("sceneworld"), n=1000, seed=1001)
    # {"gradcam": {"pointing_game": ..., "center_baseline": ..., "deletion_auc": ...,
    #              "insertion_auc": ..., "sanity_rank_corr": ..., "seconds_per_image": ...},
    #  ..., "settings": {...}}

Every method explains the **true** scene class of scenes ``0 .. n-1`` of a held-out world
(training seeds are refused). Each raw attribution is first turned into one value per image
pixel, the *pixel map* (``pixel_maps``):

- layer-shaped maps (CAM family, ``(N, h, w)``) are upsampled to the image size bilinearly, as
  Grad-CAM's code does (``upsample="aligned"`` instead places each cell at the measured centre
  of its receptive field, ``gandissect.receptive``);
- input-shaped maps ``(N, C, H, W)`` are summed over colour channels, signed for methods whose
  values are *contributions* to the score (input x gradient, integrated gradients, occlusion,
  LRP: the sum over pixels is the score, or its change, so a pixel's channels add up and a
  positive value is evidence for the class), and as absolute values for *sensitivities*
  (saliency, SmoothGrad, guided backprop, deconvolution: the gradient's sign only says in
  which direction a pixel would move the score, so their papers show magnitudes).

The scores, all from those pixel maps:

- **Pointing game** (Zhang et al. 2016): a hit when the map's maximum lies on a pixel of the
  class's defining concepts (``DEFINING_CONCEPTS``, from SceneWorld's exact object labels).
  A constant map has no maximum and is a miss; among tied maxima (bilinear upsampling makes a
  corner cell a flat block) the one nearest their centroid counts.
  ``pointing_game_within_tolerance`` also counts a maximum within ``tolerance`` pixels
  (Euclidean) of such a pixel: the VOC protocol allows 15 px at 224 px, about 4 px at 64 px,
  the default. **Centre baseline**: the same hit tests for the image's centre pixel
  ``(H // 2, W // 2)``, a map that ignores the image. ``concept_energy``: the share of the
  map's positive mass on those pixels (the energy-based pointing game), beside
  ``concept_area``, what a uniform map gets.
- **Deletion / insertion** (Petsiuk et al. 2018): pixels ranked by the pixel map (highest
  first; ties broken by one fixed random order of positions) are replaced by the *substrate*
  (``baseline="zeros"``: value 0, mid-grey in the models' [-1, 1] range, the same baseline
  integrated gradients and occlusion use; ``"blur"``: a Gaussian blur of the image, sigma
  5 px) in ``steps`` equal chunks (deletion), or put back into the substrate in the same order
  (insertion). After each chunk the softmax probability of the target class is read; the area
  under that curve over the fraction of pixels changed, ``steps + 1`` points on [0, 1], is
  taken by the trapezoid rule. Deletion: lower is better; insertion: higher.
- **Sanity check** (Adebayo et al. 2018): the Spearman rank correlation, over pixels, between
  the absolute pixel maps of the trained model and of a copy with randomised weights, averaged
  over images. ``sanity_rank_corr`` randomises every layer (``randomized_copy``: the end of the
  paper's cascading randomisation, BatchNorm statistics included); ``sanity_cascade`` gives
  each stage of the cascade, top layer first (``cascading_randomization``), on the first
  ``cascade_n`` images. Ties get average ranks; an image where either map is constant has no
  rank correlation and is left out of the mean (counted in ``sanity_undefined``). Low means the
  map depends on what the model learned. Guided backpropagation is the known failure: its maps
  barely change while the top layers are randomised (early stages of the cascade).
- **Relevance mass accuracy** (Arras et al. 2022, ``relevance_mass_accuracy``): the positive
  relevance on the defining concepts' pixels over all positive relevance, the same number as
  ``concept_energy``. **Relevance rank accuracy** (``relevance_rank_accuracy``): of the
  ``K = |mask|`` pixels ranked highest (``pixel_ranks``, ties in the deletion's fixed order),
  the share on those pixels. A map that ignores the image expects ``concept_area`` for both.
- **ROAD** (Rong et al. 2022, ``gandissect.attribute.road``; asked for with
  ``metrics=[..., "road"]``): the most (MoRF) or least (LeRF) relevant 10% .. 90% of the
  pixels are filled by noisy linear imputation (each the weighted mean of its neighbours, one
  sparse linear system per image, plus noise of standard deviation 0.01), so that the filling
  does not leak where pixels were removed; ``road_morf_auc`` / ``road_lerf_auc`` are the mean
  heights of the target's probability curves (MoRF lower is better, LeRF higher), the curves
  themselves ``road_morf_curve`` / ``road_lerf_curve``.
- **Per class**: every method's ``per_class`` holds each of its scores, the cascade's stages
  included, averaged over the images of each scene class, with their count.
- **Seconds per image**: wall time of the trained model's attribute calls over ``n``.
- **Completeness** (integrated gradients): ``|sum(attributions) - (f(x) - f(0))|`` relative
  to ``|f(x) - f(0)|``, mean, median and max over images, and the share of images above
  ``COMPLETENESS_BAR`` (1%), at the method's ``steps`` (64, Gauss-Legendre nodes, as Captum).
  Beside them, ``completeness_error_pooled`` (the absolute errors' sum over the gaps' sum), the
  absolute error's median and max (in the target's logit units) and the gap's median. The
  ratio per image is ill-conditioned where ``f(x)`` is close to ``f(0)``: the quadrature's
  absolute error does not shrink with the gap, because the integrand along the path
  (``grad f . (x - 0)`` at each point) swings by many times its integral there.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gandissect.errors import UserError
from gandissect.torchutil import model_device

from ..receptive import aligned_upsample, cell_centres
from .base import Attribution
from .cam import CAM, GradCAM, GradCAMPlusPlus, ScoreCAM
from .deeplift import DeepLift
from .gradient import InputXGradient, IntegratedGradients, Saliency, SmoothGrad
from .gradient_shap import GradientShap
from .guided import Deconvolution, GuidedBackprop
from .lrp import LRP
from .occlusion import Occlusion
from .perturbation import FeatureAblation, KernelShap, Lime
from .road import ROAD_FRACTIONS, ROAD_NOISE, road_auc, road_curves

__all__ = [
    "COMPLETENESS_BAR",
    "DEFAULT_METRICS",
    "METRICS",
    "DEFINING_CONCEPTS",
    "METHODS",
    "MethodSpec",
    "auc",
    "cascading_randomization",
    "center_hits",
    "concept_energy",
    "maximum_points",
    "defining_masks",
    "evaluate_attribution",
    "perturbation_curves",
    "pixel_maps",
    "pixel_ranks",
    "pointing_hits",
    "randomized_copy",
    "rank_average",
    "relevance_mass_accuracy",
    "relevance_rank_accuracy",
    "spearman",
    "substrate",
]

# The object concepts whose pixels make each scene what it is, read off SceneWorld's naming
# rules (``gandissect.world.compose.classify``) and recipes:
# - church: a dome or a tower makes a church; both stand on the church's nave, labelled
#   building (its only building: the recipe places one), and the dome's drum is building too;
# - street: three or more buildings along a road;
# - house: any building (without dome, tower or a street's road and count);
# - lake: water covering at least 12% of the image;
# - forest: at least 8 trees;
# - mountain_valley: the fallback, whose recipe always paints a far and a near mountain range.
# Trees, grass, ponds or roads that a recipe may add are not defining, so a map pointing at
# them is a miss.
DEFINING_CONCEPTS: dict[str, tuple[str, ...]] = {
    "church": ("building", "dome", "tower"),
    "house": ("building",),
    "street": ("building", "road"),
    "forest": ("tree",),
    "lake": ("water",),
    "mountain_valley": ("mountain",),
}


@dataclass(frozen=True)
class MethodSpec:
    """How the evaluation runs one method: its class, the ``attribute`` options, and how an
    input-shaped map becomes a pixel map (``"signed"`` or ``"abs"`` channel sum; ignored for
    layer-shaped maps, which are upsampled)."""

    cls: type[Attribution]
    pixel_map: str = "signed"
    init: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)
    layer: bool = False  # the constructor takes the CAM layer

    def build(self, model: nn.Module, layer: str) -> Attribution:
        """The method bound to ``model``."""
        return self.cls(model, layer, **self.init) if self.layer else self.cls(model, **self.init)


# The settings evaluated: the methods' defaults, SmoothGrad at 50 noisy copies, integrated
# gradients at 64 steps (the completeness bar), occlusion with its default window, 1/8 of the
# image every 1/16 (8 px every 4 at 64 px, 28 every 14 at 224 px), LRP with the composite of
# Montavon et al. 2019 (z-box on the pixels, gamma in the convolutions, generalised to negative
# outputs as zennit's EpsilonGammaBox does, epsilon in every Linear layer, so in the logits
# layer whatever its name). The expensive methods pass 64 rows per forward (Score-CAM's
# default): on a CPU, 2-3x faster than one huge batch, which is memory-bound.
BATCH_ROWS = {"internal_batch_size": 64}
METHODS: dict[str, MethodSpec] = {
    "saliency": MethodSpec(Saliency, "abs"),
    "input_x_gradient": MethodSpec(InputXGradient, "signed"),
    "smoothgrad": MethodSpec(SmoothGrad, "abs", options={"n_samples": 50, "noise_level": 0.15,
                                                         **BATCH_ROWS}),
    "integrated_gradients": MethodSpec(IntegratedGradients, "signed",
                                       options={"steps": 64, "method": "gauss_legendre",
                                                "return_error": True, **BATCH_ROWS}),
    "guided_backprop": MethodSpec(GuidedBackprop, "abs"),
    "deconvolution": MethodSpec(Deconvolution, "abs"),
    "occlusion": MethodSpec(Occlusion, "signed", options=dict(BATCH_ROWS)),
    "cam": MethodSpec(CAM, layer=True),
    "gradcam": MethodSpec(GradCAM, layer=True),
    "gradcam_plus_plus": MethodSpec(GradCAMPlusPlus, layer=True),
    "scorecam": MethodSpec(ScoreCAM, layer=True, options=dict(BATCH_ROWS)),
    "lrp": MethodSpec(LRP, "signed", init={"rule": "gamma", "first_rule": "zbox",
                                           "linear_rule": "epsilon"}),
    # DeepLIFT and GradientSHAP from the mid-grey baseline 0 that integrated gradients uses,
    # GradientSHAP at 50 draws (SmoothGrad's count) with noise of 0.1 (Captum's tutorials use
    # 0.09). Feature ablation, Kernel SHAP and LIME on each image's ~50 SLIC superpixels
    # (``perturbation.superpixels``), hidden features set to 0: one forward per superpixel for
    # ablation, 200 coalitions for Kernel SHAP and LIME (Captum's default of 25 leaves 50
    # features underdetermined), about 2 s per 64 px image for the two on a 2-core CPU.
    "deeplift": MethodSpec(DeepLift, "signed"),
    "gradient_shap": MethodSpec(GradientShap, "signed",
                                options={"n_samples": 50, "stdevs": 0.1, **BATCH_ROWS}),
    "feature_ablation": MethodSpec(FeatureAblation, "signed", options=dict(BATCH_ROWS)),
    "kernel_shap": MethodSpec(KernelShap, "signed", options={"n_samples": 200, **BATCH_ROWS}),
    "lime": MethodSpec(Lime, "signed", options={"n_samples": 200, **BATCH_ROWS}),
}

# The integrated-gradients completeness bar: the error within 1% of f(x) - f(baseline).
COMPLETENESS_BAR = 0.01

# The scores evaluate_attribution can compute (``metrics=``), and those it computes by default:
# all but ROAD, whose imputation solves a sparse system per image and removal fraction.
METRICS = ("pointing", "deletion", "insertion", "sanity", "cascade", "mass", "rank", "road")
DEFAULT_METRICS = ("pointing", "deletion", "insertion", "sanity", "cascade", "mass", "rank")
CASCADE_KEY = "sanity_cascade"


# ---------------------------------------------------------------- pixel maps and masks


def pixel_maps(raw: torch.Tensor, size: tuple[int, int], mode: str = "signed",
               centres: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """One value per image pixel, ``(N, H, W)``: layer maps ``(N, h, w)`` upsampled to ``size``
    (with ``centres``, each cell placed at its receptive field's measured centre, see
    ``gandissect.receptive``; without, plain bilinear); input maps ``(N, C, H, W)`` summed over
    channels (``mode="abs"``: of their absolute values)."""
    if raw.dim() == 3:
        if tuple(raw.shape[-2:]) == tuple(size):
            return raw
        if centres is not None:
            return aligned_upsample(raw, size, centres)
        return F.interpolate(raw[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    if raw.dim() != 4:
        raise UserError(f"expected (N, h, w) or (N, C, H, W) maps, got {tuple(raw.shape)}")
    if mode not in ("signed", "abs"):
        raise UserError(f"mode must be 'signed' or 'abs', got {mode!r}")
    return (raw.abs() if mode == "abs" else raw).sum(1)


def defining_masks(objects: np.ndarray | torch.Tensor, scenes: Sequence[str]) -> torch.Tensor:
    """``(N, H, W)`` bool: pixels of each image's defining concepts (``DEFINING_CONCEPTS``),
    from SceneWorld object label codes ``(N, H, W)`` and each image's scene name."""
    from gandissect.world import concept

    objects = torch.as_tensor(objects).long()
    masks = torch.zeros(objects.shape, dtype=torch.bool, device=objects.device)
    for k, scene in enumerate(scenes):
        for name in DEFINING_CONCEPTS[scene]:
            masks[k] |= objects[k] == concept(name, "object").code
    return masks


def _disk(radius: int) -> torch.Tensor:
    span = torch.arange(-radius, radius + 1)
    return (span[:, None] ** 2 + span[None, :] ** 2 <= radius ** 2).float()


def _hits_at(points: torch.Tensor, masks: torch.Tensor, tolerance: int) -> torch.Tensor:
    """Whether each ``(row, col)`` point lies within ``tolerance`` px of its mask."""
    near = masks.float()[:, None]
    if tolerance > 0:
        disk = _disk(tolerance).to(near)[None, None]
        near = F.conv2d(near, disk, padding=tolerance)
    rows = torch.arange(masks.shape[0], device=masks.device)
    return near[rows, 0, points[:, 0], points[:, 1]] > 0.5


def pointing_hits(maps: torch.Tensor, masks: torch.Tensor, tolerance: int = 4) -> torch.Tensor:
    """``(N,)`` bool: the pointing game's hits of ``(N, H, W)`` pixel maps against masks.

    The point is the map's maximum; a constant map (no maximum) is a miss. Among tied
    maxima (an upsampled corner cell is a flat block of them) the point is the one nearest
    their centroid, the first in raster order among equally near.
    """
    if maps.shape != masks.shape:
        raise UserError(f"maps {tuple(maps.shape)} and masks {tuple(masks.shape)} differ")
    flat = maps.flatten(1)
    constant = flat.amax(1) == flat.amin(1)
    return _hits_at(maximum_points(maps), masks, tolerance) & ~constant


def maximum_points(maps: torch.Tensor) -> torch.Tensor:
    """``(N, 2)`` (row, col) of each ``(N, H, W)`` map's maximum; among ties, the tied maximum
    nearest the ties' centroid (first in raster order among equally near)."""
    width = maps.shape[-1]
    flat = maps.flatten(1)
    tied = flat == flat.amax(1, keepdim=True)
    position = torch.arange(flat.shape[1], device=maps.device)
    coords = torch.stack([position // width, position % width], 1).to(torch.float64)  # (P, 2)
    weights = tied.to(torch.float64)
    centroid = weights @ coords / weights.sum(1, keepdim=True)  # (N, 2)
    distance = (coords[None] - centroid[:, None]).square().sum(2)
    best = distance.masked_fill(~tied, float("inf")).argmin(1)
    return torch.stack([best // width, best % width], 1)


def center_hits(masks: torch.Tensor, tolerance: int = 4) -> torch.Tensor:
    """``(N,)`` bool: the centre baseline, the pointing test for pixel ``(H // 2, W // 2)``."""
    height, width = masks.shape[-2:]
    points = torch.tensor([[height // 2, width // 2]], device=masks.device)
    return _hits_at(points.expand(masks.shape[0], 2), masks, tolerance)


# ---------------------------------------------------------------- deletion and insertion


def _tie_break(pixels: int) -> torch.Tensor:
    """One fixed random order of pixel positions (for ranking ties), the same every call."""
    return torch.randperm(pixels, generator=torch.Generator().manual_seed(0))


def pixel_ranks(maps: torch.Tensor) -> torch.Tensor:
    """``(N, H, W)`` long: each pixel's place when the ``(N, H, W)`` maps are sorted from the
    highest value (0) down, ties broken by one fixed random order of positions (``_tie_break``).
    Deletion, insertion, ROAD and the relevance rank accuracy all rank pixels this way."""
    n = maps.shape[0]
    pixels = maps[0].numel()
    order = _tie_break(pixels).to(maps.device)
    # stable sort of the shuffled values: ties end up in the fixed random order
    ranked = order[maps.flatten(1)[:, order].sort(dim=1, descending=True, stable=True).indices]
    rank = torch.empty_like(ranked)
    rank.scatter_(1, ranked, torch.arange(pixels, device=maps.device).expand(n, -1))
    return rank.reshape(maps.shape)


def substrate(images: torch.Tensor, baseline: str = "zeros", blur_sigma: float = 5.0
              ) -> torch.Tensor:
    """What deleted pixels become and insertion starts from: zeros or a Gaussian blur."""
    if baseline == "zeros":
        return torch.zeros_like(images)
    if baseline == "blur":
        from torchvision.transforms.functional import gaussian_blur

        return gaussian_blur(images, 2 * round(3 * blur_sigma) + 1, blur_sigma)
    raise UserError(f"baseline must be 'zeros' or 'blur', got {baseline!r}")


@torch.no_grad()
def perturbation_curves(model: nn.Module, images: torch.Tensor, maps: torch.Tensor,
                        target: torch.Tensor, steps: int = 16, baseline: str = "zeros",
                        chunk: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """``(deletion, insertion)``, each ``(N, steps + 1)``: the target's softmax probability
    after changing the top ``round(k * H * W / steps)`` pixels of each pixel map, k = 0..steps.

    ``chunk`` bounds the images per forward pass. The model must be in eval mode.
    """
    if steps < 1:
        raise UserError(f"steps must be >= 1, got {steps}")
    n, _, height, width = images.shape
    pixels = height * width
    rank = pixel_ranks(maps).flatten(1)
    counts = torch.tensor([round(k * pixels / steps) for k in range(steps + 1)],
                          device=images.device)
    changed = (rank[None] < counts[:, None, None]).reshape(steps + 1, n, 1, height, width)
    base = substrate(images, baseline)
    curves = []
    for removing in (True, False):
        start, end = (images, base) if removing else (base, images)
        probed = torch.where(changed, end[None], start[None]).reshape(-1, *images.shape[1:])
        owners = torch.arange(n, device=images.device).repeat(steps + 1)
        probs = torch.cat([model(part).softmax(1) for part in probed.split(chunk)])
        curves.append(probs.gather(1, target[owners][:, None])[:, 0].reshape(steps + 1, n).T)
    return curves[0], curves[1]


def auc(curves: torch.Tensor) -> torch.Tensor:
    """Trapezoid-rule area under ``(N, K + 1)`` curves sampled evenly on [0, 1]."""
    return (curves[:, 1:] + curves[:, :-1]).sum(1) / (2 * (curves.shape[1] - 1))


# ---------------------------------------------------------------- sanity check


def _reset(module: nn.Module) -> None:
    for sub in module.modules():
        if callable(getattr(sub, "reset_parameters", None)):
            sub.reset_parameters()


def cascading_randomization(model: nn.Module, seed: int = 0) -> list[tuple[str, nn.Module]]:
    """Adebayo et al.'s cascading randomisation: ``(layer, copy)`` pairs, the k-th copy with the
    model's last k parameterised top-level layers (in definition order: ``fc``, ``layer4``,
    ..., ``conv1`` for the shipped classifier) re-initialised by their own
    ``reset_parameters`` (BatchNorm: weight 1, bias 0, running statistics reset).

    Each stage keeps the random weights of the stage before and adds one layer, from torch seed
    ``seed``; the global random state is left as it was. The last copy has every layer
    randomised (``randomized_copy``). Copies are in eval mode; the model is untouched.
    """
    device = model_device(model)
    layers = [(name, child) for name, child in model.named_children()
              if any(True for _ in child.parameters())]
    if not layers:
        raise UserError(f"{type(model).__name__} has no parameterised layer to randomise")
    current = copy.deepcopy(model)
    stages = []
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for name, _ in reversed(layers):
            _reset(getattr(current, name))
            stages.append((name, copy.deepcopy(current).eval()))
    return stages


def randomized_copy(model: nn.Module, seed: int = 0) -> nn.Module:
    """A copy of ``model`` with every layer re-initialised: the end of
    ``cascading_randomization`` (same seed, same weights)."""
    return cascading_randomization(model, seed)[-1][1]


def rank_average(values: torch.Tensor) -> torch.Tensor:
    """1-based ranks along the last dimension of ``(N, P)`` values, ties sharing their average
    rank (as ``scipy.stats.rankdata``), float64."""
    n, p = values.shape
    sorted_values, order = values.sort(dim=1, stable=True)
    new_group = torch.ones_like(sorted_values, dtype=torch.bool)
    new_group[:, 1:] = sorted_values[:, 1:] != sorted_values[:, :-1]
    group = new_group.flatten().cumsum(0) - 1  # tie groups, numbered across all rows
    position = torch.arange(p, device=values.device, dtype=torch.float64).repeat(n)
    groups = int(group[-1]) + 1 if group.numel() else 0
    first = torch.full((groups,), float("inf"), dtype=torch.float64, device=values.device)
    last = torch.full((groups,), -1.0, dtype=torch.float64, device=values.device)
    first.scatter_reduce_(0, group, position, "amin")
    last.scatter_reduce_(0, group, position, "amax")
    average = ((first[group] + last[group]) / 2 + 1).reshape(n, p)
    ranks = torch.empty_like(average)
    ranks.scatter_(1, order, average)
    return ranks


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``(N,)`` Spearman rank correlation of each row of ``a`` with the same row of ``b``
    (Pearson correlation of average ranks); NaN where a row is constant."""
    ra, rb = rank_average(a.flatten(1)), rank_average(b.flatten(1))
    ra, rb = ra - ra.mean(1, keepdim=True), rb - rb.mean(1, keepdim=True)
    norm = (ra.square().sum(1) * rb.square().sum(1)).sqrt()
    return torch.where(norm > 0, (ra * rb).sum(1) / norm.clamp(min=1e-300),
                       torch.full_like(norm, float("nan")))


# ---------------------------------------------------------------- the evaluation


def concept_energy(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """``(N,)`` share of each map's positive mass on its mask (0 for a map with none): the
    energy-based pointing game (Wang et al. 2020). A uniform map scores the mask's area."""
    positive = maps.clamp(min=0).flatten(1)
    total = positive.sum(1)
    inside = (positive * masks.flatten(1)).sum(1)
    return torch.where(total > 0, inside / total.clamp(min=1e-30), torch.zeros_like(total))


def relevance_mass_accuracy(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """``(N,)`` Arras et al. 2022's relevance mass accuracy: the positive relevance inside the
    ground-truth mask over all positive relevance (0 for a map with none). It is the
    energy-based pointing game's number (``concept_energy``) under its other name."""
    return concept_energy(maps, masks)


def relevance_rank_accuracy(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """``(N,)`` Arras et al. 2022's relevance rank accuracy: of the ``K = |mask|`` most relevant
    pixels (``pixel_ranks``: ties in a fixed random order), the share inside the mask; NaN for
    an empty mask. A uniform (random-order) map expects the mask's area."""
    flat = masks.flatten(1)
    size = flat.sum(1, keepdim=True)
    inside = ((pixel_ranks(maps).flatten(1) < size) & flat).sum(1).double()
    return torch.where(size[:, 0] > 0, inside / size[:, 0].clamp(min=1).double(),
                       torch.full_like(inside, float("nan")))


@dataclass
class _Tally:
    """Running sums for one method over the evaluated images."""

    hits: int = 0
    hits_tolerant: int = 0
    constant_maps: int = 0
    energy: float = 0.0
    deletion: float = 0.0
    insertion: float = 0.0
    sanity: float = 0.0
    sanity_defined: int = 0
    seconds: float = 0.0  # attributing the trained model (the reported time per image)
    sanity_seconds: float = 0.0  # attributing the randomised copies
    scoring_seconds: float = 0.0  # pixel maps, pointing, deletion and insertion curves
    class_hits: dict = field(default_factory=dict)
    completeness: list = field(default_factory=list)
    cascade: dict = field(default_factory=dict)  # layer -> [sum, defined]
    per_image: dict = field(default_factory=dict)  # score -> ([scene], [value]), per class
    road: list = field(default_factory=list)  # (morf, lerf) curves of each batch

    def record(self, key: str, scenes: Sequence[str], values: torch.Tensor) -> None:
        """Keep one score of each image of a batch, with its scene (for the per-class table)."""
        entry = self.per_image.setdefault(key, ([], []))
        entry[0].extend(scenes)
        entry[1].extend(float(v) for v in values.double().cpu().tolist())

    def add_pointing(self, maps: torch.Tensor, masks: torch.Tensor, scenes: Sequence[str],
                     tolerance: int) -> None:
        hit = pointing_hits(maps, masks, 0)
        tolerant = pointing_hits(maps, masks, tolerance)
        self.hits += int(hit.sum())
        self.hits_tolerant += int(tolerant.sum())
        flat = maps.flatten(1)
        self.constant_maps += int((flat.amax(1) == flat.amin(1)).sum())
        energy = concept_energy(maps, masks)
        self.energy += float(energy.sum())
        for scene, h in zip(scenes, hit.tolist()):
            self.class_hits.setdefault(scene, []).append(h)
        self.record("pointing_game", scenes, hit)
        self.record("pointing_game_within_tolerance", scenes, tolerant)
        self.record("center_baseline", scenes, center_hits(masks, 0))
        self.record("concept_energy", scenes, energy)

    def add_sanity(self, trained: torch.Tensor, randomised: torch.Tensor, scenes: Sequence[str],
                   stage: str | None = None) -> torch.Tensor:
        rho = spearman(trained.abs(), randomised.abs())
        defined = ~rho.isnan()
        total, count = float(rho[defined].sum()), int(defined.sum())
        if stage is None:
            self.sanity += total
            self.sanity_defined += count
            self.record("sanity_rank_corr", scenes, rho)
        else:
            entry = self.cascade.setdefault(stage, [0.0, 0])
            entry[0] += total
            entry[1] += count
            self.record(f"{CASCADE_KEY}/{stage}", scenes, rho)
        return rho

    def mean(self, key: str) -> float:
        """The mean over images of a recorded score, NaN values left out."""
        values = [v for v in self.per_image.get(key, ([], []))[1] if not math.isnan(v)]
        return sum(values) / len(values) if values else float("nan")

    def per_class(self) -> dict[str, dict]:
        """Every recorded score's mean per scene class (NaN values left out), the cascade's
        stages nested under ``sanity_cascade``, and the class's image count."""
        table: dict[str, dict] = {}
        for key, (scenes, values) in self.per_image.items():
            groups: dict[str, list[float]] = {}
            for scene, value in zip(scenes, values):
                groups.setdefault(scene, [])
                if not math.isnan(value):
                    groups[scene].append(value)
            for scene, kept in groups.items():
                row = table.setdefault(scene, {})
                mean = sum(kept) / len(kept) if kept else float("nan")
                if key.startswith(CASCADE_KEY + "/"):
                    row.setdefault(CASCADE_KEY, {})[key.split("/", 1)[1]] = mean
                else:
                    row[key] = mean
        counted = self.per_image.get("concept_area", ([], []))[0]
        return {scene: {"images": counted.count(scene), **table[scene]}
                for scene in sorted(table)}

    def result(self, n: int, common: dict, spec: MethodSpec, metrics: frozenset) -> dict:
        out: dict = {}
        if "pointing" in metrics:
            out.update({"pointing_game": self.hits / n, "center_baseline": common["center"] / n})
        if "deletion" in metrics:
            out["deletion_auc"] = self.deletion / n
        if "insertion" in metrics:
            out["insertion_auc"] = self.insertion / n
        if "sanity" in metrics:
            out["sanity_rank_corr"] = _mean(self.sanity, self.sanity_defined)
        out.update({
            "seconds_per_image": self.seconds / n,
            "seconds": {"attribution": round(self.seconds, 3),
                        "sanity_randomised_copies": round(self.sanity_seconds, 3),
                        "scoring": round(self.scoring_seconds, 3)}})
        if "pointing" in metrics:
            out.update({
                "pointing_game_within_tolerance": self.hits_tolerant / n,
                "center_baseline_within_tolerance": common["center_tolerant"] / n,
                "pointing_game_per_class": {s: sum(h) / len(h)
                                            for s, h in sorted(self.class_hits.items())},
                "concept_energy": self.energy / n,
                "constant_maps": self.constant_maps})
        for metric, key in (("mass", "relevance_mass_accuracy"),
                            ("rank", "relevance_rank_accuracy")):
            if metric in metrics:
                out[key] = self.mean(key)
        out["concept_area"] = common["area"] / n
        if "sanity" in metrics:
            out["sanity_undefined"] = n - self.sanity_defined
        if "cascade" in metrics:
            out[CASCADE_KEY] = {stage: _mean(*entry) for stage, entry in self.cascade.items()}
        if self.road:
            morf, lerf = (torch.cat(curves) for curves in zip(*self.road))
            out.update({"road_morf_auc": self.mean("road_morf_auc"),
                        "road_lerf_auc": self.mean("road_lerf_auc"),
                        "road_morf_curve": [round(float(v), 6) for v in morf.mean(0)],
                        "road_lerf_curve": [round(float(v), 6) for v in lerf.mean(0)]})
        out["per_class"] = self.per_class()
        out["pixel_map"] = "upsampled" if spec.layer else spec.pixel_map
        if self.completeness:
            absolute, gap = torch.cat(self.completeness).unbind(1)
            errors = absolute / gap.clamp(min=1e-12)
            out["completeness_error_mean"] = float(errors.mean())
            out["completeness_error_median"] = float(errors.median())
            out["completeness_error_max"] = float(errors.max())
            out["completeness_share_over_bar"] = float((errors > COMPLETENESS_BAR).double()
                                                       .mean())
            out["completeness_error_pooled"] = float(absolute.sum() / gap.sum().clamp(min=1e-12))
            out["completeness_abs_error_median"] = float(absolute.median())
            out["completeness_abs_error_max"] = float(absolute.max())
            out["completeness_gap_median"] = float(gap.median())
        if spec.options:
            out["options"] = dict(spec.options)
        return out


def _mean(total: float, count: int) -> float:
    return total / count if count else float("nan")


def _attribute(method: Attribution, spec: MethodSpec, images: torch.Tensor,
               target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The raw map, and the completeness error when the method returns one."""
    out = method.attribute(images, target=target, **spec.options)
    return out if isinstance(out, tuple) else (out, None)


def _completeness_terms(model: nn.Module, images: torch.Tensor, target: torch.Tensor,
                        error: torch.Tensor) -> torch.Tensor:
    """``(N, 2)``: ``|error|`` and ``|f(x) - f(0)|`` per image (0, mid-grey, is the baseline of
    integrated gradients here)."""
    with torch.no_grad():
        scores = model(torch.cat([images, torch.zeros_like(images)]))
    rows = torch.arange(2 * len(images), device=images.device)
    picked = scores[rows, target.repeat(2)]
    gap = picked[: len(images)] - picked[len(images):]
    return torch.stack([error.detach().abs(), gap.abs()], 1).double().cpu()


@dataclass
class _Batch:
    """One batch of held-out scenes: images, true classes, scene names, defining masks."""

    images: torch.Tensor
    target: torch.Tensor
    scenes: list[str]
    masks: torch.Tensor


def _render(seed: int, indices: range, size: int, device: torch.device) -> _Batch:
    from gandissect.world import concepts, render_batch
    from gandissect.world.dataset import image_to_tensor

    rendered = render_batch(seed, indices, size)
    target = torch.from_numpy(rendered["scene"] - 1)
    names = [c.name for c in concepts("scene")]
    scenes = [names[int(i)] for i in target]
    masks = defining_masks(torch.from_numpy(rendered["object"]), scenes)
    return _Batch(image_to_tensor(rendered["image"]).to(device), target.to(device), scenes,
                  masks.to(device))


def _sanity_stages(methods: dict[str, Attribution], cascade: bool, sanity: bool = True
                   ) -> list[str]:
    """The randomisation stages a batch runs: every stage of the cascade, or only the last
    (every layer randomised, the headline sanity score), or none."""
    stages = [s for s in methods if s]
    return stages if cascade else stages[-1:] if sanity else []


def _progress(bar, method: str, first: int, images: int) -> Callable[[str], None]:
    """``advance(stage)`` for one method on one batch: moves ``bar`` on by the batch's images
    and says which method, model and images it has just done."""

    def advance(stage: str) -> None:
        bar.set_postfix_str(f"{method}, {stage}, images {first}-{first + images - 1}")
        bar.update(images)

    return advance


def _score_method(tally: _Tally, spec: MethodSpec, methods: dict[str, Attribution],
                  model: nn.Module, data: _Batch, options: dict, cascade: bool,
                  advance: Callable[[str], None]) -> None:
    """Add one method's scores on one batch to its tally. ``methods``: the method bound to
    the trained model (key ``""``) and to each randomisation stage; ``advance(stage)`` is
    called after each attribution of the batch (for the progress bar)."""
    size = tuple(data.images.shape[-2:])
    began = time.perf_counter()
    raw, error = _attribute(methods[""], spec, data.images, data.target)
    tally.seconds += time.perf_counter() - began
    advance("trained model")
    began = time.perf_counter()
    centres = options.get("centres")
    maps = pixel_maps(raw.detach(), size, spec.pixel_map, centres)
    if error is not None:
        tally.completeness.append(_completeness_terms(model, data.images, data.target, error))
    metrics, scenes = options["metrics"], data.scenes
    tally.record("concept_area", scenes, data.masks.flatten(1).double().mean(1))
    if "pointing" in metrics:
        tally.add_pointing(maps, data.masks, scenes, options["tolerance"])
    if "mass" in metrics:
        tally.record("relevance_mass_accuracy", scenes,
                     relevance_mass_accuracy(maps, data.masks))
    if "rank" in metrics:
        tally.record("relevance_rank_accuracy", scenes,
                     relevance_rank_accuracy(maps, data.masks))
    if metrics & {"deletion", "insertion"}:
        deletion, insertion = perturbation_curves(model, data.images, maps, data.target,
                                                  options["steps"], options["baseline"])
        tally.deletion += float(auc(deletion).sum())
        tally.insertion += float(auc(insertion).sum())
        tally.record("deletion_auc", scenes, auc(deletion))
        tally.record("insertion_auc", scenes, auc(insertion))
    if "road" in metrics:
        fractions = options["road_fractions"]
        morf, lerf = road_curves(model, data.images, pixel_ranks(maps), data.target, fractions,
                                 options["road_noise"], options["road_generator"])
        tally.road.append((morf.cpu(), lerf.cpu()))
        tally.record("road_morf_auc", scenes, road_auc(morf, fractions))
        tally.record("road_lerf_auc", scenes, road_auc(lerf, fractions))
    tally.scoring_seconds += time.perf_counter() - began
    stages = _sanity_stages(methods, cascade, "sanity" in metrics)
    for stage in stages:
        began = time.perf_counter()
        random_raw, _ = _attribute(methods[stage], spec, data.images, data.target)
        tally.sanity_seconds += time.perf_counter() - began
        advance(f"{stage} randomised")
        random_maps = pixel_maps(random_raw.detach(), size, spec.pixel_map, centres)
        if cascade:
            tally.add_sanity(maps, random_maps, scenes, stage)
        if stage == stages[-1] and "sanity" in metrics:
            tally.add_sanity(maps, random_maps, scenes)


def evaluate_attribution(model: nn.Module, methods: Sequence[str] | None = None, n: int = 1000,
                         seed: int = 1001, batch: int = 16, progress: bool = True,
                         size: int = 64, layer: str = "layer4", tolerance: int = 4,
                         steps: int = 16, baseline: str = "zeros", randomization_seed: int = 0,
                         cascade_n: int = 16, upsample: str = "bilinear",
                         metrics: Sequence[str] | None = None,
                         road_fractions: Sequence[float] = ROAD_FRACTIONS,
                         road_noise: float = ROAD_NOISE) -> dict:
    """Pointing game, centre baseline, deletion / insertion AUC, sanity rank correlation and
    time per image of each method (``METHODS`` names; None: all) on scenes ``0 .. n-1`` of
    SceneWorld world ``seed`` (never a training seed), target = the true scene class.
    ``metrics`` (``METRICS`` names; None: ``DEFAULT_METRICS``) chooses the scores; ROAD
    (``"road"``, at ``road_fractions`` with imputation noise ``road_noise``) is asked for.
    Every method's ``per_class`` holds each of its scores per scene class.

    Returns ``{method: {...scores...}, "settings": {...}}``; see the module docstring for the
    definitions. ``batch`` images go through each method at once; ``layer`` is the CAM layer;
    ``tolerance`` the pointing game's, in pixels; ``steps`` the deletion / insertion chunks;
    ``upsample`` how layer maps reach pixels: ``"aligned"`` (each cell at its receptive
    field's measured centre in the trained model, ``gandissect.receptive``) or ``"bilinear"``.
    The headline sanity score randomises every layer; ``sanity_cascade`` gives every stage of
    the cascade (top layer first), measured on the batches that start below ``cascade_n``
    (0: none), because it runs each method once per stage.
    """
    from tqdm import tqdm

    from gandissect.evaluate.metrics import check_held_out

    check_held_out(seed)
    names = list(METHODS) if methods is None else list(methods)
    unknown = [m for m in names if m not in METHODS]
    if unknown or not names:
        raise UserError(f"unknown attribution methods {unknown}; choose from {list(METHODS)}")
    if n < 1 or batch < 1 or tolerance < 0 or steps < 1:
        raise UserError(f"need n >= 1, batch >= 1, tolerance >= 0 and steps >= 1 (got n={n}, "
                        f"batch={batch}, tolerance={tolerance}, steps={steps})")
    chosen = frozenset(DEFAULT_METRICS if metrics is None else metrics)
    if not chosen or chosen - set(METRICS):
        raise UserError(f"unknown attribution metrics {sorted(chosen - set(METRICS))}; choose "
                        f"from {', '.join(METRICS)}")
    if "road" in chosen and (not road_fractions or any(not 0 < f < 1 for f in road_fractions)):
        raise UserError(f"ROAD fractions must lie strictly between 0 and 1, got "
                        f"{list(road_fractions)}")
    device = model_device(model)
    model.eval()
    randomised = cascading_randomization(model, randomization_seed) if chosen & {
        "sanity", "cascade"} else []
    stages = [("", model)] + randomised
    bound = {m: {stage: METHODS[m].build(copy_, layer) for stage, copy_ in stages}
             for m in names}
    if upsample not in ("aligned", "bilinear"):
        raise UserError(f"upsample must be 'aligned' or 'bilinear', got {upsample!r}")
    options = {"tolerance": tolerance, "steps": steps, "baseline": baseline, "centres": None,
               "metrics": chosen, "road_fractions": tuple(road_fractions),
               "road_noise": road_noise,
               "road_generator": torch.Generator().manual_seed(randomization_seed)}
    if upsample == "aligned" and any(METHODS[m].layer for m in names):
        options["centres"] = cell_centres(model, layer, size)
    tallies = {m: _Tally() for m in names}
    common = {"center": 0, "center_tolerant": 0, "area": 0.0, "correct": 0, "cascade_images": 0}
    # the bar counts images attributed, one method and one model (trained or randomised) at a
    # time: the first batches also run every stage of the sanity cascade
    total = sum(min(batch, n - start) * sum(
        1 + len(_sanity_stages(bound[m], start < cascade_n and "cascade" in chosen,
                               "sanity" in chosen)) for m in names)
        for start in range(0, n, batch))
    bar = tqdm(total=total, disable=not progress, desc="attribution eval", unit="image")
    began = time.perf_counter()
    for start in range(0, n, batch):
        data = _render(seed, range(start, min(start + batch, n)), size, device)
        common["center"] += int(center_hits(data.masks, 0).sum())
        common["center_tolerant"] += int(center_hits(data.masks, tolerance).sum())
        common["area"] += float(data.masks.flatten(1).float().mean(1).sum())
        with torch.no_grad():
            common["correct"] += int((model(data.images).argmax(1) == data.target).sum())
        cascade = start < cascade_n and "cascade" in chosen
        common["cascade_images"] += len(data.scenes) if cascade else 0
        for m in names:
            _score_method(tallies[m], METHODS[m], bound[m], model, data, options, cascade,
                          _progress(bar, m, start, len(data.scenes)))
    bar.close()
    results: dict = {m: tallies[m].result(n, common, METHODS[m], chosen) for m in names}
    results["settings"] = {
        "metrics": [m for m in METRICS if m in chosen],
        "n": n, "seed": seed, "size": size, "batch": batch, "layer": layer,
        "target": "true scene class", "tolerance_px": tolerance, "steps": steps,
        "baseline": baseline, "upsample": upsample,
        "cell_centres": ([[round(float(c), 2) for c in axis] for axis in options["centres"]]
                         if options["centres"] is not None else None),
        "randomization": "all layers re-initialised (end of the cascade)",
        "randomization_seed": randomization_seed,
        "cascade_stages": [stage for stage, _ in stages[1:]],
        "cascade_images": common["cascade_images"],
        "road_fractions": list(road_fractions) if "road" in chosen else None,
        "road_noise": road_noise if "road" in chosen else None,
        "classifier_top1": common["correct"] / n,
        "defining_concepts": {k: list(v) for k, v in DEFINING_CONCEPTS.items()},
        "threads": torch.get_num_threads(), "device": str(device),
        "wall_seconds": round(time.perf_counter() - began, 3),
    }
    return results
