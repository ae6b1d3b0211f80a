"""The segmenter's model-card metrics on fresh SceneWorld images.

Per learned category, one confusion matrix over all pixels of ``n`` scenes of world ``seed``
(scenes ``0 .. n-1``, 64 px); IoU per concept pooled over all pixels, mIoU the mean over the
category's concepts (code 0, "none", left out), object pixel accuracy over all pixels.
"""

from __future__ import annotations

import torch
from tqdm import tqdm

from gandissect.errors import UserError
from gandissect.evaluate.metrics import (
    accuracy,
    check_held_out,
    confusion_matrix,
    iou_per_label,
    mean_defined,
)
from gandissect.torchutil import model_device
from gandissect.world.dataset import image_to_tensor

CATEGORIES = ("object", "part", "material")


def segmentation_scores(confusions: dict[str, torch.Tensor],
                        concepts: dict[str, list[str]]) -> dict:
    """Model-card numbers from per-category pixel confusion matrices (label 0 = none)."""
    per_concept, means = {}, {}
    for category, confusion in confusions.items():
        ious = iou_per_label(confusion)[1:]
        means[category] = mean_defined(ious)
        names = concepts[category][1:]
        per_concept.update({f"{category}/{name}": iou for name, iou in zip(names, ious)})
    return {
        "object_pixel_accuracy": accuracy(confusions["object"]),
        "object_miou": means["object"],
        "part_miou": means["part"],
        "material_miou": means["material"],
        "per_concept_iou": per_concept,
    }


@torch.no_grad()
def evaluate_segmenter(model: torch.nn.Module, n: int = 1000, seed: int = 1000, batch: int = 50,
                       progress: bool = True, size: int = 64) -> dict:
    """Object pixel accuracy, object / part / material mIoU and per-concept IoU of ``model``
    on scenes ``0 .. n-1`` of world ``seed`` (which must not be a training seed)."""
    from gandissect.world import render_batch

    check_held_out(seed)
    if n < 1:
        raise UserError(f"need at least one scene (n >= 1), got {n}")
    device = model_device(model)
    model.eval()
    concepts = model.concepts
    confusions = {c: torch.zeros(len(concepts[c]), len(concepts[c]), dtype=torch.long)
                  for c in CATEGORIES}
    for start in tqdm(range(0, n, batch), disable=not progress, desc="segmenter eval"):
        rendered = render_batch(seed, range(start, min(start + batch, n)), size)
        images = image_to_tensor(rendered["image"])
        logits = model(images.to(device))
        for category in CATEGORIES:
            truth = torch.from_numpy(rendered[category])
            confusions[category] += confusion_matrix(truth, logits[category].argmax(1).cpu(),
                                                     len(concepts[category]))
    return {**segmentation_scores(confusions, concepts), "n": n, "seed": seed}
