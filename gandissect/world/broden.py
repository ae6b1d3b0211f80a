"""Broden-format export of SceneWorld, and a loader for real Broden directories.

Layout (as in the Broden probe set of Network Dissection)::

    index.csv     image,split,ih,iw,sh,sw,color,object,part,material,scene,texture
                  pixel categories name label PNGs (several joined by ';'); image-level
                  categories (scene, texture) hold global label numbers (joined by ';')
    category.csv  name,first,last,count,frequency
    label.csv     number,name,category,frequency,coverage,syns   (label 0 is "-")
    c_<cat>.csv   code,number,name,frequency,coverage            (per-category codes)
    images/       images and label PNGs; a label PNG stores the global number as R + 256*G

Global numbers run over all categories. Names are made unique Broden-style: scenes get "-s",
colours "-c", and a name already used by an earlier category gets "-<first letter>" (material
"water" becomes "water-m"); the loader strips these suffixes again.
"""

from __future__ import annotations

import csv
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from gandissect.errors import UserError
from gandissect.fileio import empty_folder
from gandissect.world.concepts import CONCEPTS, Concept, concepts
from gandissect.world.dataset import image_to_tensor
from gandissect.world.render import check_size, render

INDEX_COLUMNS = ("image", "split", "ih", "iw", "sh", "sw",
                 "color", "object", "part", "material", "scene", "texture")
PIXEL_COLUMNS = ("color", "object", "part", "material")
SUFFIX = {"scene": "-s", "color": "-c"}
SUBDIR = "sceneworld"


@dataclass(frozen=True)
class Numbering:
    """SceneWorld's global Broden label numbering."""

    names: dict[tuple[str, str], str]  # (category, name) -> unique Broden name
    numbers: dict[tuple[str, int], int]  # (category, code) -> global number

    @staticmethod
    def build() -> Numbering:
        names, numbers, used = {}, {}, set()
        for number, c in enumerate(CONCEPTS, start=1):
            unique = c.name + SUFFIX.get(c.category, "")
            if unique in used:
                unique = f"{c.name}-{c.category[0]}"
            used.add(unique)
            names[(c.category, c.name)] = unique
            numbers[(c.category, c.code)] = number
        return Numbering(names, numbers)

    def lut(self, category: str) -> np.ndarray:
        """Array mapping a category code to its global number."""
        table = np.zeros(256, dtype=np.int64)
        for c in concepts(category):
            table[c.code] = self.numbers[(category, c.code)]
        return table


def encode_labels(numbers: np.ndarray) -> Image.Image:
    """Global label numbers (H, W) -> an RGB PNG image with number = R + 256 * G."""
    rgb = np.zeros(numbers.shape + (3,), dtype=np.uint8)
    rgb[..., 0] = numbers % 256
    rgb[..., 1] = numbers // 256
    return Image.fromarray(rgb)


def decode_labels(image: Image.Image) -> np.ndarray:
    """A Broden label PNG -> (H, W) int64 global label numbers (R + 256 * G)."""
    rgb = np.asarray(image.convert("RGB")).astype(np.int64)
    return rgb[..., 0] + rgb[..., 1] * 256


class _Tally:
    """Per global label: images containing it and summed pixel fraction (coverage)."""

    def __init__(self) -> None:
        self.frequency: dict[int, int] = {}
        self.coverage: dict[int, float] = {}

    def add(self, numbers: np.ndarray) -> None:
        counts = np.bincount(numbers.ravel())
        for number in np.nonzero(counts)[0]:
            if number:
                n = int(number)
                self.frequency[n] = self.frequency.get(n, 0) + 1
                self.coverage[n] = self.coverage.get(n, 0.0) + counts[n] / numbers.size


def _write_sample(root: Path, i: int, seed: int, size: int, num: Numbering,
                  tally: _Tally) -> dict[str, str]:
    sample = render(seed, i, size)
    stem = f"{SUBDIR}/{i:08d}"
    Image.fromarray(sample.image).save(root / "images" / f"{stem}.png")
    row = {"image": f"{stem}.png", "split": "val" if i % 10 == 9 else "train",
           "ih": size, "iw": size, "sh": size, "sw": size, "texture": ""}
    for cat in PIXEL_COLUMNS:
        numbers = num.lut(cat)[sample.labels[cat]]
        row[cat] = ""
        if numbers.any():
            row[cat] = f"{stem}_{cat}.png"
            encode_labels(numbers).save(root / "images" / row[cat])
            tally.add(numbers)
    scene_number = num.numbers[("scene", sample.scene)]
    row["scene"] = str(scene_number)
    tally.add(np.array([scene_number]))
    return row


def _write_csv(path: Path, header: tuple[str, ...], rows: list) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def _write_tables(root: Path, num: Numbering, tally: _Tally) -> None:
    labels = [(0, "-", "-", 0, 0.0, "")]
    categories = []
    for cat in ("color", "object", "part", "material", "scene"):
        rows, in_cat = [], 0
        for c in concepts(cat):
            n = num.numbers[(cat, c.code)]
            freq, cov = tally.frequency.get(n, 0), round(tally.coverage.get(n, 0.0), 6)
            labels.append((n, num.names[(cat, c.name)], f"{cat}({freq})", freq, cov, ""))
            rows.append((c.code, n, num.names[(cat, c.name)], freq, cov))
            in_cat += freq
        _write_csv(root / f"c_{cat}.csv", ("code", "number", "name", "frequency", "coverage"),
                   rows)
        first, last = rows[0][1], rows[-1][1]
        categories.append((cat, first, last, len(rows), in_cat))
    labels.sort()
    _write_csv(root / "label.csv", ("number", "name", "category", "frequency", "coverage",
                                    "syns"), labels)
    _write_csv(root / "category.csv", ("name", "first", "last", "count", "frequency"),
               categories)


def export_broden(out_dir: str | os.PathLike, n: int, size: int = 64, seed: int = 0,
                  progress: bool = False) -> Path:
    """Render scenes ``0 .. n-1`` of world ``seed`` into a Broden-layout directory.

    Written to a temporary sibling directory and renamed into place at the end, so a
    half-written export never appears at ``out_dir``. Returns the output path.
    """
    if n <= 0:
        raise UserError(f"n must be positive, got {n}")
    check_size(size)
    out = empty_folder(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "images" / SUBDIR).mkdir(parents=True)
    try:
        num, tally = Numbering.build(), _Tally()
        steps = range(n)
        if progress:
            from tqdm import tqdm

            steps = tqdm(steps, desc="export", unit="img")
        rows = [_write_sample(tmp, i, seed, size, num, tally) for i in steps]
        _write_csv(tmp / "index.csv", INDEX_COLUMNS,
                   [[row[c] for c in INDEX_COLUMNS] for row in rows])
        _write_tables(tmp, num, tally)
        if out.exists():
            out.rmdir()  # empty, checked above
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _plain_name(name: str, category: str) -> str:
    """Strip Broden's category suffix ("red-c" -> "red", "street-s" -> "street")."""
    suffix = f"-{category[0]}"
    return name[: -len(suffix)] if name.endswith(suffix) else name


def _legend_color(category: str, name: str) -> tuple[int, int, int]:
    for c in CONCEPTS:
        if c.category == category and c.name == name:
            return c.color
    h = sum((i + 1) * ord(ch) for i, ch in enumerate(name)) * 2654435761 % 2**24
    return (h >> 16 & 255, h >> 8 & 255, h & 255)


class BrodenDataset(Dataset):
    """A Broden-layout directory (real Broden or a SceneWorld export) as a dataset.

    Items are dicts: ``image`` float32 (3, H, W) in [-1, 1]; each pixel category an int64
    (H, W) map of per-category codes (0 = none; where an image has several PNGs for one
    category, the first PNG's label wins and later ones fill its unlabelled pixels); each
    image-level category (scene, texture) an int64 scalar code (the first listed; 0 = none).
    ``size`` resizes images (bilinear) and label maps (nearest) to size x size; otherwise
    label maps keep their own resolution (sh x sw). ``concepts`` lists the loaded concepts.
    """

    def __init__(self, directory: str | os.PathLike, categories: list[str] | None = None,
                 size: int | None = None) -> None:
        self.root = Path(directory)
        if not (self.root / "index.csv").is_file():
            raise UserError(f"{self.root} is not a Broden directory (no index.csv)")
        self.rows = _read_csv(self.root / "index.csv")
        self.size = size
        header = self.rows[0] if self.rows else {}
        present = [c for c in header if c not in INDEX_COLUMNS[:6]]
        wanted = list(categories) if categories is not None else present
        self.categories = tuple(c for c in wanted if c in present)
        missing = [c for c in wanted if c not in present]
        if missing:
            raise UserError(f"categories {missing} not in {self.root}; found {present}")
        self.image_level = tuple(c for c in self.categories if self._is_image_level(c))
        self.concepts, self._codes = self._load_concepts()

    def _is_image_level(self, category: str) -> bool:
        if category in PIXEL_COLUMNS or category in ("scene", "texture"):
            return category in ("scene", "texture")
        values = [r[category] for r in self.rows if r[category]]
        return bool(values) and all(t.strip().isdigit() for v in values[:50]
                                    for t in v.split(";"))

    def _load_concepts(self) -> tuple[tuple[Concept, ...], dict[str, np.ndarray]]:
        labels = {int(r["number"]): r for r in _read_csv(self.root / "label.csv")}
        found, codes = [], {}
        top = max(labels) if labels else 0
        for cat in self.categories:
            table = np.zeros(top + 1, dtype=np.int64)
            for code, number, name in self._category_codes(cat, labels):
                if number <= top:
                    table[number] = code
                plain = _plain_name(name, cat)
                found.append(Concept(plain, cat, code, _legend_color(cat, plain)))
            codes[cat] = table
        return tuple(found), codes

    def _category_codes(self, cat: str, labels: dict) -> list[tuple[int, int, str]]:
        path = self.root / f"c_{cat}.csv"
        if path.is_file():
            return [(int(r["code"]), int(r["number"]), r["name"]) for r in _read_csv(path)]
        members = [n for n, r in sorted(labels.items())
                   if n and any(part.split("(")[0] == cat for part in r["category"].split(";"))]
        return [(code, n, labels[n]["name"]) for code, n in enumerate(members, start=1)]

    def __len__(self) -> int:
        return len(self.rows)

    def _pixel_labels(self, row: dict[str, str], cat: str) -> np.ndarray:
        shape = (int(row["sh"]), int(row["sw"]))
        out = np.zeros(shape, dtype=np.int64)
        table = self._codes[cat]
        for name in filter(None, row[cat].split(";")):
            with Image.open(self.root / "images" / name) as im:
                numbers = decode_labels(im)
            layer = table[np.minimum(numbers, len(table) - 1)]
            out = np.where(out == 0, layer, out)
        if self.size:
            out = np.asarray(Image.fromarray(out.astype(np.int32)).resize(
                (self.size, self.size), Image.NEAREST)).astype(np.int64)
        return out

    def _image_level(self, row: dict[str, str], cat: str) -> int:
        tokens = [t for t in row[cat].split(";") if t.strip()]
        if not tokens:
            return 0
        number = int(tokens[0])
        table = self._codes[cat]
        return int(table[number]) if number < len(table) else 0

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        row = self.rows[index]
        with Image.open(self.root / "images" / row["image"]) as im:
            image = im.convert("RGB")
            if self.size:
                image = image.resize((self.size, self.size), Image.BILINEAR)
            item = {"image": image_to_tensor(np.asarray(image))}
        for cat in self.categories:
            if cat in self.image_level:
                item[cat] = torch.tensor(self._image_level(row, cat), dtype=torch.long)
            else:
                item[cat] = torch.from_numpy(self._pixel_labels(row, cat))
        return item
