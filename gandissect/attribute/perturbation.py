"""Perturbation methods over groups of pixels: feature ablation, Kernel SHAP and LIME.

All three explain a score by hiding *features* (groups of pixels, all channels at once unless
the mask says otherwise) and watching the score. A feature that is hidden takes the baseline's
value; a *coalition* is the set of features kept. Each method returns input-shaped
``(N, C, H, W)`` maps in which every pixel of a feature carries that feature's value.

- ``FeatureAblation``: a feature's value is ``f(x) - f(x with the feature hidden)``.
- ``KernelShap`` (Lundberg & Lee 2017): Shapley values estimated by the weighted linear
  regression of the scores of random coalitions on the coalitions, with the Shapley kernel
  ``(M - 1) / (C(M, k) k (M - k))`` for a coalition of k of M features.
- ``Lime`` (Ribeiro et al. 2016): the coefficients of a weighted ridge regression of the scores
  of random coalitions on the binary coalitions, weighted by how close each perturbed image is
  to the original.

The arguments are Captum's (``feature_mask``, ``baselines``, ``n_samples``,
``perturbations_per_eval``, ``show_progress``), and the random coalitions are drawn as Captum
draws them, on the CPU, image i's from a generator seeded ``seed + i``:
``torch.manual_seed(seed + i)`` before Captum's ``KernelShap`` / ``Lime`` on image i alone
gives it the coalitions that ours uses for that image.

**Default features.** Captum's default is one feature per input element, 12,288 features for a
64 px RGB image: far too many to sample. Here the default ``feature_mask`` is the image's SLIC
superpixels (``superpixels``: scikit-image's ``slic``, about ``N_SEGMENTS`` = 50 per image on
the image scaled to [0, 1], all channels together), computed per image, so each image has its own
features (a noise-like image that SLIC cannot split gets a grid of square patches). A mask may
be given as ``(H, W)``, ``(C or 1, H, W)`` or ``(N or 1, C or 1, H, W)`` integer ids; each
image's ids are renumbered to ``0 .. M-1`` in increasing order (an id that labels no pixel is
not a feature).

**Cost.** One forward pass per perturbed image: ``M`` for feature ablation, ``n_samples`` for
Kernel SHAP and LIME. The perturbed images of the whole batch go through the model in chunks of
``internal_batch_size`` rows (default: as many as fit in ``COPY_BUDGET`` bytes), or of
``perturbations_per_eval`` perturbations of each image (Captum's name); the result does not
depend on the chunking.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from numbers import Integral

import numpy as np
import torch
import torch.nn.functional as F

from gandissect.errors import UserError

from .base import (
    Attribution,
    Target,
    _check_input,
    attribution_mode,
    baseline_for,
    prepare_target,
    resolve_target,
    row_chunks,
)
from .occlusion import COPY_BUDGET

__all__ = ["FeatureAblation", "KernelShap", "Lime", "N_SEGMENTS", "patch_grid",
           "shapley_kernel", "superpixels"]

N_SEGMENTS = 50  # SLIC superpixels asked for per image by default


def superpixels(x: torch.Tensor, n_segments: int = N_SEGMENTS, compactness: float = 10.0
                ) -> torch.Tensor:
    """``(N, 1, H, W)`` int64 SLIC superpixel ids per image (scikit-image's ``slic`` on each
    image scaled to [0, 1] by its own min and max; RGB images are segmented in Lab), on
    ``x``'s device. SLIC merges the fragments of a noise-like image into a few segments: an
    image it splits into fewer than ``n_segments / 4`` gets a ``patch_grid`` of about
    ``n_segments`` patches instead."""
    from skimage.segmentation import slic

    x = _check_input(x, images=True)
    side = max(1, round(math.sqrt(n_segments)))
    grid = patch_grid(x.shape[2], x.shape[3], side, side)
    masks = []
    for image in x.detach().float().cpu():
        low, high = image.min(), image.max()
        scaled = ((image - low) / (high - low) if high > low else image * 0).permute(1, 2, 0)
        labels = slic(scaled.numpy().astype(np.float64), n_segments=n_segments,
                      compactness=compactness, start_label=0, channel_axis=-1)
        labels = torch.from_numpy(np.ascontiguousarray(labels)).long()
        masks.append(labels if len(labels.unique()) >= n_segments / 4 else grid)
    return torch.stack(masks)[:, None].to(x.device)


def patch_grid(height: int, width: int, rows: int = 8, columns: int = 8,
               device: torch.device | None = None) -> torch.Tensor:
    """``(H, W)`` int64 ids of a ``rows x columns`` grid of (nearly) equal patches."""
    row = torch.arange(height, device=device) * rows // height
    column = torch.arange(width, device=device) * columns // width
    return row[:, None] * columns + column[None, :]


def shapley_kernel(features: int, kept: torch.Tensor) -> torch.Tensor:
    """The Shapley kernel weight ``(M - 1) / (C(M, k) k (M - k))`` of coalitions of ``kept``
    features out of ``features`` (0 < k < M)."""
    k = kept.double()
    comb = torch.exp(torch.lgamma(torch.tensor(features + 1.0, dtype=torch.float64))
                     - torch.lgamma(k + 1) - torch.lgamma(features - k + 1))
    return (features - 1) / (comb * k * (features - k))


def _feature_masks(feature_mask: torch.Tensor | None, x: torch.Tensor
                   ) -> list[tuple[torch.Tensor, int]]:
    """Per image: ``(ids, M)`` with ``ids`` of shape ``(1 or C, H, W)`` in ``0 .. M-1``."""
    n, channels, height, width = x.shape
    if feature_mask is None:
        feature_mask = superpixels(x)
    mask = torch.as_tensor(feature_mask, device=x.device)
    if mask.dtype.is_floating_point or mask.dtype == torch.bool or mask.is_complex():
        raise UserError(f"feature_mask must hold integer feature ids, got {mask.dtype}")
    mask = mask.reshape((1,) * (4 - mask.dim()) + tuple(mask.shape)) if mask.dim() < 4 else mask
    if mask.dim() != 4 or mask.shape[0] not in (1, n) or mask.shape[1] not in (1, channels) \
            or tuple(mask.shape[2:]) != (height, width):
        raise UserError(f"feature_mask {tuple(torch.as_tensor(feature_mask).shape)} does not fit "
                        f"the input {tuple(x.shape)}: give (H, W), (C or 1, H, W) or "
                        "(N or 1, C or 1, H, W) integer ids")
    result = []
    for i in range(n):
        _, ids = torch.unique(mask[i if mask.shape[0] == n else 0], return_inverse=True)
        result.append((ids, int(ids.max()) + 1))
    return result


def _positive(value: object, name: str, least: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < least:
        raise UserError(f"{name} must be an int >= {least}, got {value!r}")
    return int(value)


def _rows_per_pass(x: torch.Tensor, internal_batch_size: int | None,
                   perturbations_per_eval: int | None) -> int:
    """Perturbed images per forward pass."""
    if internal_batch_size is not None and perturbations_per_eval is not None:
        raise UserError("pass one of internal_batch_size (images per forward) and "
                        "perturbations_per_eval (perturbations of each image per forward), "
                        "not both")
    if perturbations_per_eval is not None:
        return _positive(perturbations_per_eval, "perturbations_per_eval") * x.shape[0]
    if internal_batch_size is not None:
        return _positive(internal_batch_size, "internal_batch_size")
    return max(1, COPY_BUDGET // (x[0].numel() * x.element_size()))


class _FeaturePerturbation(Attribution):
    """What the three methods share: features, coalitions -> perturbed images -> scores."""

    name = "perturbation"

    def _scores(self, x: torch.Tensor, target: Target, fill: torch.Tensor,
                masks: list[tuple[torch.Tensor, int]], coalitions: list[torch.Tensor],
                rows_per_pass: int, show_progress: bool,
                on_rows: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], None] | None = None
                ) -> list[torch.Tensor]:
        """Per image i: the ``(S_i,)`` scores of ``x[i]`` with the features that
        ``coalitions[i]`` (``(S_i, M_i)`` bool) marks False set to the baseline.
        ``on_rows(rows, owners, images)`` sees every chunk of perturbed images, ``rows``
        numbering them through all images (image 0's first)."""
        from tqdm import tqdm

        counts = [len(c) for c in coalitions]
        owners = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
        owners = owners.to(x.device)
        # coalitions padded to the most features, so that one gather per chunk makes the masks
        width = max(c.shape[1] for c in coalitions)
        padded = torch.cat([F.pad(c, (0, width - c.shape[1])) for c in coalitions]).to(x.device)
        ids = torch.stack([i for i, _ in masks]).flatten(1)  # (N, pixels of the mask)
        scores = torch.empty(len(owners), dtype=x.dtype, device=x.device)
        with attribution_mode(self.model), torch.no_grad(), \
                tqdm(total=len(owners), desc=self.name, unit="image",
                     disable=not show_progress, leave=False) as bar:
            for rows in row_chunks(len(owners), rows_per_pass):
                rows = rows.to(x.device)
                who = owners[rows]
                keep = padded[rows].gather(1, ids[who]).reshape(len(rows), *masks[0][0].shape)
                value = fill if fill.dim() == 0 else fill[who]
                images = torch.where(keep, x[who], value)
                if on_rows is not None:
                    on_rows(rows, who, images)
                scores[rows] = resolve_target(self.model(images), target, who)
                bar.update(len(rows))
        return list(scores.split(counts))

    @staticmethod
    def _spread(values: list[torch.Tensor], masks: list[tuple[torch.Tensor, int]],
                x: torch.Tensor) -> torch.Tensor:
        """Input-shaped maps: each pixel gets its feature's value."""
        maps = [v.to(x.device, x.dtype)[ids].expand(x.shape[1:])
                for v, (ids, _) in zip(values, masks)]
        return torch.stack(maps).clone()

    def _prepare(self, x: torch.Tensor, target: Target, feature_mask: torch.Tensor | None,
                 baselines: float | torch.Tensor | None):
        x = _check_input(x, images=True)
        target = prepare_target(target, x.shape[0], x.device)
        return x, target, _feature_masks(feature_mask, x), baseline_for(baselines, x)


class FeatureAblation(_FeaturePerturbation):
    """``f(x) - f(x with feature j set to the baseline)`` for every feature j, spread over the
    feature's pixels (Captum's ``FeatureAblation``). Default features: SLIC superpixels (see the
    module docstring); Captum's default, one feature per element, is ``feature_mask`` =
    ``torch.arange(x[0].numel()).reshape(x.shape[1:])``.

    Example::

        FeatureAblation(model).attribute(images, target=3)                  # superpixels
        FeatureAblation(model).attribute(images, target=3, feature_mask=patch_grid(64, 64))
    """

    name = "feature ablation"

    def attribute(self, x: torch.Tensor, target: Target = None,
                  feature_mask: torch.Tensor | None = None,
                  baselines: float | torch.Tensor | None = None,
                  perturbations_per_eval: int | None = None,
                  internal_batch_size: int | None = None,
                  show_progress: bool = False) -> torch.Tensor:
        """Ablation map of ``target`` for images ``x`` ``(N, C, H, W)``; ``baselines``: what
        hidden pixels become, a number or a tensor broadcastable to ``x`` (default 0)."""
        x, target, masks, fill = self._prepare(x, target, feature_mask, baselines)
        rows = _rows_per_pass(x, internal_batch_size, perturbations_per_eval)
        coalitions = [~torch.eye(m, dtype=torch.bool) for _, m in masks]
        ablated = self._scores(x, target, fill, masks, coalitions, rows, show_progress)
        with attribution_mode(self.model), torch.no_grad():
            base = resolve_target(self.model(x), target)
        return self._spread([base[i] - s for i, s in enumerate(ablated)], masks, x)


class _SampledCoalitions(_FeaturePerturbation):
    """Kernel SHAP and LIME: random coalitions, then a weighted linear fit per image."""

    default_samples = 200

    def _draw(self, masks: list[tuple[torch.Tensor, int]], n_samples: int, seed: int) -> list:
        """Each image's ``coalitions``: image i's from a CPU generator seeded ``seed + i``."""
        return [self.coalitions(features, n_samples, torch.Generator().manual_seed(seed + i))
                for i, (_, features) in enumerate(masks)]

    def _check_samples(self, n_samples: int | None, least: int) -> int:
        n_samples = self.default_samples if n_samples is None else n_samples
        return _positive(n_samples, "n_samples", least)


class KernelShap(_SampledCoalitions):
    """Kernel SHAP (Lundberg & Lee 2017): the Shapley values of the features, estimated from
    ``n_samples`` coalitions (default 200; Captum's is 25).

    The coalitions are Captum's: the full and the empty one, then ``n_samples - 2`` drawn with
    the number of kept features k in 1 .. M-1 picked with probability proportional to
    ``(M - 1) / (k (M - k))`` and the k features uniformly, so that each coalition is drawn with
    the Shapley kernel's probability and enters the regression with weight 1. When ``2**M`` is
    at most ``n_samples``, every one of the ``2**M - 2`` other coalitions is used once with its
    kernel weight instead: the result is then exactly the Shapley values.

    The fit enforces the two constraints of the method exactly: the intercept is the score of
    the empty coalition ``f(baseline)`` and the values sum to ``f(x) - f(baseline)``; among the
    solutions of an underdetermined fit (fewer coalitions than features) it takes the one of
    least norm. Captum imposes the constraints with a weight of 1e6 on the two coalitions and
    fits in float32: its values agree with ours to 1e-6 - 1e-3 of the largest (16 - 64
    features).

    Example::

        KernelShap(model).attribute(images, target=3, n_samples=300, baselines=0.0)
    """

    name = "kernel SHAP"

    @staticmethod
    def coalitions(features: int, n_samples: int, generator: torch.Generator
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(coalitions (S, M) bool, weights (S,) float64)``, the full and the empty
        coalition first (weight 0 here: the fit imposes them as constraints)."""
        if 2 ** min(features, 62) <= n_samples:
            codes = torch.arange(2 ** features)
            every = (codes[:, None] >> torch.arange(features)) & 1 == 1
            inner = every[1:-1]
            weights = shapley_kernel(features, inner.sum(1))
        else:
            counts = torch.arange(features, dtype=torch.float)
            probabilities = torch.tensor(features - 1) / (counts * (features - counts))
            probabilities[0] = 0.0
            probabilities = probabilities / probabilities.sum(-1, keepdim=True)
            draws = []
            for _ in range(n_samples - 2):
                kept = int(torch.multinomial(probabilities[None], 1, True, generator=generator))
                values = torch.randn(1, features, generator=generator)
                threshold = torch.kthvalue(values, features - kept).values.item()
                draws.append(values[0] > threshold)
            inner = torch.stack(draws) if draws else torch.zeros(0, features, dtype=torch.bool)
            weights = torch.ones(len(inner), dtype=torch.float64)
        ends = torch.stack([torch.ones(features, dtype=torch.bool),
                            torch.zeros(features, dtype=torch.bool)])
        return torch.cat([ends, inner]), torch.cat([torch.zeros(2, dtype=torch.float64),
                                                    weights])

    @staticmethod
    def solve(coalitions: torch.Tensor, scores: torch.Tensor, weights: torch.Tensor
              ) -> torch.Tensor:
        """The ``(M,)`` values: weighted least squares of ``scores - f(empty)`` on the
        coalitions (rows 2 ..), with the values summing to ``f(full) - f(empty)`` (rows 0
        and 1). Written ``phi = gap / M + P u`` with ``P`` the projection onto vectors summing
        to 0, so the constraint holds for every ``u`` and the least-norm ``u`` treats every
        feature alike."""
        z = coalitions[2:].double()
        y = scores.double().cpu()
        features = coalitions.shape[1]
        gap = y[0] - y[1]
        if len(z) == 0:
            return torch.full((features,), float(gap) / features, dtype=torch.float64)
        projection = torch.eye(features, dtype=torch.float64) - 1.0 / features
        root = weights[2:].sqrt()[:, None]
        residual = y[2:] - y[1] - z.sum(1) * gap / features
        u = torch.linalg.pinv(root * (z @ projection)) @ (root[:, 0] * residual)
        return gap / features + projection @ u

    def attribute(self, x: torch.Tensor, target: Target = None,
                  baselines: float | torch.Tensor | None = None,
                  feature_mask: torch.Tensor | None = None, n_samples: int | None = None,
                  perturbations_per_eval: int | None = None,
                  internal_batch_size: int | None = None, show_progress: bool = False,
                  seed: int = 0) -> torch.Tensor:
        """Kernel SHAP values of ``target`` for images ``x`` ``(N, C, H, W)``, spread over
        each feature's pixels; ``baselines``: a number or a tensor broadcastable to ``x``
        (default 0); image i's coalitions come from a CPU generator seeded
        ``seed + i``."""
        n_samples = self._check_samples(n_samples, 2)
        x, target, masks, fill = self._prepare(x, target, feature_mask, baselines)
        rows = _rows_per_pass(x, internal_batch_size, perturbations_per_eval)
        drawn = self._draw(masks, n_samples, seed)
        scores = self._scores(x, target, fill, masks, [c for c, _ in drawn], rows,
                              show_progress)
        values = [self.solve(c, s, w) for (c, w), s in zip(drawn, scores)]
        return self._spread(values, masks, x)


class Lime(_SampledCoalitions):
    """LIME on superpixels (Ribeiro et al. 2016) with Captum's ``Lime`` defaults except the
    surrogate: ``n_samples`` coalitions (default 200; Captum's is 25) that keep each feature
    with probability 1/2, each weighted by the exponential kernel
    ``exp(-d**2 / (2 * kernel_width**2))`` of the cosine distance ``d = 1 - cos(x, x')``
    between the flattened image and the perturbed one (``kernel_width`` 1.0, Captum's), and a
    weighted ridge regression (``alpha`` 1.0, intercept not penalised: scikit-learn's ``Ridge``
    with sample weights, the surrogate of the original LIME code) of the scores on the binary
    coalitions. Its coefficients are the attributions. Captum's default surrogate is a Lasso
    (``alpha`` 0.01); with ``interpretable_model=SkLearnRidge(alpha=1.0)`` it computes ours.

    Example::

        Lime(model).attribute(images, target=3, n_samples=300)
    """

    name = "LIME"

    @staticmethod
    def coalitions(features: int, n_samples: int, generator: torch.Generator) -> torch.Tensor:
        """``(n_samples, M)`` bool coalitions, each feature kept with probability 1/2."""
        half = torch.full((1, features), 0.5)
        return torch.cat([torch.bernoulli(half, generator=generator)
                          for _ in range(n_samples)]).bool()

    @staticmethod
    def solve(coalitions: torch.Tensor, scores: torch.Tensor, weights: torch.Tensor,
              alpha: float) -> torch.Tensor:
        """The ``(M,)`` coefficients of the weighted ridge fit with an unpenalised intercept."""
        z, y, w = coalitions.double(), scores.double().cpu(), weights.double().cpu()
        total = w.sum()
        zc = z - (w @ z) / total
        yc = y - (w @ y) / total
        gram = zc.T @ (w[:, None] * zc) + alpha * torch.eye(z.shape[1], dtype=torch.float64)
        return torch.linalg.solve(gram, zc.T @ (w * yc))

    def attribute(self, x: torch.Tensor, target: Target = None,
                  baselines: float | torch.Tensor | None = None,
                  feature_mask: torch.Tensor | None = None, n_samples: int | None = None,
                  perturbations_per_eval: int | None = None,
                  internal_batch_size: int | None = None, show_progress: bool = False,
                  seed: int = 0, kernel_width: float = 1.0, alpha: float = 1.0
                  ) -> torch.Tensor:
        """LIME coefficients of ``target`` for images ``x`` ``(N, C, H, W)``, spread over each
        feature's pixels; ``baselines``: a number or a tensor broadcastable to ``x``
        (default 0); image i's coalitions come from a CPU generator seeded
        ``seed + i``."""
        n_samples = self._check_samples(n_samples, 2)
        if not isinstance(kernel_width, int | float) or isinstance(kernel_width, bool) \
                or not kernel_width > 0 or not isinstance(alpha, int | float) or alpha < 0:
            raise UserError(f"need kernel_width > 0 and alpha >= 0, got {kernel_width!r} and "
                            f"{alpha!r}")
        x, target, masks, fill = self._prepare(x, target, feature_mask, baselines)
        rows = _rows_per_pass(x, internal_batch_size, perturbations_per_eval)
        drawn = self._draw(masks, n_samples, seed)
        similarity = torch.empty(n_samples * len(masks), dtype=torch.float64, device=x.device)
        flat = x.flatten(1)

        def weigh(rows: torch.Tensor, owners: torch.Tensor, images: torch.Tensor) -> None:
            cosine = F.cosine_similarity(flat[owners], images.flatten(1), dim=1)
            similarity[rows] = torch.exp(-(1 - cosine) ** 2 / (2 * kernel_width ** 2)).double()

        scores = self._scores(x, target, fill, masks, drawn, rows, show_progress, weigh)
        values = [self.solve(c, s, w, alpha)
                  for c, s, w in zip(drawn, scores, similarity.split(n_samples))]
        return self._spread(values, masks, x)
