"""The scene classifier's model-card metrics on fresh SceneWorld images.

Top-1 accuracy, per-scene accuracy and the confusion matrix (rows = true scene, columns =
predicted; index i = scene code i + 1) over scenes ``0 .. n-1`` of world ``seed`` at 64 px.
"""

from __future__ import annotations

import torch
from tqdm import tqdm

from gandissect.errors import UserError
from gandissect.evaluate.metrics import (
    accuracy,
    check_held_out,
    confusion_matrix,
    recall_per_label,
)
from gandissect.torchutil import model_device
from gandissect.world.dataset import image_to_tensor


def classification_scores(confusion: torch.Tensor, names: list[str]) -> dict:
    """Model-card numbers from a (classes, classes) confusion matrix of images."""
    return {
        "top1": accuracy(confusion),
        "per_class_accuracy": dict(zip(names, recall_per_label(confusion))),
        "confusion": confusion.tolist(),
        "scene_names": list(names),
    }


@torch.no_grad()
def evaluate_classifier(model: torch.nn.Module, n: int = 2000, seed: int = 1001,
                        batch: int = 100, progress: bool = True, size: int = 64) -> dict:
    """Top-1, per-scene accuracy and confusion matrix of ``model`` on scenes ``0 .. n-1`` of
    world ``seed`` (which must not be a training seed)."""
    from gandissect.world import render_batch

    check_held_out(seed)
    if n < 1:
        raise UserError(f"need at least one scene (n >= 1), got {n}")
    device = model_device(model)
    model.eval()
    names = list(model.scene_names)
    confusion = torch.zeros(len(names), len(names), dtype=torch.long)
    for start in tqdm(range(0, n, batch), disable=not progress, desc="classifier eval"):
        rendered = render_batch(seed, range(start, min(start + batch, n)), size)
        images = image_to_tensor(rendered["image"])
        predicted = model(images.to(device)).argmax(1).cpu()
        truth = torch.from_numpy(rendered["scene"]) - 1
        confusion += confusion_matrix(truth, predicted, len(names))
    return {**classification_scores(confusion, names), "n": n, "seed": seed}
