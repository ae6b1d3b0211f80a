"""What each pass over the samples accumulates for one layer.

Every accumulator has ``add(acts, ids, labels)`` (raw ``(B, U, h, w)`` activations, the samples'
ids, their ``(B, K, H, W)`` label codes or None), ``state_dict`` / ``load_state_dict``, and
``merge(other)`` (fold in the same pass run on other samples: exact for every count); the loop
in ``engine`` knows nothing else about them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch

from gandissect.dissect.maps import upsample
from gandissect.dissect.sweep import ThresholdSweep
from gandissect.errors import UserError
from gandissect.stats import IoUTally, Quantile, TopK

__all__ = ["Accumulator", "FirstPass", "SketchPass", "IoUPass", "SweepPass"]

# Images upsampled at once in the adaptive pass: bounds its (images, units, H, W) temporaries.
_SWEEP_IMAGES = 4
# Upsampled values sketched at once for the image-level quantile (64 MB of float32): enough
# that 256 units of 64 x 64 maps reach the sketch's flush size without being pooled first.
_IMAGE_VALUES = 1 << 24


class Accumulator(ABC):
    """Base: one layer's statistics of one pass."""

    needs_labels = False

    @abstractmethod
    def add(self, acts: torch.Tensor, ids: torch.Tensor, labels: torch.Tensor | None) -> None:
        """Fold in one batch of activations (and its stored labels, if ``needs_labels``)."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a ``state_dict``."""

    @abstractmethod
    def merge(self, other: Accumulator) -> None:
        """Fold in the same pass's statistics over other samples."""


class FirstPass(Accumulator):
    """Per-unit quantile sketch, top images by spatial maximum, and the mean activation map.

    With an ``image_size``, a second sketch ``image_quantile`` takes the maps upsampled
    (bilinear) to that size, every image pixel an observation: the thresholds of
    ``quantile_over="image"`` come from it. ``quantile`` stays at the layer's resolution (the
    insertion values of interventions are layer values).
    """

    def __init__(self, top_k: int, image_size: tuple[int, int] | None = None) -> None:
        self.quantile = Quantile()
        self.image_size = None if image_size is None else tuple(image_size)
        self.image_quantile = None if image_size is None else Quantile()
        self.top = TopK(top_k)
        self.sums: torch.Tensor | None = None  # (U, h, w) float64
        self.images = 0

    def add(self, acts, ids, labels) -> None:
        self.quantile.add_maps(acts)
        if self.image_quantile is not None:
            height, width = self.image_size
            step = max(1, _IMAGE_VALUES // (acts.shape[1] * height * width))
            for start in range(0, acts.shape[0], step):
                # units first, so that each unit's upsampled values come out contiguous
                maps = upsample(acts[start:start + step].transpose(0, 1), self.image_size)
                self.image_quantile.add(maps.reshape(acts.shape[1], -1).t())
        self.top.add(acts.amax((2, 3)), ids)
        batch_sum = acts.double().sum(0)
        self.sums = batch_sum if self.sums is None else self.sums + batch_sum
        self.images += acts.shape[0]

    def mean_map(self) -> torch.Tensor:
        return (self.sums / max(self.images, 1)).float().cpu()

    def state_dict(self) -> dict[str, Any]:
        state = {"quantile": self.quantile.state_dict(), "top": self.top.state_dict(),
                 "sums": None if self.sums is None else self.sums.cpu(), "images": self.images}
        if self.image_quantile is not None:
            state["image_quantile"] = self.image_quantile.state_dict()
        return state

    def load_state_dict(self, state) -> None:
        self.quantile.load_state_dict(state["quantile"])
        if self.image_quantile is not None:
            self.image_quantile.load_state_dict(state["image_quantile"])
        self.top.load_state_dict(state["top"])
        self.sums, self.images = state["sums"], state["images"]

    def threshold_sketch(self) -> Quantile:
        """The sketch the fixed thresholds come from: image-level when there is one."""
        return self.quantile if self.image_quantile is None else self.image_quantile

    def merge(self, other: FirstPass) -> None:
        self.quantile.merge(other.quantile)
        if self.image_quantile is not None:
            self.image_quantile.merge(other.image_quantile)
        self.top.merge(other.top)
        if other.sums is not None:
            sums = other.sums.to(self.sums.device) if self.sums is not None else other.sums
            self.sums = sums if self.sums is None else self.sums + sums
        self.images += other.images


class SketchPass(Accumulator):
    """Only the quantile sketch (the selection sample's candidate thresholds come from it)."""

    def __init__(self) -> None:
        self.quantile = Quantile()

    def add(self, acts, ids, labels) -> None:
        self.quantile.add_maps(acts)

    def state_dict(self) -> dict[str, Any]:
        return {"quantile": self.quantile.state_dict()}

    def load_state_dict(self, state) -> None:
        self.quantile.load_state_dict(state["quantile"])

    def merge(self, other: SketchPass) -> None:
        self.quantile.merge(other.quantile)


class IoUPass(Accumulator):
    """IoU counts of ``upsample(acts) > threshold`` against the labels (one threshold a unit).

    Bilinear upsampling never exceeds a map's maximum, so only (image, unit) maps whose raw
    maximum reaches the threshold are upsampled: about the top 1% of pixels are active at the
    0.99 level, and most maps have none.
    """

    needs_labels = True

    def __init__(self, thresholds: torch.Tensor, concept_category: torch.Tensor,
                 n_categories: int) -> None:
        self.thresholds = thresholds.float()
        self.tally = IoUTally(concept_category, n_categories)

    def add(self, acts, ids, labels) -> None:
        active = self.active(acts, labels.shape[2:])
        self.tally.add_active(active, acts.shape[1], labels.to(acts.device))

    def active(self, acts: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """``(M, 3)`` rows (image, unit, flat pixel) where ``upsample(acts, size)`` exceeds the
        unit's threshold: each unit's binary mask at the labels' resolution."""
        threshold = self.thresholds.to(acts.device)
        # A margin of a few ulps: upsampled values may round just above their inputs' maximum.
        margin = threshold.abs() * 1e-5 + 1e-30
        hot = acts.amax((2, 3)) >= threshold - margin
        image, unit = hot.nonzero().unbind(1)
        maps = upsample(acts[image, unit][:, None], size)[:, 0]
        on = (maps > threshold[unit][:, None, None]).flatten(1).nonzero()
        return torch.stack([image[on[:, 0]], unit[on[:, 0]], on[:, 1]], 1)

    def state_dict(self) -> dict[str, Any]:
        return {"thresholds": self.thresholds.cpu(), "iou": self.tally.state_dict()}

    def load_state_dict(self, state) -> None:
        self.thresholds = state["thresholds"]
        self.tally.load_state_dict(state["iou"])

    def merge(self, other: IoUPass) -> None:
        if not torch.equal(other.thresholds.cpu(), self.thresholds.cpu()):
            raise UserError("can only merge IoU counts taken at the same thresholds")
        self.tally.merge(other.tally)


class SweepPass(Accumulator):
    """Counts at every candidate threshold (adaptive mode), see ``ThresholdSweep``."""

    needs_labels = True

    def __init__(self, grid: torch.Tensor, concept_category: torch.Tensor,
                 n_categories: int) -> None:
        self.sweep = ThresholdSweep(grid, concept_category, n_categories)

    def add(self, acts, ids, labels) -> None:
        labels = labels.to(acts.device)
        for start in range(0, acts.shape[0], _SWEEP_IMAGES):
            part = slice(start, start + _SWEEP_IMAGES)
            self.sweep.add(upsample(acts[part], labels.shape[2:]), labels[part])

    def state_dict(self) -> dict[str, Any]:
        return {"sweep": self.sweep.state_dict()}

    def load_state_dict(self, state) -> None:
        self.sweep.load_state_dict(state["sweep"])

    def merge(self, other: SweepPass) -> None:
        self.sweep.merge(other.sweep)
