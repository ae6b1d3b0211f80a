"""The metric cores of the segmenter and classifier evaluations, over plain label arrays.

A confusion matrix ``C[t, p]`` counts items (pixels or images) of true label ``t`` predicted
as ``p``; every number the model cards report is read off one: IoU of label k is
``C[k, k] / (sum_p C[k, p] + sum_t C[t, k] - C[k, k])`` pooled over all pixels of all images,
pixel (or top-1) accuracy is ``trace(C) / sum(C)``, per-class accuracy is ``C[k, k] / sum_p
C[k, p]``.
"""

from __future__ import annotations

import torch

from gandissect.errors import UserError
from gandissect.models.registry import SEEDS


def check_held_out(seed: int) -> None:
    """Raise a UserError if ``seed`` is a world seed some shipped model was trained on."""
    used = {s: name for name, s in SEEDS.items()}
    if seed in used:
        raise UserError(f"world seed {seed} trained the {used[seed]}; evaluate on another seed")


def confusion_matrix(target: torch.Tensor, predicted: torch.Tensor, classes: int) -> torch.Tensor:
    """(classes, classes) int64 counts: row = true label, column = predicted label."""
    target, predicted = target.reshape(-1).long(), predicted.reshape(-1).long()
    if target.numel() and (max(target.max(), predicted.max()) >= classes
                           or min(target.min(), predicted.min()) < 0):
        raise UserError(f"labels outside 0..{classes - 1}")
    counts = torch.bincount(target * classes + predicted, minlength=classes * classes)
    return counts.reshape(classes, classes).cpu()


def iou_per_label(confusion: torch.Tensor) -> list[float | None]:
    """IoU of each label (None where the label is neither true nor predicted anywhere)."""
    confusion = confusion.double()
    intersection = confusion.diagonal()
    union = confusion.sum(0) + confusion.sum(1) - intersection
    return [float(i / u) if u > 0 else None for i, u in zip(intersection, union)]


def accuracy(confusion: torch.Tensor) -> float:
    """Share of items whose predicted label is the true one."""
    return float(confusion.diagonal().sum().double() / confusion.sum().clamp(min=1))


def recall_per_label(confusion: torch.Tensor) -> list[float | None]:
    """Per true label, the share predicted correctly (None for labels never true)."""
    confusion = confusion.double()
    rows = confusion.sum(1)
    return [float(d / r) if r > 0 else None for d, r in zip(confusion.diagonal(), rows)]


def mean_defined(values: list[float | None]) -> float:
    """The mean of the values that are not None (NaN if none is)."""
    defined = [v for v in values if v is not None]
    return sum(defined) / len(defined) if defined else float("nan")
