"""Supervised training of the SceneWorld scene classifier, resumable.

Cross-entropy on scene codes (class i = scene code i + 1) of scenes rendered on the fly from
world ``SEEDS['classifier']``. Besides the usual checkpoints, the run keeps small weight
snapshots at set image counts (``snapshots/images_00001000.safetensors`` ...; metadata
``images_seen``) for studies of how units change over training.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch.nn import functional as F

from gandissect.models.classifier import SceneClassifier
from gandissect.models.registry import SEEDS, save_weights
from gandissect.train.common import RunFolder, run_training
from gandissect.train.supervised import SupervisedTrainer

WEIGHTS_NAME = "sceneworld_classifier.safetensors"


@dataclass
class ClassifierConfig:
    """Everything that defines a scene-classifier training run (stored in its checkpoint)."""

    resolution: int = 64
    channels: list[int] = field(default_factory=lambda: [32, 64, 96, 160])
    blocks: int = 1
    # first-conv stride of layer1 .. layer4: layer3 and layer4 stay at 16x16 (4 px cells) so
    # that class activation maps localise, as in the CAM paper
    strides: list[int] = field(default_factory=lambda: [1, 2, 1, 1])
    batch: int = 50
    lr: float = 0.003
    weight_decay: float = 1e-4
    warmup_kimg: float = 1.0
    # accuracy saturates by 32 kimg; training on to 160 makes the CAM maxima land on the
    # scene's defining objects far more often (benchmarks/bench_cam_training.py)
    kimg: float = 160
    snapshots: list[int] = field(
        default_factory=lambda: [1000, 2000, 4000, 8000, 16000, 32000])
    world_seed: int = SEEDS["classifier"]
    seed: int = 0


class ClassifierTrainer(SupervisedTrainer):
    """Trains a ``SceneClassifier``; ``snapshot`` weights land in ``run/snapshots``."""

    name = "classifier"
    keys = ("scene",)

    def __init__(self, config: ClassifierConfig, run: RunFolder, device: str | torch.device = "cpu",
                 workers: int = 0) -> None:
        torch.manual_seed(config.seed)
        super().__init__(config, SceneClassifier(config.channels, config.blocks,
                                                         strides=config.strides), run,
                         device, workers)

    def loss(self, batch):
        logits = self.model(batch["image"])
        target = batch["scene"] - 1
        accuracy = (logits.argmax(1) == target).float().mean().item()
        return F.cross_entropy(logits, target), {"accuracy": accuracy}

    def _write(self, path) -> None:
        save_weights(self.model, path, self.model.config(), images_seen=str(self.images_seen),
                     step=str(self.step), training_seconds=str(round(self.seconds)),
                     world_seed=str(self.config.world_seed))

    def export(self) -> None:
        self._write(self.run.path / WEIGHTS_NAME)

    def after_step(self) -> None:
        # snapshot once per configured count, at the first step that reaches it
        before = self.images_seen - self.config.batch
        if any(before < point <= self.images_seen for point in self.config.snapshots):
            self.model.eval()
            self._write(self.run.path / "snapshots" / f"images_{self.images_seen:08d}.safetensors")
            self.model.train()

    def save(self) -> None:
        super().save()
        if self.images_seen >= int(self.config.kimg * 1000):  # the final state is a snapshot too
            self.model.eval()
            self._write(self.run.path / "snapshots" / f"images_{self.images_seen:08d}.safetensors")
            self.model.train()


def train_classifier(run_dir: str, config: ClassifierConfig | None = None,
                     threads: int | None = None, checkpoint_minutes: float = 5.0,
                     kimg: float | None = None, progress: bool = True,
                     device: str | torch.device = "cpu", workers: int = 0) -> ClassifierTrainer:
    """Train (or continue training) the scene classifier in ``run_dir`` on ``device`` with
    ``workers`` rendering processes (0: render in this one); returns the trainer."""
    return run_training(ClassifierTrainer, ClassifierConfig, run_dir, config, threads,
                        checkpoint_minutes, kimg, progress, device=device, workers=workers)
