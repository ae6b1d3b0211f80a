"""The Paint tab on a real image, its callbacks called directly: an uploaded SceneWorld scene of
the held-out world is inverted (few steps), its trees are painted over with the tree brush in
remove mode, and only the painted cells change; Undo, Reset and a generated scene bring back
what they should; bad uploads are one line.
"""

import gradio as gr
import numpy as np
import pytest
import torch
from conftest import app_config, canvas_pictures, kinds
from PIL import Image

from gandissect.app import paint
from gandissect.app.canvas import paint_value
from gandissect.app.pictures import pixels
from gandissect.app.real import WORLD_SEED
from gandissect.app.session import Session
from gandissect.app.workspace import Workspace
from gandissect.hooks import forward_from
from gandissect.world import render
from gandissect.world.concepts import code_of
from gandissect.world.dataset import image_to_tensor

# Few steps keep the test short; the shipped generator's reconstruction of the scene is then
# about 25 dB, enough for its tree units to remove the scene's trees.
STEPS = {"starts": 4, "search": 5, "latent": 20, "features": 30, "adapt": 30}
SCENE = 1  # a church among trees (about a tenth of the picture)


@pytest.fixture(scope="module", params=kinds())
def kind(request):
    return request.param


@pytest.fixture(scope="module")
def ws(kind, tmp_path_factory):
    config = app_config(kind, tmp_path_factory.mktemp("cache"))
    config.invert_steps = STEPS
    workspace = Workspace.open(config)
    assert workspace.problem is None, workspace.problem
    yield workspace
    workspace.close()


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """The held-out world's scene as a PNG file, its picture and its tree mask."""
    sample = render(WORLD_SEED, SCENE, 64)
    path = tmp_path_factory.mktemp("upload") / "church.png"
    Image.fromarray(sample.image).save(path)
    return path, sample.image, sample.labels["object"] == code_of("tree", "object")


def cell_pixels(ws, cells) -> np.ndarray:
    """Layer cells ``(h, w)`` as the ``(H, W)`` pixels they cover."""
    side = ws.scenes.resolution // ws.scenes.cells[0]
    return np.repeat(np.repeat(cells.numpy() > 0, side, 0), side, 1)


def tree_share(ws, picture: np.ndarray, where: np.ndarray) -> float:
    """The share of ``where``'s pixels that the segmenter labels tree in ``picture``."""
    labels = ws.scenes.segment(image_to_tensor(picture)[None])["object"][0].numpy()
    return float((labels[where] == ws.scenes.concept("object/tree").code).mean())


def test_paint_the_trees_of_an_uploaded_scene_away(ws, kind, scene):
    path, image, trees = scene
    session, reports = Session(), []
    view = paint.invert_upload(ws, session, str(path), lambda *report: reports.append(report))
    inversion = session.inversion
    # the progress bar counted every step, in order, through the stages
    total = reports[-1][1]
    assert [r[0] for r in reports] == list(range(1, total + 1))
    assert {r[2] for r in reports} <= {"search", "latent", "features", "adapt"}
    assert "adapt" in {r[2] for r in reports}
    # the canvas shows the image itself; the status its name, the PSNR and the time
    pictures = canvas_pictures(view.canvas)
    assert np.array_equal(pictures["after"], image) and np.array_equal(pictures["before"], image)
    assert pictures["clear"] and session.z is inversion.z and session.seed is None
    assert "Uploaded image church.png" in view.status and "resized" not in view.status
    assert f"PSNR {inversion.psnr:.1f} dB" in view.status
    assert f"in {inversion.seconds:.1f} s" in view.status

    # paint the cells of the trees, remove
    cells = ws.scenes.layer_cells(trees)
    painted = cell_pixels(ws, cells)
    out = paint.apply_brush(ws, session, paint_value(painted, ws.scale), "object/tree",
                            "remove", 1.0, paint.BRUSH_UNITS)
    after = canvas_pictures(out.canvas)["after"]
    assert np.array_equal(after[~painted], image[~painted])  # exactly the image's
    # inside, the edited reconstruction, the slow way: in the painted cells the generator's
    # own features for the latent, the brush's units zero there, run from the layer on
    stroke = session.strokes[0]
    inside = stroke.cells > 0
    features = inversion.features.clone()
    features[0][:, inside] = inversion.own[0][:, inside]
    for unit in stroke.units:
        features[0, unit][inside] = 0
    with torch.no_grad():
        edited = pixels(forward_from(inversion.generator, ws.scenes.layer, features,
                                     inversion.z))
    assert np.abs(after[painted].astype(int) - edited[painted]).max() <= 1
    assert not np.array_equal(after, image)
    assert np.array_equal(np.asarray(Image.open(out.download_native).convert("RGB")), after)
    assert "· 1 stroke" in out.status and "remove tree" in out.status
    if kind == "shipped":
        assert tree_share(ws, after, painted) < 0.75 * tree_share(ws, image, painted)

    # Undo gives the image back; Reset too, after a stroke that draws
    undone = paint.undo(ws, session)
    assert np.array_equal(canvas_pictures(undone.canvas)["after"], image)
    assert session.strokes == [] and session.inversion is inversion
    paint.apply_brush(ws, session, paint_value(painted, ws.scale), "object/tree", "draw",
                      1.0, paint.BRUSH_UNITS)
    reset = paint.reset(ws, session)
    assert np.array_equal(canvas_pictures(reset.canvas)["after"], image)

    # a generated scene leaves the image
    shown = paint.choose_scene(ws, session, 3)
    assert session.inversion is None and "**Scene 3**" in shown.status
    assert np.array_equal(canvas_pictures(shown.canvas)["after"],
                          pixels(ws.scenes.render(ws.scenes.latent(3))))


def test_a_rendered_world_scene_is_the_same_as_its_upload(ws, scene):
    path, image, _ = scene
    session = Session()
    view = paint.invert_world_scene(ws, session, SCENE)
    assert np.array_equal(session.original, image)
    assert f"SceneWorld scene {SCENE} (world {WORLD_SEED})" in view.status


def test_an_upload_of_another_size_is_resized(ws, tmp_path):
    """A 96x80 picture is scaled to 77x64 (shorter side) and centre cropped to 64x64: the
    canvas shows that, and the status says so."""
    big = render(WORLD_SEED, SCENE, 96).image[8:88]  # 96 wide, 80 high
    path = tmp_path / "wide.png"
    Image.fromarray(big).save(path)
    expected = Image.fromarray(big).resize((77, 64), Image.Resampling.BILINEAR)
    expected = np.asarray(expected)[:, 6:70]
    session = Session()
    view = paint.invert_upload(ws, session, str(path))
    assert "resized from 96x80 to the generator's 64x64" in view.status
    assert np.array_equal(session.original, expected)
    assert np.array_equal(canvas_pictures(view.canvas)["after"], expected)


@pytest.mark.parametrize("upload,message", [
    (None, "upload an image first"),
    ("", "upload an image first"),
    ("notes.txt", "is not an image that can be read"),
    ("empty.png", "is not an image that can be read"),
])
def test_bad_uploads_are_one_line(ws, tmp_path, upload, message):
    if upload:
        (tmp_path / upload).write_text("" if upload == "empty.png" else "no picture here")
        upload = str(tmp_path / upload)
    session = Session()
    paint.choose_scene(ws, session, 2)
    with pytest.raises(gr.Error) as error:
        paint.invert_upload(ws, session, upload)
    assert message in error.value.message and "\n" not in error.value.message
    assert session.inversion is None and session.seed == 2  # the scene stays


@pytest.mark.parametrize("index", [-1, 1.5, "tree"])
def test_bad_world_scene_numbers_are_one_line(ws, index):
    with pytest.raises(gr.Error, match="the SceneWorld scene number must be a whole number"):
        paint.invert_world_scene(ws, Session(), index)


def test_the_units_tab_shows_the_inverted_image_and_its_features(ws, scene):
    from gandissect.app import units
    from gandissect.app.pictures import enlarge

    path, image, trees = scene
    session = Session()
    paint.invert_upload(ws, session, str(path))
    inversion, scale = session.inversion, units.SHOWN_SCALE
    # the scene to click on is the image itself, then the image as painted
    assert np.array_equal(units.scene_picture(ws, session), enlarge(image, scale))
    cells = ws.scenes.layer_cells(trees)
    out = paint.apply_brush(ws, session, paint_value(cell_pixels(ws, cells), ws.scale),
                            "object/tree", "remove", 1.0, paint.BRUSH_UNITS)
    assert np.array_equal(units.scene_picture(ws, session),
                          enlarge(canvas_pictures(out.canvas)["after"], scale))
    # the units listed at a spot are those of the inverted features there, strokes applied
    session.strokes = []
    side = ws.scenes.resolution * scale
    _, _, rows, _ = units.units_here(ws, session, side // 2, side // 2)
    h, w = ws.scenes.cells
    features = inversion.features[0, :, h // 2, w // 2]
    thresholds = [u.threshold for u in ws.scenes.units_dissection.units]
    top = int(rows["unit"].iloc[0])
    assert top == max(range(len(thresholds)),
                      key=lambda u: (float(features[u]) / thresholds[u], -u))
    # ablation everywhere edits the inverted features; switched off, the image comes back
    _, ablated = units.ablate(ws, session, str(top), True)
    assert not np.array_equal(ablated, enlarge(image, scale))
    _, plain = units.ablate(ws, session, str(top), False)
    assert np.array_equal(plain, enlarge(image, scale))
