"""What the supervised trainers (segmenter, scene classifier) share: data, schedule, the loop.

Training data are SceneWorld scenes rendered on the fly from one world seed (the trainer's entry
in ``SEEDS``), scene indices ``0, 1, 2, ...`` continuing across resumes, so a resumed run sees
exactly the images an uninterrupted one would. By default rendering happens in the training
process (``workers`` = 0), so a run uses exactly the CPU threads it is given; on a GPU, rendering
workers keep it fed (the same images in the same order). Optimiser: AdamW with a linear warm-up
and a cosine decay to zero over the run's ``kimg``.
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from dataclasses import asdict

import torch
from torch import nn
from tqdm import tqdm

from gandissect.train.common import Every, RenderedBatches, RunFolder, rendered_batches


def learning_rate(config, images_seen: int) -> float:
    """Linear warm-up over ``config.warmup_kimg``, then cosine decay to 0 at ``config.kimg``."""
    kimg = images_seen / 1000
    if kimg < config.warmup_kimg:
        return config.lr * max(kimg / config.warmup_kimg, 0.01)
    progress = min((kimg - config.warmup_kimg) / max(config.kimg - config.warmup_kimg, 1e-9), 1)
    return config.lr * 0.5 * (1 + math.cos(math.pi * progress))


class SupervisedTrainer(ABC):
    """A model, its optimiser and counters; subclasses define ``keys``, ``loss`` and ``export``.

    ``train`` runs until ``config.kimg`` thousand images, checkpointing every few minutes, on a
    SIGTERM / Ctrl-C (through the run folder) and at the end; every checkpoint also exports the
    model's weights with ``export``. The model trains on ``device`` from batches rendered by
    ``workers`` processes (0: in this one).
    """

    name = "model"
    keys: tuple[str, ...] = ()

    def __init__(self, config, model: nn.Module, run: RunFolder,
                 device: str | torch.device = "cpu", workers: int = 0) -> None:
        self.config, self.run = config, run
        self.device, self.workers = torch.device(device), workers
        self.model = model.to(self.device, memory_format=torch.channels_last)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), config.lr,
                                           weight_decay=config.weight_decay)
        self.images_seen, self.step, self.seconds = 0, 0, 0.0

    # -- to define -----------------------------------------------------------------------
    @abstractmethod
    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """The training loss of one batch and the numbers worth logging."""

    @abstractmethod
    def export(self) -> None:
        """Write the shippable weights into the run folder."""

    def after_step(self) -> None:  # noqa: B027 (optional hook; the default does nothing)
        """Hook run after every optimiser step (e.g. snapshots at set image counts)."""

    # -- state -------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"config": asdict(self.config), "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(), "images_seen": self.images_seen,
                "step": self.step, "seconds": self.seconds}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.images_seen, self.step = state["images_seen"], state["step"]
        self.seconds = state["seconds"]

    def save(self) -> None:
        self.run.save(self.state_dict())
        self.model.eval()
        self.export()
        self.model.train()

    # -- the loop ----------------------------------------------------------------------
    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        lr = learning_rate(self.config, self.images_seen)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        batch = {key: value.to(self.device, non_blocking=True) for key, value in batch.items()}
        batch["image"] = batch["image"].contiguous(memory_format=torch.channels_last)
        loss, numbers = self.loss(batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.images_seen += batch["image"].shape[0]
        self.step += 1
        return {"loss": loss.item(), "lr": lr, **numbers}

    def train(self, checkpoint_minutes: float = 5.0, progress: bool = True) -> None:
        c = self.config
        total = int(c.kimg * 1000)
        batches = rendered_batches(
            RenderedBatches(c.world_seed, c.resolution, c.batch, self.images_seen, self.keys),
            self.workers, self.device)
        checkpoint, log = Every(checkpoint_minutes * 60), Every(30)
        bar = tqdm(total=total, initial=self.images_seen, unit="img", disable=not progress,
                   desc=self.name, smoothing=0.05)
        started, seconds_before = time.monotonic(), self.seconds
        self.model.train()
        for batch in batches:
            if self.images_seen >= total or self.run.stop_requested:
                break
            numbers = self.train_step(batch)
            self.seconds = seconds_before + time.monotonic() - started
            self.after_step()
            bar.update(batch["image"].shape[0])
            if log():
                self.run.log({"images_seen": self.images_seen, "step": self.step,
                              "seconds": round(self.seconds),
                              **{k: round(v, 5) for k, v in numbers.items()}})
                bar.set_postfix(loss=f"{numbers['loss']:.3f}")
            if checkpoint():
                self.save()
        bar.close()
        self.save()
