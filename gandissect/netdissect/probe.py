"""Probe sets: labelled images streamed in batches, the data side of Network Dissection.

A probe set has ``categories`` (names, in order), ``concepts`` (category -> names by code,
code 0 "none"), ``batches(size)`` (a fresh iterator of ``ProbeBatch`` on every call: the
dissection makes two passes) and ``images(ids)`` (the report's top images). Labels come as
per-category codes ``(B, K, H, W)``; image-level categories (scene, texture) fill the whole
image with their code, which is how Network Dissection counts them (full-image masks).

    SceneWorldProbe(seed=1001, n=2000)   # rendered on the fly, exact labels, 5 categories
    BrodenProbe("broden1_224")           # a Broden-layout directory (real or exported)
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gandissect.errors import UserError

__all__ = ["ProbeBatch", "ProbeSet", "SceneWorldProbe", "BrodenProbe", "full_image_plane"]


@dataclass
class ProbeBatch:
    """``ids`` (B,) int64 sample ids; ``images`` (B, 3, H, W) float in [-1, 1]; ``labels``
    (B, K, h, w) int64 codes, one plane per category (0 = none)."""

    ids: torch.Tensor
    images: torch.Tensor
    labels: torch.Tensor


def full_image_plane(codes: torch.Tensor | Sequence[int], size: tuple[int, int]) -> torch.Tensor:
    """Image-level codes ``(B,)`` as ``(B, H, W)`` label planes: each image's code everywhere."""
    codes = torch.as_tensor(codes, dtype=torch.int64).reshape(-1)
    return codes[:, None, None].expand(-1, *size).clone()


class ProbeSet(ABC):
    """Base of probe sets; subclasses define the concepts, the batches and the images."""

    categories: tuple[str, ...]
    concepts: dict[str, list[str]]  # category -> names by code, index 0 = "none"

    @abstractmethod
    def __len__(self) -> int:
        """Number of samples."""

    @abstractmethod
    def batches(self, size: int, start: int = 0) -> Iterator[ProbeBatch]:
        """Samples ``start, start + 1, ...`` in id order, ``size`` at a time; a new iterator on
        every call (``start`` lets a resumed dissection skip what it has counted)."""

    @abstractmethod
    def images(self, ids: Sequence[int]) -> torch.Tensor:
        """``(len(ids), 3, H, W)`` images in [-1, 1] of samples ``ids``."""

    def describe(self) -> dict[str, Any]:
        """What the settings record about this probe set."""
        return {"dataset": type(self).__name__, "n": len(self)}

    def domain_check(self) -> Any:
        """For probe sets labelled by a segmenter: ``gandissect.domain.check_domain`` of the
        segmenter on the first images. None here: the labels are the set's own."""
        return None


class SceneWorldProbe(ProbeSet):
    """Scenes ``0 .. n-1`` of world ``seed``: object, part, material and color pixel labels,
    scene as a full-image label. The default seed 1001 is the classifier's evaluation world
    (not a training seed, see ``gandissect.models.registry.SEEDS``)."""

    def __init__(self, seed: int = 1001, n: int = 2000, size: int = 64) -> None:
        from gandissect.world import CATEGORIES, concepts
        from gandissect.world.render import check_size

        check_size(size)
        if not isinstance(n, int) or n < 1:
            raise UserError(f"need at least one scene (n >= 1), got {n}")
        self.seed, self.n, self.size = seed, n, size
        self.categories = tuple(CATEGORIES)
        self.concepts = {c: ["none"] + [k.name for k in concepts(c)] for c in self.categories}

    def __len__(self) -> int:
        return self.n

    def _render(self, ids: Sequence[int]) -> dict[str, np.ndarray]:
        from gandissect.world import render_batch

        return render_batch(self.seed, list(ids), self.size)

    def batches(self, size: int, start: int = 0) -> Iterator[ProbeBatch]:
        from gandissect.world.dataset import image_to_tensor

        for first in range(start, self.n, size):
            ids = range(first, min(first + size, self.n))
            rendered = self._render(ids)
            planes = [torch.from_numpy(rendered[c]).long() for c in self.categories[:-1]]
            planes.append(full_image_plane(torch.from_numpy(rendered["scene"]),
                                           (self.size, self.size)))
            yield ProbeBatch(torch.as_tensor(list(ids)), image_to_tensor(rendered["image"]),
                             torch.stack(planes, 1))

    def images(self, ids: Sequence[int]) -> torch.Tensor:
        from gandissect.world.dataset import image_to_tensor

        return image_to_tensor(self._render(ids)["image"])

    def describe(self) -> dict[str, Any]:
        return {"dataset": "sceneworld", "n": self.n, "seed": self.seed, "size": self.size}


class BrodenProbe(ProbeSet):
    """A Broden-layout directory through ``gandissect.world.BrodenDataset``.

    ``n`` takes the first n images (None: all); ``size`` resizes images and labels (needed
    when images or label maps differ in size, as batches are stacked). Limits of the loader:
    one label per pixel per category (the first PNG's wins) and the first image-level label.
    """

    def __init__(self, directory: str | Path, n: int | None = None, size: int | None = None,
                 categories: list[str] | None = None) -> None:
        from gandissect.world import BrodenDataset

        self.directory = Path(directory)
        self.dataset = BrodenDataset(directory, categories, size)
        self.n = len(self.dataset) if n is None else min(int(n), len(self.dataset))
        if self.n < 1:
            raise UserError(f"{directory} holds no images to dissect with")
        self.size = size
        self.concepts = {}
        for category in self.dataset.categories:
            found = {c.code: c.name for c in self.dataset.concepts if c.category == category}
            top = max(found, default=0)
            self.concepts[category] = ["none"] + [found.get(code, f"{category}-{code}")
                                                  for code in range(1, top + 1)]
        empty = [c for c, names in self.concepts.items() if len(names) < 2]
        if empty and categories is not None:
            raise UserError(f"categories {empty} of {directory} list no concepts")
        for category in empty:  # e.g. the texture column of an export without textures
            del self.concepts[category]
        self.categories = tuple(self.concepts)
        if not self.categories:
            raise UserError(f"{directory} lists no concepts")

    def __len__(self) -> int:
        return self.n

    def _batch(self, ids: Sequence[int]) -> ProbeBatch:
        items = [self.dataset[i] for i in ids]
        shapes = {tuple(item["image"].shape) for item in items}
        if len(shapes) > 1:
            raise UserError(f"images of {self.directory} differ in size ({sorted(shapes)}); "
                            "give a size to resize them")
        label_size = None
        for item in items:
            for category in self.categories:
                if category not in self.dataset.image_level:
                    label_size = label_size or tuple(item[category].shape)
                    if tuple(item[category].shape) != label_size:
                        raise UserError(f"label maps of {self.directory} differ in size; "
                                        "give a size to resize them")
        label_size = label_size or tuple(items[0]["image"].shape[1:])
        planes = []
        for category in self.categories:
            if category in self.dataset.image_level:
                planes.append(full_image_plane([int(item[category]) for item in items],
                                               label_size))
            else:
                planes.append(torch.stack([item[category] for item in items]).long())
        return ProbeBatch(torch.as_tensor(list(ids)),
                          torch.stack([item["image"] for item in items]),
                          torch.stack(planes, 1))

    def batches(self, size: int, start: int = 0) -> Iterator[ProbeBatch]:
        for first in range(start, self.n, size):
            yield self._batch(range(first, min(first + size, self.n)))

    def images(self, ids: Sequence[int]) -> torch.Tensor:
        return torch.stack([self.dataset[int(i)]["image"] for i in ids])

    def describe(self) -> dict[str, Any]:
        return {"dataset": f"broden:{self.directory}", "n": self.n, "size": self.size}
