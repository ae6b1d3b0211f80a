"""How many units a concept has, counted two ways, and said the same way everywhere (the app's
brushes, its concept lists and bar charts, and ``report.html``).

- **labelled**: interpretable units (IoU above the dissection's ``min_iou``) whose label, their
  best concept over every category, is this concept. A unit that draws trees is often labelled
  by its material or colour (foliage, green), so a concept can draw with many units and label
  none.
- **best in its category**: units whose best concept *within the concept's category* is this
  one (IoU > 0), whatever their overall label: e.g. every unit whose best object is tree. This
  is what a painting brush draws from.
"""

from __future__ import annotations

from collections import Counter

import torch

from gandissect.dissect.results import Dissection, LayerDissection
from gandissect.errors import UserError
from gandissect.stats import IoUTally

__all__ = ["EXPLAINED", "best_in_category", "count_title", "iou_matrix", "labelled"]

EXPLAINED = ("*labelled*: interpretable units whose best concept overall is this one (the "
             "label column, the first chart); *best in category*: units whose best concept "
             "of that category is this one, whatever their label (what a brush draws from, "
             "the second chart).")


def iou_matrix(dissection: Dissection, layer: str) -> torch.Tensor:
    """``(units, concepts)`` IoU of ``layer`` (a fixed-threshold dissection)."""
    stats = dissection.layer(layer).stats
    if "iou" not in stats:
        raise UserError("unit selection needs a dissection run with --threshold quantile")
    tally = IoUTally([0])
    tally.load_state_dict(stats["iou"])
    return tally.result().float()


def labelled(layer: LayerDissection) -> Counter:
    """``{(category, name): units}``: interpretable units by their label."""
    return Counter((u.category, u.label) for u in layer.interpretable())


def best_in_category(dissection: Dissection, layer: str) -> Counter:
    """``{(category, name): units}``: for every category, each unit counted once, for its best
    concept of that category (IoU > 0)."""
    iou = iou_matrix(dissection, layer)
    stats = dissection.layer(layer).stats
    categories = list(dissection.settings["categories"])
    owner = stats["concept_category"]
    counts: Counter = Counter()
    for index, category in enumerate(categories):
        columns = (owner == index).nonzero().flatten()
        if len(columns) == 0:
            continue
        best, where = iou[:, columns].max(1)
        for column in where[best > 0].tolist():
            counts[(category, stats["concepts"][int(columns[column])])] += 1
    return counts


def count_title(category: str, name: str, labelled_units: int, best_units: int) -> str:
    """A concept with both counts, in the words every list and chart uses."""
    return (f"{name} ({category}): {labelled_units} labelled, {best_units} best in "
            f"{category}")
