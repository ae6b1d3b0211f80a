"""Buildings: facades of brick, plaster, stone or glass, with windows, doors and roofs;
churches add domes on drums and towers with spires."""

from __future__ import annotations

from dataclasses import dataclass

from gandissect.world import fills, shapes
from gandissect.world.canvas import Layer
from gandissect.world.props import DOMES, DOORS, MAT, OBJ, PART, PLASTER, ROOFS, Dice, scale

FACADES = ("brick", "plaster", "stone", "glass")


@dataclass(frozen=True)
class Facade:
    """A rectangular wall: left edge, ground line, width, height and material."""

    x0: float
    base: float
    w: float
    h: float
    material: str

    @property
    def top(self) -> float:
        return self.base - self.h

    @property
    def x1(self) -> float:
        return self.x0 + self.w

    @property
    def cx(self) -> float:
        return self.x0 + self.w / 2


def wall_fill(dice: Dice, f: Facade, pixel: float, x0: float, y0: float) -> object:
    """The texture of a wall of material ``f.material`` anchored at (x0, y0)."""
    if f.material == "brick":
        red = dice.tone(dice.pick(((0.64, 0.28, 0.20), (0.56, 0.24, 0.18), (0.70, 0.38, 0.24))))
        bh = dice.u(0.018, 0.026)
        return fills.Masonry(red, (0.80, 0.76, 0.70), x0, y0, bh * 2.3, bh, 0.35, 0.14,
                             pixel, dice.seed())
    if f.material == "stone":
        stone = dice.tone(dice.pick(((0.70, 0.66, 0.58), (0.60, 0.60, 0.60), (0.74, 0.70, 0.60))))
        bh = dice.u(0.035, 0.05)
        return fills.Masonry(stone, scale(stone, 0.7), x0, y0, bh * 1.7, bh, 0.3, 0.07,
                             pixel, dice.seed())
    if f.material == "glass":
        tint = dice.tone((0.30, 0.45, 0.56))
        return fills.Glass(tint, (0.75, 0.86, 0.95), (0.25, 0.27, 0.30), x0, y0,
                           dice.u(0.03, 0.05), dice.u(0.04, 0.06), pixel)
    rgb = dice.tone(dice.pick(PLASTER), 0.03)
    return fills.Mottled(rgb, scale(rgb, 0.9), f.top, f.base, 0.08, 18.0, dice.seed())


def _wall(dice: Dice, f: Facade, obj: str, pixel: float) -> Layer:
    fill = wall_fill(dice, f, pixel, f.x0, f.top)
    return Layer(shapes.Rect(f.x0, f.top, f.x1, f.base), fill, (OBJ[obj], 0, MAT[f.material]))


def _window_fill(dice: Dice, lit: bool) -> object:
    if lit:
        return fills.Flat(dice.tone((0.98, 0.82, 0.45)))
    return fills.Flat(dice.tone((0.20, 0.26, 0.36), 0.03))


def windows(dice: Dice, f: Facade, floors: int, lit: bool, skip_centre: bool) -> list[Layer]:
    """Grids of windows on a building: ``floors`` rows, centre bottom cell left free for the
    door."""
    cols = max(1, int(f.w / dice.u(0.06, 0.09)))
    if skip_centre and cols % 2 == 0:
        cols += 1
    px, py = f.w / cols, f.h / floors
    hw, hh = px * dice.u(0.22, 0.32), py * dice.u(0.22, 0.32)
    fill = _window_fill(dice, lit)
    label = (None, PART["window"], MAT["glass"])
    grids = []
    if floors > 1:
        grids.append(shapes.Grid(f.x0, f.top, px, py, cols, floors - 1, hw, hh))
    ground = f.base - py
    mid = cols // 2 if skip_centre else cols
    if mid > 0:
        grids.append(shapes.Grid(f.x0, ground, px, py, mid, 1, hw, hh))
    right = cols - mid - 1
    if skip_centre and right > 0:
        grids.append(shapes.Grid(f.x0 + (mid + 1) * px, ground, px, py, right, 1, hw, hh))
    return [Layer(g, fill, label, owner=OBJ["building"]) for g in grids]


def door(dice: Dice, f: Facade, floor_h: float, arched: bool) -> Layer:
    """A building's door centred on the facade's ground line."""
    dw = min(max(f.w * 0.16, 0.035), 0.075)
    dh = min(floor_h * 0.85, dw * 2.1)
    rect = shapes.Rect(f.cx - dw / 2, f.base - dh, f.cx + dw / 2, f.base)
    shape = rect
    if arched:
        arch = shapes.Ellipse(f.cx, f.base - dh, dw / 2, dw / 2, cut_y=f.base - dh)
        shape = shapes.Union((rect, arch))
    rgb = dice.tone(dice.pick(DOORS), 0.03)
    fill = fills.Mottled(scale(rgb, 1.15), scale(rgb, 0.8), f.base - dh - dw / 2, f.base, 0.1,
                         80.0, dice.seed())
    return Layer(shape, fill, (None, PART["door"], 0), owner=OBJ["building"])


def roof(dice: Dice, f: Facade, gable: bool, obj: str = "building") -> Layer:
    """A gable (triangle) or flat (cornice) roof on top of the facade."""
    rgb = dice.tone(dice.pick(ROOFS))
    label = (OBJ[obj], PART["roof"], 0)
    over = f.w * 0.06
    if gable:
        rise = f.w * dice.u(0.28, 0.5)
        shape = shapes.Polygon(((f.x0 - over, f.top), (f.x1 + over, f.top), (f.cx, f.top - rise)))
        fill = fills.Mottled(scale(rgb, 1.1), scale(rgb, 0.8), f.top - rise, f.top, 0.15, 50.0,
                             dice.seed())
        return Layer(shape, fill, label)
    cap = shapes.Rect(f.x0 - over * 0.3, f.top - 0.014, f.x1 + over * 0.3, f.top + 0.002)
    return Layer(cap, fills.Flat(scale(rgb, 0.8)), label)


def house(dice: Dice, f: Facade, pixel: float, lit: bool) -> list[Layer]:
    """A house or block: wall, windows, door, roof (glass blocks get flat roofs)."""
    floors = max(1, int(f.h / dice.u(0.07, 0.1)))
    gable = f.material != "glass" and dice.p(0.65)
    layers = [_wall(dice, f, "building", pixel)]
    if f.material != "glass":
        layers += windows(dice, f, floors, lit, skip_centre=True)
    layers.append(door(dice, f, f.h / floors, arched=dice.p(0.3)))
    layers.append(roof(dice, f, gable))
    return layers


def dome(dice: Dice, f: Facade, pixel: float) -> list[Layer]:
    """A drum on the facade's top centre crowned by a half-ellipse dome and a lantern."""
    r = f.w * dice.u(0.2, 0.3)
    drum_h = r * dice.u(0.35, 0.7)
    drum = Facade(f.cx - r, f.top + 0.004, 2 * r, drum_h + 0.004, f.material)
    light, dark = DOMES[dice.i(0, len(DOMES) - 1, "palette")]
    cap_y = drum.top
    ry = r * dice.u(0.85, 1.2)
    shell = shapes.Ellipse(f.cx, cap_y, r * 1.04, ry, cut_y=cap_y)
    fill = fills.Mottled(light, dark, cap_y - ry, cap_y, 0.1, 20.0, dice.seed(), x_shade=0.5,
                         x0=f.cx - r, x1=f.cx + r)
    lw = r * 0.16
    lantern = shapes.Union((
        shapes.Rect(f.cx - lw, cap_y - ry - lw * 2.2, f.cx + lw, cap_y - ry * 0.9),
        shapes.Polygon(((f.cx - lw * 1.2, cap_y - ry - lw * 2.2),
                        (f.cx + lw * 1.2, cap_y - ry - lw * 2.2),
                        (f.cx, cap_y - ry - lw * 5.0))),
    ))
    label = (OBJ["dome"], 0, 0)
    return [_wall(dice, drum, "building", pixel), Layer(shell, fill, label),
            Layer(lantern, fills.Flat(dark), label)]


def tower(dice: Dice, f: Facade, pixel: float, left: bool) -> list[Layer]:
    """A bell tower beside the facade, with slit windows and a spire."""
    tw = max(0.045, f.w * dice.u(0.18, 0.28))
    th = f.h * dice.u(1.5, 2.3)
    tx = f.x0 - tw * 0.6 if left else f.x1 - tw * 0.4
    t = Facade(tx, f.base, tw, th, f.material)
    layers = [_wall(dice, t, "tower", pixel)]
    slits = shapes.Grid(tx, t.top + th * 0.06, tw, th * 0.16, 1, 3, tw * 0.16, th * 0.05)
    layers.append(Layer(slits, _window_fill(dice, False), (None, PART["window"], MAT["glass"]),
                        owner=OBJ["tower"]))
    spire_h = tw * dice.u(1.5, 3.0)
    spire = shapes.Polygon(((tx - tw * 0.08, t.top), (tx + tw * 1.08, t.top),
                            (t.cx, t.top - spire_h)))
    rgb = dice.tone(dice.pick(((0.30, 0.32, 0.38), (0.40, 0.66, 0.58), (0.60, 0.24, 0.16))))
    fill = fills.Mottled(scale(rgb, 1.15), scale(rgb, 0.8), t.top - spire_h, t.top, 0.1, 40.0,
                         dice.seed(), x_shade=0.4, x0=tx, x1=tx + tw)
    layers.append(Layer(spire, fill, (OBJ["tower"], PART["roof"], 0)))
    return layers


def church(dice: Dice, f: Facade, pixel: float, lit: bool, with_dome: bool,
           with_tower: bool) -> list[Layer]:
    """A church: a nave with arched door and rose window, plus a dome and/or a tower."""
    layers = [_wall(dice, f, "building", pixel)]
    layers += windows(dice, f, 2, lit, skip_centre=True)
    layers.append(roof(dice, f, gable=not with_dome))
    layers.append(door(dice, f, f.h * 0.6, arched=True))
    rr = min(f.w * 0.08, f.h * 0.12)
    rose = shapes.Ellipse(f.cx, f.top + f.h * 0.28, rr, rr)
    layers.append(Layer(rose, _window_fill(dice, lit), (None, PART["window"], MAT["glass"]),
                        owner=OBJ["building"]))
    if with_tower:
        layers += tower(dice, f, pixel, left=dice.p(0.5))
    if with_dome:
        layers += dome(dice, f, pixel)
    return layers
