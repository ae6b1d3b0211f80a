"""Trees: round deciduous, conifer and bushy, with green or autumn foliage."""

from __future__ import annotations

from gandissect.world import fills, shapes
from gandissect.world.canvas import Layer
from gandissect.world.props import AUTUMN, CONIFER, GREENS, MAT, OBJ, Dice, scale

KINDS = ("round", "conifer", "bushy")


def _trunk(dice: Dice, x: float, base: float, width: float, top: float) -> Layer:
    bark = dice.tone((0.32, 0.22, 0.14), 0.05)
    return Layer(shapes.Rect(x - width / 2, top, x + width / 2, base), fills.Flat(bark),
                 (OBJ["tree"], 0, 0))


def _crown(dice: Dice, shape: object, base_rgb: tuple, h: float) -> Layer:
    x0, y0, x1, y1 = shape.bbox()
    fill = fills.Mottled(scale(base_rgb, 1.2), scale(base_rgb, 0.65), y0, y1, 0.55,
                         7.0 / h, dice.seed(), x_shade=0.3, x0=x0, x1=x1)
    return Layer(shape, fill, (OBJ["tree"], 0, MAT["foliage"]))


def _round(dice: Dice, x: float, base: float, h: float) -> tuple:
    cy, r = base - h * 0.62, h * 0.3
    lumps = [shapes.Ellipse(x, cy, r * dice.u(0.85, 1.15), r * dice.u(0.9, 1.1))]
    for _ in range(dice.i(2, 4)):
        lumps.append(shapes.Ellipse(x + dice.u(-0.6, 0.6) * r, cy + dice.u(-0.5, 0.4) * r,
                                    r * dice.u(0.45, 0.7), r * dice.u(0.4, 0.6)))
    return tuple(lumps)


def _conifer(dice: Dice, x: float, base: float, h: float) -> tuple:
    tiers = []
    half = h * dice.u(0.18, 0.26)
    for i in range(3):
        bottom = base - h * (0.12 + 0.26 * i)
        w = half * (1.0 - 0.25 * i)
        tiers.append(shapes.Polygon(((x - w, bottom), (x + w, bottom),
                                     (x, bottom - h * 0.42))))
    return tuple(tiers)


def _bushy(dice: Dice, x: float, base: float, h: float) -> tuple:
    cy, rx, ry = base - h * 0.58, h * 0.3, h * 0.34
    lumps = []
    for _ in range(dice.i(6, 9)):
        lumps.append(shapes.Ellipse(x + dice.u(-0.7, 0.7) * rx, cy + dice.u(-0.7, 0.7) * ry,
                                    h * dice.u(0.11, 0.17), h * dice.u(0.1, 0.15)))
    return tuple(lumps)


def tree(dice: Dice, x: float, base: float, h: float, autumn: bool,
         kind: str | None = None) -> list[Layer]:
    """A tree standing at (x, base), ``h`` tall: trunk then crown."""
    kind = kind or dice.pick(("round", "round", "conifer", "bushy"))
    if kind == "conifer":
        rgb, trunk_top, parts = dice.pick(CONIFER), base - h * 0.2, _conifer(dice, x, base, h)
    else:
        palette = AUTUMN if autumn and dice.p(0.8, "palette") else GREENS
        rgb, trunk_top = dice.pick(palette), base - h * 0.55
        parts = (_round if kind == "round" else _bushy)(dice, x, base, h)
    rgb = dice.tone(rgb, 0.04)
    trunk = _trunk(dice, x, base, h * dice.u(0.06, 0.09), trunk_top)
    return [trunk, _crown(dice, shapes.Union(parts), rgb, h)]
