"""A folder of the user's own images as a probe set, labelled by a segmenter.

As the 2020 PNAS dissection code does for classifiers: any images (``.jpg``, ``.jpeg``,
``.png``, found recursively, in path order) are resized to the classifier's input size (shorter
side to ``size``, then the centre ``size x size``), and the segmenter's label maps stand in for
hand-made labels. The labels are only as good as the segmenter: the shipped one knows
SceneWorld's concepts; a real-image segmenter plugs in through ``--segmenter``.

Every file is opened once up front, so an unreadable image or an empty folder fails before any
long job. Each image is segmented once: its codes go to a ``LabelStore`` (``cache``, or a
temporary folder), which the dissection's second pass reads back.

    probe = FolderProbe("photos/", resolve_segmenter("sceneworld"), size=224)
    result = netdissect(classifier, "layer4", probe, preprocess=preprocess_for(classifier))
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from gandissect.errors import UserError
from gandissect.netdissect.probe import ProbeBatch, ProbeSet
from gandissect.torchutil import model_device

__all__ = ["IMAGE_SUFFIXES", "FolderProbe", "image_files", "load_image"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
_SHOWN = 5  # files named in an error message


def image_files(directory: str | Path) -> list[Path]:
    """The images under ``directory`` (recursively, by suffix, any case), in path order."""
    directory = Path(directory).expanduser()
    if not directory.is_dir():
        raise UserError(f"image folder {directory} does not exist")
    files = sorted(path for path in directory.rglob("*")
                   if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file())
    if not files:
        raise UserError(f"{directory} holds no images ({', '.join(IMAGE_SUFFIXES)} files, "
                        "searched recursively)")
    return files


def _open(path: Path):
    from PIL import Image, UnidentifiedImageError

    try:
        return Image.open(path)
    except (UnidentifiedImageError, OSError) as error:
        raise UserError(f"cannot read image {path}: {error}") from None


def _rgb(image):
    """An RGB copy of a PIL image of any mode; 16-bit grey is scaled to 8 bits (``convert``
    would clip it at 255, turning it white)."""
    from PIL import Image

    if image.mode.startswith("I"):
        grey = np.asarray(image, dtype=np.float64) / 257
        image = Image.fromarray(grey.round().clip(0, 255).astype(np.uint8))
    return image.convert("RGB")


def load_image(path: str | Path, size: int) -> torch.Tensor:
    """``(3, size, size)`` float in [-1, 1]: shorter side resized to ``size`` (antialiased
    bilinear), centre cropped; images already ``size x size`` keep their exact pixels."""
    from PIL import Image

    path = Path(path)
    try:
        with _open(path) as image:
            image = _rgb(image)
            width, height = image.size
            scale = size / min(width, height)
            if (width, height) != (size, size):
                image = image.resize((max(size, round(width * scale)),
                                      max(size, round(height * scale))), Image.Resampling.BILINEAR)
                left, top = (image.width - size) // 2, (image.height - size) // 2
                image = image.crop((left, top, left + size, top + size))
            pixels = np.asarray(image, dtype=np.uint8)
    except OSError as error:  # a file whose header reads but whose data does not
        raise UserError(f"cannot read image {path}: {error}; remove or convert it (JPEG or "
                        "PNG)") from None
    return torch.from_numpy(pixels.copy()).permute(2, 0, 1).float() / 127.5 - 1.0


def _check_readable(files: Sequence[Path]) -> None:
    bad = []
    for path in files:
        try:
            with _open(path) as image:
                image.verify()  # cheap checks of the data too (a truncated PNG fails here)
        except UserError as error:
            bad.append(str(error).removeprefix("cannot read image "))
        except (OSError, SyntaxError) as error:  # what verify() raises
            bad.append(f"{path}: {error}")
    if bad:
        shown = "; ".join(bad[:_SHOWN]) + (f" (and {len(bad) - _SHOWN} more)"
                                           if len(bad) > _SHOWN else "")
        raise UserError(f"{len(bad)} of {len(files)} images cannot be read: {shown}; remove "
                        "or convert them (JPEG or PNG)")


class FolderProbe(ProbeSet):
    """The images of a folder, labelled by ``segmenter`` (see the module docstring).

    Args:
        directory: searched recursively for ``.jpg`` / ``.jpeg`` / ``.png`` files.
        segmenter: ``segment(images) -> {category: (N, H, W) codes}`` with ``categories`` and
            ``concepts`` (``gandissect.models.specs.resolve_segmenter``).
        size: the side the images are resized and cropped to (the classifier's input size).
        n: the first ``n`` images in path order (None: all).
        label_size: the side the segmenter sees (default ``size`` rounded up to a multiple of
            8, which encoder-decoder segmenters need); the label maps have that size.
        cache: a folder for the label codes (default: a temporary one, removed with the probe).
        segmenter_name: how the user spelled the segmenter (for the domain warning).
    """

    def __init__(self, directory: str | Path, segmenter: Any, size: int = 224,
                 n: int | None = None, label_size: int | None = None,
                 cache: str | Path | None = None, segmenter_name: str | None = None) -> None:
        from gandissect.dissect.labels import ConceptTable

        if not isinstance(size, int) or size < 8:
            raise UserError(f"image size must be an integer of at least 8, got {size}")
        if n is not None and n < 1:
            raise UserError(f"need at least one image (n >= 1), got {n}")
        self.directory = Path(directory).expanduser()
        self.files = image_files(self.directory)[:n]
        _check_readable(self.files)
        self.segmenter, self.segmenter_name = segmenter, segmenter_name
        self.table = ConceptTable.from_segmenter(segmenter)
        self.categories = self.table.categories
        self.concepts = {c: list(self.table.codes[c]) for c in self.categories}
        self.size = size
        self.label_size = label_size or -(-size // 8) * 8
        self._cache = cache
        self._temporary: tempfile.TemporaryDirectory | None = None
        self._store = None

    def __len__(self) -> int:
        return len(self.files)

    def images(self, ids: Sequence[int]) -> torch.Tensor:
        return torch.stack([load_image(self.files[int(i)], self.size) for i in ids])

    def _segmenter_input(self, images: torch.Tensor) -> torch.Tensor:
        """``images`` as the segmenter sees them: at ``label_size``, on its device."""
        if self.label_size != self.size:
            images = F.interpolate(images, size=(self.label_size, self.label_size),
                                   mode="bilinear", align_corners=False, antialias=True)
        return images.to(model_device(self.segmenter))

    def segment(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, K, label_size, label_size)`` codes of ``images`` by the segmenter."""
        with torch.no_grad():
            labels = self.segmenter.segment(self._segmenter_input(images))
        return self.table.stack({c: torch.as_tensor(v).cpu() for c, v in labels.items()})

    def domain_check(self):
        """The segmenter's domain check (``gandissect.domain``) on the first images."""
        from gandissect.domain import DOMAIN_IMAGES, check_domain

        images = self.images(range(min(len(self), DOMAIN_IMAGES)))
        return check_domain(self.segmenter, self._segmenter_input(images), self.segmenter_name)

    def _label_store(self):
        from gandissect.dissect.identity import fingerprint, settings_key
        from gandissect.dissect.labels import LabelStore

        if self._store is None:
            if self._cache is None:
                self._temporary = tempfile.TemporaryDirectory(prefix="gandissect-folder-")
            folder = Path(self._cache or self._temporary.name)
            stats = [(str(p.relative_to(self.directory)), p.stat().st_size, p.stat().st_mtime_ns)
                     for p in self.files]
            key = settings_key({"files": stats, "segmenter": fingerprint(self.segmenter),
                                "size": self.size, "label_size": self.label_size})
            self._store = LabelStore(folder, key, len(self), (len(self.categories),
                                                              self.label_size, self.label_size),
                                     self.table.dtype)
        return self._store

    def batches(self, size: int, start: int = 0) -> Iterator[ProbeBatch]:
        store = self._label_store()
        for first in range(start, len(self), size):
            stop = min(first + size, len(self))
            images = self.images(range(first, stop))
            if store.done >= stop:
                labels = store.read(first, stop)
            else:
                labels = self.segment(images)
                store.write(first, labels)
                if store.done >= first:  # only a contiguous prefix counts as stored
                    store.commit(stop)
            yield ProbeBatch(torch.arange(first, stop), images, labels.long())

    def close(self) -> None:
        """Close the label store and remove a temporary one (idempotent)."""
        if getattr(self, "_store", None) is not None:
            self._store.close()
            self._store = None
        if getattr(self, "_temporary", None) is not None:
            self._temporary.cleanup()
            self._temporary = None

    def __del__(self) -> None:
        self.close()

    def describe(self) -> dict[str, Any]:
        return {"dataset": f"folder:{self.directory}", "n": len(self), "size": self.size,
                "label_size": self.label_size, "segmenter": type(self.segmenter).__name__}
