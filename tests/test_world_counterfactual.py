"""Counterfactual SceneWorld scenes: objects and parts left out as if never placed, additions."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import binary_dilation

from gandissect.errors import UserError
from gandissect.world import can_add, concept, concepts, render
from gandissect.world.canvas import Canvas, Layer
from gandissect.world.compose import compose, plan_scene
from gandissect.world.counterfactual import counterfactual_plan
from gandissect.world.render import scene_rng

LABELLED = ("object", "part", "material")
PARTS = {c.name for c in concepts("part")}
# Scenes of world 0: 0 forest with a sun, 2 church with a tower, 5 house, 7 church with dome and
# tower, 29 church with a dome, 31 church with a dome and a sun.
SCENES = (0, 2, 5, 7, 29, 31)
HOUSES = (5, 22, 24)


def code(name: str) -> tuple[str, int]:
    c = concept(name, "part" if name in PARTS else "object")
    return c.category, c.code


def belongs(layer: Layer, names: set[str]) -> bool:
    """The definition, restated: a layer is its object label's (or, kept, its owner's) and its
    part label's."""
    obj = layer.labels[0] if layer.labels[0] is not None else layer.owner
    for name in names:
        cat, c = code(name)
        if (cat == "object" and obj == c) or (cat == "part" and layer.labels[1] == c):
            return True
    return False


def layout(index: int, size: int = 64):
    return compose(scene_rng(0, index), 1.0 / size)


def by_hand(index: int, keep, size: int = 64) -> tuple[np.ndarray, dict]:
    """Paint the scene's own layers that ``keep`` accepts, one by one, on a fresh canvas."""
    lay = layout(index, size)
    canvas = Canvas(size)
    for layer in lay.layers:
        if keep(layer):
            canvas.paint(layer)
    return canvas.to_uint8(lay.gain), canvas.labels


def touched(layers, size: int = 64) -> np.ndarray:
    """Pixels whose colour a layer reaches at all: centre closer than half a pixel (or half the
    glow's ramp) to its shape."""
    centres = (np.arange(size) + 0.5) / size
    out = np.zeros((size, size), dtype=bool)
    for layer in layers:
        d = layer.shape.distance(centres[None, :], centres[:, None])
        out |= d < (0.5 / size if layer.soft <= 0.0 else 0.5 * layer.soft)
    return out


def changed(a, b) -> np.ndarray:
    return (a.image != b.image).any(-1)


@pytest.mark.parametrize("name", ["tree", "cloud", "door", "dome", "window"])
def test_removal_changes_only_where_the_object_was(name):
    cat, c = code(name)
    inside = near = scenes = 0
    for index in SCENES:
        scene = render(0, index)
        mask = scene.labels[cat] == c
        if not mask.any():
            continue
        scenes += 1
        without = render(0, index, without=(name,))
        diff = changed(scene, without)
        assert diff.any()
        assert not (without.labels[cat] == c).any()
        for other in LABELLED:
            np.testing.assert_array_equal(without.labels[other][~mask], scene.labels[other][~mask])
        removed = [layer for layer in layout(index).layers if belongs(layer, {name})]
        assert not (diff & ~touched(removed)).any()
        inside += diff.sum()
        near += (diff & binary_dilation(mask, np.ones((3, 3), dtype=bool))).sum()
    assert scenes >= 2
    # Outside the 1 px rim of the label, only pieces thinner than a pixel (far trunks, thin
    # window panes) that never claim a pixel centre change colour.
    assert near >= 0.95 * inside


@pytest.mark.parametrize(("index", "without", "size"), [
    (0, ("tree",), 64), (7, ("dome",), 64), (7, ("building",), 48), (31, ("sun", "cloud"), 64),
    (2, ("door", "window", "roof"), 64), (29, ("tower", "mountain"), 32),
])
def test_as_if_never_placed(index, without, size):
    names = set(without) | ({"dome"} if "building" in without else set())
    image, labels = by_hand(index, lambda layer: not belongs(layer, names), size)
    sample = render(0, index, size, without=without)
    np.testing.assert_array_equal(sample.image, image)
    for cat in LABELLED:
        np.testing.assert_array_equal(sample.labels[cat], labels[cat])


def test_scene_name_from_what_remains():
    assert render(0, 29).scene_name == "church"
    assert render(0, 29, without=("dome",)).scene_name == "house"
    assert render(0, 7, without=("dome",)).scene_name == "church"  # its tower remains
    assert render(0, 7, without=("dome", "tower")).scene_name == "house"
    assert render(0, 0).scene_name == "forest"
    assert render(0, 0, without=("tree",)).scene_name == "mountain_valley"
    assert render(0, 5, without=("building",)).scene_name != "house"


def test_parts_leave_the_building():
    glass = concept("glass", "material").code
    for index in (2, 5):
        scene = render(0, index)
        bare = render(0, index, without=("door", "window"))
        np.testing.assert_array_equal(bare.labels["object"], scene.labels["object"])
        for name in ("door", "window"):
            assert not (bare.labels["part"] == code(name)[1]).any()
        was_window = scene.labels["part"] == code("window")[1]
        assert was_window.any() and not (bare.labels["material"][was_window] == glass).any()


def added_layers(index: int, add: tuple[str, ...], without: tuple[str, ...] = ()):
    own = [layer for layer in layout(index).layers if not belongs(layer, set(without))]
    after = list(counterfactual_plan(0, index, 64, without, add).layout().layers)
    new = [layer for layer in after if layer not in own]
    assert [layer for layer in after if layer in own] == own  # the scene's own draws, in order
    return new


def object_at(layers, x: float, y: float) -> int:
    """The object label at one point, a plain loop over the layers."""
    found = 0
    for layer in layers:
        d = layer.shape.distance(np.array([[x]]), np.array([[y]]))[0, 0]
        if layer.labels[0] is not None and d <= 0.0:
            found = layer.labels[0]
    return found


@pytest.mark.parametrize("index", [0, 3, 5, 8, 26])
def test_add_tree(index):
    tree = code("tree")[1]
    scene = render(0, index)
    more = render(0, index, add=("tree",))
    again = render(0, index, add=("tree",))
    np.testing.assert_array_equal(more.image, again.image)
    assert (more.labels["object"] == tree).sum() > (scene.labels["object"] == tree).sum()
    new = added_layers(index, ("tree",))
    assert [layer.labels[0] for layer in new] == [tree, tree]
    diff = changed(scene, more)
    assert diff.any() and not (diff & ~touched(new)).any()
    relabelled = scene.labels["object"] != more.labels["object"]
    assert (more.labels["object"][relabelled] == tree).all()
    trunk = new[0].shape
    foot = ((trunk.x0 + trunk.x1) / 2, trunk.y1)
    assert object_at(layout(index).layers, *foot) == code("grass")[1]
    # painter's order: behind the standing props whose ground line is nearer, before the others
    layers = counterfactual_plan(0, index, 64, add=("tree",)).layout().layers
    at = layers.index(new[0])
    for base, _, group in plan_scene(scene_rng(0, index), 1.0 / 64).standing:
        assert (layers.index(group[0]) > at) == (base > trunk.y1)


@pytest.mark.parametrize("index", HOUSES)
def test_add_dome_on_a_house(index):
    dome, building = code("dome")[1], code("building")[1]
    assert not can_add(0, 7, "dome") and can_add(0, index, "dome")
    scene = render(0, index)
    domed = render(0, index, add=("dome",))
    mask = domed.labels["object"] == dome
    assert scene.scene_name == "house" and domed.scene_name == "church" and mask.any()
    for col in np.flatnonzero(mask.any(0)):  # a drum of its building under each dome column
        assert domed.labels["object"][np.flatnonzero(mask[:, col]).max() + 1, col] == building
    assert not (changed(scene, domed) & ~touched(added_layers(index, ("dome",)))).any()


def test_no_place_raises():
    assert not can_add(0, 0, "dome")  # a forest has no building
    with pytest.raises(UserError, match="no place for a dome"):
        render(0, 0, add=("dome",))
    assert can_add(0, 0, "tree") and not can_add(0, 0, "tree", without=("grass",))
    with pytest.raises(UserError, match="no place for a tree"):
        render(0, 0, without=("grass",), add=("tree",))
    assert not can_add(0, 5, "dome", without=("building",))


def test_unknown_names_raise_one_line():
    for kwargs in ({"without": ("unicorn",)}, {"add": ("cloud",)}):
        with pytest.raises(UserError) as caught:
            render(0, 0, **kwargs)
        assert "\n" not in str(caught.value)
    with pytest.raises(UserError, match="door"):
        render(0, 0, without=("unicorn",))
    with pytest.raises(UserError, match="tree, dome"):
        can_add(0, 0, "cloud")


def test_without_and_add_together():
    assert can_add(0, 7, "dome", without=("dome",))
    redomed = render(0, 7, without=("dome",), add=("dome",))
    assert (redomed.labels["object"] == code("dome")[1]).any()
    bare = render(0, 0, without=("tree",))
    one = render(0, 0, without=("tree",), add=("tree",))
    new = added_layers(0, ("tree",), without=("tree",))
    assert not (changed(bare, one) & ~touched(new)).any()
    assert (one.labels["object"] == code("tree")[1]).any()


def test_owner_leaves_layer_equality_alone():
    layer = layout(0).layers[0]
    tagged = Layer(layer.shape, layer.fill, layer.labels, layer.soft, layer.opacity, owner=3)
    assert tagged == layer and hash(tagged) == hash(layer)
