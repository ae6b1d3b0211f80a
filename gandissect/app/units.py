"""The Units tab: every unit of the dissected layer, its top images and its heatmap on the
current scene, the units active at a spot of the scene one clicks, ablation of chosen units,
units per concept.

Units are the dissection's (``gandissect.dissect``); "causal effect" is the concept's learned
ACE weight (``gandissect.ace.units_by_ace``) where it has been learned, here or by
``gandissect ace``.
"""

from __future__ import annotations

from typing import Any

import gradio as gr
import numpy as np
import pandas as pd

from gandissect.app.messages import PROGRESS, user_errors
from gandissect.app.pictures import enlarge, pixels
from gandissect.app.real import edited_picture
from gandissect.app.session import PaintStroke, Session
from gandissect.app.unit_table import (
    ALL,
    HEADERS,
    SORTS,
    TableQuery,
    bars_html,
    category_choices,
    concept_choices,
    unit_table,
)
from gandissect.app.workspace import Workspace
from gandissect.dissect.counts import EXPLAINED
from gandissect.errors import UserError
from gandissect.intervene import Stroke
from gandissect.visualize import overlay

__all__ = ["ablate", "build", "learn_drawing", "learn_effect", "parse_units", "scene_picture",
           "select_unit", "table", "units_here"]

SHOWN_SCALE = 4  # enlargement of the 64 px pictures in this tab


def _scenes(ws: Workspace):
    if ws.scenes is None:
        raise UserError(ws.problem or "no generator is loaded")
    return ws.scenes


def parse_units(text: str, n_units: int) -> list[int]:
    """Unit ids from ``"3, 17 42"``; a ``UserError`` naming what is wrong."""
    ids = []
    for part in str(text or "").replace(",", " ").split():
        try:
            unit = int(part)
        except ValueError:
            raise UserError(f"{part!r} is not a unit number; list units like 3, 17, 42") \
                from None
        if not 0 <= unit < n_units:
            raise UserError(f"unit {unit} does not exist: this layer has units 0 to "
                            f"{n_units - 1}")
        ids.append(unit)
    return list(dict.fromkeys(ids))


@user_errors
def table(ws: Workspace, query: TableQuery) -> pd.DataFrame:
    """The unit table for ``query``, with causal effects where learned."""
    scenes = _scenes(ws)
    layer = scenes.units_dissection
    if query.by_concept:
        keys = [query.concept] if query.concept != ALL else []
    else:
        keys = [f"{u.category}/{u.label}" for u in layer.units]
    return unit_table(scenes.dissection, layer, query, scenes.effects(keys))


@user_errors
def select_unit(ws: Workspace, session: Session, unit: Any) -> tuple:
    """Show unit ``unit``: a description, its top images and its heatmap on the scene."""
    scenes = _scenes(ws)
    ids = parse_units(str(unit), scenes.n_units)
    if len(ids) != 1:
        raise UserError("choose one unit")
    session.unit = ids[0]
    score = scenes.units_dissection.units[session.unit]
    best = ", ".join(f"{name} {iou:.3f}" for name, iou in score.concepts[:3])
    text = (f"**Unit {score.unit}** of `{scenes.layer}`: {score.label} ({score.category}), "
            f"IoU {score.iou:.3f}{' (interpretable)' if score.interpretable else ''}. "
            f"Best concepts: {best}. Threshold {score.threshold:.3g}.")
    strip = scenes.top_images(session.unit)
    heat = None
    if session.z is not None:
        image = _shown(ws, session, [])
        activation = scenes.activations(session.z, generator=_generator(session))[session.unit]
        heat = enlarge(overlay(image, activation, mode="absolute", alpha=0.6), SHOWN_SCALE)
    return session, text, enlarge(strip, 2), heat, str(session.unit)


HERE_HEADERS = ["unit", "label", "category", "activation / threshold", "IoU"]
HERE_ROWS = 12  # units listed for a clicked spot


def _generator(session: Session):
    """The generator of the session's scene: an inverted image's own, else None (the shared
    one)."""
    return None if session.inversion is None else session.inversion.generator


def _shown(ws: Workspace, session: Session, strokes: list[PaintStroke]) -> np.ndarray:
    """The session's scene with ``strokes`` applied, ``(H, W, 3)`` uint8: as generated, or a
    real image painted as the Paint tab paints it (blended outside the painted cells)."""
    if session.inversion is None:
        return pixels(ws.scenes.render(session.z, [s.stroke() for s in strokes]))
    return edited_picture(ws, session.inversion, strokes) if strokes else session.original


def scene_picture(ws: Workspace, session: Session) -> np.ndarray | None:
    """The current scene (the Paint tab's, its strokes applied), enlarged, to click on."""
    _scenes(ws)
    if session.z is None:
        return None
    return enlarge(_shown(ws, session, session.strokes), SHOWN_SCALE)


@user_errors
def units_here(ws: Workspace, session: Session, x: Any, y: Any) -> tuple:
    """The units most active at pixel ``(x, y)`` of the shown scene: its layer cell, each
    unit's activation there over the unit's dissection threshold (1 or more: the unit is "on"
    there, as dissection counts it), best first; and the scene with that cell outlined."""
    scenes = _scenes(ws)
    if session.z is None:
        raise UserError("pick a scene in the Paint tab first")
    side = scenes.resolution * SHOWN_SCALE
    try:
        column, row = int(x), int(y)
    except (TypeError, ValueError):
        raise UserError("click a spot of the scene") from None
    if not (0 <= column < side and 0 <= row < side):
        raise UserError(f"the spot ({column}, {row}) lies outside the {side}x{side} scene")
    (h, w), strokes = scenes.cells, [s.stroke() for s in session.strokes]
    cell = (row * h // side, column * w // side)
    maps = scenes.activations(session.z, strokes, _generator(session))[:, cell[0], cell[1]]
    units = scenes.units_dissection.units
    ratio = [float(maps[u.unit]) / u.threshold if u.threshold > 0 else float("inf")
             for u in units]
    order = sorted(range(len(units)), key=lambda u: (-ratio[u], u))[:HERE_ROWS]
    rows = [[u, units[u].label, units[u].category, round(ratio[u], 3), round(units[u].iou, 4)]
            for u in order]
    picture = scene_picture(ws, session)
    top, left = cell[0] * side // h, cell[1] * side // w
    bottom, right = (cell[0] + 1) * side // h - 1, (cell[1] + 1) * side // w - 1
    for edge in (picture[top, left:right + 1], picture[bottom, left:right + 1],
                 picture[top:bottom + 1, left], picture[top:bottom + 1, right]):
        edge[...] = (255, 230, 0)
    text = (f"Units most active in layer cell {cell} of `{scenes.layer}` (row, column): "
            "activation there over the unit's threshold; 1 or more is where dissection counts "
            "the unit on. Click a row to see the unit.")
    return session, picture, pd.DataFrame(rows, columns=HERE_HEADERS), text


@user_errors
def ablate(ws: Workspace, session: Session, units: str, active: bool) -> tuple:
    """The current scene with ``units`` ablated everywhere (``active``), else as drawn."""
    scenes = _scenes(ws)
    chosen = parse_units(units, scenes.n_units)
    if session.z is None:
        raise UserError("pick a scene in the Paint tab first")
    session.ablated = chosen
    strokes = [Stroke(session.ablated, "ablate")] if active and session.ablated else []
    if session.inversion is not None and not strokes:
        return session, enlarge(session.original, SHOWN_SCALE)  # the image itself
    return session, enlarge(pixels(scenes.render(session.z, strokes, _generator(session))),
                            SHOWN_SCALE)


@user_errors
def learn_effect(ws: Workspace, concept: str | None, progress: bool = True) -> str:
    """Learn the concept's causal weights (cached); brushes of it then rank by them."""
    scenes = _scenes(ws)
    if not concept or concept == ALL:
        raise UserError("choose a concept to learn its units' causal effect")
    weights = scenes.learn_causal_weights(concept, progress)
    top = weights.argsort(descending=True)[:5].tolist()
    return (f"Causal effect of {concept.partition('/')[2]} learned: top units "
            f"{', '.join(map(str, top))}. Its brush now ranks units by it.")


@user_errors
def learn_drawing(ws: Workspace, concept: str | None, progress: bool = True) -> str:
    """Learn which units draw the concept where it belongs (cached); its brush then draws with
    them, writing the values learned with them."""
    scenes = _scenes(ws)
    if not concept or concept == ALL:
        raise UserError("choose a concept to learn how its units draw it")
    top = scenes.learn_drawing(concept, progress).units[:5]
    return (f"Drawing of {concept.partition('/')[2]} learned: top units "
            f"{', '.join(map(str, top))}. Its brush now draws with them.")


def _query(concept, category, interpretable, sort, descending, by_concept=False) -> TableQuery:
    return TableQuery(concept or ALL, category or ALL, bool(interpretable), sort or "unit",
                      bool(descending), by_concept)


def filters(dissection, layer, prefix: str) -> dict[str, Any]:
    """The table's filter and sort controls (shared with the Classifiers tab)."""
    c: dict[str, Any] = {}
    with gr.Row():
        c["concept"] = gr.Dropdown([("all concepts", ALL), *concept_choices(dissection, layer)],
                                   value=ALL, label="Concept", elem_id=f"{prefix}-concept",
                                   scale=3)
        c["category"] = gr.Dropdown([("all categories", ALL)] + category_choices(dissection),
                                    value=ALL, label="Category", scale=2)
        c["sort"] = gr.Dropdown(SORTS, value="unit", label="Sort by", scale=2)
        c["descending"] = gr.Checkbox(False, label="Descending", scale=1)
        c["interpretable"] = gr.Checkbox(False, label="Interpretable only", scale=1)
    return c


def build(ws: Workspace, state: gr.State) -> dict[str, Any]:
    """The tab's components (inside an open ``gr.Tab``); returns them by name."""
    scenes = ws.scenes
    layer = scenes.units_dissection
    interpretable = len(layer.interpretable())
    gr.Markdown(f"Layer `{scenes.layer}`: {scenes.n_units} units at "
                f"{scenes.cells[0]}x{scenes.cells[1]}, {interpretable} interpretable "
                f"(IoU > {scenes.dissection.settings['min_iou']}); dissection "
                f"{scenes.source}. Click a row to see the unit. Concept counts: {EXPLAINED}"
                + "".join(f"  \n**Warning:** {line}" for line in scenes.dissection.warnings))
    c = filters(scenes.dissection, layer, "units")
    with gr.Row():
        c["list"] = gr.Button("List units by concept", elem_id="list-by-concept")
        c["learn"] = gr.Button("Learn causal effect of this concept (ACE)", elem_id="learn-ace")
        c["learn_draw"] = gr.Button("Learn how its units draw it", elem_id="learn-draw")
    c["learned"] = gr.Markdown()
    c["table"] = gr.Dataframe(table(ws, TableQuery()), headers=HEADERS, interactive=False,
                              max_height=360, elem_id="units-table", label="Units")
    with gr.Row(equal_height=False):
        with gr.Column(scale=2):
            c["about"] = gr.Markdown("Select a unit in the table.", elem_id="unit-about")
            c["strip"] = gr.Image(label="Top images (unit's region outlined)", format="png",
                                  interactive=False, elem_id="unit-strip")
        with gr.Column(scale=1):
            c["heat"] = gr.Image(label="Heatmap on the current scene", format="png",
                                 interactive=False, elem_id="unit-heat")
        with gr.Column(scale=1):
            c["ablated_units"] = gr.Textbox(label="Units to ablate", placeholder="3, 17, 42",
                                            elem_id="ablate-units")
            with gr.Row():
                c["add"] = gr.Button("Add selected unit", size="sm")
                c["ablate_on"] = gr.Checkbox(False, label="Ablate", elem_id="ablate-on")
            c["ablated"] = gr.Image(label="Current scene", format="png", interactive=False,
                                    elem_id="ablated-image")
    c["unit"] = gr.Textbox(visible=False)
    gr.Markdown("### Which units are active here? Click a spot of the scene")
    with gr.Row(equal_height=False):
        with gr.Column(scale=1):
            c["spot"] = gr.Image(label="The current scene (the Paint tab's)", format="png",
                                 interactive=False, elem_id="units-spot")
        with gr.Column(scale=2):
            c["here_about"] = gr.Markdown("Click a spot of the scene.", elem_id="units-here-about")
            c["here"] = gr.Dataframe(pd.DataFrame([], columns=HERE_HEADERS), interactive=False,
                                     label="Units active at the spot (click one to see it)",
                                     elem_id="units-here", max_height=320)
    gr.Markdown("### Units per concept")
    c["bars"] = gr.HTML(bars_html(scenes.dissection, layer), elem_id="units-bars")

    controls = [c["concept"], c["category"], c["interpretable"], c["sort"], c["descending"]]
    model = {"concurrency_id": "model"}

    def on_filter(concept, category, interpretable, sort, descending):
        return table(ws, _query(concept, category, interpretable, sort, descending))

    def on_list(concept, category, interpretable, sort, descending):
        return table(ws, _query(concept, category, interpretable, sort, descending, True))

    def on_select(session, evt: gr.SelectData):
        unit = (evt.row_value or [None])[0]
        return select_unit(ws, session, unit)

    def on_unit(session, unit):
        return select_unit(ws, session, unit)

    def on_add(session, units, active):
        if session.unit is None:
            raise gr.Error("select a unit in the table first", print_exception=False)
        listed = f"{units}, {session.unit}" if str(units or "").strip() else str(session.unit)
        return (*ablate(ws, session, listed, active), ", ".join(map(str, session.ablated)))

    def on_ablate(session, units, active):
        return ablate(ws, session, units, active)

    def on_spot(session, evt: gr.SelectData):
        x, y = evt.index if evt.index is not None else (None, None)
        return units_here(ws, session, x, y)

    def on_tab(session):
        return scene_picture(ws, session)

    def on_learn(concept, category, interpretable, sort, descending,
                 progress=PROGRESS):
        message = learn_effect(ws, concept)
        return message, on_list(concept, category, interpretable, sort, descending)

    def on_learn_draw(concept, progress=PROGRESS):
        return learn_drawing(ws, concept)

    for control in controls:
        control.change(on_filter, controls, c["table"], api_visibility="private", **model)
    c["learn_draw"].click(on_learn_draw, [c["concept"]], c["learned"], api_name="learn_drawing",
                          **model)
    c["list"].click(on_list, controls, c["table"], api_name="list_units", **model)
    c["learn"].click(on_learn, controls, [c["learned"], c["table"]], api_name="learn_effect",
                     **model)
    details = [state, c["about"], c["strip"], c["heat"], c["unit"]]
    c["table"].select(on_select, [state], details, api_visibility="private", **model)
    c["unit"].submit(on_unit, [state, c["unit"]], details, api_name="select_unit", **model)
    c["add"].click(on_add, [state, c["ablated_units"], c["ablate_on"]],
                   [state, c["ablated"], c["ablated_units"]], api_visibility="private", **model)
    ablate_inputs = [state, c["ablated_units"], c["ablate_on"]]
    c["ablate_on"].change(on_ablate, ablate_inputs, [state, c["ablated"]], api_name="ablate",
                          **model)
    c["ablated_units"].submit(on_ablate, ablate_inputs, [state, c["ablated"]],
                              api_visibility="private", **model)
    c["spot"].select(on_spot, [state], [state, c["spot"], c["here"], c["here_about"]],
                     api_visibility="private", **model)
    c["here"].select(on_select, [state], details, api_visibility="private", **model)
    c["details"] = details
    c["on_unit"] = on_unit
    c["on_tab"] = on_tab
    return c
