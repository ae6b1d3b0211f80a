"""``gandissect invert`` and ``gandissect edit-image`` on the shipped generator, with one step
per stage: the files and JSON they write, edits confined to the painted cells, and mistakes
reported in one line before any inversion."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import SHIPPED_REASON, shipped_generator_missing
from PIL import Image

from gandissect.cli import main
from gandissect.world import render

pytestmark = pytest.mark.skipif(shipped_generator_missing(), reason=SHIPPED_REASON)

FAST = ["--steps", "1", "--no-encoder"]


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> tuple[str, np.ndarray]:
    folder = tmp_path_factory.mktemp("scene")
    pixels = render(1000, 7, 64).image
    Image.fromarray(pixels).save(folder / "scene.png")
    return str(folder / "scene.png"), pixels


def test_invert_writes_reconstruction_and_json(scene, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["invert", "--image", scene[0], *FAST, "--out", str(out), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    written = json.loads((out / "inversion.json").read_text())
    assert printed == written
    assert {"psnr", "stages", "object_agreement", "seconds", "layer", "start"} <= set(written)
    assert list(written["stages"]) == ["start", "latent", "features", "adapt"]
    assert 0 <= written["object_agreement"] <= 1 and written["start"] == "random starts"
    with Image.open(out / "reconstruction.png") as image:
        assert image.size == (64, 64) and image.mode == "RGB"
    assert not list(out.glob(".*.tmp"))  # nothing half-written left


def test_invert_resizes_a_larger_picture(scene, tmp_path, capsys):
    big = tmp_path / "big.png"
    Image.fromarray(scene[1]).resize((128, 128)).save(big)
    out = tmp_path / "out"
    assert main(["invert", "--image", str(big), *FAST, "--no-adapt", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "resized" in captured.err and "PSNR" in captured.out
    assert "adapt" not in json.loads((out / "inversion.json").read_text())["stages"]


def test_edit_image_changes_only_painted_cells(scene, tmp_path, capsys):
    mask = np.zeros((128, 128), np.uint8)  # twice the generator's size: pooled to cells
    mask[34:60, 70:100] = 255  # pixels 17..29, 35..49 at 64 px: cells 2..3, 4..6 of 8
    Image.fromarray(mask).save(tmp_path / "mask.png")
    out = tmp_path / "edit"
    assert main(["edit-image", "--image", scene[0], *FAST, "--concept", "tree", "--mode",
                 "remove", "--mask", str(tmp_path / "mask.png"), "--out", str(out),
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result == json.loads((out / "edit.json").read_text())
    assert result["concept"] == "object/tree" and len(result["units"]) == 30
    assert result["cells_painted"] == 2 * 3
    with Image.open(out / "edited.png") as image:
        edited = np.asarray(image)
    cells = np.zeros((64, 64), bool)
    cells[16:32, 32:56] = True
    assert np.array_equal(edited[~cells], scene[1][~cells])
    assert (edited[cells] != scene[1][cells]).any()
    assert result["pixels_changed"] == int((edited != scene[1]).any(-1).sum())
    assert (out / "reconstruction.png").is_file()


def test_mistakes_are_one_line_before_inverting(scene, tmp_path, capsys):
    mask = tmp_path / "mask.png"
    Image.fromarray(np.full((50, 50), 255, np.uint8)).save(mask)
    common = ["edit-image", "--image", scene[0], *FAST, "--mode", "draw", "--out",
              str(tmp_path / "o")]
    assert main([*common, "--concept", "tree", "--mask", str(mask)]) == 2
    assert "50x50" in capsys.readouterr().err
    Image.fromarray(np.full((64, 64), 255, np.uint8)).save(mask)
    assert main([*common, "--concept", "unicorn", "--mask", str(mask)]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "object/tree" in error and "invert" not in error
    assert main(["invert", "--image", str(tmp_path / "none.png"), "--out",
                 str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
