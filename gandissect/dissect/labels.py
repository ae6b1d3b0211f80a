"""Concept labels: the segmenter's vocabulary, and a disk-backed store of label codes.

Each generated image is segmented once, in the first pass; its label codes (uint8, one plane
per category; int16 when a category has more than 256 codes) go to a file so that later passes
read them back instead of running the segmenter again, and memory does not grow with the number
of samples.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gandissect.errors import UserError
from gandissect.fileio import write_json

__all__ = ["MAX_CODES", "ConceptTable", "LabelStore"]

MAX_CODES = 2 ** 15  # codes of a category (int16 storage)


@dataclass(frozen=True)
class ConceptTable:
    """The segmenter's concepts, numbered category by category (code 0, "none", left out)."""

    categories: tuple[str, ...]
    codes: dict[str, tuple[str, ...]]  # category -> names by code, code 0 first

    @classmethod
    def from_segmenter(cls, segmenter: Any) -> ConceptTable:
        """Read ``segmenter.concepts`` and ``segmenter.categories`` (checked)."""
        concepts = getattr(segmenter, "concepts", None)
        if not isinstance(concepts, dict) or not concepts:
            raise UserError("the segmenter needs a `concepts` dict: category -> list of names "
                            "indexed by label code, code 0 = 'none'")
        categories = tuple(getattr(segmenter, "categories", None) or concepts)
        missing = [c for c in categories if c not in concepts]
        if missing:
            raise UserError(f"segmenter categories {missing} have no entry in `concepts`")
        codes = {c: tuple(str(name) for name in concepts[c]) for c in categories}
        for category, names in codes.items():
            if len(names) < 2:
                raise UserError(f"category {category!r} has no concepts besides code 0")
            if len(names) > MAX_CODES:
                raise UserError(f"category {category!r} has {len(names)} codes; at most "
                                f"{MAX_CODES}")
        return cls(categories, codes)

    @property
    def dtype(self) -> torch.dtype:
        """The type label codes are stored in: uint8, or int16 when a category has more than
        256 codes (e.g. the 336 objects of Unified Perceptual Parsing)."""
        return torch.uint8 if max(map(len, self.codes.values())) <= 256 else torch.int16

    @property
    def names(self) -> list[str]:
        """Concept names in global order."""
        return [name for c in self.categories for name in self.codes[c][1:]]

    @property
    def concept_category(self) -> torch.Tensor:
        """(C,) category index of every concept."""
        return torch.tensor([k for k, c in enumerate(self.categories)
                             for _ in self.codes[c][1:]], dtype=torch.int64)

    def category_of(self, concept: int) -> str:
        return self.categories[int(self.concept_category[concept])]

    def stack(self, segmentation: dict[str, torch.Tensor]) -> torch.Tensor:
        """``{category: (B, H, W) codes}`` -> ``(B, K, H, W)`` codes of type ``dtype``,
        checking every code."""
        planes = []
        for category in self.categories:
            if category not in segmentation:
                raise UserError(f"the segmenter returned no labels for category {category!r}")
            plane = torch.as_tensor(segmentation[category])
            if plane.dim() != 3 or plane.is_floating_point():
                raise UserError(f"labels of {category!r} must be (N, H, W) integer codes, got "
                                f"{plane.dtype} of shape {tuple(plane.shape)}")
            if plane.numel() and (int(plane.min()) < 0
                                  or int(plane.max()) >= len(self.codes[category])):
                raise UserError(f"labels of {category!r} hold codes outside "
                                f"0..{len(self.codes[category]) - 1}")
            planes.append(plane.to(self.dtype))
        shapes = {tuple(p.shape) for p in planes}
        if len(shapes) != 1:
            raise UserError(f"categories' label maps differ in shape: {sorted(shapes)}")
        return torch.stack(planes, 1)


def _read_meta(path: Path) -> dict | None:
    """A label store's ``meta.json``, or None when missing or damaged (the labels are then
    computed again: they are a cache)."""
    try:
        meta = json.loads(path.read_text()) if path.is_file() else None
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return meta if isinstance(meta, dict) else None


class LabelStore:
    """Label codes ``(n, K, H, W)`` in ``folder/labels.u8`` (``dtype``, uint8 by default);
    ``done`` samples are valid.

    Plain positioned reads and writes (not a memory map, whose touched pages would count as
    the process's memory); ``meta.json`` records the key the labels belong to and how many
    samples are written and flushed, so an interrupted run picks up where it stopped.
    """

    def __init__(self, folder: Path, key: str, n: int, shape: tuple[int, int, int],
                 dtype: torch.dtype = torch.uint8) -> None:
        self.folder = Path(folder)
        self.key, self.n, self.shape, self.dtype = key, n, tuple(shape), dtype
        self.folder.mkdir(parents=True, exist_ok=True)
        self._numpy = torch.empty(0, dtype=dtype).numpy().dtype
        self.sample_bytes = int(np.prod(self.shape)) * self._numpy.itemsize
        meta_path = self.folder / "meta.json"
        self.path = self.folder / "labels.u8"
        meta = _read_meta(meta_path)
        fresh = (meta is None or meta.get("key") != key
                 or tuple(meta.get("shape", ())) != self.shape or not self.path.is_file()
                 or meta.get("dtype", "uint8") != self._numpy.name
                 or not isinstance(meta.get("done"), int))
        if fresh:
            with open(self.path, "wb") as stream:
                stream.truncate(n * self.sample_bytes)
        self.done = 0 if fresh else int(meta["done"])
        self._stream = open(self.path, "r+b")  # noqa: SIM115 (kept open for the whole run)
        if fresh:
            self._write_meta()

    def _write_meta(self) -> None:
        write_json(self.folder / "meta.json",
                   {"key": self.key, "n": self.n, "shape": list(self.shape), "done": self.done,
                    "dtype": self._numpy.name})

    def write(self, start: int, codes: torch.Tensor) -> None:
        """Store the codes of samples ``start ...`` (not yet marked done: see ``commit``)."""
        self._stream.seek(start * self.sample_bytes)
        self._stream.write(codes.to(self.dtype).cpu().contiguous().numpy().tobytes())

    def commit(self, done: int) -> None:
        """Flush to disk and mark the first ``done`` samples valid."""
        self._stream.flush()
        os.fsync(self._stream.fileno())
        if done > self.done:
            self.done = done
            self._write_meta()

    def read(self, start: int, stop: int) -> torch.Tensor:
        """``(stop - start, K, H, W)`` codes."""
        self._stream.seek(start * self.sample_bytes)
        data = self._stream.read((stop - start) * self.sample_bytes)
        codes = np.frombuffer(data, dtype=self._numpy).reshape(stop - start, *self.shape)
        return torch.from_numpy(codes.copy())

    def close(self) -> None:
        self._stream.close()
