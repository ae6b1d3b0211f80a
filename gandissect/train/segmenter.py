"""Supervised training of the SceneWorld segmenter, resumable.

Per learned category (object, part, material): pixel cross-entropy plus a soft Dice term over
the concept classes (not "none"), which keeps small classes such as windows and doors from
being swamped by the background. Scenes are rendered on the fly from world
``SEEDS['segmenter']``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch.nn import functional as F

from gandissect.models.registry import SEEDS, save_weights
from gandissect.models.segmenter import LEARNED_CATEGORIES, Segmenter
from gandissect.train.common import RunFolder, run_training
from gandissect.train.supervised import SupervisedTrainer

WEIGHTS_NAME = "sceneworld_segmenter.safetensors"


@dataclass
class SegmenterConfig:
    """Everything that defines a segmenter training run (stored in its checkpoint)."""

    resolution: int = 64
    channels: list[int] = field(default_factory=lambda: [24, 48, 96, 160])
    batch: int = 16
    lr: float = 0.002
    weight_decay: float = 1e-4
    warmup_kimg: float = 1.0
    kimg: float = 80
    dice_weight: float = 1.0
    world_seed: int = SEEDS["segmenter"]
    seed: int = 0


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - mean soft Dice over classes 1.. (class 0, "none", is left out), pooled over the
    batch: ``1 - (2 sum(p y) + 1) / (sum(p) + sum(y) + 1)`` per class."""
    probability = logits.softmax(1)[:, 1:]
    onehot = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2)[:, 1:].to(probability)
    dims = (0, 2, 3)
    intersection = (probability * onehot).sum(dims)
    total = probability.sum(dims) + onehot.sum(dims)
    return 1 - ((2 * intersection + 1) / (total + 1)).mean()


class SegmenterTrainer(SupervisedTrainer):
    """Trains a ``Segmenter`` on all learned categories at once."""

    name = "segmenter"
    keys = LEARNED_CATEGORIES

    def __init__(self, config: SegmenterConfig, run: RunFolder, device: str | torch.device = "cpu",
                 workers: int = 0) -> None:
        torch.manual_seed(config.seed)
        super().__init__(config, Segmenter(config.channels), run, device, workers)

    def loss(self, batch):
        logits = self.model(batch["image"])
        total, numbers = 0.0, {}
        for category in LEARNED_CATEGORIES:
            target = batch[category]
            ce = F.cross_entropy(logits[category], target)
            dice = soft_dice_loss(logits[category], target)
            total = total + ce + self.config.dice_weight * dice
            numbers[f"{category}_ce"] = ce.item()
            numbers[f"{category}_dice"] = dice.item()
        return total, numbers

    def export(self) -> None:
        save_weights(self.model, self.run.path / WEIGHTS_NAME, self.model.config(),
                     images_seen=str(self.images_seen), step=str(self.step),
                     training_seconds=str(round(self.seconds)),
                     world_seed=str(self.config.world_seed))


def train_segmenter(run_dir: str, config: SegmenterConfig | None = None,
                    threads: int | None = None, checkpoint_minutes: float = 5.0,
                    kimg: float | None = None, progress: bool = True,
                    device: str | torch.device = "cpu", workers: int = 0) -> SegmenterTrainer:
    """Train (or continue training) the segmenter in ``run_dir`` on ``device`` with ``workers``
    rendering processes (0: render in this one); returns the trainer."""
    return run_training(SegmenterTrainer, SegmenterConfig, run_dir, config, threads,
                        checkpoint_minutes, kimg, progress, device=device, workers=workers)
