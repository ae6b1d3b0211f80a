"""The app in a real browser: headless Chromium (Debian's package, driven by ``playwright``)
paints a stroke over a tree, presses Remove, and the tree under the stroke is gone while the
rest of the scene stays as it was; the canvas goes through Remove, Draw, Undo, Reset and new
scenes in loops, at a person's pace and as fast as the page takes them, and never freezes or
loses a stroke; the brush, its buttons and the canvas share one screen.

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
CANVAS = 512  # the app's default
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
def toy_served(tmp_path_factory):
    """The app on the toy generator, whose replies take a fraction of a second."""
    ws = Workspace.open(app_config("toy", tmp_path_factory.mktemp("toy"), canvas=CANVAS))
    demo = launch(build_app(ws), "127.0.0.1", free_port(), block=False)
    yield ws, demo
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


CANVAS_SELECTOR = "#paint-canvas canvas.gd-ink"


def replies(page) -> int:
    """How many canvas replies the page has rendered."""
    return page.evaluate("() => window.gandissectPaint ? window.gandissectPaint.seen : 0")


def paint_stroke(page, ws, start, end) -> None:
    """A stroke from ``start`` to ``end`` (image pixels, (row, column)) as a person paints it:
    move, press, move in steps, release."""
    box = page.locator(CANVAS_SELECTOR).bounding_box()
    side = ws.scenes.resolution

    def screen(point):
        y, x = point
        return (box["x"] + (x + 0.5) * box["width"] / side,
                box["y"] + (y + 0.5) * box["height"] / side)

    page.mouse.move(*screen(start))
    page.mouse.down()
    for step in range(1, 4):
        t = step / 3
        page.mouse.move(*screen((start[0] + t * (end[0] - start[0]),
                                 start[1] + t * (end[1] - start[1]))))
    page.mouse.up()


def picture(page, selector: str) -> np.ndarray:
    """The image an ``<img>`` of the page shows, as (H, W, 3) uint8 (the canvas's pictures
    are at the generator's resolution, enlarged by the page)."""
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


def open_paint_tab(page, demo, ws, seed: int) -> None:
    page.goto(demo.local_url, wait_until="domcontentloaded")
    page.wait_for_selector(CANVAS_SELECTOR, timeout=TIMEOUT_MS)
    wait_for_text(page, "#paint-status", "Scene 0")  # the page's own first scene
    if seed != 0:
        show_scene(page, seed)


def show_scene(page, seed: int) -> None:
    """Ask for scene ``seed`` and wait until the canvas shows it."""
    seen = replies(page)
    page.locator("#scene-seed input").fill(str(seed))
    page.locator("#show-scene").click()
    wait_for_text(page, "#paint-status", f"Scene {seed} ")
    page.wait_for_function(f"() => window.gandissectPaint.seen > {seen}", timeout=TIMEOUT_MS)


def test_paint_over_a_tree_and_remove_it(served, browser):
    kind, ws, demo = served
    seed, tree = tree_scene(ws)
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    try:
        open_paint_tab(page, demo, ws, seed)
        before = pixels(ws.scenes.render(ws.scenes.latent(seed)))
        assert np.array_equal(picture(page, "#edited-image"), before)

        def paint_and_remove(paths, strokes: int, measured) -> dict:
            for start, end in paths:
                paint_stroke(page, ws, start, end)
            page.locator("#brush-remove").click()
            wait_for_text(page, "#paint-status", f"{strokes} stroke")
            page.wait_for_function("() => window.gandissectPaint.strokes.length === 0",
                                   timeout=TIMEOUT_MS)  # the reply took the applied paint
            after = picture(page, "#edited-image")
            return edit_effect(ws, before, after, measured, margin_cells=2)

        def painted(paths) -> np.ndarray:
            return np.logical_or.reduce([under(path, tree.shape, radius) for path in paths])

        # the brush's radius, in image pixels (the canvas is ws.scale display pixels a pixel)
        radius = page.evaluate("() => window.gandissectPaint.radius") / ws.scale
        # paint over the tree as a person would: strokes across it, 4 px apart, then Remove
        rows = tree.sum(1)
        paths = [stroke_path(tree, int(y)) for y in np.nonzero(rows >= 6)[0][::4]]
        effect = paint_and_remove(paths, 1, painted(paths))
        assert effect["tree_before"] == (painted(paths) & tree).sum() > 0
        assert effect["tree_after"] <= (1 - EXPECT[kind]["painted"]) * effect["tree_before"]
        assert effect["outside_change"] <= EXPECT[kind]["outside_change"]
        # a second stroke (across the top of the picture) is a second edit on top of the first
        top = ((1, 2), (1, tree.shape[1] - 3))
        again = paint_and_remove([top], 2, painted(paths))
        assert again["tree_after"] <= (1 - EXPECT[kind]["painted"]) * effect["tree_before"]
        # Before shows the original (cells edited tinted), After the edit again
        page.locator("#paint-canvas .gd-toggle").click()
        assert page.locator("#before-image").is_visible()
        assert not page.locator("#edited-image").is_visible()
        page.locator("#paint-canvas .gd-toggle").click()
        assert page.locator("#edited-image").is_visible()
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


CYCLES = 8  # per pace: each cycle loads two scenes and presses six buttons
LOOP_TIMEOUT_MS = 15_000  # a reply the toy gives in well under a second; longer is a freeze


def test_the_canvas_never_freezes_and_never_loses_a_stroke(toy_served, browser):
    """Draw -> Reset -> Show scene and Remove -> Undo -> Show scene, again and again, at a
    person's pace and with no pause at all: after every new scene the canvas takes a stroke
    at once and the next press applies it (a freeze fails a wait, a lost stroke gives "nothing
    to do"); a stroke painted while a press runs is kept and applied by the next press."""
    ws, demo = toy_served
    page = browser.new_page(viewport={"width": 1366, "height": 900})
    try:
        open_paint_tab(page, demo, ws, 0)
        side = ws.scenes.resolution
        middle = ((side // 2, side // 4), (side // 2, 3 * side // 4))
        upper = ((side // 4, side // 4), (side // 4, 3 * side // 4))
        for pace in (0.6, 0.0):
            for cycle in range(CYCLES):
                for press, back in (("draw", "reset"), ("remove", "undo")):
                    seed = 1 + (cycle * 2 + (press == "remove")) % 7
                    show_scene(page, seed)
                    time.sleep(pace)
                    paint_stroke(page, ws, *middle)
                    time.sleep(pace)
                    page.locator(f"#brush-{press}").click()
                    paint_stroke(page, ws, *upper)  # while the press runs
                    page.wait_for_function(
                        "() => document.querySelector('#paint-status').innerText"
                        f".includes('Scene {seed} · 1 stroke')", timeout=LOOP_TIMEOUT_MS)
                    page.wait_for_function("() => window.gandissectPaint.strokes.length === 1",
                                           timeout=LOOP_TIMEOUT_MS)  # the later stroke kept
                    time.sleep(pace)
                    page.locator(f"#brush-{press}").click()
                    page.wait_for_function(
                        "() => document.querySelector('#paint-status').innerText"
                        f".includes('Scene {seed} · 2 strokes')", timeout=LOOP_TIMEOUT_MS)
                    time.sleep(pace)
                    page.locator(f"#brush-{back}").click()
                    expected = "0 strokes" if back == "reset" else "1 stroke"
                    page.wait_for_function(
                        "() => document.querySelector('#paint-status').innerText"
                        f".includes('Scene {seed} · {expected}')", timeout=LOOP_TIMEOUT_MS)
                    time.sleep(pace)
        assert not page.locator(".toast-body").count(), "a press said there was nothing to do"
    finally:
        page.close()


def test_canvas_brush_and_buttons_share_one_screen(toy_served, browser):
    """At 1366x900 the scene picker, the brush, Remove, Draw, Undo, Reset and the whole canvas
    are in view without scrolling, Undo and Reset on the row of Remove and Draw."""
    ws, demo = toy_served
    page = browser.new_page(viewport={"width": 1366, "height": 900})
    try:
        open_paint_tab(page, demo, ws, 0)
        boxes = {name: page.locator(name).bounding_box() for name in (
            CANVAS_SELECTOR, "#scene-seed", "#show-scene", "#brush-concept", "#brush-remove",
            "#brush-draw", "#brush-undo", "#brush-reset", "#paint-canvas .gd-toggle")}
        for name, box in boxes.items():
            assert box is not None and box["y"] >= 0 and box["y"] + box["height"] <= 900, name
            assert box["x"] >= 0 and box["x"] + box["width"] <= 1366, name
        rows = {round(boxes[b]["y"]) for b in ("#brush-remove", "#brush-draw", "#brush-undo",
                                                "#brush-reset")}
        assert len(rows) == 1
        assert boxes[CANVAS_SELECTOR]["width"] == ws.scenes.resolution * ws.scale
    finally:
        page.close()


def click_spot(page, fraction: tuple[float, float]) -> None:
    """Click the Units tab's scene at ``(row, column)`` fractions of its side."""
    image = page.locator("#units-spot img").first
    image.wait_for(timeout=TIMEOUT_MS)
    image.scroll_into_view_if_needed()
    box = image.bounding_box()
    page.mouse.click(box["x"] + fraction[1] * box["width"], box["y"] + fraction[0] * box["height"])


def test_click_a_spot_of_the_scene_to_list_the_units_active_there(toy_served, browser):
    """On the Units tab, a click on the current scene lists the units most active in that
    layer cell, as the callback computes them for the same scene and pixel; a row opens the
    unit."""
    from gandissect.app import paint, units
    from gandissect.app.session import Session

    ws, demo = toy_served
    page = browser.new_page(viewport={"width": 1366, "height": 900})
    try:
        open_paint_tab(page, demo, ws, 3)
        page.get_by_role("tab", name="Units").click()
        session = Session()
        paint.choose_scene(ws, session, 3)
        side = ws.scenes.resolution * units.SHOWN_SCALE
        h, w = ws.scenes.cells
        for fraction in ((0.3, 0.7), (0.8, 0.15)):
            click_spot(page, fraction)
            x, y = int(fraction[1] * side), int(fraction[0] * side)
            cell = (y * h // side, x * w // side)
            wait_for_text(page, "#units-here-about", f"layer cell {cell}")
            expected = units.units_here(ws, session, x, y)[2]
            first = page.locator("#units-here").get_by_role("gridcell").first
            playwright.expect(first).to_have_text(str(expected.iloc[0, 0]), timeout=TIMEOUT_MS)
        first.click()
        wait_for_text(page, "#unit-about", f"Unit {expected.iloc[0, 0]} of")
    finally:
        page.close()


def take_screenshots(page, folder: Path, ablate: str) -> None:
    """One screenshot per tab, each after a typical action (the shipped generator's, taken
    last, replace the toy's)."""
    folder.mkdir(parents=True, exist_ok=True)
    time.sleep(1)
    page.screenshot(path=folder / "app_paint.png", full_page=True)
    page.get_by_role("tab", name="Units").click()
    page.locator("#units-table").get_by_role("gridcell").first.click()
    wait_for_text(page, "#unit-about", "Unit ")
    page.locator("#ablate-units textarea").fill(ablate)
    page.locator("#ablate-on input").check()
    page.wait_for_selector("#ablated-image img", timeout=TIMEOUT_MS)
    click_spot(page, (0.6, 0.5))
    wait_for_text(page, "#units-here-about", "layer cell")
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
