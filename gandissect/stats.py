"""Streaming, mergeable statistics over unit activations.

Every statistic here is a small object with the same five verbs:

- ``add(...)``: fold in one batch (shapes below);
- ``result()``: the statistic so far;
- ``state_dict()`` / ``load_state_dict(state)``: plain tensors and numbers, loadable with
  ``torch.load(..., weights_only=True)``, so a run can be cached and resumed;
- ``merge(other)``: fold in a statistic computed on other data, so that two halves merged equal
  the whole (exactly for counts and top-k; exactly for the quantile sketch's counts, so its
  estimates are the same as the whole's).

Conventions: per-unit values come as ``(N, U)`` (N observations of U units) or as activation maps
``(B, U, H, W)`` through ``add_maps``. Statistics live on the device of the first batch they see.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from gandissect.errors import UserError

__all__ = [
    "Quantile",
    "TopK",
    "IoUTally",
    "ConditionalMean",
    "category_presence",
]

# Exact float32 matrix products of 0/1 masks stay exact while every partial sum is below 2**24.
_EXACT_FLOAT32_SUM = 2**24


def _maps_to_rows(maps: torch.Tensor) -> torch.Tensor:
    """(B, U, H, W) or (B, U) -> (U, B*H*W), one contiguous row per unit."""
    if maps.dim() < 2:
        raise UserError(f"expected (batch, units, ...) activations, got shape {tuple(maps.shape)}")
    return maps.transpose(0, 1).reshape(maps.shape[1], -1)


def _check_units(expected: int | None, got: int, what: str) -> int:
    if expected is not None and expected != got:
        raise UserError(f"{what}: this statistic has {expected} units, the batch has {got}")
    return got


class Quantile:
    """Per-unit quantiles of an unbounded stream in fixed memory: a log-linear histogram sketch.

    Each float32 value falls in a bin read off its bit pattern: sign, exponent and the top
    ``mantissa_bits`` bits of the mantissa (the HDR-histogram / DDSketch family of sketches).
    Bins are 2**-mantissa_bits wide relative to their value, so every estimate lies in the
    same bin as the exact quantile: relative value error <= 2**-mantissa_bits for magnitudes in
    [2**min_exponent, 2**max_exponent); smaller magnitudes share one bin around zero and larger
    ones the outermost bins (exact minimum and maximum are kept, so estimates never leave the
    data's range). Within a bin the estimate interpolates linearly by rank, which makes the rank
    error far smaller than the value bound for smooth data.

    Unlike a KLL sketch, the counts are exact: ``merge`` of two halves gives the same state as the
    whole, and memory is ``units * bins`` counts however many values are added (about 50 MB for
    256 units at the defaults). Updating costs one pass over the values (a bit shift, a table
    look-up and a ``bincount``: one per unit on a CPU, one for all units elsewhere), no sorting.
    """

    def __init__(
        self,
        units: int | None = None,
        mantissa_bits: int = 8,
        min_exponent: int = -24,
        max_exponent: int = 24,
    ) -> None:
        if not 1 <= mantissa_bits <= 12:
            raise UserError("mantissa_bits must be between 1 and 12")
        if not -126 <= min_exponent < max_exponent <= 127:
            raise UserError("need -126 <= min_exponent < max_exponent <= 127")
        self.units = units
        self.mantissa_bits = mantissa_bits
        self.min_exponent = min_exponent
        self.max_exponent = max_exponent
        self.counts: torch.Tensor | None = None  # (U, bins) int64
        self.minimum: torch.Tensor | None = None  # (U,) float32
        self.maximum: torch.Tensor | None = None
        self._lookup: torch.Tensor | None = None
        self._edges: torch.Tensor | None = None
        self._pending: list[torch.Tensor] = []  # small batches wait here, (U, n) each
        self._pending_values = 0

    # -- the bin layout -------------------------------------------------------------------
    @property
    def _shift(self) -> int:
        return 23 - self.mantissa_bits

    @property
    def _key_lo(self) -> int:
        """Key of the first resolved positive bin (magnitude 2**min_exponent)."""
        return (127 + self.min_exponent) << self.mantissa_bits

    @property
    def _key_hi(self) -> int:
        """One past the key of the last resolved positive bin (magnitude 2**max_exponent)."""
        return (127 + self.max_exponent) << self.mantissa_bits

    @property
    def bins(self) -> int:
        """Number of bins per unit: resolved negative bins, one zero bin, resolved positive."""
        return 2 * (self._key_hi - self._key_lo) + 1

    def _make_lookup(self, device: torch.device) -> torch.Tensor:
        """Table from a value's order-preserving key (bits >> shift) to its bin index.

        Keys of non-negative floats are ``bits >> shift``; keys of negative floats mirror them
        as ``-1 - key(|x|)``. Non-finite values (exponent 255) map to -1, checked by ``add``.
        """
        width = 1 << (32 - self._shift)  # number of distinct keys of one sign
        resolved = self._key_hi - self._key_lo
        magnitude_key = torch.arange(width, dtype=torch.int64)
        magnitude_bin = (magnitude_key - self._key_lo + 1).clamp(0, resolved)  # 0 = zero bin
        nonfinite = magnitude_key >= (255 << self.mantissa_bits)
        positive = resolved + magnitude_bin
        negative = resolved - magnitude_bin
        positive[nonfinite] = -1
        negative[nonfinite] = -1
        # Index key + width: negative keys -width..-1 come first, mirrored (key -1 is -0.0).
        table = torch.cat([negative.flip(0), positive])
        return table.to(device=device, dtype=torch.int32)

    def _make_edges(self, device: torch.device) -> torch.Tensor:
        """(bins + 1,) float64 bin edges in increasing order."""
        keys = torch.arange(self._key_lo, self._key_hi + 1, dtype=torch.int64)
        magnitudes = (keys << self._shift).to(torch.int32).view(torch.float32).double()
        edges = torch.cat([-magnitudes.flip(0), magnitudes])
        return edges.to(device)

    def _zero_bin(self) -> int:
        return self._key_hi - self._key_lo

    def _ensure(self, units: int, device: torch.device) -> None:
        self.units = _check_units(self.units, units, "Quantile.add")
        if self.counts is None:
            self.counts = torch.zeros(units, self.bins, dtype=torch.int64, device=device)
            self.minimum = torch.full((units,), math.inf, device=device)
            self.maximum = torch.full((units,), -math.inf, device=device)

    # -- adding --------------------------------------------------------------------------
    def add(self, values: torch.Tensor) -> None:
        """Add ``(N, U)`` values: N observations of each of U units (N = 0 adds nothing)."""
        if values.dim() != 2:
            raise UserError(f"Quantile.add expects (N, units), got shape {tuple(values.shape)}")
        self._add_rows(values.detach().t())

    def add_maps(self, maps: torch.Tensor) -> None:
        """Add activation maps ``(B, U, H, W)``: every pixel of every image is an observation."""
        self._add_rows(_maps_to_rows(maps.detach()))

    # Batches smaller than this per unit are pooled first: a pass over the bins costs the same
    # for 10 values as for 100,000.
    flush_values = 1 << 16

    def _add_rows(self, rows: torch.Tensor) -> None:
        units, n = rows.shape
        self._ensure(units, rows.device)
        if n == 0:
            return
        if n >= self.flush_values:
            self._count_rows(rows)
            return
        if not bool(torch.isfinite(rows).all()):
            raise UserError(
                "Quantile.add: NaN or infinite values; check the model's activations "
                "(or clamp them) before collecting statistics"
            )
        self._pending.append(rows.to(torch.float32, copy=True))
        self._pending_values += n
        if self._pending_values >= self.flush_values:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            rows = torch.cat(self._pending, 1)
            self._pending, self._pending_values = [], 0
            self._count_rows(rows)

    # On a CPU one unit at a time keeps each row's temporaries in cache: about 4x faster than
    # one pass over all units (256 units x 65,536 values, 1 or 2 threads). Elsewhere (a GPU)
    # the per-unit loop costs several kernel launches a unit, so all units are counted in one
    # pass. Both give the same counts; set per instance to compare them.
    per_unit_on_cpu = True
    # Values binned at once in the all-units pass: bounds its int32/int64 temporaries.
    chunk_values = 1 << 25

    def _count_rows(self, rows: torch.Tensor) -> None:
        units, n = rows.shape
        if self._lookup is None or self._lookup.device != rows.device:
            self._lookup = self._make_lookup(rows.device)
        if rows.device.type == "cpu" and self.per_unit_on_cpu:
            batch_counts, low, high = self._bin_per_unit(rows)
        else:
            batch_counts, low, high = self._bin_all_units(rows)
        valid = batch_counts.sum(1)
        if bool((valid != n).any()):
            bad = int((valid != n).nonzero()[0])
            raise UserError(
                f"Quantile.add: unit {bad} has NaN or infinite values; "
                "check the model's activations (or clamp them) before collecting statistics"
            )
        self.counts += batch_counts
        torch.minimum(self.minimum, low, out=self.minimum)
        torch.maximum(self.maximum, high, out=self.maximum)

    def _bin_index(self, values: torch.Tensor) -> torch.Tensor:
        """Bin of every float32 value (same shape, int32; -1 for NaN and infinities)."""
        bits = values.view(torch.int32)
        keys = bits ^ ((bits >> 31) & 0x7FFFFFFF)  # order-preserving signed integer
        return self._lookup[(keys >> self._shift) + (1 << (32 - self._shift))]

    def _bin_per_unit(self, rows: torch.Tensor):
        """``(counts (U, bins), minimum (U,), maximum (U,))`` of ``rows``, a unit at a time."""
        units = rows.shape[0]
        batch_counts = torch.empty_like(self.counts)
        low = torch.empty(units, device=rows.device)
        high = torch.empty(units, device=rows.device)
        for unit in range(units):
            row = rows[unit].to(torch.float32).contiguous()
            bin_index = self._bin_index(row)
            batch_counts[unit] = torch.bincount(bin_index + 1, minlength=self.bins + 1)[1:]
            low[unit], high[unit] = torch.aminmax(row)
        return batch_counts, low, high

    def _bin_all_units(self, rows: torch.Tensor):
        """The same as ``_bin_per_unit`` in one pass over all units (a few at a time when they
        hold more than ``chunk_values`` values): each unit's bins are offset by
        ``unit * (bins + 1)`` (slot 0 of each unit counts non-finite values) and one
        ``bincount`` counts them all."""
        units, n = rows.shape
        stride = self.bins + 1
        step = max(1, self.chunk_values // max(n, 1))
        counts, lows, highs = [], [], []
        for first in range(0, units, step):
            block = rows[first:first + step].to(torch.float32).contiguous()
            offset = torch.arange(block.shape[0], device=rows.device, dtype=torch.int64)
            index = self._bin_index(block) + 1 + (offset * stride)[:, None]
            tally = torch.bincount(index.reshape(-1), minlength=block.shape[0] * stride)
            counts.append(tally.view(block.shape[0], stride)[:, 1:])
            low, high = torch.aminmax(block, dim=1)
            lows.append(low)
            highs.append(high)
        return torch.cat(counts), torch.cat(lows), torch.cat(highs)

    # -- results -------------------------------------------------------------------------
    @property
    def count(self) -> int:
        """Number of values added per unit."""
        self._flush()
        return 0 if self.counts is None else int(self.counts[0].sum())

    def quantiles(self, q: float | list[float] | torch.Tensor) -> torch.Tensor:
        """Estimated quantiles: ``(U,)`` for a scalar ``q``, else ``(U, len(q))``.

        The q-quantile is the value below which a fraction q of the values lie: the estimate
        solves ``rank(v) = q * n`` by linear interpolation inside the bin holding that rank.
        """
        if self.counts is None or self.count == 0:
            raise UserError("no values added yet: call add() before asking for quantiles")
        scalar = not isinstance(q, (list, tuple, torch.Tensor))
        qs = torch.as_tensor([q] if scalar else q, dtype=torch.float64, device=self.counts.device)
        if not bool(((qs >= 0) & (qs <= 1)).all()):  # NaN fails too
            raise UserError(f"quantiles must lie in [0, 1], got {qs.tolist()}")
        if self._edges is None or self._edges.device != self.counts.device:
            self._edges = self._make_edges(self.counts.device)
        counts = self.counts.double()
        cumulative = counts.cumsum(1)  # (U, bins)
        total = cumulative[:, -1:]
        target = qs[None, :] * total  # (U, Q)
        # First bin whose cumulative count reaches the target rank.
        index = torch.searchsorted(cumulative, target).clamp(max=self.bins - 1)
        before = cumulative.gather(1, index) - counts.gather(1, index)
        inside = counts.gather(1, index).clamp(min=1)
        fraction = ((target - before) / inside).clamp(0, 1)
        lo, hi = self._edges[index], self._edges[index + 1]
        # Magnitudes below 2**min_exponent read as 0 (exact for the zeros of ReLU units).
        in_zero_bin = index == self._zero_bin()
        lo, hi = lo.masked_fill(in_zero_bin, 0.0), hi.masked_fill(in_zero_bin, 0.0)
        estimate = lo + fraction * (hi - lo)
        estimate = torch.maximum(estimate, self.minimum.double()[:, None])
        estimate = torch.minimum(estimate, self.maximum.double()[:, None])
        estimate = estimate.float()
        return estimate[:, 0] if scalar else estimate

    def result(self, q: float | list[float] = 0.99) -> torch.Tensor:
        """Same as ``quantiles(q)``."""
        return self.quantiles(q)

    # -- persistence and merging ---------------------------------------------------------
    def _settings(self) -> dict[str, int]:
        return {
            "mantissa_bits": self.mantissa_bits,
            "min_exponent": self.min_exponent,
            "max_exponent": self.max_exponent,
        }

    def state_dict(self) -> dict[str, Any]:
        """Counts stored sparsely (most bins of most units are empty)."""
        self._flush()
        state: dict[str, Any] = {"kind": "Quantile", **self._settings(), "units": self.units}
        if self.counts is not None:
            nonzero = self.counts.nonzero()
            state["index"] = nonzero.cpu()
            state["values"] = self.counts[nonzero[:, 0], nonzero[:, 1]].cpu()
            state["minimum"] = self.minimum.cpu()
            state["maximum"] = self.maximum.cpu()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("kind") != "Quantile":
            raise UserError("not a Quantile state")
        self.__init__(state["units"], **{k: state[k] for k in self._settings()})
        if "index" in state:
            self._ensure(state["units"], torch.device("cpu"))
            index = state["index"]
            self.counts[index[:, 0], index[:, 1]] = state["values"]
            self.minimum.copy_(state["minimum"])
            self.maximum.copy_(state["maximum"])

    def merge(self, other: Quantile) -> None:
        """Fold in another sketch of the same units and settings (exact)."""
        if not isinstance(other, Quantile) or other._settings() != self._settings():
            raise UserError("can only merge a Quantile with the same settings")
        self._flush()
        other._flush()
        if other.counts is None:
            return
        self._ensure(other.units, other.counts.device)
        self.counts += other.counts.to(self.counts.device)
        torch.minimum(self.minimum, other.minimum.to(self.minimum.device), out=self.minimum)
        torch.maximum(self.maximum, other.maximum.to(self.maximum.device), out=self.maximum)


class TopK:
    """Per-unit top-k scores with the ids of the samples that gave them (exact).

    ``add(scores, ids)`` takes ``(N, U)`` scores (for images: each unit's spatial maximum) and
    the N sample ids. Ties keep the smaller id, so results do not depend on batch order.
    """

    def __init__(self, k: int = 12, units: int | None = None) -> None:
        if k < 1:
            raise UserError("k must be at least 1")
        self.k = k
        self.units = units
        self.scores: torch.Tensor | None = None  # (U, <=k) float32, descending
        self.ids: torch.Tensor | None = None  # (U, <=k) int64

    def add(self, scores: torch.Tensor, ids: torch.Tensor | list[int]) -> None:
        """Add ``(N, U)`` scores for the samples with the given ``(N,)`` ids."""
        if scores.dim() != 2:
            raise UserError(f"TopK.add expects (N, units) scores, got {tuple(scores.shape)}")
        ids = torch.as_tensor(ids, dtype=torch.int64, device=scores.device)
        if ids.shape != (scores.shape[0],):
            raise UserError("TopK.add: need one id per row of scores")
        if bool(torch.isnan(scores).any()):
            raise UserError("TopK.add: scores contain NaN")
        self.units = _check_units(self.units, scores.shape[1], "TopK.add")
        new_scores = scores.detach().float().t()
        new_ids = ids[None, :].expand_as(new_scores)
        self._fold(new_scores, new_ids)

    def _fold(self, scores: torch.Tensor, ids: torch.Tensor) -> None:
        if self.scores is not None:
            scores = torch.cat([self.scores.to(scores.device), scores], 1)
            ids = torch.cat([self.ids.to(ids.device), ids], 1)
        # Sort by id first, then stably by score: ties keep the smaller id.
        order = ids.argsort(dim=1, stable=True)
        scores, ids = scores.gather(1, order), ids.gather(1, order)
        order = scores.argsort(dim=1, descending=True, stable=True)[:, : self.k]
        self.scores, self.ids = scores.gather(1, order), ids.gather(1, order)

    def result(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(scores, ids)``, each ``(U, k)``, best first."""
        if self.scores is None:
            raise UserError("no values added yet")
        return self.scores, self.ids

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"kind": "TopK", "k": self.k, "units": self.units}
        if self.scores is not None:
            state["scores"], state["ids"] = self.scores.cpu(), self.ids.cpu()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("kind") != "TopK":
            raise UserError("not a TopK state")
        self.__init__(state["k"], state["units"])
        if "scores" in state:
            self.scores, self.ids = state["scores"].clone(), state["ids"].clone()

    def merge(self, other: TopK) -> None:
        if not isinstance(other, TopK) or other.k != self.k:
            raise UserError("can only merge a TopK with the same k")
        if other.scores is None:
            return
        self.units = _check_units(self.units, other.units, "TopK.merge")
        device = self.scores.device if self.scores is not None else other.scores.device
        self._fold(other.scores.to(device), other.ids.to(device))


def category_presence(labels: torch.Tensor, concept_category: torch.Tensor, n_categories: int):
    """Which categories have some label in each image.

    ``labels`` is a ``(B, C, ...)`` boolean concept mask; ``concept_category`` maps each of the C
    concepts to its category index. Returns ``(B, n_categories)`` booleans.
    """
    present = labels.flatten(2).any(2).float()  # (B, C)
    membership = torch.zeros(
        concept_category.numel(), n_categories, device=labels.device, dtype=present.dtype
    )
    membership[torch.arange(concept_category.numel()), concept_category.to(labels.device)] = 1
    return (present @ membership) > 0


def _exact_mask_product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Exact integer ``a @ b`` for 0/1 matrices ``(U, P) @ (P, C)``, chunked over P."""
    total = torch.zeros(a.shape[0], b.shape[1], dtype=torch.int64, device=a.device)
    for start in range(0, a.shape[1], _EXACT_FLOAT32_SUM):
        stop = start + _EXACT_FLOAT32_SUM
        total += (a[:, start:stop].float() @ b[start:stop].float()).round().long()
    return total


class IoUTally:
    """Intersection and union counts of binary unit masks against concept masks.

    Per batch, all (unit, concept) intersections are one matrix product of the units' binary
    masks ``(B, U, H, W)`` and the concepts' one-hot masks ``(B, C, H, W)``. IoU is pooled over
    all samples, ``sum |A and S| / sum |A or S|``, with the category-conditioned denominator of
    Network Dissection: a unit's active pixels count against a concept only in images where some
    concept of the same category is labelled (``concept_category`` gives each concept's
    category index). Images with no label of a category add nothing to that category's IoUs.
    """

    def __init__(self, concept_category: torch.Tensor | list[int], n_categories: int | None = None):
        self.concept_category = torch.as_tensor(concept_category, dtype=torch.int64)
        if self.concept_category.dim() != 1 or self.concept_category.numel() == 0:
            raise UserError("concept_category must be a non-empty list of category indices")
        self.n_categories = n_categories or int(self.concept_category.max()) + 1
        self.intersection: torch.Tensor | None = None  # (U, C) int64
        self.unit_area: torch.Tensor | None = None  # (U, categories) int64
        self.concept_area: torch.Tensor | None = None  # (C,) int64
        self.images = 0

    @property
    def concepts(self) -> int:
        return self.concept_category.numel()

    def add(self, unit_masks: torch.Tensor, concept_masks: torch.Tensor) -> None:
        """Add ``(B, U, H, W)`` unit masks and ``(B, C, H, W)`` concept masks (booleans)."""
        if unit_masks.dim() < 2 or concept_masks.dim() < 2:
            raise UserError("IoUTally.add expects (batch, units, ...) and (batch, concepts, ...)")
        if unit_masks.shape[0] != concept_masks.shape[0]:
            raise UserError("IoUTally.add: unit and concept masks have different batch sizes")
        if unit_masks.shape[2:] != concept_masks.shape[2:]:
            raise UserError(
                f"IoUTally.add: unit masks are {tuple(unit_masks.shape[2:])} but concept masks "
                f"are {tuple(concept_masks.shape[2:])}; upsample the activations to the labels"
            )
        if concept_masks.shape[1] != self.concepts:
            raise UserError(
                f"IoUTally.add: {concept_masks.shape[1]} concept masks for {self.concepts} concepts"
            )
        units = unit_masks.shape[1]
        device = unit_masks.device
        if self.intersection is None:
            self.intersection = torch.zeros(units, self.concepts, dtype=torch.int64, device=device)
            self.unit_area = torch.zeros(units, self.n_categories, dtype=torch.int64, device=device)
            self.concept_area = torch.zeros(self.concepts, dtype=torch.int64, device=device)
        elif units != self.intersection.shape[0]:
            raise UserError(f"IoUTally.add: expected {self.intersection.shape[0]} units")
        a = _maps_to_rows(unit_masks.bool())  # (U, P)
        s = concept_masks.bool().transpose(0, 1).reshape(self.concepts, -1).t()  # (P, C)
        self.intersection += _exact_mask_product(a, s)
        per_image_area = unit_masks.bool().flatten(2).sum(2)  # (B, U)
        presence = category_presence(
            concept_masks.bool(), self.concept_category, self.n_categories
        )
        self.unit_area += per_image_area.t().long() @ presence.long()
        self.concept_area += s.sum(0)
        self.images += unit_masks.shape[0]

    def add_labels(self, unit_masks: torch.Tensor, labels: torch.Tensor) -> None:
        """Add ``(B, U, H, W)`` unit masks against per-category label codes ``(B, K, H, W)``.

        The same counts as ``add`` with one-hot concept masks, for the usual case of a segmenter
        whose labels are exclusive within a category: ``labels[:, k]`` holds codes of category
        k, 0 for none, and code j > 0 names the (j - 1)-th concept of category k (concepts are
        numbered category by category, as ``concept_category`` must then list them). Only the
        active unit pixels are visited (about 1% of them at a 0.99 threshold), so this is far
        cheaper than the dense matrix product.
        """
        if unit_masks.dim() != 4:
            raise UserError("IoUTally.add_labels expects (B, U, H, W) unit masks")
        if unit_masks.shape[0] != labels.shape[0] or unit_masks.shape[2:] != labels.shape[2:]:
            raise UserError(
                f"IoUTally.add_labels: masks {tuple(unit_masks.shape)} and labels "
                f"{tuple(labels.shape)} must share batch and spatial size"
            )
        batch, units = unit_masks.shape[:2]
        self.add_active(unit_masks.reshape(batch, units, -1).nonzero(), units, labels)

    def add_active(self, active: torch.Tensor, units: int, labels: torch.Tensor) -> None:
        """``add_labels`` given only the active pixels: ``active`` is ``(M, 3)`` rows of
        (image, unit, flat pixel index) into ``labels``' ``(B, K, H, W)`` codes.

        Lets a caller skip the (image, unit) maps that cannot reach the threshold at all.
        """
        if labels.dim() != 4 or labels.shape[1] != self.n_categories:
            raise UserError(f"IoUTally: labels must be (B, {self.n_categories}, H, W) codes")
        if active.dim() != 2 or active.shape[1] != 3:
            raise UserError("IoUTally.add_active: active must be (M, 3) (image, unit, pixel)")
        category = self.concept_category
        if bool((category[1:] < category[:-1]).any()):
            raise UserError("IoUTally.add_labels needs concepts numbered category by category")
        device = active.device
        sizes = torch.bincount(category, minlength=self.n_categories).to(device)
        offsets = sizes.cumsum(0) - sizes
        batch = labels.shape[0]
        codes = labels.to(device).long().flatten(2)  # (B, K, P)
        if bool(((codes < 0) | (codes > sizes[None, :, None])).any()):
            raise UserError("IoUTally.add_labels: a label code exceeds its category's concepts")
        if self.intersection is None:
            self.intersection = torch.zeros(units, self.concepts, dtype=torch.int64, device=device)
            self.unit_area = torch.zeros(units, self.n_categories, dtype=torch.int64, device=device)
            self.concept_area = torch.zeros(self.concepts, dtype=torch.int64, device=device)
        elif units != self.intersection.shape[0]:
            raise UserError(f"IoUTally.add_labels: expected {self.intersection.shape[0]} units")
        # Global concept id of every labelled pixel, -1 where a category has no label.
        concept = torch.where(codes > 0, codes - 1 + offsets[None, :, None], -1)
        image, unit, pixel = active.long().unbind(1)
        for k in range(self.n_categories):
            hit = concept[image, k, pixel]
            keep = hit >= 0
            self.intersection += torch.bincount(
                unit[keep] * self.concepts + hit[keep], minlength=units * self.concepts
            ).view(units, self.concepts)
        area = torch.bincount(image * units + unit, minlength=batch * units).view(batch, units)
        presence = (codes > 0).any(2)  # (B, K)
        self.unit_area += (area.t().double() @ presence.double()).round().long()
        labelled = concept[concept >= 0]
        self.concept_area += torch.bincount(labelled, minlength=self.concepts)
        self.images += batch

    def union(self) -> torch.Tensor:
        """(U, C) union counts with the category-conditioned unit area."""
        if self.intersection is None:
            raise UserError("no masks added yet")
        unit_area = self.unit_area[:, self.concept_category.to(self.unit_area.device)]
        return unit_area + self.concept_area[None, :] - self.intersection

    def result(self) -> torch.Tensor:
        """(U, C) IoU; 0 where the union is empty."""
        union = self.union()
        return self.intersection.double() / union.clamp(min=1).double()

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "kind": "IoUTally",
            "concept_category": self.concept_category.clone(),
            "n_categories": self.n_categories,
            "images": self.images,
        }
        if self.intersection is not None:
            state["intersection"] = self.intersection.cpu()
            state["unit_area"] = self.unit_area.cpu()
            state["concept_area"] = self.concept_area.cpu()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("kind") != "IoUTally":
            raise UserError("not an IoUTally state")
        self.__init__(state["concept_category"], state["n_categories"])
        self.images = state["images"]
        if "intersection" in state:
            self.intersection = state["intersection"].clone()
            self.unit_area = state["unit_area"].clone()
            self.concept_area = state["concept_area"].clone()

    def merge(self, other: IoUTally) -> None:
        if not isinstance(other, IoUTally) or not torch.equal(
            other.concept_category, self.concept_category
        ):
            raise UserError("can only merge an IoUTally over the same concepts")
        if other.intersection is None:
            return
        if self.intersection is None:
            self.load_state_dict(other.state_dict())
            return
        device = self.intersection.device
        self.intersection += other.intersection.to(device)
        self.unit_area += other.unit_area.to(device)
        self.concept_area += other.concept_area.to(device)
        self.images += other.images


class ConditionalMean:
    """Mean activation of each unit over the pixels where each concept is present.

    ``add(activations (B, U, H, W), concept_masks (B, C, H, W))``; sums accumulate in float64,
    pixel counts in int64. ``result()`` is ``(U, C)`` (NaN for concepts never seen). Used for
    insertion values ("the mean activation where the concept is present").
    """

    def __init__(self) -> None:
        self.sums: torch.Tensor | None = None  # (U, C) float64
        self.pixels: torch.Tensor | None = None  # (C,) int64

    def add(self, activations: torch.Tensor, concept_masks: torch.Tensor) -> None:
        if activations.shape[0] != concept_masks.shape[0] or (
            activations.shape[2:] != concept_masks.shape[2:]
        ):
            raise UserError(
                "ConditionalMean.add: activations and concept masks must share batch and "
                f"spatial shape, got {tuple(activations.shape)} and {tuple(concept_masks.shape)}"
            )
        if not bool(torch.isfinite(activations).all()):
            raise UserError("ConditionalMean.add: activations contain NaN or infinite values; "
                            "check the model's activations (or clamp them)")
        values = _maps_to_rows(activations.detach()).double()  # (U, P)
        masks = _maps_to_rows(concept_masks.bool()).t().double()  # (P, C)
        if self.sums is None:
            self.sums = torch.zeros(values.shape[0], masks.shape[1], dtype=torch.float64,
                                    device=values.device)
            self.pixels = torch.zeros(masks.shape[1], dtype=torch.int64, device=values.device)
        if self.sums.shape != (values.shape[0], masks.shape[1]):
            raise UserError(f"ConditionalMean.add: expected (units, concepts) {self.sums.shape}")
        self.sums += values @ masks
        self.pixels += masks.sum(0).long()

    def result(self) -> torch.Tensor:
        if self.sums is None:
            raise UserError("no values added yet")
        return (self.sums / self.pixels.double()).float()  # 0/0 -> NaN: concept never seen

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"kind": "ConditionalMean"}
        if self.sums is not None:
            state["sums"], state["pixels"] = self.sums.cpu(), self.pixels.cpu()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("kind") != "ConditionalMean":
            raise UserError("not a ConditionalMean state")
        self.__init__()
        if "sums" in state:
            self.sums, self.pixels = state["sums"].clone(), state["pixels"].clone()

    def merge(self, other: ConditionalMean) -> None:
        if other.sums is None:
            return
        if self.sums is None:
            self.load_state_dict(other.state_dict())
            return
        self.sums += other.sums.to(self.sums.device)
        self.pixels += other.pixels.to(self.pixels.device)
