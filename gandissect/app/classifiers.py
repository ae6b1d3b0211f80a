"""The Classifiers tab: Network Dissection of a classifier's layer on held-out SceneWorld
scenes (or the app's ``--dataset``, e.g. your own annotated ``masks:DIR``), browsed like the
Units tab; attribution heatmaps of a scene or an upload; feature visualisation of a unit or a
class beside the scenes that excite it most.

The algorithms are ``gandissect.netdissect``, ``gandissect.attribute`` and
``gandissect.visualize``; this tab chooses their inputs and shows their outputs.
"""

from __future__ import annotations

from typing import Any

import gradio as gr
import numpy as np
import pandas as pd

from gandissect.app.explain import MAX_SCENE, METHOD_NAMES, PROBE_SEED, dissection_key
from gandissect.app.messages import PROGRESS, user_errors, whole_number
from gandissect.app.pictures import enlarge, load_upload, pixels
from gandissect.app.session import Session
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
from gandissect.app.units import parse_units
from gandissect.app.workspace import Workspace
from gandissect.errors import UserError
from gandissect.netdissect import layer_summary
from gandissect.spatial import default_map_layer
from gandissect.units_relevance import unit_labels
from gandissect.visualize import overlay

__all__ = ["build", "concept_vectors", "default_layer", "explain", "explain_units",
           "feature_visualization", "world_factors",
           "run_netdissect", "select_unit", "table", "preview_upload", "SOURCES"]

SOURCES = ("SceneWorld scene", "Upload")
FORMULA_LENGTH = 3  # the checkbox's compositional explanations: up to three concepts
PREDICTED = -1  # the target "the predicted class"


def _scale(size: int) -> int:
    return max(1, 256 // size)


def default_layer(ws: Workspace, spec: str) -> tuple[list[str], str]:
    """The classifier's layers with maps and the one to start with (``layer4`` if it has one;
    a class-token ViT's last block's first norm; else its last map:
    ``gandissect.spatial.default_map_layer``)."""
    classifier = ws.classifiers.get(spec)
    if not classifier.layers:
        raise UserError(f"{spec} has no layer with a (N, units, h, w) output or token map")
    return list(classifier.layers), default_map_layer(classifier.model, classifier.layers)


def _browsed(ws: Workspace, session: Session):
    result = ws.classifiers.result(session.netdissect) if session.netdissect else None
    if result is None:
        raise UserError("run Network Dissection first")
    return result, result.layers[0]


def _check_count(n: Any) -> int:
    return whole_number(n, "the number of scenes", 10, 10000)


@user_errors
def run_netdissect(ws: Workspace, session: Session, spec: str, layer: str, n: Any,
                   progress: bool = True, formulas: bool = False) -> tuple:
    """Network Dissection of ``layer`` on ``n`` probe images; the session browses it. With
    ``formulas``, units are also labelled by formulas of ``FORMULA_LENGTH`` concepts."""
    n = _check_count(n)
    length = FORMULA_LENGTH if formulas else 0
    result = ws.classifiers.dissect(spec, layer, n, progress, length)
    session.netdissect, session.classifier_unit = dissection_key(spec, layer, n, length), None
    entry = result.layers[0]
    summary = layer_summary(entry)
    dataset = ws.classifiers.dataset
    probe = (f"{n} held-out SceneWorld scenes (world seed {PROBE_SEED})"
             if dataset == "sceneworld" else f"{result.settings['n']} images of {dataset}")
    text = (f"**{spec}**, `{layer}` ({' x '.join(map(str, entry.shape))}), {probe}: "
            f"{summary['detectors']} of "
            f"{summary['units']} units are detectors (IoU > {result.settings['min_iou']}), "
            f"{summary['unique_detectors']} distinct concepts. Click a row to see the unit.")
    if length:
        text += (f" Each unit also has the formula of up to {length} concepts (AND, OR, AND NOT) "
                 "whose mask best matches its own, and that formula's IoU.")
    concepts = gr.update(choices=[("all concepts", ALL), *concept_choices(result, entry)],
                         value=ALL)
    categories = gr.update(choices=[("all categories", ALL), *category_choices(result)],
                           value=ALL)
    return (session, text, unit_table(result, entry, TableQuery()), bars_html(result, entry),
            concepts, categories)


@user_errors
def table(ws: Workspace, session: Session, query: TableQuery) -> pd.DataFrame:
    """The browsed dissection's unit table for ``query``."""
    result, entry = _browsed(ws, session)
    return unit_table(result, entry, query)


@user_errors
def select_unit(ws: Workspace, session: Session, unit: Any) -> tuple:
    """Show a classifier unit: its description and top probe images with its region."""
    result, entry = _browsed(ws, session)
    ids = parse_units(str(unit), entry.shape[0])
    if len(ids) != 1:
        raise UserError("choose one unit")
    session.classifier_unit = ids[0]
    score = entry.units[ids[0]]
    spec, _, n = session.netdissect[:3]
    text = (f"**Unit {score.unit}** of `{entry.layer}`: {score.label} ({score.category}), "
            f"IoU {score.iou:.3f}{' (detector)' if score.interpretable else ''}.")
    strip = ws.classifiers.top_images(spec, entry, n, ids[0])
    return session, text, enlarge(strip, _scale(strip.shape[0])), str(ids[0])


def _image(ws: Workspace, spec: str, source: str, scene: Any, upload: str | None):
    size = ws.classifiers.get(spec).input_size
    if source == "Upload":
        return load_upload(upload, size)
    return ws.classifiers.scene(spec, whole_number(scene, "the scene number", 0, MAX_SCENE))


@user_errors
def preview_upload(ws: Workspace, spec: str, upload: str | None) -> tuple:
    """The uploaded file as the classifier will see it (resized and centre-cropped to its input
    size), and the image source switched to it; a file that is not an image is refused in
    words, never by the upload component."""
    if not upload:
        return None, gr.update()
    image = load_upload(upload, ws.classifiers.get(spec).input_size)
    return enlarge(pixels(image), _scale(image.shape[-1])), gr.update(value="Upload")


@user_errors
def explain(ws: Workspace, spec: str, layer: str, source: str, scene: Any,
            upload: str | None, method: str, target: Any) -> tuple:
    """Attribution heatmap over the image and every class's probability; a warning line under
    the text when the image looks unlike the classifier's training images."""
    if source not in SOURCES:
        raise UserError(f"the image source must be one of {', '.join(SOURCES)}")
    image = _image(ws, spec, source, scene, upload)
    chosen = None if target in (None, PREDICTED, str(PREDICTED)) else int(target)
    result = ws.classifiers.explain(spec, image, method, layer, chosen)
    picture = overlay(pixels(image), result.pixel_map,
                      mode="signed" if result.signed else "absolute")
    names = ws.classifiers.get(spec).class_names
    text = (f"{METHOD_NAMES.get(method, method)} for **{names[result.target]}** "
            f"({'red: for, blue: against' if result.signed else 'bright: most'}); "
            f"the colour bar runs from the lowest value (left) to the highest (right).")
    if result.domain_warning:
        text += f"\n\n**Warning:** {result.domain_warning}."
    return enlarge(picture, _scale(image.shape[-1])), result.probabilities, text


@user_errors
def explain_units(ws: Workspace, session: Session, spec: str, layer: str, source: str,
                  scene: Any, upload: str | None, target: Any) -> tuple:
    """The panel "Units behind this prediction": the class score decomposed over ``layer``'s units
    (``gandissect.units_relevance``), the top units with their labels from the tab's Network
    Dissection of that layer when it has run, and each unit's activation over the image."""
    if source not in SOURCES:
        raise UserError(f"the image source must be one of {', '.join(SOURCES)}")
    image = _image(ws, spec, source, scene, upload)
    chosen = None if target in (None, PREDICTED, str(PREDICTED)) else int(target)
    found, top, maps = ws.classifiers.units(spec, image, layer, chosen)
    dissected = session.netdissect if session is not None else None
    result = (ws.classifiers.result(dissected)
              if dissected and dissected[:2] == (spec, layer) else None)
    labels = unit_labels(result, layer) if result is not None else {}
    names = ws.classifiers.get(spec).class_names
    how = ("exact: pooled activation x class weight, the bias adds "
           f"{float(found.bias[0]):+.3f}" if found.exact
           else "gradient x activation, a first-order approximation")
    lines = [f"Score of **{names[int(found.target[0])]}** {float(found.logit[0]):.3f} over the "
             f"units of `{layer}` ({how}):", "", "| unit | contribution | concept (IoU) |",
             "|---:|---:|---|"]
    for unit in top:
        concept, iou = labels.get(unit, (None, None))
        label = f"{concept} ({iou:.3f})" if concept else "run Network Dissection for labels"
        lines.append(f"| {unit} | {float(found.contributions[0, unit]):+.3f} | {label} |")
    scale = _scale(image.shape[-1])
    gallery = [(enlarge(overlay(pixels(image), heat, mode="absolute", bar_height=0), scale),
                f"unit {unit}: {labels.get(unit, ('', 0))[0] or 'unlabelled'}")
               for unit, heat in zip(top, maps)]
    return "\n".join(lines), gallery


@user_errors
def feature_visualization(ws: Workspace, spec: str, layer: str, kind: str, unit: Any,
                          target: Any, steps: Any, n: Any) -> tuple:
    """The image optimised for a unit (or a class) beside the scenes exciting it most."""
    classifier = ws.classifiers.get(spec)
    steps = whole_number(steps, "the number of steps", 1, 2048)
    n = _check_count(n)
    if kind == "class":
        if target in (None, PREDICTED, str(PREDICTED)):
            raise UserError("choose a class to visualise")
        chosen, unit_id = int(target), None
    else:
        ws.classifiers.check_layer(classifier, layer)
        ids = parse_units(str(unit), classifier.layers[layer][0])
        if len(ids) != 1:
            raise UserError("give one unit number")
        chosen, unit_id = None, ids[0]
    image = ws.classifiers.visualize(spec, layer, unit_id, chosen, steps)
    top = ws.classifiers.top_scenes(spec, layer, unit_id, chosen, n)
    scale = _scale(classifier.input_size)
    strip = np.concatenate([np.pad(t, ((0, 0), (0, 2), (0, 0)), constant_values=255)
                            for t in top], 1)
    return enlarge(pixels(image), scale), enlarge(strip, scale)


TCAV_HEADERS = ["concept", "TCAV", "std", "p", "significant"]
FACTOR_HEADERS = ["factor", "prediction changes", "shift of p(class)", "class MI (bits)"]


@user_errors
def concept_vectors(ws: Workspace, spec: str, layer: str, class_name: Any, concepts: Any,
                    runs: Any, n: Any = 50, progress=None) -> tuple:
    """The panel "Concept vectors (TCAV)": each SceneWorld concept's TCAV score for the class
    at ``layer`` (``gandissect.tcav``, as ``gandissect tcav`` draws its examples), its spread
    over the runs and its p-value against random directions, and the correction line."""
    from gandissect.tcav import MIN_EXAMPLES

    runs = whole_number(runs, "the number of runs", 2, 200)
    n = whole_number(n, "the number of examples", MIN_EXAMPLES, 500)
    names = list(dict.fromkeys(c.strip() for c in str(concepts or "").split(",") if c.strip()))
    if not names:
        raise UserError("give at least one concept, e.g. dome, water")
    if not class_name:
        raise UserError("choose a class")
    result = ws.classifiers.tcav(spec, layer, str(class_name), names, runs, n, progress)
    rows = [[name, round(s.tcav, 3), round(s.std, 3), float(f"{s.p:.2g}"),
             "yes" if s.significant else "no"] for name, s in result.scores.items()]
    null = np.asarray(result.random_runs)
    text = (f"TCAV of **{class_name}** at `{layer}`: {runs} runs of {n} examples per set; "
            f"Welch's two-sided t-test against {len(null)} random-vs-random CAVs (TCAV "
            f"{null.mean():.3f} +- {null.std(ddof=1):.3f}); significant: p < "
            f"{result.alpha} / {len(names)} ({result.correction}).")
    return pd.DataFrame(rows, columns=TCAV_HEADERS), text


@user_errors
def world_factors(ws: Workspace, spec: str, layer: str, n: Any) -> tuple:
    """The panel "Factors of the world": the units x factors mutual information figure with the
    sensitivity bars (``gandissect.factors``), and per factor how often the prediction changes
    when only it changes, the mean shift of the predicted class's probability and the
    prediction's MI with it."""
    from gandissect.factors import factor_figure

    n = whole_number(n, "the number of scenes", 2, 2000)
    study = ws.classifiers.factors(spec, layer, n)
    rows = [[f, round(study.sensitivity[f], 3), round(study.probability_shift[f], 3),
             round(study.class_mi[f], 3)] for f in study.factors]
    return np.asarray(factor_figure(study)), pd.DataFrame(rows, columns=FACTOR_HEADERS)


def _concepts_and_factors(ws: Workspace, c: dict[str, Any], names: list[str]) -> None:
    """The panels "Concept vectors (TCAV)" and "Factors of the world", wired to the tab's
    classifier and layer (inside the open tab)."""
    with gr.Accordion("Concept vectors (TCAV) and factors of the world", open=False):
        gr.Markdown("### Concept vectors (TCAV)")
        with gr.Row():
            c["tcav_class"] = gr.Dropdown(names, value=names[0] if names else None,
                                          label="Class", scale=2)
            c["tcav_concepts"] = gr.Textbox("dome, water", label="SceneWorld concepts "
                                            "(comma-separated)", scale=3)
            c["tcav_runs"] = gr.Slider(2, 50, value=10, step=1, label="Runs", scale=2)
            c["tcav_run"] = gr.Button("Run TCAV", variant="primary", scale=1,
                                      elem_id="run-tcav")
        c["tcav_table"] = gr.Dataframe(pd.DataFrame([], columns=TCAV_HEADERS),
                                       interactive=False, label="TCAV", elem_id="tcav-table")
        c["tcav_text"] = gr.Markdown()
        gr.Markdown("### Factors of the world")
        with gr.Row():
            c["factors_n"] = gr.Slider(10, 1000, value=100, step=10, label="Held-out scenes",
                                       scale=3)
            c["factors_run"] = gr.Button("Measure factors", variant="primary", scale=1,
                                         elem_id="run-factors")
        with gr.Row(equal_height=False):
            c["factors_figure"] = gr.Image(label="Mutual information and sensitivity",
                                           format="png", interactive=False, scale=1)
            c["factors_table"] = gr.Dataframe(pd.DataFrame([], columns=FACTOR_HEADERS),
                                              interactive=False, label="Sensitivity", scale=1)

    def on_classifier(spec):
        names = ws.classifiers.get(spec).class_names
        return gr.update(choices=names, value=names[0] if names else None)

    def on_tcav(spec, layer, class_name, concepts, runs, progress=PROGRESS):
        return concept_vectors(ws, spec, layer, class_name, concepts, runs, progress=progress)

    def on_factors(spec, layer, n, progress=PROGRESS):
        return world_factors(ws, spec, layer, n)

    model = {"concurrency_id": "model", "api_visibility": "private"}
    c["classifier"].change(on_classifier, [c["classifier"]], [c["tcav_class"]], **model)
    c["tcav_run"].click(on_tcav, [c["classifier"], c["layer"], c["tcav_class"],
                                  c["tcav_concepts"], c["tcav_runs"]],
                        [c["tcav_table"], c["tcav_text"]], **model)
    c["factors_run"].click(on_factors, [c["classifier"], c["layer"], c["factors_n"]],
                           [c["factors_figure"], c["factors_table"]], **model)


def build(ws: Workspace, state: gr.State) -> dict[str, Any]:
    """The tab's components (inside an open ``gr.Tab``); returns them by name."""
    specs = ws.classifiers.specs
    c: dict[str, Any] = {}
    try:
        layers, layer = default_layer(ws, specs[0])
        names = ws.classifiers.get(specs[0]).class_names
        problem = None
    except UserError as error:
        layers, layer, names, problem = [], None, [], str(error)
    if problem:
        gr.Markdown(f"**The classifier could not be loaded:** {problem}")
    with gr.Row():
        c["classifier"] = gr.Dropdown(specs, value=specs[0], label="Classifier", scale=2)
        c["layer"] = gr.Dropdown(layers, value=layer, label="Layer", scale=2,
                                 elem_id="classifier-layer")
        c["n"] = gr.Slider(50, 2000, value=300, step=50, label="Held-out scenes", scale=3,
                           elem_id="netdissect-n")
        c["formulas"] = gr.Checkbox(False, label=f"formulas (length {FORMULA_LENGTH})",
                                    scale=1, elem_id="netdissect-formulas")
        c["run"] = gr.Button("Run Network Dissection", variant="primary", scale=2,
                             elem_id="run-netdissect")
    c["summary"] = gr.Markdown("Choose a layer and run Network Dissection.",
                               elem_id="netdissect-summary")
    with gr.Row():
        c["concept"] = gr.Dropdown([("all concepts", ALL)], value=ALL, label="Concept", scale=3)
        c["category"] = gr.Dropdown([("all categories", ALL)], value=ALL, label="Category",
                                    scale=2)
        c["sort"] = gr.Dropdown(SORTS, value="unit", label="Sort by", scale=2)
        c["descending"] = gr.Checkbox(False, label="Descending", scale=1)
        c["interpretable"] = gr.Checkbox(False, label="Detectors only", scale=1)
        c["list"] = gr.Button("List units by concept", scale=2)
    c["table"] = gr.Dataframe(pd.DataFrame([], columns=HEADERS), interactive=False,
                              max_height=320, label="Units", elem_id="classifier-table")
    with gr.Row(equal_height=False):
        with gr.Column(scale=2):
            c["about"] = gr.Markdown()
            c["strip"] = gr.Image(label="Top probe images (unit's region outlined)",
                                  format="png", interactive=False)
        with gr.Column(scale=1):
            c["bars"] = gr.HTML()
    c["unit"] = gr.Textbox(visible=False)

    gr.Markdown("### Attribution: which pixels drive a class score")
    class_choices = [("predicted class", PREDICTED), *[(n, i) for i, n in enumerate(names)]]
    with gr.Row(equal_height=False):
        with gr.Column(scale=1):
            c["source"] = gr.Radio(list(SOURCES), value=SOURCES[0], label="Image")
            c["scene"] = gr.Number(value=0, precision=0, minimum=0, maximum=MAX_SCENE,
                                   label=f"Scene number (held-out world {PROBE_SEED})")
            # a plain file input: an image component would refuse a file that is not a picture
            # with its own error before any callback could say what is wrong
            c["upload"] = gr.File(label="Upload an image (PNG or JPEG)", type="filepath",
                                  file_count="single", height=90, elem_id="upload")
            c["upload_preview"] = gr.Image(label="Uploaded image, as the classifier sees it",
                                           format="png", interactive=False, height=160,
                                           elem_id="upload-preview")
            c["method"] = gr.Dropdown([(title, key) for key, title in METHOD_NAMES.items()],
                                      value="gradcam", label="Method")
            c["target"] = gr.Dropdown(class_choices, value=PREDICTED, label="Class to explain")
            c["explain"] = gr.Button("Explain", variant="primary", elem_id="explain")
        with gr.Column(scale=1):
            c["heatmap"] = gr.Image(label="Attribution over the image", format="png",
                                    interactive=False, elem_id="attribution")
            c["explained"] = gr.Markdown()
        with gr.Column(scale=1):
            c["scores"] = gr.Label(label="Class probabilities", elem_id="class-scores")

    gr.Markdown("### Units behind this prediction")
    with gr.Row(equal_height=False):
        with gr.Column(scale=1):
            c["units_text"] = gr.Markdown("Explain an image to see the units of the layer "
                                          "that raise its class score most.",
                                          elem_id="units-behind")
        with gr.Column(scale=1):
            c["units_maps"] = gr.Gallery(label="Top units' activations over the image",
                                         columns=4, height=260, elem_id="units-maps")

    gr.Markdown("### Feature visualisation")
    with gr.Row(equal_height=False):
        with gr.Column(scale=1):
            c["kind"] = gr.Radio(["unit", "class"], value="unit", label="Visualise a")
            c["vis_unit"] = gr.Number(value=0, precision=0, minimum=0, label="Unit (of the layer)")
            c["vis_class"] = gr.Dropdown(class_choices[1:], value=0 if names else None,
                                         label="Class")
            c["steps"] = gr.Slider(8, 512, value=128, step=8, label="Optimisation steps")
            c["visualize"] = gr.Button("Visualise", variant="primary", elem_id="visualize")
        with gr.Column(scale=1):
            c["vis"] = gr.Image(label="Optimised image", format="png", interactive=False,
                                elem_id="feature-vis")
        with gr.Column(scale=2):
            c["vis_top"] = gr.Image(label="Held-out scenes that excite it most", format="png",
                                    interactive=False)

    model = {"concurrency_id": "model"}
    controls = [c["concept"], c["category"], c["interpretable"], c["sort"], c["descending"]]

    def query(concept, category, interpretable, sort, descending, by_concept=False):
        return TableQuery(concept or ALL, category or ALL, bool(interpretable), sort or "unit",
                          bool(descending), by_concept)

    def on_classifier(spec):
        layers, layer = default_layer(ws, spec)
        names = ws.classifiers.get(spec).class_names
        choices = [("predicted class", PREDICTED), *[(n, i) for i, n in enumerate(names)]]
        return (gr.update(choices=layers, value=layer),
                gr.update(choices=choices, value=PREDICTED),
                gr.update(choices=choices[1:], value=0))

    def on_run(session, spec, layer, n, formulas, progress=PROGRESS):
        return run_netdissect(ws, session, spec, layer, n, formulas=formulas)

    def on_filter(session, *values):
        return table(ws, session, query(*values))

    def on_list(session, *values):
        return table(ws, session, query(*values, by_concept=True))

    def on_select(session, evt: gr.SelectData):
        return on_unit(session, (evt.row_value or [None])[0])

    def on_unit(session, unit):
        shown = select_unit(ws, session, unit)
        return (*shown, int(shown[-1]))  # feature visualisation starts from the same unit

    def on_upload(spec, upload):
        return preview_upload(ws, spec, upload)

    def on_explain(spec, layer, source, scene, upload, method, target, progress=PROGRESS):
        return explain(ws, spec, layer, source, scene, upload, method, target)

    def on_units(session, spec, layer, source, scene, upload, target):
        return explain_units(ws, session, spec, layer, source, scene, upload, target)

    def on_visualize(spec, layer, kind, unit, target, steps, n,
                     progress=PROGRESS):
        return feature_visualization(ws, spec, layer, kind, unit, target, steps, n)

    c["classifier"].change(on_classifier, [c["classifier"]],
                           [c["layer"], c["target"], c["vis_class"]], api_visibility="private",
                           **model)
    c["run"].click(on_run, [state, c["classifier"], c["layer"], c["n"], c["formulas"]],
                   [state, c["summary"], c["table"], c["bars"], c["concept"], c["category"]],
                   api_name="netdissect", **model)
    for control in controls:
        control.change(on_filter, [state, *controls], c["table"], api_visibility="private")
    c["list"].click(on_list, [state, *controls], c["table"], api_name="classifier_units")
    details = [state, c["about"], c["strip"], c["unit"], c["vis_unit"]]
    c["table"].select(on_select, [state], details, api_visibility="private", **model)
    c["unit"].submit(on_unit, [state, c["unit"]], details, api_name="classifier_unit", **model)
    c["upload"].change(on_upload, [c["classifier"], c["upload"]],
                       [c["upload_preview"], c["source"]], api_visibility="private")
    c["explain"].click(on_explain, [c["classifier"], c["layer"], c["source"], c["scene"],
                                    c["upload"], c["method"], c["target"]],
                       [c["heatmap"], c["scores"], c["explained"]], api_name="explain", **model
                       ).success(on_units, [state, c["classifier"], c["layer"], c["source"],
                                            c["scene"], c["upload"], c["target"]],
                                 [c["units_text"], c["units_maps"]],
                                 api_visibility="private", **model)
    c["visualize"].click(on_visualize, [c["classifier"], c["layer"], c["kind"], c["vis_unit"],
                                        c["vis_class"], c["steps"], c["n"]],
                         [c["vis"], c["vis_top"]], api_name="visualize", **model)
    _concepts_and_factors(ws, c, names)
    return c
