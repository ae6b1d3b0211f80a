"""A folder of the user's own annotated images as a probe set (``masks:DIR``): Network
Dissection on hand-made labels instead of a segmenter's.

The layout follows the index PNGs of ADE20K and Pascal VOC (one label code per pixel):

    DIR/images/NAME.jpg         the images (.jpg, .jpeg or .png; subfolders allowed)
    DIR/labels/NAME.png         NAME's label codes: a grey (8 or 16 bit) or palette PNG of the
                                image's size, 0 where nothing is labelled
    DIR/labels.txt              the names by code, one a line, the first line for code 0

or, with several categories (e.g. objects and their parts), one label folder per category:

    DIR/labels/object/NAME.png, DIR/labels/part/NAME.png, ...
    DIR/labels.json             {"object": ["background", "tree", ...], "part": [...]}

``labels.json`` may also be a plain list of names (one category, like ``labels.txt``). Code 0
is "none" whatever its name; code 255 is Pascal VOC's "void" border and counts as none unless
the list names 256 codes or more. A single list's category is ``object``. One label per pixel
per category: overlapping concepts go to different categories.

Images are resized as ``folder:DIR`` does (shorter side to ``size``, centre crop) and their
labels follow by nearest-neighbour sampling. The layout, every label file and its size are
checked up front; a code beyond the list is reported when its image is read.

    probe = MaskProbe("my_annotations/", size=224)
    result = netdissect(classifier, "layer4", probe, preprocess=preprocess_for(classifier))
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gandissect.errors import UserError
from gandissect.netdissect.folder import image_files, load_image
from gandissect.netdissect.probe import ProbeBatch, ProbeSet

__all__ = ["LABEL_MODES", "MaskProbe", "read_label_list"]

LABEL_MODES = ("1", "L", "P", "I;16", "I;16B", "I;16L", "I")  # one code per pixel
VOID = 255  # Pascal VOC's unlabelled border
_SHOWN = 5  # files named in an error message


def _few(items: Sequence[Any]) -> str:
    return ", ".join(map(str, items[:_SHOWN])) + (f" (and {len(items) - _SHOWN} more)"
                                                  if len(items) > _SHOWN else "")


def _names(names: Any, where: str) -> list[str]:
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise UserError(f"{where} must be a list of names by code (code 0 first)")
    names = [n.strip() for n in names]
    if len(names) < 2:
        raise UserError(f"{where} names no concept besides code 0")
    if not all(names[1:]):
        raise UserError(f"{where} has an empty name (code {names[1:].index('') + 1})")
    repeated = sorted({n for n in names[1:] if names[1:].count(n) > 1})
    if repeated:
        raise UserError(f"{where} names {_few(repeated)} twice; every code needs its own name")
    return ["none", *names[1:]]


def read_label_list(directory: Path) -> tuple[dict[str, list[str]], dict[str, Path]]:
    """The concepts by category (code 0 "none") and each category's label folder."""
    listed, text = directory / "labels.json", directory / "labels.txt"
    if listed.is_file():
        try:
            data = json.loads(listed.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise UserError(f"{listed} is not JSON: {error}") from None
        if isinstance(data, dict):
            if not data:
                raise UserError(f"{listed} names no category")
            return ({str(c): _names(v, f"{listed}[{c!r}]") for c, v in data.items()},
                    {str(c): directory / "labels" / str(c) for c in data})
        return {"object": _names(data, str(listed))}, {"object": directory / "labels"}
    if text.is_file():
        lines = text.read_text().rstrip("\n").split("\n")
        return {"object": _names(lines, str(text))}, {"object": directory / "labels"}
    raise UserError(f"masks:{directory} has no label list: write labels.txt (one name a line, "
                    "the first for code 0) or labels.json")


def _header(path: Path, what: str) -> tuple[str, tuple[int, int]]:
    """The mode and size of an image file (its header only)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.mode, image.size
    except (UnidentifiedImageError, OSError) as error:
        raise UserError(f"cannot read {what} {path}: {error}") from None


def _nearest(length: int, new: int) -> np.ndarray:
    """Source index of each of ``new`` output samples (pixel centres, nearest)."""
    return np.minimum(((np.arange(new) + 0.5) * (length / new)).astype(np.int64), length - 1)


class MaskProbe(ProbeSet):
    """The annotated images of ``directory`` (see the module docstring).

    Args:
        directory: holds ``images/``, ``labels/`` and ``labels.txt`` or ``labels.json``.
        size: the side the images and labels are resized and cropped to.
        n: the first ``n`` images in path order (None: all).
    """

    def __init__(self, directory: str | Path, size: int = 224, n: int | None = None) -> None:
        if not isinstance(size, int) or size < 8:
            raise UserError(f"image size must be an integer of at least 8, got {size}")
        if n is not None and n < 1:
            raise UserError(f"need at least one image (n >= 1), got {n}")
        self.directory = Path(directory).expanduser()
        if not self.directory.is_dir():
            raise UserError(f"masks:{directory}: no such folder")
        self.concepts, folders = read_label_list(self.directory)
        self.categories = tuple(self.concepts)
        images = self.directory / "images"
        if not images.is_dir():
            raise UserError(f"masks:{self.directory} has no images/ folder (images/NAME.jpg "
                            "beside labels/NAME.png)")
        self.files = image_files(images)[:n]
        self.size = size
        self.label_files = {c: [folders[c] / p.relative_to(images).with_suffix(".png")
                                for p in self.files] for c in self.categories}
        self._check_labels()

    def _check_labels(self) -> None:
        missing = [str(p.relative_to(self.directory)) for paths in self.label_files.values()
                   for p in paths if not p.is_file()]
        if missing:
            raise UserError(f"masks:{self.directory}: {len(missing)} label files are missing: "
                            f"{_few(missing)} (every images/NAME.* needs labels/NAME.png)")
        problems = []
        for index, image_path in enumerate(self.files):
            _, size = _header(image_path, "image")
            for category in self.categories:
                path = self.label_files[category][index]
                mode, found = _header(path, "label file")
                if mode not in LABEL_MODES:
                    problems.append(f"{path.name} is {mode}, not one code per pixel (grey or "
                                    "palette PNG)")
                elif found != size:
                    problems.append(f"{path.name} is {found[0]}x{found[1]}, its image "
                                    f"{size[0]}x{size[1]}")
        if problems:
            raise UserError(f"masks:{self.directory}: {len(problems)} label files do not fit: "
                            f"{_few(problems)}")

    def __len__(self) -> int:
        return len(self.files)

    def labels(self, index: int) -> torch.Tensor:
        """``(K, size, size)`` int64 codes of image ``index``, cropped as its image is."""
        from PIL import Image

        planes = []
        for category in self.categories:
            path = self.label_files[category][index]
            with Image.open(path) as image:
                codes = np.asarray(image).astype(np.int64)
            names = self.concepts[category]
            if len(names) <= VOID:
                codes[codes == VOID] = 0
            if codes.max(initial=0) >= len(names):
                raise UserError(f"{path} holds code {int(codes.max())}, but the label list "
                                f"names codes 0-{len(names) - 1} of {category!r}")
            planes.append(self._crop(codes))
        return torch.from_numpy(np.stack(planes))

    def _crop(self, codes: np.ndarray) -> np.ndarray:
        """The geometry of ``folder.load_image``, by nearest-neighbour sampling."""
        height, width = codes.shape
        if (width, height) == (self.size, self.size):
            return codes
        scale = self.size / min(width, height)
        new_w, new_h = max(self.size, round(width * scale)), max(self.size, round(height * scale))
        left, top = (new_w - self.size) // 2, (new_h - self.size) // 2
        rows = _nearest(height, new_h)[top:top + self.size]
        columns = _nearest(width, new_w)[left:left + self.size]
        return codes[rows[:, None], columns[None, :]]

    def images(self, ids: Sequence[int]) -> torch.Tensor:
        return torch.stack([load_image(self.files[int(i)], self.size) for i in ids])

    def batches(self, size: int, start: int = 0) -> Iterator[ProbeBatch]:
        for first in range(start, len(self), size):
            ids = range(first, min(first + size, len(self)))
            yield ProbeBatch(torch.as_tensor(list(ids)), self.images(ids),
                             torch.stack([self.labels(i) for i in ids]))

    def describe(self) -> dict[str, Any]:
        return {"dataset": f"masks:{self.directory}", "n": len(self), "size": self.size}
