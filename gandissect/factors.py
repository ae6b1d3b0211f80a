"""How a classifier represents the factors that generate SceneWorld scenes.

``mutual_information`` estimates, in bits, the mutual information between two discrete
variables from their joint counts: the plug-in estimate ``H(X) + H(Y) - H(X, Y)`` with each
entropy corrected by Miller and Madow (1955), ``+ (m - 1) / (2 n)`` nats for ``m`` occupied
cells among ``n`` samples. The plug-in estimate is biased upwards by about
``(kx - 1)(ky - 1) / (2 n ln 2)`` bits for independent variables; the correction removes most
of that bias (the tests measure both on a case with known MI). The corrected estimate may
fall a little below zero where there is no information; it is reported as it is.

A unit is a channel of a layer, spatially averaged per image and cut into ``bins`` equally
populated bins (by rank, so ties never split a bin); its MI with each factor of
``gandissect.world.factors.scene_factors`` says which units carry shape, material, colour...
The class output's MI is the predicted class's with each factor. Several codes go with the
scene (a dome only in a church, ``material`` ``none`` outside towns), so the study also gives
each MI within scenes, ``I(. ; factor | scene)``. ``sensitivity`` is, per
factor, how often the prediction changes when only that factor changes
(``gandissect.world.factors.render_variant``), over the pairs whose images differ;
``probability_shift`` is the mean absolute change, over the same pairs, of the probability of
the class predicted for the original scene (a graded sensitivity, where few predictions flip).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from gandissect.hooks import Trace
from gandissect.torchutil import eval_mode, model_device

__all__ = ["entropy_bits", "mutual_information", "conditional_mutual_information", "known_mi",
           "rank_bins", "pooled_units", "factor_table", "FactorStudy", "factor_study",
           "factor_figure"]


def entropy_bits(counts: np.ndarray, correct: bool = True) -> float:
    """The entropy (bits) of the distribution whose counts are ``counts`` (any shape);
    Miller-Madow corrected unless ``correct`` is False."""
    counts = np.asarray(counts, dtype=np.float64).ravel()
    n = counts.sum()
    nonzero = counts[counts > 0]
    plug = float(-(nonzero / n * np.log(nonzero / n)).sum())
    if correct:
        plug += (len(nonzero) - 1) / (2 * n)
    return plug / math.log(2)


def mutual_information(x: Sequence, y: Sequence, correct: bool = True) -> float:
    """The mutual information (bits) between paired discrete samples ``x`` and ``y`` (any
    hashable codes); Miller-Madow corrected unless ``correct`` is False."""
    _, xi = np.unique(np.asarray(x), return_inverse=True)
    _, yi = np.unique(np.asarray(y), return_inverse=True)
    if len(xi) != len(yi) or not len(xi):
        raise ValueError(f"x and y need the same, non-zero length, got {len(xi)} and {len(yi)}")
    joint = np.zeros((xi.max() + 1, yi.max() + 1))
    np.add.at(joint, (xi.ravel(), yi.ravel()), 1)
    return (entropy_bits(joint.sum(1), correct) + entropy_bits(joint.sum(0), correct)
            - entropy_bits(joint, correct))


def conditional_mutual_information(x: Sequence, y: Sequence, z: Sequence,
                                   correct: bool = True) -> float:
    """I(X; Y | Z) in bits: the MI of ``x`` and ``y`` within each value of ``z``, weighted by
    its share of the samples (each stratum's estimate corrected as in ``mutual_information``).
    With ``z`` the scene, it says what a unit tells of a factor beyond the scene's kind."""
    z = np.asarray(z)
    x, y = np.asarray(x), np.asarray(y)
    total = 0.0
    for value in np.unique(z):
        rows = z == value
        total += rows.mean() * mutual_information(x[rows], y[rows], correct)
    return total


def known_mi(k: int, p: float) -> float:
    """The exact MI (bits) of X uniform over ``k`` values and Y = X with probability ``p``,
    else uniform over the ``k`` values (independently of X)."""
    same, other = p + (1 - p) / k, (1 - p) / k
    conditional = -same * math.log2(same) - ((k - 1) * other * math.log2(other) if other else 0)
    return math.log2(k) - conditional


def rank_bins(values: np.ndarray, bins: int) -> np.ndarray:
    """``values`` (N,) cut into ``bins`` equally populated bins by rank; equal values share
    a bin (a constant unit has one bin, hence no information)."""
    values = np.asarray(values, dtype=np.float64)
    edges = np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1])
    return np.searchsorted(np.unique(edges), values, side="right")


def pooled_units(model: nn.Module, images: torch.Tensor, layer: str, batch: int = 64
                 ) -> tuple[np.ndarray, np.ndarray]:
    """``(N, units)`` spatially averaged activations of ``layer`` and ``(N, classes)`` class
    probabilities (softmax of the outputs)."""
    from gandissect.units_relevance import _channel_dim

    device = model_device(model)
    pooled, predicted = [], []
    with eval_mode(model), torch.no_grad(), Trace(model, layer) as trace:
        for start in range(0, images.shape[0], batch):
            logits = model(images[start:start + batch].to(device))
            out = trace.output
            out = out.movedim(_channel_dim(model, layer, out), 1).flatten(2).float().mean(2)
            pooled.append(out.cpu())
            predicted.append(logits.float().softmax(-1).cpu())
    return torch.cat(pooled).numpy(), torch.cat(predicted).numpy()


def factor_table(seed: int, indices: Sequence[int]) -> dict[str, list[str]]:
    """``{factor: [code of each scene]}`` (``gandissect.world.factors.scene_factors``)."""
    from gandissect.world.factors import FACTORS, scene_factors

    records = [scene_factors(seed, int(i)) for i in indices]
    return {f: [r[f] for r in records] for f in FACTORS}


@dataclass
class FactorStudy:
    """Units' and the class output's MI (bits) with each factor, and the sensitivity."""

    layer: str
    factors: list[str]
    unit_mi: np.ndarray  # (units, factors)
    unit_mi_within_scene: np.ndarray  # (units, factors): I(unit; factor | scene)
    class_mi: dict[str, float]
    class_mi_within_scene: dict[str, float]
    sensitivity: dict[str, float]
    probability_shift: dict[str, float]  # mean |change| of the predicted class's probability
    pairs: dict[str, int]  # variant pairs whose images differ, per factor
    n: int
    bins: int

    def to_json(self) -> dict[str, Any]:
        """The JSON the ``factors`` command prints."""
        return {"layer": self.layer, "n": self.n, "bins": self.bins,
                "estimator": "plug-in MI on rank-binned activations, Miller-Madow corrected",
                "factors": self.factors,
                "units": [{"unit": u, "mi": dict(zip(self.factors, map(float, row))),
                           "mi_within_scene": dict(zip(self.factors, map(float, within)))}
                          for u, (row, within) in enumerate(zip(self.unit_mi,
                                                                self.unit_mi_within_scene))],
                "class_mi": self.class_mi, "class_mi_within_scene": self.class_mi_within_scene,
                "sensitivity": self.sensitivity, "probability_shift": self.probability_shift,
                "pairs": self.pairs}


def factor_study(model: nn.Module, layer: str, seed: int, n: int, size: int,
                 pairs: int | None = None, bins: int = 8, batch: int = 64) -> FactorStudy:
    """MI of ``layer``'s units and the prediction with every factor over scenes
    ``0 .. n - 1`` of world ``seed``, and sensitivity over the first ``pairs`` of them."""
    from gandissect.world import render_batch
    from gandissect.world.dataset import image_to_tensor
    from gandissect.world.factors import FACTORS, render_variant

    table = factor_table(seed, range(n))
    originals = render_batch(seed, range(n), size)["image"]
    images = image_to_tensor(originals)
    pooled, probabilities = pooled_units(model, images, layer, batch)
    predicted = probabilities.argmax(1)
    binned = [rank_bins(pooled[:, u], bins) for u in range(pooled.shape[1])]
    unit_mi = np.array([[mutual_information(b, table[f]) for f in FACTORS] for b in binned])
    within = np.array([[conditional_mutual_information(b, table[f], table["scene"])
                        for f in FACTORS] for b in binned])
    class_mi = {f: mutual_information(predicted, table[f]) for f in FACTORS}
    class_within = {f: conditional_mutual_information(predicted, table[f], table["scene"])
                    for f in FACTORS}
    pairs = n if pairs is None else min(pairs, n)
    sensitivity, shift, counted = {}, {}, {}
    for f in FACTORS:
        variants = [render_variant(seed, i, f, 1, size).image for i in range(pairs)]
        differ = np.array([(v != o).any() for v, o in zip(variants, originals)])
        if not differ.any():
            sensitivity[f], shift[f], counted[f] = float("nan"), float("nan"), 0
            continue
        _, varied = pooled_units(model, image_to_tensor(np.stack(variants)), layer, batch)
        rows = np.arange(pairs)
        flips = (varied.argmax(1) != predicted[:pairs]) & differ
        moved = np.abs(varied[rows, predicted[:pairs]] - probabilities[rows, predicted[:pairs]])
        sensitivity[f], counted[f] = float(flips.sum() / differ.sum()), int(differ.sum())
        shift[f] = float(moved[differ].mean())
    return FactorStudy(layer, list(FACTORS), unit_mi, within, class_mi, class_within,
                       sensitivity, shift, counted, n, bins)


def factor_figure(study: FactorStudy, top: int = 24) -> Any:
    """A PIL image: the ``top`` units by largest MI as rows x factors (darker: more bits),
    the class output as a last row, and the sensitivity per factor as bars underneath (with
    the probability shift, ``dp``, below each bar)."""
    from PIL import Image, ImageDraw

    order = np.argsort(-study.unit_mi.max(1))[:top]
    rows = [(f"unit {u}", study.unit_mi[u]) for u in order]
    rows.append(("class", np.array([study.class_mi[f] for f in study.factors])))
    peak = max(1e-6, float(max(r.max() for _, r in rows)))
    cell, cell_h, left, top_px = 62, 16, 80, 46
    bars_h = 110
    width = left + cell * len(study.factors) + 10
    height = top_px + cell_h * len(rows) + bars_h + 44
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((8, 6), f"MI (bits, max {peak:.2f}) of {study.layer} units with each factor",
                  fill="black")
    for j, f in enumerate(study.factors):
        draw.text((left + j * cell + 2, top_px - 16), f[:9], fill="black")
    for i, (name, values) in enumerate(rows):
        y = top_px + i * cell_h
        draw.text((6, y + 2), name, fill="black")
        for j, v in enumerate(values):
            shade = int(255 * (1 - max(0.0, float(v)) / peak))
            draw.rectangle((left + j * cell, y, left + (j + 1) * cell - 2, y + cell_h - 2),
                           fill=(shade, shade, 255))
    base = top_px + cell_h * len(rows) + bars_h
    draw.text((6, base - bars_h + 4), "prediction", fill="black")
    draw.text((6, base - bars_h + 16), "changes", fill="black")
    for j, f in enumerate(study.factors):
        rate = study.sensitivity[f]
        if rate != rate:
            continue
        x = left + j * cell
        draw.rectangle((x + 8, base - int(rate * (bars_h - 20)), x + cell - 10, base),
                       fill=(220, 90, 60))
        draw.text((x + 10, base + 4), f"{100 * rate:.0f}%", fill="black")
        draw.text((x + 4, base + 16), f"dp {study.probability_shift[f]:.3f}", fill="black")
    return image
