"""``gandissect attribute``: a folder of images in, the predictions and one overlay PNG per
method and image out, indexed by ``attributions.json``; a user's mistake is one line before any
work, and leaves nothing behind."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gandissect.cli import main


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    """Three SceneWorld scenes at 64 px, and a fourth enlarged to 128 x 96 in a subfolder."""
    from gandissect.world import render_batch

    folder = tmp_path_factory.mktemp("scenes")
    rendered = render_batch(1001, range(4), 64)["image"]
    for index in range(3):
        Image.fromarray(rendered[index]).save(folder / f"scene{index}.png")
    (folder / "big").mkdir()
    Image.fromarray(rendered[3]).resize((128, 96), Image.Resampling.BILINEAR).save(
        folder / "big" / "scene3.png")
    return folder


@pytest.fixture(scope="module")
def classifier():
    from gandissect.models.inputs import preprocess_inside
    from gandissect.models.specs import resolve_classifier_and_preprocess

    return preprocess_inside(*resolve_classifier_and_preprocess("sceneworld", None)).eval()


def test_maps_and_predictions(scenes, classifier, tmp_path, capsys):
    from gandissect.attribute import GradCAM
    from gandissect.netdissect.folder import load_image
    from gandissect.visualize import overlay

    out = tmp_path / "maps"
    assert main(["attribute", "--classifier", "sceneworld", "--images", str(scenes),
                 "--methods", "gradcam,saliency", "--out", str(out), "--json", "--quiet",
                 "--device", "cpu"]) == 0
    printed = json.loads(capsys.readouterr().out)
    index = json.loads((out / "attributions.json").read_text())
    assert printed == index and index["input_size"] == 64
    files = [record["file"] for record in index["images"]]
    assert files == ["big/scene3.png", "scene0.png", "scene1.png", "scene2.png"]
    names = classifier.scene_names
    for record in index["images"]:
        assert set(record) >= {"file", "predicted", "probability", "maps"}
        assert set(record["maps"]) == {"gradcam", "saliency"}
        # the classifier's own argmax on the image as it sees it (64 px, [-1, 1])
        image = load_image(scenes / record["file"], 64)
        with torch.no_grad():
            probabilities = torch.softmax(classifier(image[None])[0], 0)
        assert record["predicted"] == names[int(probabilities.argmax())]
        assert record["probability"] == pytest.approx(float(probabilities.max()), abs=1e-5)
        for png in record["maps"].values():
            with Image.open(out / png) as picture:
                assert picture.format == "PNG" and picture.size == (64, 64)
        # the Grad-CAM map is of the predicted class: the same overlay, drawn by hand
        cam = GradCAM(classifier, "layer4").attribute(image[None],
                                                      target=int(probabilities.argmax()))
        cam = torch.nn.functional.interpolate(cam[:, None], size=(64, 64), mode="bilinear",
                                              align_corners=False)[0, 0]
        expected = overlay(image, cam, bar_height=0,
                           mode="signed" if bool((cam < 0).any()) else "absolute")
        drawn = np.asarray(Image.open(out / record["maps"]["gradcam"]).convert("RGB"))
        assert np.abs(drawn.astype(int) - expected.astype(int)).max() <= 1
    # the 64 px scenes are read with their exact pixels
    rendered = np.array(Image.open(scenes / "scene0.png"))
    assert torch.equal(load_image(scenes / "scene0.png", 64),
                       torch.from_numpy(rendered).permute(2, 0, 1).float() / 127.5 - 1.0)


def _refused(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("gandissect: error: ") and "\n" not in error
    return error


def test_mistakes_are_one_line_and_leave_nothing(scenes, tmp_path, capsys, monkeypatch):
    from gandissect.models import specs

    def no_loading(*args, **kwargs):
        raise AssertionError("the classifier was loaded before the options were checked")

    monkeypatch.setattr(specs, "resolve_classifier_and_preprocess", no_loading)
    out = tmp_path / "out"
    base = ["attribute", "--images", str(scenes), "--methods", "gradcam", "--out", str(out),
            "--quiet", "--device", "cpu"]

    assert "does not exist" in _refused([*base, "--images", str(tmp_path / "missing")], capsys)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    assert "holds no images" in _refused([*base, "--images", str(tmp_path / "empty")], capsys)
    error = _refused([*base, "--methods", "gradcam,shap"], capsys)
    assert "shap" in error and "saliency" in error and "lrp" in error and "all" in error
    assert "--methods" in _refused([*base, "--methods", " , "], capsys)
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert "not a folder" in _refused([*base, "--out", str(blocker)], capsys)
    assert not out.exists()


def test_unreadable_image_fails_before_any_work(scenes, tmp_path, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "a.png").write_bytes((scenes / "scene0.png").read_bytes())
    (folder / "b.png").write_bytes(b"not a png")
    out = tmp_path / "out"
    error = _refused(["attribute", "--images", str(folder), "--methods", "saliency", "--out",
                      str(out), "--quiet", "--device", "cpu"], capsys)
    assert "b.png" in error
    assert not out.exists()  # read before any work: no map of a.png either
