"""PyTorch datasets over SceneWorld: map-style (indexable) and an endless stream."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from gandissect.errors import UserError
from gandissect.world.concepts import PIXEL_CATEGORIES
from gandissect.world.render import WorldSample, check_size, render

HUGE_LENGTH = 2**31 - 1


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) or (N, H, W, 3) uint8 -> (3, H, W) or (N, 3, H, W) float32 in [-1, 1]
    (0 -> -1, 255 -> 1): the models' input range."""
    x = torch.from_numpy(np.array(image, dtype=np.uint8)).movedim(-1, -3).float()
    return x / 127.5 - 1.0


def tensor_to_image(images: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) float in about [-1, 1] -> (N, H, W, 3) uint8 (clamped and rounded)."""
    pixels = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte()
    return pixels.movedim(-3, -1).cpu().numpy()


def sample_to_tensors(sample: WorldSample) -> dict[str, torch.Tensor]:
    """A WorldSample as a dict of tensors (see ``SceneWorld``)."""
    item = {"image": image_to_tensor(sample.image)}
    for cat in PIXEL_CATEGORIES:
        item[cat] = torch.from_numpy(sample.labels[cat].astype(np.int64))
    item["scene"] = torch.tensor(sample.scene, dtype=torch.long)
    return item


class SceneWorld(Dataset):
    """Scenes ``0 .. length-1`` of world ``seed`` as tensors.

    Each item is a dict: ``image`` float32 (3, H, W) in [-1, 1]; ``object``, ``part``,
    ``material``, ``color`` int64 (H, W) label codes (0 = none); ``scene`` int64 scalar.
    ``length=None`` means practically endless (2**31 - 1 scenes); iterate it sequentially
    (scenes are already random) or use ``SceneWorldStream``. ``transform`` maps the dict.
    """

    def __init__(self, seed: int = 0, size: int = 64, length: int | None = None,
                 transform: Callable[[dict], dict] | None = None) -> None:
        check_size(size)
        if length is not None and length <= 0:
            raise UserError(f"length must be positive or None, got {length}")
        self.seed, self.size, self.transform = seed, size, transform
        self.length = HUGE_LENGTH if length is None else int(length)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < self.length:
            raise IndexError(f"scene index {index} out of range [0, {self.length})")
        item = sample_to_tensors(render(self.seed, int(index), self.size))
        return self.transform(item) if self.transform else item


class SceneWorldStream(IterableDataset):
    """An endless stream of scenes ``start, start+1, ...``; DataLoader workers interleave."""

    def __init__(self, seed: int = 0, size: int = 64, start: int = 0,
                 transform: Callable[[dict], dict] | None = None) -> None:
        check_size(size)
        self.seed, self.size, self.start, self.transform = seed, size, start, transform

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = get_worker_info()
        worker, step = (0, 1) if info is None else (info.id, info.num_workers)
        index = self.start + worker
        while True:
            item = sample_to_tensors(render(self.seed, index, self.size))
            yield self.transform(item) if self.transform else item
            index += step
