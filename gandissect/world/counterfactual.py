"""Counterfactual scenes: a SceneWorld scene without some of its objects or parts, or with more.

``render(seed, index, size, without=("tree",))`` (``gandissect.world.render``) draws scene
``index`` exactly as if its trees had never been placed: every random draw of the scene is made
as usual (so every other prop, colour and texture is the same), and only the painting leaves out
each layer of each removed prop, so what was behind is drawn and labelled. A layer belongs to
the object its object label names or, where that label is KEEP, to the prop it was drawn for
(``Layer.owner``: a sun's glow, a building's windows and door); it belongs to the part its part
label names.

``add=("tree",)`` places one more tree where the world's rules place trees, ``("dome",)`` a
dome on a building that has none; each addition draws from its own stream, so the scene's own
draws are unchanged and the result is deterministic. ``can_add`` says beforehand whether a
scene has a place for an addition.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable

import numpy as np

from gandissect.errors import UserError
from gandissect.world import buildings, trees
from gandissect.world.canvas import Layer
from gandissect.world.compose import Plan, plan_scene
from gandissect.world.concepts import concepts
from gandissect.world.props import OBJ, PART, Dice
from gandissect.world.render import WorldSample, check_size, paint, scene_rng

# A dome stands on a building's facade: a scene without its buildings has no domes either.
CARRIED = {"building": ("dome",)}
# The census entry that counts each object (it becomes zero, or False, when they are left out).
CENSUS = {"building": "buildings", "dome": "domes", "tower": "towers", "tree": "trees",
          "water": "water_area", "road": "road"}
ADDITIONS = ("tree", "dome")
_OBJECT_NAME = {code: name for name, code in OBJ.items()}
_PART_NAME = {code: name for name, code in PART.items()}
_ADDITION_STREAM = 2**32 - 2  # keeps addition streams apart from factors' variant streams
TREE_SIZE = (0.08, 0.32)  # a tree's height at the horizon, and its growth to the image bottom
TREE_TRIES = 64  # candidate places for a tree, tried in order until one stands on grass


def removed_names(without: Iterable[str]) -> frozenset[str]:
    """The object and part names left out by ``without`` (with what stands on them).

    Raises a UserError naming the valid names for a name that is neither an object nor a part.
    """
    without = (without,) if isinstance(without, str) else tuple(without)
    valid = [c.name for c in concepts("object")] + [c.name for c in concepts("part")]
    for name in without:
        if name not in valid:
            raise UserError(f"cannot leave out {name!r}: without= takes object or part names: "
                            f"{', '.join(valid)}")
    return frozenset(without).union(*(CARRIED.get(name, ()) for name in without))


def left_out(layer: Layer, names: frozenset[str]) -> bool:
    """Whether ``layer`` belongs to an object or part named in ``names``."""
    obj = layer.labels[0] if layer.labels[0] is not None else layer.owner
    return _OBJECT_NAME.get(obj) in names or _PART_NAME.get(layer.labels[1]) in names


def _remove(plan: Plan, names: frozenset[str]) -> None:
    """Leave the named objects and parts out of ``plan``, its census and its free facades."""
    if not names:
        return
    plan.ground = [layer for layer in plan.ground if not left_out(layer, names)]
    plan.standing = [(base, order, [layer for layer in group if not left_out(layer, names)])
                     for base, order, group in plan.standing]
    counts = {CENSUS[name]: type(getattr(plan.census, CENSUS[name]))()
              for name in names if name in CENSUS}
    plan.census = dataclasses.replace(plan.census, **counts)
    if "building" in names:
        plan.facades = []
    elif "dome" in names:
        plan.facades = [(at, f, False) for at, f, _ in plan.facades]


def _topmost_object(layers: Iterable[Layer], xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """The object label at each point (xs[k], ys[k]), as the canvas labels a pixel centre."""
    codes = np.zeros(len(xs), dtype=np.int64)
    # Shapes broadcast x (1, W) against y (H, 1); a row of ys pairs them point by point.
    x, y = xs[None, :], ys[None, :]
    for layer in layers:
        if layer.labels[0] is not None:
            codes[layer.shape.distance(x, y)[0] <= 0.0] = layer.labels[0]
    return codes


def _add_tree(plan: Plan, dice: Dice) -> bool:
    """One more tree standing on visible grass, sized by its distance from the horizon."""
    h0 = plan.horizon
    xs = np.array([dice.u(0.03, 0.97, "position") for _ in range(TREE_TRIES)])
    bases = np.array([dice.u(h0 + 0.01, 0.98, "position") for _ in range(TREE_TRIES)])
    on_grass = np.flatnonzero(_topmost_object(plan.layout().layers, xs, bases) == OBJ["grass"])
    if not len(on_grass):
        return False
    x, base = float(xs[on_grass[0]]), float(bases[on_grass[0]])
    near = (base - h0) / (1.0 - h0)
    h = (TREE_SIZE[0] + TREE_SIZE[1] * near) * dice.u(0.75, 1.25, "scale")
    plan.stand(base, trees.tree(dice, x, base, h, plan.mood.autumn))
    plan.census.trees += 1
    return True


def _add_dome(plan: Plan, dice: Dice) -> bool:
    """A dome on the facade of a building without one (whose centre is in the image)."""
    free = [k for k, (_, f, dome) in enumerate(plan.facades) if not dome and 0.05 < f.cx < 0.95]
    if not free:
        return False
    k = free[dice.i(0, len(free) - 1, "position")]
    at, f, _ = plan.facades[k]
    base, order, group = plan.standing[at]
    plan.standing[at] = (base, order, group + buildings.dome(dice, f, plan.pixel))
    plan.facades[k] = (at, f, True)
    plan.census.domes += 1
    return True


_ADDERS: dict[str, Callable[[Plan, Dice], bool]] = {"tree": _add_tree, "dome": _add_dome}


def _check_additions(add: Iterable[str]) -> tuple[str, ...]:
    add = (add,) if isinstance(add, str) else tuple(add)
    for name in add:
        if name not in _ADDERS:
            raise UserError(f"cannot add {name!r}: add= takes {', '.join(ADDITIONS)}")
    return add


def addition_dice(seed: int, index: int, k: int) -> Dice:
    """The dice of the ``k``-th addition to scene ``index`` of world ``seed``."""
    sequence = np.random.SeedSequence([seed, index, _ADDITION_STREAM, k])
    return Dice(np.random.Generator(np.random.PCG64(sequence)))


def counterfactual_plan(seed: int, index: int, size: int = 64, without: Iterable[str] = (),
                        add: Iterable[str] = ()) -> Plan:
    """The plan of scene ``index`` of world ``seed`` without ``without``, plus ``add``.

    Raises a UserError for an unknown name or when the scene has no place for an addition.
    """
    names, add = removed_names(without), _check_additions(add)
    plan = plan_scene(scene_rng(seed, index), 1.0 / size)
    _remove(plan, names)
    for k, name in enumerate(add):
        if not _ADDERS[name](plan, addition_dice(seed, index, k)):
            raise UserError(f"scene {index} of world {seed} has no place for a {name}"
                            " (check with gandissect.world.can_add first)")
    return plan


def render_counterfactual(seed: int, index: int, size: int = 64,
                          without: Iterable[str] = (), add: Iterable[str] = ()) -> WorldSample:
    """Render scene ``index`` of world ``seed`` without the named objects or parts, with
    the named additions.

    Args:
        without: object or part names (``concepts("object")``, ``concepts("part")``); every
            layer of every prop that is such an object, or of every such part (a building's
            windows, doors, roofs), is left out, and what was behind is drawn and labelled.
            Leaving out ``building`` also leaves out the domes that stand on buildings; a dome's
            drum is a piece of its building (it is labelled building) and goes with it, not
            with the dome. A sun's glow goes with the sun, so colours change beyond the sun's
            label. Nothing lies behind the sky or the grass: without them, pixels are black
            and labelled none.
        add: ``"tree"`` (one more tree on visible grass below the horizon, sized by its distance
            as the scene's own trees, painted in order of its ground line) or ``"dome"`` (a dome
            on a building without one); additions are made after the removals and never
            removed.

    Returns:
        The scene's ``WorldSample``. Its scene name is recomputed from what remains by the
        world's naming rules (``compose.classify``): a church whose dome is left out is a house.

    Example:
        >>> bare = render_counterfactual(0, 3, 64, without=("tree", "cloud"))
    """
    check_size(size)
    return paint(counterfactual_plan(seed, index, size, without, add).layout(), size)


def can_add(seed: int, index: int, name: str, without: Iterable[str] = ()) -> bool:
    """Whether ``render(seed, index, add=(name,), without=without)`` has a place for ``name``.

    A tree needs visible grass below the horizon; a dome needs a building without one.
    """
    (name,) = _check_additions((name,))
    plan = plan_scene(scene_rng(seed, index), 1.0 / 64)
    _remove(plan, removed_names(without))
    return _ADDERS[name](plan, addition_dice(seed, index, 0))
