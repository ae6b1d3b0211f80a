"""Broden export and loading: exact round trip, and a hand-made Broden-like directory."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image

from gandissect.errors import UserError
from gandissect.world import BrodenDataset, export_broden, render
from gandissect.world.broden import decode_labels, encode_labels
from gandissect.world.concepts import PIXEL_CATEGORIES


def test_export_round_trip(tmp_path):
    out = export_broden(tmp_path / "probe", n=12, size=32, seed=5)
    assert not list(tmp_path.glob(".*partial*"))
    ds = BrodenDataset(out)
    assert len(ds) == 12
    assert set(ds.categories) >= set(PIXEL_CATEGORIES) | {"scene"}
    for i in range(12):
        item, s = ds[i], render(5, i, 32)
        image = ((item["image"].numpy() + 1.0) * 127.5).round().astype(np.uint8)
        np.testing.assert_array_equal(image.transpose(1, 2, 0), s.image)
        for cat in PIXEL_CATEGORIES:
            np.testing.assert_array_equal(item[cat].numpy(), s.labels[cat])
        assert int(item["scene"]) == s.scene
    names = {(c.category, c.name) for c in ds.concepts}
    assert ("material", "water") in names and ("object", "water") in names
    assert ("color", "red") in names and ("scene", "lake") in names


def test_export_tables(tmp_path):
    out = export_broden(tmp_path / "probe", n=5, size=16, seed=0)
    with open(out / "index.csv") as f:
        header = next(csv.reader(f))
    assert header == ["image", "split", "ih", "iw", "sh", "sw", "color", "object", "part",
                      "material", "scene", "texture"]
    with open(out / "label.csv") as f:
        labels = list(csv.DictReader(f))
    assert labels[0]["name"] == "-" and labels[0]["number"] == "0"
    names = [r["name"] for r in labels]
    assert len(names) == len(set(names)) and "water-m" in names and "red-c" in names
    for cat in ("object", "part", "material", "color", "scene"):
        assert (out / f"c_{cat}.csv").is_file()


def test_export_refuses_non_empty_dir(tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file.txt").write_text("keep me")
    with pytest.raises(UserError, match="not empty"):
        export_broden(tmp_path / "busy", n=2, size=16)
    with pytest.raises(ValueError):
        export_broden(tmp_path / "new", n=0, size=16)
    (tmp_path / "empty").mkdir()
    export_broden(tmp_path / "empty", n=2, size=16)
    assert (tmp_path / "empty" / "index.csv").is_file()


def test_label_png_codec():
    numbers = np.array([[0, 1, 255], [256, 1197, 700]])
    assert (decode_labels(encode_labels(numbers)) == numbers).all()


def _write(path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


@pytest.fixture()
def tiny_broden(tmp_path):
    """Two 8x8 images with 4x4 segmentations; two part PNGs for one image; no c_part.csv."""
    root = tmp_path / "broden"
    (root / "images" / "ade").mkdir(parents=True)
    for i in range(2):
        Image.fromarray(np.full((8, 8, 3), 40 * (i + 1), np.uint8)).save(
            root / "images" / "ade" / f"im{i}.jpg")
    obj = np.array([[1, 1, 2, 2]] * 4)
    encode_labels(obj).save(root / "images" / "ade" / "im0_object.png")
    part_a = np.zeros((4, 4), int)
    part_a[0, 0] = 300  # global numbers above 255 use the G channel
    part_b = np.zeros((4, 4), int)
    part_b[0, 0], part_b[3, 3] = 301, 301
    encode_labels(part_a).save(root / "images" / "ade" / "im0_part_1.png")
    encode_labels(part_b).save(root / "images" / "ade" / "im0_part_2.png")
    _write(root / "index.csv",
           ["image", "split", "ih", "iw", "sh", "sw", "object", "part", "scene"],
           [["ade/im0.jpg", "train", 8, 8, 4, 4, "ade/im0_object.png",
             "ade/im0_part_1.png;ade/im0_part_2.png", "400"],
            ["ade/im1.jpg", "val", 8, 8, 4, 4, "", "", "401;400"]])
    _write(root / "category.csv", ["name", "first", "last", "count", "frequency"],
           [["object", 1, 2, 2, 1], ["part", 300, 301, 2, 1], ["scene", 400, 401, 2, 2]])
    _write(root / "label.csv", ["number", "name", "category", "frequency", "coverage", "syns"],
           [[0, "-", "-", 0, 0, ""], [1, "wall", "object(1)", 1, 0.5, ""],
            [2, "floor", "object(1)", 1, 0.5, ""], [300, "knob", "part(1)", 1, 0.1, ""],
            [301, "handle", "part(1)", 1, 0.1, ""], [400, "kitchen-s", "scene(2)", 2, 2, ""],
            [401, "bedroom-s", "scene(1)", 1, 1, ""]])
    _write(root / "c_object.csv", ["code", "number", "name", "frequency", "coverage"],
           [[1, 1, "wall", 1, 0.5], [2, 2, "floor", 1, 0.5]])
    _write(root / "c_scene.csv", ["code", "number", "name", "frequency", "coverage"],
           [[1, 400, "kitchen-s", 2, 2], [2, 401, "bedroom-s", 1, 1]])
    return root


def test_loads_hand_made_broden(tiny_broden):
    ds = BrodenDataset(tiny_broden)
    assert ds.categories == ("object", "part", "scene") and ds.image_level == ("scene",)
    first, second = ds[0], ds[1]
    assert first["image"].shape == (3, 8, 8)
    assert first["object"].tolist() == [[1, 1, 2, 2]] * 4
    part = first["part"].numpy()
    # the first PNG wins at (0, 0); the second fills (3, 3); codes come from label.csv order
    assert part[0, 0] == 1 and part[3, 3] == 2 and part.sum() == 3
    assert int(first["scene"]) == 1 and int(second["scene"]) == 2
    assert (second["object"] == 0).all() and (second["part"] == 0).all()
    names = {(c.category, c.name) for c in ds.concepts}
    assert ("scene", "kitchen") in names and ("part", "handle") in names


def test_hand_made_broden_resized_and_subset(tiny_broden):
    ds = BrodenDataset(tiny_broden, categories=["object"], size=16)
    item = ds[0]
    assert item["image"].shape == (3, 16, 16) and item["object"].shape == (16, 16)
    assert set(item) == {"image", "object"}
    with pytest.raises(ValueError, match="not in"):
        BrodenDataset(tiny_broden, categories=["texture"])
    with pytest.raises(UserError, match="not a Broden directory"):
        BrodenDataset(tiny_broden / "images")
