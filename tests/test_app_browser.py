"""The app in a real browser: headless Chromium (Debian's package, driven by ``playwright``)
paints a stroke over a tree, presses Remove, and the tree under the stroke is gone while the
rest of the scene stays as it was.

With ``GANDISSECT_SCREENSHOTS=DIR`` it also saves a screenshot of each tab into DIR
(``app_paint.png``, ``app_units.png``, ``app_classifiers.png``): the README's pictures are
made with ``GANDISSECT_SCREENSHOTS=docs python -m pytest tests/test_app_browser.py``.
"""

import base64
import os
import shutil
import time
import urllib.request
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from conftest import EXPECT, app_config, edit_effect, free_port, kinds, tree_scene
from PIL import Image

from gandissect.app.pictures import pixels
from gandissect.app.ui import build_app, launch
from gandissect.app.workspace import Workspace

playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason="needs Debian's chromium (apt-get install chromium)")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SHOTS = os.environ.get("GANDISSECT_SCREENSHOTS")
CANVAS = 512 if SHOTS else 256  # small pictures keep each round trip short
TIMEOUT_MS = 60_000


@pytest.fixture(scope="module", params=kinds())
def served(request, tmp_path_factory):
    ws = Workspace.open(app_config(request.param, tmp_path_factory.mktemp("cache"),
                                   canvas=CANVAS))
    assert ws.problem is None, ws.problem
    demo = launch(build_app(ws), "127.0.0.1", free_port(), block=False)
    yield request.param, ws, demo
    demo.close()
    ws.close()


@pytest.fixture(scope="module")
def browser():
    with playwright.sync_playwright() as driver:
        chromium = driver.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield chromium
        chromium.close()


def wait_for_text(page, selector: str, text: str) -> None:
    page.wait_for_function(
        "([s, t]) => { const e = document.querySelector(s); return e && e.innerText.includes(t); }",
        arg=[selector, text], timeout=TIMEOUT_MS)


def editor_idle(page) -> None:
    """Wait until the editor has taken its new picture in: its status tracker ("processing",
    a timer such as "1.9s") is gone."""
    page.wait_for_function(
        "() => !/processing|\\d\\s?s\\b/.test(document.querySelector('#paint-canvas').innerText)",
        timeout=TIMEOUT_MS)


def steady_canvas(page) -> tuple[dict, float]:
    """The canvas's box and zoom once the editor is idle and they read the same twice in a
    row, 300 ms apart."""
    editor_idle(page)
    canvas = page.locator("#paint-canvas .pixi-target canvas")
    zoom = page.locator("#paint-canvas .zoom-number span")
    last = None
    for _ in range(50):
        now = (canvas.bounding_box(), zoom.inner_text())
        if now == last and now[0] is not None:
            return now[0], float(now[1].strip().rstrip("%")) / 100
        last = now
        time.sleep(0.3)
    raise AssertionError(f"the canvas never settled: {last}")


def picture(page, selector: str) -> np.ndarray:
    """The image an ``<img>`` of the page shows, as (H, W, 3) uint8."""
    source = page.locator(f"{selector} img").first.get_attribute("src")
    if source.startswith("data:"):
        data = base64.b64decode(source.partition(",")[2])
    else:
        with urllib.request.urlopen(source, timeout=30) as reply:
            data = reply.read()
    return np.asarray(Image.open(BytesIO(data)).convert("RGB"))


def stroke_path(tree: np.ndarray, row: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """A horizontal stroke along ``row`` of the tree, kept 2 px inside it (image pixels)."""
    xs = np.nonzero(tree[row])[0]
    return (row, int(xs.min()) + 2), (row, int(xs.max()) - 2)


def under(path, shape, radius: float) -> np.ndarray:
    """Pixels within ``radius`` of the stroke's segment."""
    (y, x0), (_, x1) = path
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    dx = np.clip(xx, x0, x1) - xx
    return dx**2 + (yy - y) ** 2 <= radius**2


def test_paint_over_a_tree_and_remove_it(served, browser):
    kind, ws, demo = served
    seed, tree = tree_scene(ws)
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    try:
        page.goto(demo.local_url, wait_until="domcontentloaded")
        page.wait_for_selector("#paint-canvas .pixi-target canvas", timeout=TIMEOUT_MS)
        wait_for_text(page, "#paint-status", "Scene 0")  # the page's own first scene
        if seed != 0:
            page.locator("#scene-seed input").fill(str(seed))
            page.locator("#show-scene").click()
            wait_for_text(page, "#paint-status", f"Scene {seed}")
        side = ws.scenes.resolution * ws.scale
        before = pixels(ws.scenes.render(ws.scenes.latent(seed)))

        def paint_and_remove(paths, strokes: int, measured) -> dict:
            box, zoom = steady_canvas(page)  # never paint on a canvas that is still busy

            def screen(point):
                y, x = ((c + 0.5) * ws.scale for c in point)
                return (box["x"] + box["width"] / 2 + (x - side / 2) * zoom,
                        box["y"] + box["height"] / 2 + (y - side / 2) * zoom)

            for start, end in paths:
                page.mouse.move(*screen(start))
                time.sleep(0.3)  # the canvas sees the pointer arrive before the button goes down
                page.mouse.down()
                for step in range(1, 4):
                    t = step / 3
                    page.mouse.move(*screen((start[0], start[1] + t * (end[1] - start[1]))))
                page.mouse.up()
            page.locator("#brush-remove").click()
            wait_for_text(page, "#paint-status", f"{strokes} stroke")
            after = picture(page, "#edited-image")[::ws.scale, ::ws.scale]
            return edit_effect(ws, before, after, measured, margin_cells=2)

        def painted(paths) -> np.ndarray:
            return np.logical_or.reduce([under(path, tree.shape, 2.0) for path in paths])

        # paint over the tree as a person would: strokes across it, 4 px apart, then Remove
        rows = tree.sum(1)
        paths = [stroke_path(tree, int(y)) for y in np.nonzero(rows >= 6)[0][::4]]
        effect = paint_and_remove(paths, 1, painted(paths))
        assert effect["tree_before"] == (painted(paths) & tree).sum() > 0
        assert effect["tree_after"] <= (1 - EXPECT[kind]["painted"]) * effect["tree_before"]
        assert effect["outside_change"] <= EXPECT[kind]["outside_change"]
        # a second stroke (across the top of the picture) is a second edit on top of the first:
        # the canvas keeps its paint, and the first edit stays in the picture
        top = ((1, 2), (1, tree.shape[1] - 3))
        again = paint_and_remove([top], 2, painted(paths))
        assert again["tree_after"] <= (1 - EXPECT[kind]["painted"]) * effect["tree_before"]
        if SHOTS:
            tree_units = ws.scenes.brush_units("object/tree", 10)[0]
            take_screenshots(page, Path(SHOTS), ", ".join(map(str, tree_units)))
        # the panel of the units the stroke used links to the Units tab
        unit = ws.scenes.brush_units("object/tree", 15)[0][0]
        page.locator("#brush-used").get_by_role("gridcell").first.click()
        wait_for_text(page, "#unit-about", f"Unit {unit} of")
        playwright.expect(page.get_by_role("tab", name="Units")).to_have_attribute(
            "aria-selected", "true", timeout=TIMEOUT_MS)
    finally:
        page.close()


def take_screenshots(page, folder: Path, ablate: str) -> None:
    """One screenshot per tab, each after a typical action (the shipped generator's, taken
    last, replace the toy's)."""
    folder.mkdir(parents=True, exist_ok=True)
    editor_idle(page)
    time.sleep(1)
    page.screenshot(path=folder / "app_paint.png", full_page=True)
    page.get_by_role("tab", name="Units").click()
    page.locator("#units-table").get_by_role("gridcell").first.click()
    wait_for_text(page, "#unit-about", "Unit ")
    page.locator("#ablate-units textarea").fill(ablate)
    page.locator("#ablate-on input").check()
    page.wait_for_selector("#ablated-image img", timeout=TIMEOUT_MS)
    time.sleep(1)
    page.screenshot(path=folder / "app_units.png", full_page=True)
    page.get_by_role("tab", name="Classifiers").click()
    page.locator("#netdissect-n input[type=number]").fill("100")
    page.locator("#netdissect-n input[type=number]").press("Enter")
    page.locator("#run-netdissect").click()
    wait_for_text(page, "#netdissect-summary", "detectors")
    page.locator("#classifier-table").get_by_role("gridcell").first.click()
    page.locator("#explain").click()
    page.wait_for_selector("#attribution img", timeout=TIMEOUT_MS)
    page.locator("#visualize").click()
    page.wait_for_selector("#feature-vis img", timeout=TIMEOUT_MS)
    time.sleep(1)
    page.screenshot(path=folder / "app_classifiers.png", full_page=True)
    page.get_by_role("tab", name="Paint").click()
