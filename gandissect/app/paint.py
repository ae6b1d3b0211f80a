"""The Paint tab: pick a scene, paint over it, press Remove or Draw, see the edited scene.

Each press takes the paint added to the canvas since the last press, max-pools it exactly to
the layer's cells, takes the brush's top units (ranked by causal effect where learned, else
IoU) and appends one stroke to the session; the scene is rendered again with all strokes in
order (``gandissect.intervene.render_edited``) and shown beside the canvas, and the original
below it shows the cells each stroke edited (red: removed, green: drawn).

The canvas is only given a new picture when the scene changes, on Undo and on Reset: an
image editor that receives a picture re-initialises (seconds, in a browser without a GPU) and
drops strokes painted meanwhile, so a press leaves it as it is and paint accumulates there.
"""

from __future__ import annotations

import hashlib
import random
from typing import Any, NamedTuple

import gradio as gr
import numpy as np
import pandas as pd

from gandissect.app.messages import nothing_to_do, user_errors, whole_number
from gandissect.app.pictures import editor_mask, enlarge, pixels, save_png, tint_cells
from gandissect.app.scenes import MAX_SEED
from gandissect.app.session import PaintStroke, Session
from gandissect.app.workspace import Workspace
from gandissect.errors import UserError

__all__ = ["MODES", "OUTPUTS", "PaintView", "build", "choose_scene", "random_scene",
           "apply_brush", "undo", "reset", "gallery_seeds", "USED_HEADERS"]

MODES = ("remove", "draw")
USED_HEADERS = ["unit", "label", "category", "IoU (its label)"]
BRUSH_COLOR = "#ff00ff"
RANKINGS = {"iou": "IoU", "ace": "causal effect (ACE)",
            "ace+swaps": "causal effect (ACE, its top 20 improved by swaps)"}


class PaintView(NamedTuple):
    """What every callback of the tab returns, in the order of its outputs. ``canvas`` is
    ``gr.skip()`` after a press: the Remove and Draw buttons do not even list the canvas as
    an output, as an editor that is an event's output reloads its picture."""

    session: Session
    canvas: Any
    original: np.ndarray
    edited: np.ndarray
    used: pd.DataFrame
    status: str
    download: str


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
        units = ws.scenes.units_dissection.units
        for unit in session.strokes[-1].units:
            score = units[unit]
            rows.append([unit, score.label, score.category, round(score.iou, 4)])
    return pd.DataFrame(rows, columns=USED_HEADERS)


def _status(ws: Workspace, session: Session) -> str:
    scenes = ws.scenes
    n = len(session.strokes)
    lines = [f"**Scene {session.seed}** · {n} stroke{'s' if n != 1 else ''}"]
    if session.strokes:
        last = session.strokes[-1]
        concept = last.concept.partition("/")[2]
        lines.append(f"Last stroke: {last.mode} {concept}, {len(last.units)} units ranked by "
                     f"{RANKINGS.get(last.ranking, last.ranking)}, "
                     f"strength {last.strength:g}.")
    units, (h, w) = scenes.n_units, scenes.cells
    lines.append(f"Painting layer `{scenes.layer}`: {units} units at {h}x{w}; dissection "
                 f"{scenes.source}.")
    return "  \n".join(lines)


def _view(ws: Workspace, session: Session, new_canvas: bool) -> PaintView:
    """Every output of the tab for the session's scene and strokes; with ``new_canvas`` the
    canvas gets the scene again, without paint."""
    scenes, scale = ws.scenes, ws.scale
    original = pixels(scenes.render(session.z))
    edited = pixels(scenes.render(session.z, [s.stroke() for s in session.strokes]))
    marked = tint_cells(enlarge(original, scale), [(s.cells, s.mode) for s in session.strokes])
    # named by content: a repeated view or edit reuses its file, so disk grows only with
    # distinct pictures (Gradio's copies are pruned by the Blocks' ``delete_cache``)
    digest = hashlib.sha256(edited.tobytes() + str(edited.shape).encode()).hexdigest()[:20]
    path = ws.downloads / digest / f"scene{session.seed}_edited.png"
    if not path.is_file():
        save_png(edited, path)
    canvas = gr.skip()
    if new_canvas:
        session.painted = None
        shown = enlarge(original, scale)
        canvas = {"background": shown, "layers": [], "composite": shown}
    return PaintView(session, canvas, marked, enlarge(edited, scale), _used_units(ws, session),
                     _status(ws, session), str(path))


@user_errors
def choose_scene(ws: Workspace, session: Session, seed: Any) -> PaintView:
    """Start editing scene ``seed`` (strokes cleared)."""
    scenes = _scenes(ws)
    seed = whole_number(seed, "the scene number", 0, MAX_SEED)
    session.seed, session.z, session.strokes = seed, scenes.latent(seed), []
    return _view(ws, session, new_canvas=True)


@user_errors
def random_scene(ws: Workspace, session: Session) -> tuple:
    """Start editing a random scene; returns the tab's outputs and the seed chosen."""
    return (*choose_scene(ws, session, random.randint(0, MAX_SEED)), session.seed)


@user_errors
def apply_brush(ws: Workspace, session: Session, canvas: Any, concept: str | None, mode: str,
                strength: float, units: float) -> PaintView:
    """Apply the paint added since the last press as one stroke: ``mode`` ("remove" or
    "draw") ``concept``'s top ``units`` units at ``strength``."""
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
    mask = editor_mask(canvas)
    fresh = mask
    if mask is not None and session.painted is not None and session.painted.shape == mask.shape:
        fresh = mask & ~session.painted
    if fresh is None or not fresh.any():
        return nothing_to_do("Nothing to do: the mask is empty. Paint over the part of the "
                             "scene to change (new paint since the last press), then press "
                             "Remove or Draw.", OUTPUTS)
    cells = scenes.layer_cells(fresh)
    chosen, ranking = scenes.brush_units(concept, k)
    session.strokes.append(PaintStroke(concept, mode, cells, chosen, ranking, float(strength)))
    session.painted = mask
    return _view(ws, session, new_canvas=False)


@user_errors
def undo(ws: Workspace, session: Session) -> PaintView:
    """Take the last stroke back (the canvas is cleared of paint)."""
    _scenes(ws)
    if session.z is None or not session.strokes:
        return nothing_to_do("Nothing to undo.", OUTPUTS)
    session.strokes.pop()
    return _view(ws, session, new_canvas=True)


@user_errors
def reset(ws: Workspace, session: Session) -> PaintView:
    """Take every stroke back."""
    _scenes(ws)
    if session.z is None:
        return nothing_to_do("Pick a scene first.", OUTPUTS)
    session.strokes = []
    return _view(ws, session, new_canvas=True)


def _gallery(ws: Workspace) -> list[tuple[np.ndarray, str]]:
    scenes = ws.scenes
    return [(enlarge(pixels(scenes.render(scenes.latent(seed))), 2), f"scene {seed}")
            for seed in gallery_seeds(ws)]


def build(ws: Workspace, state: gr.State) -> dict[str, Any]:
    """The tab's components (inside an open ``gr.Tab``); returns them by name."""
    scenes = ws.scenes
    size = scenes.resolution * ws.scale
    c: dict[str, Any] = {}
    with gr.Row():
        c["gallery"] = gr.Gallery(_gallery(ws), label="Generated scenes (click one)",
                                  columns=ws.config.gallery, rows=1, height=150,
                                  allow_preview=False, format="png", elem_id="scene-gallery")
    with gr.Row():
        c["seed"] = gr.Number(value=0, precision=0, minimum=0, maximum=MAX_SEED,
                              label="Scene number", elem_id="scene-seed", scale=2)
        c["show"] = gr.Button("Show scene", elem_id="show-scene", scale=1)
        c["random"] = gr.Button("Random scene", elem_id="random-scene", scale=1)
    with gr.Row():
        brushes = [(b.title, b.key) for b in scenes.brushes]
        c["concept"] = gr.Dropdown(brushes, value=brushes[0][1] if brushes else None,
                                   label="Brush (concept)", elem_id="brush-concept", scale=3)
        c["strength"] = gr.Slider(0.05, 1.0, value=1.0, step=0.05, label="Strength", scale=2)
        c["units"] = gr.Slider(1, scenes.n_units, value=min(15, scenes.n_units), step=1,
                               label="Units per brush", scale=2, elem_id="brush-units")
    with gr.Row(equal_height=False):
        with gr.Column(scale=1):
            c["canvas"] = gr.ImageEditor(
                type="numpy", image_mode="RGBA", sources=(), transforms=(), layers=False,
                format="png", label="Paint here, then press Remove or Draw",
                elem_id="paint-canvas",
                canvas_size=(size, size), height=size + 120, width=size + 40,
                brush=gr.Brush(colors=[BRUSH_COLOR], color_mode="fixed",
                               default_size=max(4, size // 24)))
            with gr.Row():
                c["remove"] = gr.Button("Remove", variant="primary", elem_id="brush-remove")
                c["draw"] = gr.Button("Draw", variant="primary", elem_id="brush-draw")
                c["undo"] = gr.Button("Undo", elem_id="brush-undo")
                c["reset"] = gr.Button("Reset", elem_id="brush-reset")
        with gr.Column(scale=1):
            c["edited"] = gr.Image(label="Edited", format="png", interactive=False,
                                   elem_id="edited-image", height=size // 2 + 40)
            c["original"] = gr.Image(label="Original, cells edited (red: removed, green: drawn)",
                                     format="png", interactive=False, elem_id="original-image",
                                     height=size // 2 + 40)
            c["download"] = gr.DownloadButton("Download the edited scene (PNG)",
                                              elem_id="download-edit")
    c["status"] = gr.Markdown(elem_id="paint-status")
    c["used"] = gr.Dataframe(pd.DataFrame([], columns=USED_HEADERS), interactive=False,
                             label="Units the last stroke used (click one to open it in the "
                                   "Units tab)", elem_id="brush-used", max_height=240)
    outputs = [state, c["canvas"], c["original"], c["edited"], c["used"], c["status"],
               c["download"]]
    model = {"concurrency_id": "model"}

    def on_show(session, seed):
        return choose_scene(ws, session, seed)

    def on_random(session):
        return random_scene(ws, session)

    def on_gallery(session, evt: gr.SelectData):
        seed = gallery_seeds(ws)[evt.index]
        return (*choose_scene(ws, session, seed), seed)

    def brush(mode: str):
        def on_brush(session, canvas, concept, strength, units):
            view = apply_brush(ws, session, canvas, concept, mode, strength, units)
            return view[:1] + view[2:]  # the canvas is no output of a press (see above)
        return on_brush

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
    inputs = [state, c["canvas"], c["concept"], c["strength"], c["units"]]
    pressed = [o for o in outputs if o is not c["canvas"]]
    c["remove"].click(brush("remove"), inputs, pressed, api_name="remove", **model)
    c["draw"].click(brush("draw"), inputs, pressed, api_name="draw", **model)
    c["undo"].click(on_undo, [state], outputs, api_name="undo", **model)
    c["reset"].click(on_reset, [state], outputs, api_name="reset", **model)
    c["outputs"] = outputs
    c["on_show"] = on_show
    return c
