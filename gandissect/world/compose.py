"""Scene composition: choose a scene kind, lay out its props, and name the scene.

The scene label is decided from what was actually placed (the ``Census``), by fixed rules in
priority order; each kind's recipe is written so that its census satisfies its own rule.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from gandissect.world import buildings, props, trees
from gandissect.world.canvas import Layer
from gandissect.world.props import Dice, Mood

KINDS = ("church", "house", "street", "forest", "lake", "mountain_valley")
KIND_WEIGHTS = (0.2, 0.2, 0.12, 0.16, 0.16, 0.16)
LAKE_AREA = 0.12  # water covering this fraction of the image makes a lake
FOREST_TREES = 8


@dataclass
class Census:
    """What a scene contains, for naming it."""

    buildings: int = 0
    domes: int = 0
    towers: int = 0
    trees: int = 0
    water_area: float = 0.0
    road: bool = False


def classify(census: Census) -> str:
    """The scene name implied by a scene's contents (rules in priority order)."""
    if census.domes or census.towers:
        return "church"
    if census.buildings >= 3 and census.road:
        return "street"
    if census.buildings:
        return "house"
    if census.water_area >= LAKE_AREA:
        return "lake"
    if census.trees >= FOREST_TREES:
        return "forest"
    return "mountain_valley"


@dataclass(frozen=True)
class Layout:
    """A composed scene: layers in painter's order, its scene name and lighting gain."""

    layers: tuple[Layer, ...]
    scene: str
    gain: tuple[float, float, float]


@dataclass
class Plan:
    """A scene under construction: backdrop layers, standing props sorted by ground line.

    ``standing`` holds (ground line, order of placement, layers); ``facades`` holds
    (position in ``standing``, facade, whether it carries a dome) for each building.
    """

    dice: Dice
    mood: Mood
    pixel: float
    horizon: float = 0.6
    ground: list = field(default_factory=list)
    standing: list = field(default_factory=list)
    census: Census = field(default_factory=Census)
    facades: list = field(default_factory=list)

    def backdrop(self, horizon: float, ranges: tuple = ()) -> None:
        """Sky, sun, clouds, mountain ranges (top, haze, snow) and grass."""
        d, m = self.dice, self.mood
        self.horizon = horizon
        self.ground += props.sky(m, horizon)
        with d.tagged("lighting"):
            self.ground += props.sun(d, m, horizon)
        self.ground += props.clouds(d, m, horizon)
        for top, haze, snow in ranges:
            self.ground += props.mountains(d, m, horizon, top, haze, snow)
        self.ground += props.grass(d, m, horizon)

    def stand(self, base: float, layers: list[Layer]) -> None:
        """Add a prop whose ground line is ``base`` (nearer props are painted later)."""
        self.standing.append((base, len(self.standing), layers))

    def building(self, f: buildings.Facade, layers: list[Layer], dome: bool = False,
                 tower: bool = False) -> None:
        """Add a building standing on its facade's ground line."""
        self.facades.append((len(self.standing), f, dome))
        self.stand(f.base, layers)
        self.census.buildings += 1
        self.census.domes += dome
        self.census.towers += tower

    def tree(self, x: float, base: float, h: float, kind: str | None = None) -> None:
        """Add one tree."""
        self.stand(base, trees.tree(self.dice, x, base, h, self.mood.autumn, kind))
        self.census.trees += 1

    def trees(self, n: int, y0: float, y1: float, size: tuple[float, float],
              kind: str | None = None) -> None:
        """Add ``n`` trees with bases in [y0, y1), sized by distance from the horizon."""
        d = self.dice
        for _ in range(n):
            base = d.u(y0, y1, "position")
            near = (base - self.horizon) / (1.0 - self.horizon)
            h = (size[0] + size[1] * near) * d.u(0.75, 1.25, "scale")
            self.tree(d.u(-0.05, 1.05, "position"), base, h, kind)

    def water(self, layers_area: tuple[list[Layer], float]) -> None:
        """Add a lake or pond (below the standing props)."""
        layers, area = layers_area
        self.ground += layers
        self.census.water_area += area

    def road(self) -> None:
        """Add a road in perspective."""
        self.ground += props.road(self.dice, self.horizon)
        self.census.road = True

    def maybe_far_mountains(self, prob: float) -> tuple:
        """A hazy far range with probability ``prob`` (as ``backdrop`` ranges)."""
        if not self.dice.p(prob, "layout"):
            return ()
        h = self.horizon
        return (((h - 0.3, h - 0.1), 0.5, 0.35),)

    def layout(self) -> Layout:
        """The finished scene."""
        order = sorted(self.standing, key=lambda item: (item[0], item[1]))
        layers = list(self.ground)
        for _, _, group in order:
            layers += group
        return Layout(tuple(layers), classify(self.census), self.mood.gain)


def _facade(d: Dice, base: float, w: float, h: float, material: str) -> buildings.Facade:
    return buildings.Facade(d.u(0.04, max(0.05, 0.96 - w), "position"), base, w, h, material)


def _church(plan: Plan) -> None:
    d = plan.dice
    plan.horizon = d.u(0.5, 0.64, "layout")
    plan.backdrop(plan.horizon, plan.maybe_far_mountains(0.35))
    if d.p(0.35, "layout"):
        plan.road()
    base = plan.horizon + d.u(0.12, 0.25, "position")
    f = _facade(d, base, d.u(0.36, 0.55, "scale"), d.u(0.2, 0.32, "scale"),
                d.pick(("stone", "stone", "brick", "plaster"), "material"))
    style = d.pick(("dome", "tower", "both", "dome", "tower"))
    dome, tower = style in ("dome", "both"), style in ("tower", "both")
    lit = plan.mood.sky == "dusk" and d.p(0.5, "lighting")
    plan.building(f, buildings.church(d, f, plan.pixel, lit, dome, tower), dome, tower)
    plan.trees(d.i(0, 4, "layout"), plan.horizon + 0.01, base - 0.02, (0.08, 0.3))
    plan.trees(d.i(0, 3, "layout"), base + 0.03, 1.05, (0.08, 0.35))


def _house(plan: Plan) -> None:
    d = plan.dice
    plan.horizon = d.u(0.5, 0.65, "layout")
    plan.backdrop(plan.horizon, plan.maybe_far_mountains(0.3))
    if d.p(0.15, "layout"):
        plan.water(props.pond(d, plan.mood, plan.horizon))
    if d.p(0.35, "layout"):
        plan.road()
    lit = plan.mood.sky == "dusk" and d.p(0.6, "lighting")
    for _ in range(d.i(1, 2, "layout")):
        material = d.pick(("brick", "brick", "plaster", "plaster", "stone", "glass"), "material")
        tall = material == "glass"
        w = d.u(0.18, 0.3, "scale") if tall else d.u(0.25, 0.45, "scale")
        h = d.u(0.3, 0.45, "scale") if tall else d.u(0.15, 0.28, "scale")
        base = plan.horizon + d.u(0.1, 0.28, "position")
        f = _facade(d, base, w, h, material)
        plan.building(f, buildings.house(d, f, plan.pixel, lit))
    plan.trees(d.i(1, 5, "layout"), plan.horizon + 0.01, 1.05, (0.08, 0.32))
    if d.p(0.45, "layout"):
        plan.stand(0.97, props.fence(d, d.u(0.86, 0.97, "position")))


def _street(plan: Plan) -> None:
    d = plan.dice
    plan.horizon = d.u(0.45, 0.58, "layout")
    plan.backdrop(plan.horizon)
    y0 = d.u(0.78, 0.84, "layout")
    plan.ground += props.street(d, y0, y0 + d.u(0.1, 0.14, "layout"))
    plan.census.road = True
    base = y0 - d.u(0.005, 0.02, "position")
    x = d.u(-0.08, 0.0, "position")
    lit = plan.mood.sky == "dusk" and d.p(0.7, "lighting")
    while x < 1.0 or plan.census.buildings < 3:
        w = d.u(0.18, 0.3, "scale")
        material = d.pick(("brick", "plaster", "plaster", "stone", "glass"), "material")
        f = buildings.Facade(x, base, w, d.u(0.2, 0.45, "scale"), material)
        plan.building(f, buildings.house(d, f, plan.pixel, lit))
        x += w + d.u(0.0, 0.03, "position")
    plan.trees(d.i(0, 3, "layout"), base + 0.005, y0, (0.1, 0.2), kind="round")


def _forest(plan: Plan) -> None:
    d = plan.dice
    plan.horizon = d.u(0.42, 0.6, "layout")
    plan.backdrop(plan.horizon, plan.maybe_far_mountains(0.35))
    kind = d.pick((None, "conifer", "round"))
    h = plan.horizon
    plan.trees(d.i(8, 14, "layout"), h + 0.003, h + 0.03, (0.05, 0.05), kind)
    plan.trees(d.i(8, 16, "layout"), h + 0.04, 1.08, (0.12, 0.5), kind)


def _lake(plan: Plan) -> None:
    d = plan.dice
    plan.horizon = d.u(0.45, 0.6, "layout")
    h = plan.horizon
    ranges = (((h - 0.32, h - 0.1), 0.4, 0.45),) if d.p(0.7, "layout") else ()
    plan.backdrop(h, ranges)
    depth = d.u(0.2, 0.32, "layout")
    plan.water(props.lake(d, plan.mood, h, depth))
    if d.p(0.7, "layout"):
        plan.trees(d.i(4, 10, "layout"), h + 0.002, h + 0.008, (0.05, 0.04))
    plan.trees(d.i(0, 4, "layout"), h + depth + 0.05, 1.08, (0.1, 0.35))


def _valley(plan: Plan) -> None:
    d = plan.dice
    h = d.u(0.58, 0.72, "layout")
    plan.horizon = h
    far = ((d.u(0.08, 0.14, "layout"), d.u(0.18, 0.28, "layout")), 0.45, 0.75)
    near = ((h - 0.26, h - 0.12), 0.12, 0.2)
    plan.backdrop(h, (far, near))
    if d.p(0.3, "layout"):
        plan.water(props.pond(d, plan.mood, h))
    if d.p(0.3, "layout"):
        plan.road()
    plan.trees(d.i(0, 5, "layout"), h + 0.01, 1.05, (0.06, 0.3))
    if d.p(0.2, "layout"):
        plan.stand(0.97, props.fence(d, d.u(0.86, 0.97, "position")))


RECIPES = {
    "church": _church, "house": _house, "street": _street,
    "forest": _forest, "lake": _lake, "mountain_valley": _valley,
}


def plan_scene(rng: np.random.Generator, pixel: float, dice: Dice | None = None) -> Plan:
    """Draw one random scene's plan (every draw of the scene; ``compose`` lays it out)."""
    dice = dice or Dice(rng)
    kind = dice.weighted(KINDS, KIND_WEIGHTS, "scene")
    plan = Plan(dice, props.mood(dice), pixel)
    RECIPES[kind](plan)
    return plan


def compose(rng: np.random.Generator, pixel: float, dice: Dice | None = None) -> Layout:
    """Compose one random scene; ``pixel`` (1 / size) only tunes texture anti-aliasing.

    ``dice`` (drawing from ``rng``) may be given to record or steer the scene's factors.
    """
    return plan_scene(rng, pixel, dice).layout()
