"""The adaptive threshold of the 2019 GAN Dissection: per (unit, concept), the candidate
threshold that maximises the information quality ratio IQR = MI / H_joint of the binary
variables (unit active, concept present) over pixels.

Counting is one pass for all candidates at once: each pixel's activation is binned into the
index of its candidate interval (``searchsorted``), one ``bincount`` over (unit, concept, bin)
counts the labelled pixels, and reversed cumulative sums give the counts above every candidate.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from gandissect.errors import UserError
from gandissect.stats import Quantile

__all__ = ["ThresholdSweep", "candidate_grid", "CANDIDATES"]

CANDIDATES = 100
# Candidates leave between half and 1/5000 of the pixels active (quantile-spaced, log scale):
# optimal cutoffs reported for scene concepts range from about 73% (sky) to 99.6% (door).
_MOST_ACTIVE, _LEAST_ACTIVE = 0.5, 2e-4


def candidate_grid(sketch: Quantile, count: int = CANDIDATES) -> torch.Tensor:
    """(U, count) increasing thresholds: each unit's quantiles at log-spaced active fractions."""
    if count < 2:
        raise UserError("need at least two candidate thresholds")
    active = torch.logspace(math.log10(_MOST_ACTIVE), math.log10(_LEAST_ACTIVE), count,
                            dtype=torch.float64)
    grid = sketch.quantiles((1 - active).tolist())
    return torch.cummax(grid, dim=1).values.contiguous()


def _entropy(*probabilities: torch.Tensor) -> torch.Tensor:
    return -sum(torch.special.xlogy(p, p) for p in probabilities)


class ThresholdSweep:
    """(unit, concept) pixel counts at every candidate threshold of every unit (exact).

    ``grid`` is ``(U, K)`` increasing candidates; unit u is active at candidate j where its
    upsampled activation exceeds ``grid[u, j]``. As in ``IoUTally``, pixels count for a
    concept's category only in images where some label of that category is present.
    """

    def __init__(self, grid: torch.Tensor, concept_category: torch.Tensor,
                 n_categories: int) -> None:
        self.grid = grid.float().contiguous()
        self.concept_category = torch.as_tensor(concept_category, dtype=torch.int64)
        self.n_categories = n_categories
        units, candidates = self.grid.shape
        concepts = self.concept_category.numel()
        bins = candidates + 1
        self.intersection = torch.zeros(units, concepts, bins, dtype=torch.int64)
        self.unit_area = torch.zeros(units, n_categories, bins, dtype=torch.int64)
        self.concept_area = torch.zeros(concepts, dtype=torch.int64)
        self.pixels = torch.zeros(n_categories, dtype=torch.int64)  # per category population
        self.images = 0

    def _to(self, device: torch.device) -> None:
        for name in ("grid", "concept_category", "intersection", "unit_area", "concept_area",
                     "pixels"):
            setattr(self, name, getattr(self, name).to(device))

    def add(self, maps: torch.Tensor, labels: torch.Tensor) -> None:
        """Add upsampled ``(B, U, H, W)`` activations and ``(B, K, H, W)`` label codes."""
        if maps.shape[0] != labels.shape[0] or maps.shape[2:] != labels.shape[2:]:
            raise UserError("ThresholdSweep.add: maps and labels must share batch and size")
        if self.grid.device != maps.device:
            self._to(maps.device)
        units, concepts = self.grid.shape[0], self.concept_category.numel()
        bins = self.grid.shape[1] + 1
        sizes = torch.bincount(self.concept_category, minlength=self.n_categories)
        offsets = sizes.cumsum(0) - sizes
        codes = labels.to(maps.device).long().flatten(2)  # (B, K, P)
        concept = torch.where(codes > 0, codes - 1 + offsets[None, :, None], -1)
        # int32 halves the memory traffic of the binning and counting (the costly part).
        small = units * concepts * bins < 2**31
        index_type = torch.int32 if small else torch.int64
        unit_base = torch.arange(units, device=maps.device, dtype=index_type)[:, None]
        for b in range(maps.shape[0]):  # one image at a time bounds the (U, pixels) temporaries
            values = maps[b].reshape(units, -1).float().contiguous()
            bin_index = torch.searchsorted(self.grid, values, out_int32=small)  # (U, P)
            histogram = torch.bincount((unit_base * bins + bin_index).reshape(-1),
                                       minlength=units * bins).view(units, bins)
            present = (codes[b] > 0).any(1)  # (K,)
            self.unit_area[:, present] += histogram[:, None, :]
            self.pixels[present] += values.shape[1]
            labelled = concept[b] >= 0  # (K, P)
            pixel = labelled.nonzero()[:, 1]
            hit = concept[b][labelled].to(index_type)  # (L,) concept ids, categories in turn
            index = (unit_base * concepts + hit[None, :]) * bins + bin_index[:, pixel]
            self.intersection += torch.bincount(
                index.reshape(-1), minlength=units * concepts * bins
            ).view(units, concepts, bins)
            self.concept_area += torch.bincount(hit, minlength=concepts)
        self.images += maps.shape[0]

    # -- results -------------------------------------------------------------------------
    def _above(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Counts strictly above each candidate: intersection (U, C, K), unit area (U, C, K)."""
        def tail(counts: torch.Tensor) -> torch.Tensor:
            return counts.flip(-1).cumsum(-1).flip(-1)[..., 1:]

        unit_area = tail(self.unit_area)[:, self.concept_category.to(self.unit_area.device)]
        return tail(self.intersection), unit_area

    def iou(self) -> torch.Tensor:
        """(U, C, K) pooled IoU at every candidate threshold."""
        intersection, unit_area = self._above()
        union = unit_area + self.concept_area[None, :, None] - intersection
        return intersection.double() / union.clamp(min=1).double()

    def iqr(self) -> torch.Tensor:
        """(U, C, K) information quality ratio MI / H_joint at every candidate threshold."""
        intersection, unit_area = self._above()
        total = self.pixels[self.concept_category].double()[None, :, None].clamp(min=1)
        both = intersection.double() / total
        unit_only = (unit_area - intersection).double() / total
        concept_only = (self.concept_area[None, :, None] - intersection).double() / total
        neither = (1 - both - unit_only - concept_only).clamp(min=0)
        joint = _entropy(both, unit_only, concept_only, neither)
        unit_p, concept_p = both + unit_only, both + concept_only
        marginal = _entropy(unit_p, 1 - unit_p) + _entropy(concept_p, 1 - concept_p)
        information = (marginal - joint).clamp(min=0)
        return torch.where(joint > 0, information / joint.clamp(min=1e-300), 0.0)

    # -- persistence ---------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"kind": "ThresholdSweep", "grid": self.grid.cpu(),
                "concept_category": self.concept_category.cpu(),
                "n_categories": self.n_categories, "images": self.images,
                "intersection": self.intersection.cpu(), "unit_area": self.unit_area.cpu(),
                "concept_area": self.concept_area.cpu(), "pixels": self.pixels.cpu()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("kind") != "ThresholdSweep":
            raise UserError("not a ThresholdSweep state")
        self.__init__(state["grid"], state["concept_category"], state["n_categories"])
        self.images = state["images"]
        for name in ("intersection", "unit_area", "concept_area", "pixels"):
            setattr(self, name, state[name].clone())

    def merge(self, other: ThresholdSweep) -> None:
        if not torch.equal(self.grid.cpu(), other.grid.cpu()):
            raise UserError("can only merge sweeps over the same candidate thresholds")
        for name in ("intersection", "unit_area", "concept_area", "pixels"):
            mine = getattr(self, name)
            mine += getattr(other, name).to(mine.device)
        self.images += other.images
