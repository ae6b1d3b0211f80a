"""A real image in a real browser (headless Chromium, as ``test_app_browser``): upload a PNG of a
SceneWorld scene with trees, press Invert image, paint over the trees, press Remove; the picture
differs from the image only inside the painted cells, and its trees there are mostly gone.

With ``GANDISSECT_SCREENSHOTS=DIR`` it saves the page after the edit as
``DIR/app_paint_real.png``.
"""

import time
from pathlib import Path

import numpy as np
import pytest
from conftest import SHIPPED_REASON, app_config, free_port, shipped_generator_missing
from PIL import Image
from test_app_browser import (  # noqa: F401 (browser: the fixture)
    CANVAS_SELECTOR,
    SHOTS,
    TIMEOUT_MS,
    browser,
    paint_stroke,
    picture,
    replies,
    stroke_path,
    under,
    wait_for_text,
)
from test_app_real_image import SCENE, STEPS, tree_share
from torch.nn import functional as F

from gandissect.app.real import WORLD_SEED
from gandissect.app.ui import build_app, launch
from gandissect.app.workspace import Workspace
from gandissect.world import render
from gandissect.world.concepts import code_of

pytestmark = pytest.mark.skipif(shipped_generator_missing(), reason=SHIPPED_REASON)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    config = app_config("shipped", tmp_path_factory.mktemp("cache"), canvas=512)
    config.invert_steps = STEPS
    ws = Workspace.open(config)
    assert ws.problem is None, ws.problem
    demo = launch(build_app(ws), "127.0.0.1", free_port(), block=False)
    yield ws, demo
    demo.close()
    ws.close()


def cell_pixels(ws, mask: np.ndarray, grow: int) -> np.ndarray:
    """The pixels of the layer cells ``mask`` touches, grown by ``grow`` cells each way."""
    cells = ws.scenes.layer_cells(mask)[None, None]
    cells = F.max_pool2d(cells, 2 * grow + 1, stride=1, padding=grow)[0, 0].numpy() > 0
    side = ws.scenes.resolution // cells.shape[0]
    return np.repeat(np.repeat(cells, side, 0), side, 1)


def test_upload_invert_and_paint_a_tree_away(served, browser, tmp_path):  # noqa: F811
    ws, demo = served
    sample = render(WORLD_SEED, SCENE, ws.scenes.resolution)
    image, trees = sample.image, sample.labels["object"] == code_of("tree", "object")
    path = tmp_path / "church.png"
    Image.fromarray(image).save(path)
    page = browser.new_page(viewport={"width": 1366, "height": 900})
    try:
        page.goto(demo.local_url, wait_until="domcontentloaded")
        wait_for_text(page, "#paint-status", "Scene 0")
        page.locator("#paint-upload input[type=file]").set_input_files(str(path))
        # the file's row (its name may show shortened, "c…png")
        page.wait_for_function(
            "() => document.querySelector('#paint-upload').innerText.includes('png')",
            timeout=TIMEOUT_MS)
        seen = replies(page)
        page.locator("#invert-upload").click()
        # the progress bar shows on the status while the inversion runs
        page.wait_for_function("() => document.body.innerText.includes('Inverting:')",
                               timeout=TIMEOUT_MS)
        wait_for_text(page, "#paint-status", "Uploaded image church.png")
        wait_for_text(page, "#paint-status", "PSNR")
        page.wait_for_function(f"() => window.gandissectPaint.seen > {seen}", timeout=TIMEOUT_MS)
        assert np.array_equal(picture(page, "#edited-image"), image)

        # paint over the trees as a person would (strokes 4 px apart), then Remove
        time.sleep(0.3)
        radius = page.evaluate("() => window.gandissectPaint.radius") / ws.scale
        paths = [stroke_path(trees, int(y)) for y in np.nonzero(trees.sum(1) >= 6)[0][::4]]
        for start, end in paths:
            paint_stroke(page, ws, start, end)
        page.locator("#brush-remove").click()
        wait_for_text(page, "#paint-status", "church.png · 1 stroke")
        page.wait_for_function("() => window.gandissectPaint.strokes.length === 0",
                               timeout=TIMEOUT_MS)
        after = picture(page, "#edited-image")
        # the cells the stroke edited: those Before tints; they hold the paint as drawn here
        # (the page's anti-aliased rim may reach a neighbouring cell, never farther)
        inside = (picture(page, "#before-image") != image).any(-1)
        painted = np.logical_or.reduce([under(p, trees.shape, radius) for p in paths])
        assert (inside | ~cell_pixels(ws, painted, 0)).all()
        assert (cell_pixels(ws, painted, 1) | ~inside).all()
        assert np.array_equal(after[~inside], image[~inside])
        assert not np.array_equal(after[inside], image[inside])
        assert tree_share(ws, after, inside & trees) < 0.75 * tree_share(ws, image,
                                                                         inside & trees)
        if SHOTS:
            page.locator("#paint-canvas .gd-toggle").click()  # Before: the cells edited
            time.sleep(0.5)
            page.screenshot(path=Path(SHOTS) / "app_paint_real_before.png")
            page.locator("#paint-canvas .gd-toggle").click()
            time.sleep(0.5)
            page.screenshot(path=Path(SHOTS) / "app_paint_real.png")
    finally:
        page.close()
