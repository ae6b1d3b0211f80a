"""The Paint tab: pick a scene, paint over it, press Remove or Draw, see the edit in place.

Each press takes the paint not applied yet (``gandissect.app.canvas``: the page sends it with
the ids of its strokes), max-pools it exactly to the layer's cells, takes the brush's top units
(ranked by causal effect where learned, else IoU) and appends one stroke to the session; the
scene is rendered again with all strokes in order (``gandissect.intervene.render_edited``) and
comes back on the canvas itself, with Before (the original, the cells each stroke edited
tinted: red removed, green drawn) one click away. The canvas, the brush and the buttons fit one
screen (1366x900); the scenes to pick from and the units a stroke used are below.

A real image (an upload, or a rendered SceneWorld scene) is inverted into the generator first
(``gandissect.app.real``, with a progress bar) and then painted the same way; its strokes
change only the pixels of the cells they painted.
"""

from __future__ import annotations

import hashlib
import random
from typing import Any, NamedTuple

import gradio as gr
import numpy as np
import pandas as pd

from gandissect.app.canvas import COLLECT, SCRIPT, canvas_html, read_paint
from gandissect.app.messages import PROGRESS, nothing_to_do, user_errors, whole_number
from gandissect.app.pictures import enlarge, pixels, save_png, tint_cells
from gandissect.app.real import (
    edited_picture,
    inversion_lines,
    invert_picture,
    upload_picture,
    world_picture,
)
from gandissect.app.scenes import MAX_SEED
from gandissect.app.session import PaintStroke, Session
from gandissect.app.workspace import Workspace
from gandissect.brushes import BRUSH_UNITS
from gandissect.errors import UserError

__all__ = ["MODES", "OUTPUTS", "PaintView", "build", "choose_scene", "random_scene",
           "apply_brush", "undo", "reset", "gallery_seeds", "scene_pictures", "USED_HEADERS",
           "invert_upload", "invert_world_scene"]

MODES = ("remove", "draw")
USED_HEADERS = ["unit", "label", "category", "IoU (its label)", "weight"]
RANKINGS = {"iou": "IoU", "ace": "causal effect (ACE)",
            "ace+swaps": "causal effect (ACE, its top 20 improved by swaps)",
            "draw": "its learned drawing (each unit weighted, writing a learned value)"}


class PaintView(NamedTuple):
    """What every callback of the tab returns, in the order of its outputs: the canvas
    (``gandissect.app.canvas.canvas_html``), the units the last stroke used, the status and
    the edited scene to download as shown and at the generator's size."""

    session: Session
    canvas: str
    used: pd.DataFrame
    status: str
    download: str
    download_native: str


OUTPUTS = len(PaintView._fields)


def gallery_seeds(ws: Workspace) -> list[int]:
    """The scenes the gallery shows."""
    return list(range(ws.config.gallery))


def _scenes(ws: Workspace):
    if ws.scenes is None:
        raise UserError(ws.problem or "no generator is loaded")
    return ws.scenes


def _used_units(ws: Workspace, session: Session) -> pd.DataFrame:
    rows = []
    if session.strokes:
        units, last = ws.scenes.units_dissection.units, session.strokes[-1]
        for unit in last.units:
            score = units[unit]
            weight = 1.0 if last.weights is None else round(float(last.weights[unit]), 3)
            rows.append([unit, score.label, score.category, round(score.iou, 4), weight])
    return pd.DataFrame(rows, columns=USED_HEADERS)


def _status(ws: Workspace, session: Session) -> str:
    scenes = ws.scenes
    n = len(session.strokes)
    name = session.image_name if session.inversion is not None else f"Scene {session.seed}"
    lines = [f"**{name}** · {n} stroke{'s' if n != 1 else ''}"]
    if session.inversion is not None:
        lines += inversion_lines(session.inversion)
    if session.strokes:
        last = session.strokes[-1]
        concept = last.concept.partition("/")[2]
        lines.append(f"Last stroke: {last.mode} {concept}, {len(last.units)} units ranked by "
                     f"{RANKINGS.get(last.ranking, last.ranking)}, "
                     f"strength {last.strength:g}.")
    units, (h, w) = scenes.n_units, scenes.cells
    lines.append(f"Painting layer `{scenes.layer}`: {units} units at {h}x{w}; dissection "
                 f"{scenes.source}.")
    lines += [f"**Warning:** {line}" for line in scenes.dissection.warnings]
    return "  \n".join(lines)


def scene_pictures(ws: Workspace, session: Session) -> tuple[np.ndarray, np.ndarray]:
    """The session's scene at the generator's resolution, ``(H, W, 3)`` uint8: as generated
    (or the real image), and with every stroke applied."""
    if not session.strokes:
        return session.original, session.original
    if session.inversion is not None:
        return session.original, edited_picture(ws, session.inversion, session.strokes)
    edited = pixels(ws.scenes.render(session.z, [s.stroke() for s in session.strokes]))
    return session.original, edited


def _save(ws: Workspace, session: Session, picture: np.ndarray, what: str) -> str:
    """``picture`` as a PNG offered for download, named by its content (a repeated view reuses
    its file, so disk grows only with distinct pictures)."""
    digest = hashlib.sha256(picture.tobytes() + str(picture.shape).encode()).hexdigest()[:20]
    name = "image" if session.inversion is not None else f"scene{session.seed}"
    path = ws.downloads / digest / f"{name}_edited_{what}.png"
    if not path.is_file():
        save_png(picture, path)
    return str(path)


def _view(ws: Workspace, session: Session, clear: bool,
          applied: list[int] | tuple = ()) -> PaintView:
    """Every output of the tab for the session's scene and strokes; ``clear``: the canvas
    drops its paint (new scene, Undo, Reset); ``applied``: the paint strokes just applied."""
    scenes, scale = ws.scenes, ws.scale
    original, edited = scene_pictures(ws, session)
    before = tint_cells(original, [(s.cells, s.mode) for s in session.strokes])
    session.canvas_version += 1
    side = scenes.resolution * scale
    canvas = canvas_html(edited, before, side, session.canvas_version, clear, applied,
                         radius=max(4, side // 24))
    return PaintView(session, canvas, _used_units(ws, session), _status(ws, session),
                     _save(ws, session, enlarge(edited, scale), f"{side}px"),
                     _save(ws, session, edited, f"{scenes.resolution}px"))


@user_errors
def choose_scene(ws: Workspace, session: Session, seed: Any) -> PaintView:
    """Start editing scene ``seed`` (strokes cleared)."""
    scenes = _scenes(ws)
    seed = whole_number(seed, "the scene number", 0, MAX_SEED)
    session.seed, session.z, session.strokes = seed, scenes.latent(seed), []
    session.inversion, session.image_name = None, ""
    session.original = pixels(scenes.render(session.z))
    return _view(ws, session, clear=True)


def _start_inverted(ws: Workspace, session: Session, picture: np.ndarray, name: str,
                    progress) -> PaintView:
    inversion = invert_picture(ws, picture, progress)
    session.seed, session.z, session.strokes = None, inversion.z, []
    session.inversion, session.image_name, session.original = inversion, name, picture
    return _view(ws, session, clear=True)


@user_errors
def invert_upload(ws: Workspace, session: Session, upload: Any, progress=None) -> PaintView:
    """Invert an uploaded image file (resized to the generator's resolution) and start
    painting it (strokes cleared); ``progress(done, total, stage)`` follows the inversion."""
    _scenes(ws)
    picture, name = upload_picture(upload, ws.scenes.resolution)
    return _start_inverted(ws, session, picture, name, progress)


@user_errors
def invert_world_scene(ws: Workspace, session: Session, index: Any,
                       progress=None) -> PaintView:
    """Invert SceneWorld scene ``index`` of the held-out world (``real.WORLD_SEED``) and
    start painting it, as ``invert_upload`` does."""
    _scenes(ws)
    picture, name = world_picture(index, ws.scenes.resolution)
    return _start_inverted(ws, session, picture, name, progress)


@user_errors
def random_scene(ws: Workspace, session: Session) -> tuple:
    """Start editing a random scene; returns the tab's outputs and the seed chosen."""
    return (*choose_scene(ws, session, random.randint(0, MAX_SEED)), session.seed)


@user_errors
def apply_brush(ws: Workspace, session: Session, paint: Any, concept: str | None, mode: str,
                strength: float, units: float) -> PaintView:
    """Apply the paint not applied yet (the canvas's value, ``gandissect.app.canvas``) as one
    stroke: ``mode`` ("remove" or "draw") ``concept``'s top ``units`` units at ``strength``."""
    scenes = _scenes(ws)
    if session.z is None:
        raise UserError("pick a scene first")
    if mode not in MODES:
        raise UserError(f"the mode must be one of {', '.join(MODES)}")
    if not concept:
        raise UserError("choose a brush (a concept) first")
    k = whole_number(units, "the number of units", 1, scenes.n_units)
    if not 0 < float(strength) <= 1:
        raise UserError("the strength must lie in (0, 1]")
    mask, strokes = read_paint(paint, scenes.resolution * ws.scale)
    if mask is None:
        return nothing_to_do("Nothing to do: there is no new paint. Paint over the part of the "
                             "scene to change, then press Remove or Draw.", OUTPUTS)
    cells = scenes.layer_cells(mask)
    drawing = None
    if mode == "draw":
        chosen, ranking, drawing = scenes.draw_units(concept, k)
    else:
        chosen, ranking = scenes.brush_units(concept, k)
    session.strokes.append(PaintStroke(
        concept, mode, cells, chosen, ranking, float(strength),
        None if drawing is None else drawing.values, None if drawing is None else drawing.weights))
    return _view(ws, session, clear=False, applied=strokes)


@user_errors
def undo(ws: Workspace, session: Session) -> PaintView:
    """Take the last stroke back (the canvas is cleared of paint)."""
    _scenes(ws)
    if session.z is None or not session.strokes:
        return nothing_to_do("Nothing to undo.", OUTPUTS)
    session.strokes.pop()
    return _view(ws, session, clear=True)


@user_errors
def reset(ws: Workspace, session: Session) -> PaintView:
    """Take every stroke back."""
    _scenes(ws)
    if session.z is None:
        return nothing_to_do("Pick a scene first.", OUTPUTS)
    session.strokes = []
    return _view(ws, session, clear=True)


def _gallery(ws: Workspace) -> list[tuple[np.ndarray, str]]:
    scenes = ws.scenes
    return [(enlarge(pixels(scenes.render(scenes.latent(seed))), 2), f"scene {seed}")
            for seed in gallery_seeds(ws)]


def build(ws: Workspace, state: gr.State) -> dict[str, Any]:
    """The tab's components (inside an open ``gr.Tab``); returns them by name. The canvas,
    the scene, the brush and its buttons share one screen: the canvas on the left, the rest
    in a column beside it."""
    scenes = ws.scenes
    side = scenes.resolution * ws.scale
    c: dict[str, Any] = {}
    with gr.Row(equal_height=False):
        with gr.Column(scale=0, min_width=side + 24):
            c["canvas"] = gr.HTML(elem_id="paint-canvas", js_on_load=SCRIPT,
                                  min_height=side + 40)
        with gr.Column(scale=1, min_width=300):
            with gr.Row():
                c["seed"] = gr.Number(value=0, precision=0, minimum=0, maximum=MAX_SEED,
                                      label="Scene number", elem_id="scene-seed",
                                      min_width=110)
                c["show"] = gr.Button("Show scene", elem_id="show-scene", min_width=90)
                c["random"] = gr.Button("Random", elem_id="random-scene", min_width=80)
            # a real image: a SceneWorld scene of the held-out world, or an upload
            with gr.Row(equal_height=True):
                c["world"] = gr.Number(value=0, precision=0, minimum=0, maximum=MAX_SEED,
                                       label="Rendered SceneWorld scene", scale=2,
                                       elem_id="world-scene", min_width=110)
                c["invert_world"] = gr.Button("Invert scene", elem_id="invert-world",
                                              scale=1, min_width=80)
                c["upload"] = gr.File(label="Or an image (PNG, JPEG)", type="filepath",
                                      file_count="single", file_types=["image"], height=90,
                                      scale=3, elem_id="paint-upload", min_width=150)
                c["invert_upload"] = gr.Button("Invert image", elem_id="invert-upload",
                                               scale=1, min_width=80)
            brushes = [(b.title, b.key) for b in scenes.brushes]
            c["concept"] = gr.Dropdown(brushes, value=brushes[0][1] if brushes else None,
                                       label="Brush (concept)", elem_id="brush-concept",
                                       info="labelled: units it labels; best in its "
                                            "category: the units a brush draws from "
                                            "(Units tab: more)")
            with gr.Row():
                c["remove"] = gr.Button("Remove", variant="primary", elem_id="brush-remove",
                                        min_width=80)
                c["draw"] = gr.Button("Draw", variant="primary", elem_id="brush-draw",
                                      min_width=80)
                c["undo"] = gr.Button("Undo", elem_id="brush-undo", min_width=60)
                c["reset"] = gr.Button("Reset", elem_id="brush-reset", min_width=60)
            with gr.Row():
                c["strength"] = gr.Slider(0.05, 1.0, value=1.0, step=0.05, label="Strength",
                                          min_width=120)
                c["units"] = gr.Slider(1, scenes.n_units, value=min(BRUSH_UNITS, scenes.n_units),
                                       step=1, label="Units per brush", elem_id="brush-units",
                                       info="Draw with a learned drawing weighs every unit",
                                       min_width=120)
            c["status"] = gr.Markdown(elem_id="paint-status")
            with gr.Row():
                c["download"] = gr.DownloadButton(f"Download as shown ({side} px)",
                                                  elem_id="download-edit", size="sm")
                c["download_native"] = gr.DownloadButton(
                    f"Download at {scenes.resolution} px", elem_id="download-native", size="sm")
    c["paint"] = gr.Textbox(visible=False, elem_id="paint-mask")
    with gr.Row():
        c["gallery"] = gr.Gallery(_gallery(ws), label="Generated scenes (click one)",
                                  columns=ws.config.gallery, rows=1, height=150,
                                  allow_preview=False, format="png", elem_id="scene-gallery")
    c["used"] = gr.Dataframe(pd.DataFrame([], columns=USED_HEADERS), interactive=False,
                             label="Units the last stroke used (click one to open it in the "
                                   "Units tab)", elem_id="brush-used", max_height=240)
    outputs = [state, c["canvas"], c["used"], c["status"], c["download"],
               c["download_native"]]
    # the canvas never shows Gradio's busy cover (it would stop the painting); the time
    # shows beside it, on the status
    model = {"concurrency_id": "model", "show_progress": "minimal"}

    def on_show(session, seed):
        return choose_scene(ws, session, seed)

    def on_random(session):
        return random_scene(ws, session)

    def on_gallery(session, evt: gr.SelectData):
        seed = gallery_seeds(ws)[evt.index]
        return (*choose_scene(ws, session, seed), seed)

    def brush(mode: str):
        def on_brush(session, paint, concept, strength, units):
            return apply_brush(ws, session, paint, concept, mode, strength, units)
        return on_brush

    def bar(progress: gr.Progress):
        return lambda done, total, stage: progress((done, total), desc=f"Inverting: {stage}")

    def on_invert_upload(session, upload, progress=PROGRESS):
        return invert_upload(ws, session, upload, bar(progress))

    def on_invert_world(session, index, progress=PROGRESS):
        return invert_world_scene(ws, session, index, bar(progress))

    def on_undo(session):
        return undo(ws, session)

    def on_reset(session):
        return reset(ws, session)

    c["show"].click(on_show, [state, c["seed"]], outputs, api_name="show_scene", **model)
    c["seed"].submit(on_show, [state, c["seed"]], outputs, api_visibility="private", **model)
    c["random"].click(on_random, [state], [*outputs, c["seed"]], api_name="random_scene",
                      **model)
    c["gallery"].select(on_gallery, [state], [*outputs, c["seed"]], api_visibility="private",
                        **model)
    # inverting takes seconds: its progress bar shows on the status
    inverting = {"concurrency_id": "model", "show_progress": "full",
                 "show_progress_on": [c["status"]]}
    c["invert_upload"].click(on_invert_upload, [state, c["upload"]], outputs,
                             api_name="invert_image", api_visibility="private", **inverting)
    c["invert_world"].click(on_invert_world, [state, c["world"]], outputs,
                            api_name="invert_scene", api_visibility="private", **inverting)
    c["world"].submit(on_invert_world, [state, c["world"]], outputs, api_visibility="private",
                      **inverting)
    inputs = [state, c["paint"], c["concept"], c["strength"], c["units"]]
    c["remove"].click(brush("remove"), inputs, outputs, api_name="remove", js=COLLECT, **model)
    c["draw"].click(brush("draw"), inputs, outputs, api_name="draw", js=COLLECT, **model)
    c["undo"].click(on_undo, [state], outputs, api_name="undo", **model)
    c["reset"].click(on_reset, [state], outputs, api_name="reset", **model)
    c["outputs"] = outputs
    c["on_show"] = on_show
    return c
