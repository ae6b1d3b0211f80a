"""The app's callbacks called directly: painting, units, classifiers, and bad input.

Every generator-side test runs on the toy (``conftest``) and on the shipped SceneWorld
generator (skipped only where its weights are missing).
"""

import gradio as gr
import numpy as np
import pytest
import torch
from conftest import (
    EXPECT,
    app_config,
    canvas_pictures,
    edit_effect,
    kinds,
    toy_generator,
    toy_segmenter,
    tree_scene,
)
from PIL import Image

from gandissect.app import classifiers, paint, units
from gandissect.app.canvas import paint_value
from gandissect.app.session import Session
from gandissect.app.ui import build_app
from gandissect.app.unit_table import TableQuery
from gandissect.app.workspace import Workspace
from gandissect.causal import ConceptRef


@pytest.fixture(scope="module", params=kinds())
def kind(request):
    return request.param


@pytest.fixture(scope="module")
def ws(kind, tmp_path_factory):
    workspace = Workspace.open(app_config(kind, tmp_path_factory.mktemp("cache")))
    assert workspace.problem is None, workspace.problem
    yield workspace
    workspace.close()


def shrink(picture: np.ndarray, scale: int) -> np.ndarray:
    """A picture enlarged by ``scale`` (nearest) back at the generator's resolution."""
    return picture[::scale, ::scale]


def painted(ws, mask: np.ndarray, strokes=(1,)) -> str:
    """The paint a page sends with ``mask`` (image resolution) painted on the canvas."""
    return paint_value(mask, ws.scale, strokes)


def shown(view) -> np.ndarray:
    """The edited scene a reply's canvas shows (generator resolution)."""
    return canvas_pictures(view.canvas)["after"]


def test_brushes_cover_the_model_concepts(ws, kind):
    names = {brush.name for brush in ws.scenes.brushes}
    assert EXPECT[kind]["brushes"] <= names
    assert ws.scenes.brushes[0].name == "tree"  # GANPaint's brushes first: the page's default
    assert all(brush.category not in ("color", "scene") for brush in ws.scenes.brushes)


def test_concept_counts_say_the_same_everywhere(ws):
    """A brush, the Units tab's concept list and the two bar charts give a concept the same two
    counts, each restated here from the dissection by a loop: interpretable units whose label
    it is, and units whose best concept of its category it is."""
    import re

    from gandissect.app.unit_table import bars_html, concept_choices
    from gandissect.dissect.counts import iou_matrix

    dissection, layer = ws.scenes.dissection, ws.scenes.units_dissection
    stats, categories = layer.stats, list(dissection.settings["categories"])
    vocabulary = [(categories[int(c)], n) for n, c in zip(stats["concepts"],
                                                          stats["concept_category"])]
    iou = iou_matrix(dissection, layer.layer)
    by_label, best = {}, {}
    for unit in layer.units:
        if unit.interpretable:
            by_label[(unit.category, unit.label)] = by_label.get((unit.category, unit.label),
                                                                 0) + 1
        for category in categories:
            columns = [i for i, (c, _) in enumerate(vocabulary) if c == category]
            top = max(columns, key=lambda i: (float(iou[unit.unit, i]), -i))
            if float(iou[unit.unit, top]) > 0:
                best[vocabulary[top]] = best.get(vocabulary[top], 0) + 1
    titles = dict((key, title) for title, key in concept_choices(dissection, layer))
    for brush in ws.scenes.brushes:
        concept = (brush.category, brush.name)
        assert (brush.units, brush.labelled) == (best.get(concept, 0), by_label.get(concept, 0))
        assert brush.title == titles[brush.key] == (
            f"{brush.name} ({brush.category}): {by_label.get(concept, 0)} labelled, "
            f"{best.get(concept, 0)} best in {brush.category}")
    first, second = bars_html(dissection, layer).split("<h3>")[1:]
    for chart, counts in ((first, by_label), (second, best)):
        drawn = {(c, n): int(k) for n, c, k in re.findall(r"<title>(.+?) \((\w+)\): (\d+) units",
                                                          chart)}
        assert drawn == counts


def test_remove_trees_under_a_stroke(ws, kind):
    session = Session()
    seed, tree = tree_scene(ws)
    view = paint.choose_scene(ws, session, seed)
    assert session.seed == seed and session.strokes == []
    pictures = canvas_pictures(view.canvas)
    assert pictures["clear"] and np.array_equal(pictures["after"], pictures["before"])
    before = pictures["after"]
    out = paint.apply_brush(ws, session, painted(ws, tree, (4, 7)), "object/tree", "remove",
                            1.0, 15)
    pictures = canvas_pictures(out.canvas)
    after = pictures["after"]
    effect = edit_effect(ws, before, after, tree)
    assert effect["tree_before"] == tree.sum()
    assert effect["tree_after"] <= (1 - EXPECT[kind]["removed"]) * effect["tree_before"]
    assert effect["outside_change"] <= EXPECT[kind]["outside_change"]
    # the reply names the strokes it applied (the page keeps any others) and keeps the paint;
    # "before" is the original with the edited cells tinted
    assert pictures["applied"] == [4, 7] and not pictures["clear"]
    cells = np.repeat(np.repeat(session.strokes[0].cells.numpy() > 0, tree.shape[0] //
                                ws.scenes.cells[0], 0), tree.shape[1] // ws.scenes.cells[1], 1)
    assert (pictures["before"][cells] != before[cells]).any()
    assert np.array_equal(pictures["before"][~cells], before[~cells])
    # the downloads are the edit as shown, and at the generator's size
    assert np.array_equal(np.asarray(Image.open(out.download_native).convert("RGB")), after)
    big = np.asarray(Image.open(out.download).convert("RGB"))
    assert big.shape[0] == ws.scale * after.shape[0] and np.array_equal(
        big[::ws.scale, ::ws.scale], after)
    # the panel lists the brush's units, best first
    stroke = session.strokes[-1]
    assert out.used["unit"].tolist() == stroke.units == ws.scenes.brush_units("object/tree",
                                                                               15)[0]
    assert "1 stroke" in out.status and "remove tree" in out.status


def test_draw_trees_where_there_were_none(ws, kind):
    session = Session()
    seed, tree = tree_scene(ws)
    first = paint.choose_scene(ws, session, seed)
    # where trees grow: the first layer cell and its right neighbour that are mostly grass and
    # at least half free of trees (the region is their tree-free part). A generator that
    # respects context draws few trees in the sky: on this scene the shipped one fills 0.0-0.07
    # of a pair of sky cells between the top row and the horizon, and 0.5-0.99 of most pairs
    # on grass or at a building's foot (the toy draws anywhere)
    before = ws.scenes.segment(ws.scenes.render(session.z, []))["object"][0].numpy()
    grass = before == ws.scenes.concept("object/grass").code
    (rows, cols), cell = ws.scenes.cells, tree.shape[0] // ws.scenes.cells[0]
    pairs = ((slice(r * cell, (r + 1) * cell), slice(c * cell, (c + 2) * cell))
             for r in range(rows) for c in range(cols - 1))
    here = next((p for p in pairs if (~tree[p]).mean() >= 0.5 and grass[p].mean() > 0.5), None)
    assert here is not None, "no pair of grass cells without much tree in the test scene"
    region = np.zeros_like(tree)
    region[here] = ~tree[here]
    out = paint.apply_brush(ws, session, painted(ws, region), "object/tree", "draw", 1.0, 15)
    code = ws.scenes.concept("object/tree").code
    labels = ws.scenes.segment(ws.scenes.render(session.z, [session.strokes[0].stroke()]))
    drawn = (labels["object"][0].numpy()[region] == code).mean()
    assert drawn >= EXPECT[kind]["drawn"]
    assert not np.array_equal(shown(out), shown(first))


def test_each_press_is_one_stroke_and_undo_and_reset_take_them_back(ws):
    session = Session()
    seed, tree = tree_scene(ws)
    original = shown(paint.choose_scene(ws, session, seed))
    left = tree.copy()
    left[:, tree.shape[1] // 2:] = False
    first = paint.apply_brush(ws, session, painted(ws, left, (1,)), "object/tree", "remove",
                              1.0, 15)
    second = paint.apply_brush(ws, session, painted(ws, tree & ~left, (2,)), "object/tree",
                               "remove", 1.0, 15)
    assert len(session.strokes) == 2 and "2 strokes" in second.status
    right = ws.scenes.layer_cells(np.repeat(np.repeat(tree & ~left, ws.scale, 0), ws.scale, 1))
    assert torch.equal(session.strokes[1].cells, right)  # what the second press was sent
    versions = [canvas_pictures(v.canvas) for v in (first, second)]
    assert [v["applied"] for v in versions] == [[1], [2]]
    undone = paint.undo(ws, session)
    assert np.array_equal(shown(undone), shown(first))
    assert canvas_pictures(undone.canvas)["clear"]  # the paint goes with the stroke taken back
    assert np.array_equal(shown(paint.reset(ws, session)), original)
    assert session.strokes == []
    with pytest.warns(UserWarning, match="Nothing to undo"):
        skipped = paint.undo(ws, session)
    assert len(skipped) == paint.OUTPUTS


def test_no_new_paint_is_nothing_to_do(ws):
    session = Session()
    paint.choose_scene(ws, session, 1)
    empty = np.zeros((ws.scenes.resolution,) * 2, bool)
    for value in ("", None, painted(ws, empty)):
        with pytest.warns(UserWarning, match="there is no new paint"):
            out = paint.apply_brush(ws, session, value, "object/tree", "remove", 1.0, 15)
        assert len(out) == paint.OUTPUTS and session.strokes == []


@pytest.mark.parametrize("seed", [-1, 2**31, 1.5, "tree", None])
def test_a_bad_scene_number_is_a_clear_message(ws, seed):
    session = Session()
    with pytest.raises(gr.Error, match="whole number from 0 to 2147483647"):
        paint.choose_scene(ws, session, seed)
    assert session.seed is None


def test_bad_brush_settings_are_clear_messages(ws):
    session = Session()
    with pytest.raises(gr.Error, match="pick a scene first"):
        paint.apply_brush(ws, session, None, "object/tree", "remove", 1.0, 15)
    paint.choose_scene(ws, session, 0)
    mask = np.ones((ws.scenes.resolution,) * 2, bool)
    with pytest.raises(gr.Error, match="number of units"):
        paint.apply_brush(ws, session, painted(ws, mask), "object/tree", "remove", 1.0, 0)
    with pytest.raises(gr.Error, match="choose a brush"):
        paint.apply_brush(ws, session, painted(ws, mask), None, "remove", 1.0, 15)
    with pytest.raises(gr.Error, match="unknown concept"):
        paint.apply_brush(ws, session, painted(ws, mask), "object/unicorn", "remove", 1.0, 15)
    from gandissect.app.canvas import png_data_uri

    side = ws.scenes.resolution * ws.scale
    odd = png_data_uri(np.full((100, 100, 4), 255, np.uint8))
    with pytest.raises(gr.Error, match=f"the paint is 100x100 pixels; the canvas is {side}x"):
        paint.apply_brush(ws, session, odd, "object/tree", "remove", 1.0, 15)
    for garbled in ("{not json", '{"strokes": [1]}', "data:image/png;base64,AAAA"):
        with pytest.raises(gr.Error, match="the paint could not be read"):
            paint.apply_brush(ws, session, garbled, "object/tree", "remove", 1.0, 15)
    with pytest.raises(gr.Error, match="must be a PNG data URI"):
        paint.apply_brush(ws, session, "data:text/plain;base64,AAAA", "object/tree", "remove",
                          1.0, 15)
    assert session.strokes == []


def test_the_painted_mask_maps_exactly_to_the_layer_cells(ws):
    side = ws.scenes.resolution * ws.scale
    h, w = ws.scenes.cells
    for y, x in [(0, 0), (side - 1, side - 1), (side // 3, 2 * side // 3)]:
        mask = np.zeros((side, side), bool)
        mask[y, x] = True
        cells = ws.scenes.layer_cells(mask)
        expected = torch.zeros(h, w)
        expected[y * h // side, x * w // side] = 1
        assert torch.equal(cells, expected)


def test_sessions_keep_their_own_scene_and_strokes(ws):
    first, second = Session(), Session()
    seed, tree = tree_scene(ws)
    paint.choose_scene(ws, first, seed)
    paint.apply_brush(ws, first, painted(ws, tree), "object/tree", "remove", 1.0, 15)
    other = paint.choose_scene(ws, second, seed + 1)
    assert first.seed == seed and len(first.strokes) == 1
    assert second.seed == seed + 1 and second.strokes == []
    assert f"Scene {seed + 1}" in other.status


def test_units_table_filters_sorts_and_lists_by_concept(ws):
    layer = ws.scenes.units_dissection
    everything = units.table(ws, TableQuery())
    assert len(everything) == ws.scenes.n_units
    assert everything["unit"].tolist() == list(range(ws.scenes.n_units))
    trees = units.table(ws, TableQuery(concept="object/tree", sort="IoU", descending=True))
    assert set(trees["label"]) == {"tree"} and list(trees["IoU"]) == sorted(trees["IoU"])[::-1]
    detectors = units.table(ws, TableQuery(interpretable_only=True))
    assert len(detectors) == len(layer.interpretable())
    listed = units.table(ws, TableQuery(concept="object/tree", by_concept=True))
    ranking, method = ws.scenes.ranking("object/tree")
    scores = ws.scenes.iou_with("object/tree")
    assert listed["IoU"].tolist() == sorted(listed["IoU"].tolist(), reverse=True)
    assert np.allclose(listed["IoU"], scores[listed["unit"].tolist()].numpy(), atol=1e-4)
    if method == "iou":  # the brush takes the listing's top units
        assert listed["unit"].tolist()[:5] == ranking[:5]
    else:  # the shipped generator's tree brush ranks by its shipped causal weights
        weights = ws.scenes.causal_weights("object/tree")
        assert (listed["causal effect"] != "").all()
        assert [float(weights[u]) for u in ranking[:5]] == sorted(weights.tolist())[::-1][:5]
    with pytest.raises(gr.Error, match="choose a concept"):
        units.table(ws, TableQuery(by_concept=True))


def test_a_selected_unit_shows_its_top_images_heatmap_and_ablation(ws):
    session = Session()
    seed, tree = tree_scene(ws)
    paint.choose_scene(ws, session, seed)
    unit = ws.scenes.brush_units("object/tree", 1)[0][0]
    session_, about, strip, heat, shown = units.select_unit(ws, session, unit)
    assert session.unit == unit and shown == str(unit) and f"Unit {unit}" in about
    assert strip.ndim == 3 and strip.shape[1] > strip.shape[0]  # images side by side
    assert heat.ndim == 3 and heat.shape[1] == ws.scenes.resolution * units.SHOWN_SCALE
    tree_units = ",".join(map(str, ws.scenes.brush_units("object/tree", 15)[0]))
    _, plain = units.ablate(ws, session, tree_units, False)
    _, ablated = units.ablate(ws, session, tree_units, True)
    assert session.ablated == ws.scenes.brush_units("object/tree", 15)[0]
    effect = edit_effect(ws, shrink(plain, units.SHOWN_SCALE),
                         shrink(ablated, units.SHOWN_SCALE), tree)
    assert effect["tree_after"] < effect["tree_before"]
    with pytest.raises(gr.Error, match="not a unit number"):
        units.ablate(ws, session, "3, tree", True)
    with pytest.raises(gr.Error, match="does not exist"):
        units.select_unit(ws, session, ws.scenes.n_units)


def test_clicking_a_spot_lists_the_units_active_there(ws):
    """The units at a clicked spot are ranked by activation over threshold in that very layer
    cell, restated from the layer's output by a loop, on the scene with its strokes applied."""
    from gandissect.hooks import Trace
    from gandissect.intervene import stroke_edit

    session = Session()
    with pytest.raises(gr.Error, match="pick a scene in the Paint tab first"):
        units.units_here(ws, session, 3, 3)
    seed, tree = tree_scene(ws)
    paint.choose_scene(ws, session, seed)
    paint.apply_brush(ws, session, painted(ws, tree), "object/tree", "remove", 1.0, 5)
    side = ws.scenes.resolution * units.SHOWN_SCALE
    (h, w), layer = ws.scenes.cells, ws.scenes.units_dissection
    x, y = side * 5 // 8 + 1, side // 2 + 3  # pixel column, row
    cell = (y * h // side, x * w // side)
    _, picture, rows, text = units.units_here(ws, session, x, y)
    strokes = [s.stroke() for s in session.strokes]
    with torch.no_grad(), Trace(ws.scenes.generator, ws.scenes.layer, stop=True,
                                edit=stroke_edit(strokes, ws.scenes.insert_values)) as trace:
        ws.scenes.generator(session.z)
    ratios = []
    for unit in layer.units:
        value = float(trace.output[0, unit.unit, cell[0], cell[1]])
        ratios.append((-value / unit.threshold, unit.unit))
    expected = [u for _, u in sorted(ratios)[:units.HERE_ROWS]]
    assert rows["unit"].tolist() == expected
    assert rows["activation / threshold"].tolist() == [round(-r, 3) for r, _ in
                                                        sorted(ratios)[:units.HERE_ROWS]]
    assert f"cell {cell}" in text and picture.shape == (side, side, 3)
    top, left = cell[0] * side // h, cell[1] * side // w
    assert tuple(picture[top, left]) == (255, 230, 0)  # the clicked cell outlined
    with pytest.raises(gr.Error, match="outside the"):
        units.units_here(ws, session, side, 0)


def test_learning_the_causal_effect_reranks_the_brush(ws):
    # a brush still ranked by IoU (the shipped generator's GANPaint brushes come with weights)
    key = next(b.key for b in ws.scenes.brushes if ws.scenes.ranking(b.key)[1] == "iou")
    name = key.partition("/")[2]
    assert units.table(ws, TableQuery(concept=key))["causal effect"].eq("").all()
    message = units.learn_effect(ws, key, progress=False)
    assert name in message
    ranking, method = ws.scenes.ranking(key)
    assert method == "ace"
    listed = units.table(ws, TableQuery(concept=key, by_concept=True))
    assert (listed["causal effect"] != "").all()
    session = Session()
    paint.choose_scene(ws, session, 0)
    mask = np.ones((ws.scenes.resolution,) * 2, bool)
    paint.apply_brush(ws, session, painted(ws, mask), key, "remove", 1.0, 5)
    assert session.strokes[0].units == ranking[:5] and session.strokes[0].ranking == "ace"
    with pytest.raises(gr.Error, match="choose a concept"):
        units.learn_effect(ws, "all")


def test_draw_uses_the_drawing_learned_for_its_brush(tmp_path):
    """Until its drawing is learned a brush draws with its removal ranking, writing each
    unit's quantile; once learned (the Units tab's button, or shipped beside the dissection),
    with the learned edit: every unit at its weight, writing its learned value, and the trees
    come where it is painted."""
    from gandissect.ace import units_for_drawing

    ws = Workspace.open(app_config("toy", tmp_path / "cache"))
    session = Session()
    seed, tree = tree_scene(ws)
    paint.choose_scene(ws, session, seed)
    region = np.zeros_like(tree)
    region[-16:, :16] = True  # the bottom-left corner: grass
    paint.apply_brush(ws, session, painted(ws, region), "object/tree", "draw", 1.0, 5)
    first = session.strokes[-1]
    assert first.values is None and first.ranking in ("iou", "ace", "ace+swaps")
    assert first.units == ws.scenes.brush_units("object/tree", 5)[0]
    assert "Drawing of tree learned" in units.learn_drawing(ws, "object/tree", progress=False)
    drawing = units_for_drawing(ws.scenes.generator, ws.scenes.segmenter, ws.scenes.dissection,
                                ws.scenes.layer, ws.scenes.concept("object/tree"),
                                cache_dir=ws.scenes.ace_dir(), progress=False)
    paint.reset(ws, session)
    code = ws.scenes.concept("object/tree").code
    out = paint.apply_brush(ws, session, painted(ws, region, (2,)), "object/tree", "draw", 1.0,
                            5)
    second = session.strokes[-1]
    assert second.ranking == "draw" and second.units == drawing.units  # every weighted unit
    assert torch.equal(second.weights, drawing.weights)
    assert torch.equal(second.values, drawing.values) and "learned drawing" in out.status
    drawn = ws.scenes.segment(ws.scenes.render(session.z, [second.stroke()]))["object"][0]
    had = ws.scenes.segment(ws.scenes.render(session.z))["object"][0]
    assert ((drawn == code) & ~(had == code)).numpy()[region].mean() > 0.5  # trees drawn
    removing = paint.apply_brush(ws, session, painted(ws, tree, (3,)), "object/tree", "remove",
                                 1.0, 5)
    assert session.strokes[-1].values is None and "remove tree" in removing.status
    # the rendered scene writes the learned values
    expected = ws.scenes.render(session.z, [s.stroke() for s in session.strokes])
    assert np.array_equal(shown(removing), paint.pixels(expected))
    with pytest.raises(gr.Error, match="choose a concept"):
        units.learn_drawing(ws, "all")
    ws.close()


def test_the_page_builds_with_every_tab_and_one_model_worker(ws):
    demo = build_app(ws)
    public = {d["api_name"] for d in demo.config["dependencies"]
              if d.get("api_visibility") == "public"}
    assert public == {"show_scene", "random_scene", "remove", "draw", "undo", "reset",
                      "list_units", "learn_effect", "learn_drawing", "select_unit", "ablate",
                      "netdissect",
                      "classifier_units", "classifier_unit", "explain", "visualize"}
    # every call that runs a model waits for the one model worker; the queue is bounded
    model = {fn.api_name for fn in demo.fns.values() if fn.concurrency_id == "model"}
    assert public - {"classifier_units"} <= model
    assert demo._queue.max_size == 64 and demo._queue.default_concurrency_limit == 1


# ------------------------------------------------------------------------ problems, in words


def test_a_missing_shipped_generator_is_explained_and_the_app_still_starts(tmp_path,
                                                                           monkeypatch):
    import gandissect.app.workspace as workspace

    monkeypatch.setattr(workspace, "shipped_path", lambda kind: tmp_path / "absent")
    ws = Workspace.open(workspace.AppConfig(cache=tmp_path, progress=False))
    assert ws.scenes is None
    assert "generator is missing" in ws.problem and "--generator" in ws.problem
    demo = build_app(ws)  # the Classifiers tab still works
    assert any(d.get("api_name") == "explain" for d in demo.config["dependencies"])
    with pytest.raises(gr.Error, match="generator is missing"):
        paint.choose_scene(ws, Session(), 0)


def test_a_dissection_of_another_generator_is_refused_with_a_reason(tmp_path):
    from gandissect.dissect import dissect, save_dissection

    generator, segmenter = toy_generator(), toy_segmenter()
    save_dissection(dissect(generator, segmenter, ["layer4"], n=64, seed=1, progress=False),
                    tmp_path / "toy")
    config = app_config("toy", tmp_path / "cache")
    config.dissection = str(tmp_path / "toy")
    assert Workspace.open(config, generator, segmenter).problem is None
    other = toy_generator()
    with torch.no_grad():
        other.output_64x64.gain.fill_(0.9)
    ws = Workspace.open(config, other, segmenter)
    assert ws.scenes is None and "computed for another generator" in ws.problem
    config.dissection = str(tmp_path / "nowhere")
    assert "no dissect.json" in Workspace.open(config, generator, segmenter).problem
    config.dissection, config.layer = str(tmp_path / "toy"), "output_64x64"
    assert "no layer 'output_64x64'" in Workspace.open(config, generator, segmenter).problem


def test_causal_weights_beside_the_dissection_rank_the_brushes_without_learning(tmp_path):
    """How the shipped generator's brushes come ranked by ACE: ``ace/`` in its dissection
    folder; the app reads them and never learns them again."""
    from gandissect.ace import units_by_ace
    from gandissect.dissect import dissect, save_dissection

    generator, segmenter = toy_generator(), toy_segmenter()
    result = dissect(generator, segmenter, ["layer4"], n=64, seed=1, progress=False)
    save_dissection(result, tmp_path / "toy")
    tree = ConceptRef.find(segmenter, "tree")
    learned, weights = units_by_ace(generator, segmenter, result, "layer4", tree, n=200,
                                    cache_dir=tmp_path / "toy" / "ace",
                                    progress=False)
    config = app_config("toy", tmp_path / "cache")
    config.dissection = str(tmp_path / "toy")
    ws = Workspace.open(config, generator, segmenter)
    assert ws.scenes.brush_units("object/tree", 3) == (learned[:3], "ace")
    assert ws.scenes.brush_units("object/grass", 3)[1] == "iou"
    assert torch.equal(ws.scenes.learn_causal_weights("object/tree", progress=False), weights)
    assert not (tmp_path / "cache" / "ace").exists()  # read back, not learned again


# ------------------------------------------------------------------------ classifiers tab


@pytest.fixture(scope="module")
def classifier_ws(tmp_path_factory):
    workspace = Workspace.open(app_config("toy", tmp_path_factory.mktemp("cache")))
    yield workspace
    workspace.close()


def test_network_dissection_of_the_shipped_classifier(classifier_ws):
    ws, session = classifier_ws, Session()
    layers, layer = classifiers.default_layer(ws, "sceneworld")
    assert layer == "layer4" and "layer3" in layers
    out = classifiers.run_netdissect(ws, session, "sceneworld", "layer4", 50, progress=False)
    assert session.netdissect == ("sceneworld", "layer4", 50)
    table = out[2]
    assert len(table) == ws.classifiers.get("sceneworld").layers["layer4"][0]
    assert "detectors" in out[1] and out[3].startswith("<h3>") and "<svg" in out[3]
    only = classifiers.table(ws, session, TableQuery(concept="object/sky", by_concept=True))
    assert only["IoU"].tolist() == sorted(only["IoU"].tolist(), reverse=True)
    _, about, strip, unit = classifiers.select_unit(ws, session, 5)
    assert unit == "5" and "Unit 5" in about and strip.shape[1] > strip.shape[0]
    with pytest.raises(gr.Error, match="whole number"):
        classifiers.run_netdissect(ws, session, "sceneworld", "layer4", 5)
    with pytest.raises(gr.Error, match="no convolutional layer"):
        classifiers.run_netdissect(ws, session, "sceneworld", "fc", 50)


def test_attribution_of_a_scene_and_of_an_upload(classifier_ws, tmp_path):
    ws = classifier_ws
    picture, scores, text = classifiers.explain(ws, "sceneworld", "layer4", "SceneWorld scene",
                                                3, None, "gradcam", -1)
    names = ws.classifiers.get("sceneworld").class_names
    assert set(scores) == set(names) and abs(sum(scores.values()) - 1) < 1e-4
    assert picture.ndim == 3 and "Grad-CAM" in text
    upload = tmp_path / "scene.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (90, 120, 3), np.uint8)).save(upload)
    picture, scores, _ = classifiers.explain(ws, "sceneworld", "layer4", "Upload", 0,
                                             str(upload), "saliency", 2)
    assert picture.shape[1] == 64 * 4
    text_file = tmp_path / "notes.png"
    text_file.write_text("not a picture")
    with pytest.raises(gr.Error, match="not an image"):
        classifiers.explain(ws, "sceneworld", "layer4", "Upload", 0, str(text_file), "saliency",
                            -1)
    tiny = tmp_path / "tiny.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tiny)
    with pytest.raises(gr.Error, match="8x8 pixels"):
        classifiers.explain(ws, "sceneworld", "layer4", "Upload", 0, str(tiny), "saliency", -1)
    with pytest.raises(gr.Error, match="upload an image first"):
        classifiers.explain(ws, "sceneworld", "layer4", "Upload", 0, None, "saliency", -1)
    with pytest.raises(gr.Error, match="whole number from 0"):
        classifiers.explain(ws, "sceneworld", "layer4", "SceneWorld scene", -4, None,
                            "saliency", -1)
    preview, source = classifiers.preview_upload(ws, "sceneworld", str(upload))
    assert preview.shape == (64 * 4, 64 * 4, 3) and source["value"] == "Upload"
    with pytest.raises(gr.Error, match="notes.png is not an image"):
        classifiers.preview_upload(ws, "sceneworld", str(text_file))


def test_feature_visualization_beside_top_scenes(classifier_ws):
    ws = classifier_ws
    image, top = classifiers.feature_visualization(ws, "sceneworld", "layer4", "unit", 3, None,
                                                   8, 20)
    assert image.shape == (256, 256, 3) and top.shape[0] == 256 and top.shape[1] > 256
    image, top = classifiers.feature_visualization(ws, "sceneworld", "layer4", "class", 0, 1,
                                                   8, 20)
    assert image.shape == (256, 256, 3)
    with pytest.raises(gr.Error, match="does not exist"):
        classifiers.feature_visualization(ws, "sceneworld", "layer4", "unit", 10**6, None, 8, 20)


def test_classifiers_tab_takes_a_torchvision_model_with_its_weights(tmp_path):
    import torchvision

    from gandissect.app.explain import ClassifierModels
    from gandissect.cli import build_parser
    from gandissect.cli.app import config_from_args

    torch.manual_seed(0)
    saved = torchvision.models.resnet18(num_classes=7)
    path = tmp_path / "r18.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in saved.state_dict().items()}}, path)
    models = ClassifierModels(["sceneworld", "torchvision:resnet18"], weights={
        "torchvision:resnet18": str(path)})
    loaded = models.get("torchvision:resnet18")
    assert len(loaded.class_names) == 7
    assert torch.equal(loaded.model.fc.weight, saved.fc.weight)
    parser = build_parser()
    config = config_from_args(parser.parse_args(
        ["app", "--classifier", "sceneworld", "--classifier", "torchvision:resnet18",
         "--weights", str(path)]))
    assert config.classifier_weights == {"torchvision:resnet18": str(path)}
    with pytest.raises(ValueError, match="one torchvision:ARCH or plug-in classifier"):
        config_from_args(parser.parse_args(["app", "--weights", str(path)]))
