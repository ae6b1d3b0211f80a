"""A folder of the user's own images as a probe set, labelled by a segmenter (``folder:DIR``).

The folder holds SceneWorld scenes saved as PNGs, so the segmenter's labels can be compared
with the world's exact labels for the same images.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gandissect.cli import main
from gandissect.models.registry import shipped_path
from gandissect.netdissect import FolderProbe, SceneWorldProbe
from gandissect.netdissect.folder import image_files, load_image

SEED, N, SIZE = 1001, 8, 64

needs_shipped = pytest.mark.skipif(
    not (shipped_path("segmenter").is_file() and shipped_path("classifier").is_file()),
    reason="the shipped segmenter and classifier are not in models/")


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """Scenes 0..7 of the held-out world as PNGs in nested folders (path order = scene order),
    with a file that is not an image beside them."""
    from gandissect.world import render_batch

    folder = tmp_path_factory.mktemp("photos")
    rendered = render_batch(SEED, range(N), SIZE)
    for i, image in enumerate(rendered["image"]):
        sub = folder / ("indoor" if i < 4 else "outdoor/more")
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(sub / f"scene_{i:04d}.{'PNG' if i == 5 else 'png'}")
    (folder / "notes.txt").write_text("not an image")
    return folder


@pytest.fixture(scope="module")
def segmenter():
    from gandissect.models.specs import resolve_segmenter

    if not shipped_path("segmenter").is_file():
        pytest.skip("the shipped segmenter is not in models/")
    return resolve_segmenter("sceneworld")


class CountingSegmenter:
    """The segmenter, counting its calls."""

    def __init__(self, inner):
        self.inner, self.calls = inner, 0
        self.categories, self.concepts = inner.categories, inner.concepts

    def segment(self, images):
        self.calls += 1
        return self.inner.segment(images)


def test_files_are_found_recursively_in_path_order(scenes):
    names = [path.name for path in image_files(scenes)]
    assert names == [f"scene_{i:04d}.{'PNG' if i == 5 else 'png'}" for i in range(N)]


def test_the_segmenter_labels_the_images_as_the_world_does(scenes, segmenter):
    probe = FolderProbe(scenes, segmenter, size=SIZE)
    world = SceneWorldProbe(SEED, N, SIZE)
    assert probe.categories == ("object", "part", "material", "color")
    assert probe.concepts["object"] == world.concepts["object"]
    (mine,) = probe.batches(N)
    (truth,) = world.batches(N)
    assert torch.equal(mine.ids, truth.ids) and torch.equal(mine.images, truth.images)
    assert mine.labels.shape == (N, 4, SIZE, SIZE)
    for k, category in enumerate(probe.categories):
        exact = truth.labels[:, world.categories.index(category)]
        if category == "color":  # computed from the pixels by the world's own rule
            assert torch.equal(mine.labels[:, k], exact)
        else:  # learned: the shipped segmenter's pixel accuracy is about 0.99
            assert (mine.labels[:, k] == exact).float().mean() > 0.97, category


def test_each_image_is_segmented_once_over_both_passes(scenes, segmenter):
    counting = CountingSegmenter(segmenter)
    probe = FolderProbe(scenes, counting, size=SIZE)
    first = [batch.labels for batch in probe.batches(3)]
    second = [batch.labels for batch in probe.batches(3)]
    assert counting.calls == 3  # batches of 3, 3 and 2, in the first pass only
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    folder = probe._temporary.name
    probe.close()
    assert not Path(folder).exists()


def test_images_are_resized_and_centre_cropped(tmp_path, segmenter):
    pixels = np.zeros((48, 80, 3), dtype=np.uint8)
    pixels[:, 16:64] = 255  # the centre 48 x 48 is white
    Image.fromarray(pixels).save(tmp_path / "wide.png")
    image = load_image(tmp_path / "wide.png", 24)
    assert image.shape == (3, 24, 24)
    assert bool((image[:, :, 1:-1] > 0.99).all()) and float(image.min()) > 0  # only the edge
    # columns blend in some of the black margins, which the crop cut off
    probe = FolderProbe(tmp_path, segmenter, size=30)
    (batch,) = probe.batches(4)
    assert batch.images.shape == (1, 3, 30, 30) and batch.labels.shape == (1, 4, 32, 32)


def test_empty_missing_and_unreadable_folders_say_so(tmp_path, segmenter):
    with pytest.raises(ValueError, match="does not exist"):
        FolderProbe(tmp_path / "nowhere", segmenter)
    (tmp_path / "readme.txt").write_text("no images here")
    with pytest.raises(ValueError, match="holds no images"):
        FolderProbe(tmp_path, segmenter)
    Image.new("RGB", (8, 8)).save(tmp_path / "good.png")
    (tmp_path / "broken.jpg").write_bytes(b"\x00not a jpeg at all")
    with pytest.raises(ValueError, match="1 of 2 images cannot be read: .*broken.jpg"):
        FolderProbe(tmp_path, segmenter)


@needs_shipped
def test_netdissect_on_a_folder_in_one_command(scenes, tmp_path, capsys):
    out = tmp_path / "nd"
    assert main(["netdissect", "--classifier", "sceneworld", "--dataset", f"folder:{scenes}",
                 "--layer", "layer4", "--batch", "4", "--images", "1", "--top-k", "2",
                 "--no-html", "--quiet", "--device", "cpu", "--out", str(out)]) == 0
    settings = json.loads((out / "dissect.json").read_text())["settings"]
    assert settings["dataset"] == f"folder:{scenes}" and settings["n"] == N
    assert settings["size"] == 64 and settings["categories"] == ["object", "part", "material",
                                                                  "color"]
    assert "layer4: " in capsys.readouterr().out


@needs_shipped
@pytest.mark.parametrize("argv, message", [
    (["--dataset", "sceneworld", "--segmenter", "sceneworld"], "--segmenter labels a folder"),
    (["--dataset", "pictures:x"], "use sceneworld, broden:DIR, folder:DIR or masks:DIR"),
])
def test_netdissect_dataset_spellings_that_do_not_fit(tmp_path, capsys, argv, message):
    assert main(["netdissect", *argv, "--layer", "layer4", "--quiet", "--device", "cpu",
                 "--out", str(tmp_path / "nd")]) == 2
    assert message in capsys.readouterr().err
