"""What every training run shares: a run folder, atomic resumable checkpoints, a log, signals.

A run folder holds ``checkpoint.pt`` (everything needed to continue, written atomically and
loaded with ``weights_only=True``), ``log.jsonl`` (one line per logging interval) and whatever the
trainer adds (sample grids, exported weights). Starting a trainer on a folder that has a
checkpoint continues from it; SIGTERM and Ctrl-C save a checkpoint before exiting, and a
SIGKILL loses at most one checkpoint interval.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, IterableDataset

from gandissect.errors import UserError
from gandissect.fileio import FolderLock, load_state, save_state


class RunFolder:
    """A training run's folder, locked against a second trainer writing to it."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock = FolderLock(self.path, what="--run folder").acquire()
        self.checkpoint_path = self.path / "checkpoint.pt"
        self.stop_requested = False
        self._previous_handlers: dict[int, Any] = {}

    def load(self) -> dict | None:
        """The last checkpoint, or None for a fresh run."""
        if not self.checkpoint_path.exists():
            return None
        return load_state(self.checkpoint_path)

    def save(self, state: dict) -> None:
        save_state(self.checkpoint_path, state)

    def log(self, record: dict) -> None:
        with open(self.path / "log.jsonl", "a") as stream:
            stream.write(json.dumps(record) + "\n")

    def __enter__(self) -> RunFolder:
        def request_stop(signum, frame):
            self.stop_requested = True

        for signum in (signal.SIGTERM, signal.SIGINT):
            self._previous_handlers[signum] = signal.signal(signum, request_stop)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        self._lock.release()


class RenderedBatches(IterableDataset):
    """Endless batches ``{"image": (N, 3, H, W) float in [-1, 1], key: (N, ...) long}`` of
    SceneWorld world ``seed``, scenes ``start, start + 1, ...``.

    With W DataLoader workers, worker w renders batches w, w + W, w + 2W, ... and the loader
    takes them in turn, so the stream is the same for any number of workers (and none)."""

    def __init__(self, seed: int, size: int, batch: int, start: int,
                 keys: tuple[str, ...] = ()) -> None:
        self.seed, self.size, self.batch, self.start = seed, size, batch, start
        self.keys = keys

    def __iter__(self):
        from torch.utils.data import get_worker_info

        from gandissect.world import render_batch
        from gandissect.world.dataset import image_to_tensor

        worker = get_worker_info()
        offset, stride = (0, 1) if worker is None else (worker.id, worker.num_workers)
        index = self.start + offset * self.batch
        while True:
            rendered = render_batch(self.seed, range(index, index + self.batch), self.size)
            out = {"image": image_to_tensor(rendered["image"])}
            out.update({key: torch.from_numpy(rendered[key]).long() for key in self.keys})
            yield out
            index += stride * self.batch


def _worker_init(worker_id: int) -> None:
    """A rendering worker leaves SIGTERM and Ctrl-C to the trainer, which checkpoints first
    (``pkill -f`` reaches the workers too), and uses one core (rendering is numpy)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)


def rendered_batches(dataset: RenderedBatches, workers: int, device: torch.device):
    """Iterate ``dataset`` in this process (``workers`` = 0) or in ``workers`` rendering
    processes (pinned memory when training on a GPU)."""
    if workers < 0:
        raise UserError(f"workers must be 0 or more, got {workers}")
    if workers == 0:
        return iter(dataset)
    return iter(DataLoader(dataset, batch_size=None, num_workers=workers, prefetch_factor=4,
                           worker_init_fn=_worker_init, pin_memory=device.type == "cuda"))


class Every:
    """True once every ``seconds`` of wall time (for checkpoints and logs)."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.last = seconds, time.monotonic()

    def __call__(self) -> bool:
        now = time.monotonic()
        if now - self.last >= self.seconds:
            self.last = now
            return True
        return False


def run_training(trainer_class, config_class, run_dir: str, config=None,
                 threads: int | None = None, checkpoint_minutes: float = 5.0,
                 kimg: float | None = None, progress: bool = True, **runtime):
    """Train (or continue) a ``trainer_class`` run in ``run_dir``; returns the trainer.

    A checkpoint in ``run_dir`` wins over ``config`` (only ``kimg`` may change on resume);
    ``runtime`` (a device, a number of workers) goes to the trainer and may change freely."""
    if threads:
        torch.set_num_threads(threads)
    with RunFolder(run_dir) as run:
        state = run.load()
        if state is not None:  # a config class may read old checkpoints its own way
            from_dict = getattr(config_class, "from_dict", None)
            config = from_dict(state["config"]) if from_dict else config_class(**state["config"])
        config = config or config_class()
        if kimg is not None:
            config.kimg = kimg
        trainer = trainer_class(config, run, **runtime)
        if state is not None:
            trainer.load_state_dict(state)
            if progress:
                print(f"continuing from {trainer.images_seen:,} images")
        trainer.train(checkpoint_minutes, progress)
        return trainer
