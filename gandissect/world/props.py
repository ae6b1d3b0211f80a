"""Props: the things a scene is made of (sky, mountains, trees, buildings, fences...).

Each function draws random choices from the scene's generator and returns layers in painter's
order. Geometry is in scene units (the image spans [0, 1] in x and y, y down), so a scene's
layout never depends on the output size. ``pixel`` (one pixel in scene units) is only passed
to textures whose anti-aliasing needs it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from gandissect.world import fills, shapes
from gandissect.world.canvas import Layer
from gandissect.world.concepts import concepts

OBJ = MappingProxyType({c.name: c.code for c in concepts("object")})
PART = MappingProxyType({c.name: c.code for c in concepts("part")})
MAT = MappingProxyType({c.name: c.code for c in concepts("material")})

RGBf = tuple[float, float, float]

SKIES: MappingProxyType = MappingProxyType({
    "day": ((0.26, 0.50, 0.86), (0.72, 0.84, 0.96)),
    "dusk": ((0.20, 0.18, 0.46), (0.98, 0.60, 0.36)),
    "overcast": ((0.54, 0.57, 0.62), (0.80, 0.81, 0.83)),
})
GREENS = ((0.30, 0.56, 0.20), (0.20, 0.46, 0.15), (0.38, 0.62, 0.24), (0.24, 0.50, 0.30))
AUTUMN = ((0.86, 0.50, 0.14), (0.78, 0.28, 0.12), (0.90, 0.72, 0.20), (0.62, 0.36, 0.12))
CONIFER = ((0.10, 0.32, 0.18), (0.14, 0.40, 0.22), (0.18, 0.36, 0.16))
ROOFS = ((0.66, 0.26, 0.16), (0.30, 0.32, 0.38), (0.42, 0.26, 0.16), (0.55, 0.18, 0.14))
PLASTER = ((0.93, 0.87, 0.70), (0.92, 0.92, 0.89), (0.93, 0.76, 0.70), (0.80, 0.86, 0.90),
           (0.95, 0.84, 0.50))
DOORS = ((0.30, 0.17, 0.08), (0.45, 0.12, 0.08), (0.12, 0.28, 0.16), (0.14, 0.20, 0.38))
DOMES = (((0.42, 0.72, 0.62), (0.22, 0.46, 0.40)), ((0.95, 0.80, 0.35), (0.62, 0.46, 0.14)),
         ((0.55, 0.60, 0.70), (0.30, 0.34, 0.44)), ((0.70, 0.32, 0.22), (0.42, 0.18, 0.12)))


class Dice:
    """Random choices for one scene, all drawn from its own numpy Generator.

    Every draw may name the scene factor it decides (``factor=``, or a ``tagged`` block); the
    plain Dice ignores the names, and ``gandissect.world.factors`` uses them to record a scene's
    factors and to re-draw one factor while holding the others. Names never change a draw.
    """

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def _random(self, factor: str | None, default: str) -> float:
        return float(self.rng.random())

    def _integers(self, lo: int, hi: int, factor: str | None, default: str) -> int:
        return int(self.rng.integers(lo, hi))

    @contextmanager
    def tagged(self, factor: str) -> Iterator[None]:
        """Draws in this block decide ``factor`` unless a draw names its own."""
        yield

    def u(self, lo: float, hi: float, factor: str | None = None) -> float:
        """A uniform float in [lo, hi).

        Scaled in Python, not by ``Generator.uniform``: compiled code may fuse the multiply-add
        on some CPUs, and every bit must be the same everywhere.
        """
        return lo + (hi - lo) * self._random(factor, "shape")

    def i(self, lo: int, hi: int, factor: str | None = None) -> int:
        """A uniform integer in [lo, hi] (inclusive)."""
        return self._integers(lo, hi + 1, factor, "shape")

    def p(self, prob: float, factor: str | None = None) -> bool:
        """True with probability ``prob``."""
        return bool(self._random(factor, "shape") < prob)

    def weighted(self, options: tuple, weights: tuple[float, ...], factor: str | None = None):
        """One of ``options`` with probabilities proportional to ``weights``."""
        r = self.u(0.0, sum(weights), factor)
        for option, w in zip(options, weights):
            if r < w:
                return option
            r -= w
        return options[-1]

    def pick(self, options: tuple, factor: str | None = None):
        """One of ``options``, uniformly (a pick among colours decides the palette)."""
        default = "palette" if _is_colour(options[0]) else "shape"
        return options[self._integers(0, len(options), factor, default)]

    def seed(self, factor: str | None = None) -> int:
        """A fresh 31-bit seed for a noise texture (or, naming ``shape``, a noisy outline)."""
        return self._integers(0, 2**31 - 1, factor, "texture")

    def tone(self, rgb: RGBf, spread: float = 0.04, factor: str | None = None) -> RGBf:
        """``rgb`` with a little random jitter per channel, clipped to [0, 1]."""
        factor = factor or "palette"
        return tuple(min(1.0, max(0.0, c + self.u(-spread, spread, factor))) for c in rgb)


def _is_colour(option) -> bool:
    """Whether a pick's option is an RGB triple (or a tuple of them)."""
    if isinstance(option, tuple) and option and isinstance(option[0], tuple):
        return _is_colour(option[0])
    return isinstance(option, tuple) and len(option) == 3 and all(
        isinstance(c, float) for c in option)


def scale(rgb: RGBf, k: float) -> RGBf:
    """Brighten or darken a colour, clipped to [0, 1]."""
    return tuple(min(1.0, max(0.0, c * k)) for c in rgb)


def mix(a: RGBf, b: RGBf, t: float) -> RGBf:
    """Linear blend of two colours."""
    return tuple(x + (y - x) * t for x, y in zip(a, b))


@dataclass(frozen=True)
class Mood:
    """Scene-wide look: sky colours, lighting gain, season."""

    sky: str
    zenith: RGBf
    horizon_rgb: RGBf
    gain: RGBf
    autumn: bool


def mood(dice: Dice) -> Mood:
    """Draw the sky type, lighting and season of a scene."""
    sky = dice.pick(("day", "day", "day", "dusk", "overcast"), "lighting")
    zenith, horizon_rgb = (dice.tone(c, 0.05, "lighting") for c in SKIES[sky])
    level = {"day": (0.93, 1.07), "dusk": (0.86, 1.0), "overcast": (0.86, 0.98)}[sky]
    tint = {"day": (1.0, 1.0, 1.0), "dusk": (1.05, 0.93, 0.85), "overcast": (0.95, 0.97, 1.0)}
    k = dice.u(*level, "lighting")
    gain = tuple(t * k * dice.u(0.97, 1.03, "lighting") for t in tint[sky])
    return Mood(sky, zenith, horizon_rgb, gain, dice.p(0.25, "palette"))


def sky(m: Mood, horizon: float) -> list[Layer]:
    """The sky: a vertical gradient over the whole image."""
    fill = fills.Gradient(m.zenith, m.horizon_rgb, 0.0, horizon)
    return [Layer(shapes.Rect(-0.01, -0.01, 1.01, 1.01), fill, (OBJ["sky"], 0, 0))]


def sun(dice: Dice, m: Mood, horizon: float) -> list[Layer]:
    """A sun disc with a soft glow (none under an overcast sky)."""
    if m.sky == "overcast" or not dice.p(0.55 if m.sky == "day" else 0.8):
        return []
    r = dice.u(0.035, 0.06)
    if m.sky == "day":
        cy, rgb = dice.u(0.08, max(0.1, horizon - 0.28)), (1.0, 0.97, 0.82)
    else:
        cy, rgb = horizon - dice.u(0.04, 0.16), (1.0, 0.78, 0.42)
        r *= 1.3
    cx = dice.u(0.08, 0.92)
    glow = Layer(shapes.Ellipse(cx, cy, r * 3.5, r * 3.5), fills.Flat(rgb), soft=r * 5.0,
                 opacity=0.35, owner=OBJ["sun"])
    disc = Layer(shapes.Ellipse(cx, cy, r, r), fills.Flat(rgb), (OBJ["sun"], 0, 0))
    return [glow, disc]


def clouds(dice: Dice, m: Mood, horizon: float) -> list[Layer]:
    """Puffy clouds: unions of ellipses with flat bottoms."""
    count = {"day": (0, 4), "dusk": (0, 3), "overcast": (4, 7)}[m.sky]
    top, bottom = {"day": ((1.0, 1.0, 1.0), (0.80, 0.83, 0.88)),
                   "dusk": ((1.0, 0.80, 0.74), (0.66, 0.48, 0.58)),
                   "overcast": ((0.86, 0.86, 0.88), (0.58, 0.60, 0.64))}[m.sky]
    layers = []
    for _ in range(dice.i(*count)):
        width = dice.u(0.12, 0.32) * (1.4 if m.sky == "overcast" else 1.0)
        cx, cy = dice.u(-0.05, 1.05), dice.u(0.07, max(0.1, horizon - 0.14))
        k = dice.i(3, 6)
        puffs = []
        for j in range(k):
            px = cx - width / 2 + width * (j + 0.5) / k + dice.u(-0.02, 0.02)
            rx = width / k * dice.u(0.9, 1.5)
            ry = rx * dice.u(0.6, 1.0) * (1.3 if 0 < j < k - 1 else 1.0)
            puffs.append(shapes.Ellipse(px, cy - ry * dice.u(0.15, 0.5), rx, ry, cut_y=cy))
        shape = shapes.Union(tuple(puffs))
        y0 = shape.bbox()[1]
        fill = fills.Mottled(top, bottom, y0, cy, 0.12, 40.0, dice.seed())
        layers.append(Layer(shape, fill, (OBJ["cloud"], 0, 0)))
    return layers


def mountains(dice: Dice, m: Mood, horizon: float, top: tuple[float, float],
              haze: float, snow: float) -> list[Layer]:
    """One mountain range whose peaks reach heights in ``top``; snow caps with prob ``snow``."""
    peaks = tuple(
        (dice.u(-0.1, 1.1), dice.u(*top), dice.u(0.6, 1.5)) for _ in range(dice.i(2, 4))
    )
    ridge = shapes.Ridge(peaks, horizon + 0.03, dice.u(0.015, 0.04), dice.seed("shape"))
    rock = dice.pick(((0.46, 0.44, 0.50), (0.50, 0.42, 0.34), (0.38, 0.44, 0.38)))
    lit = mix(scale(rock, 1.15), m.horizon_rgb, haze)
    shade = mix(scale(rock, 0.85), m.horizon_rgb, haze * 0.9)
    body = shapes.Band(ridge, shapes.flat(horizon + 0.03))
    label = (OBJ["mountain"], 0, 0)
    layers = [Layer(body, fills.Rock(lit, shade, ridge, horizon, dice.seed()), label)]
    highest = min(p[1] for p in peaks)
    if horizon - highest > 0.2 and dice.p(snow):
        line = shapes.Wavy(highest + dice.u(0.05, 0.12), 0.05, 11.0, dice.seed("shape"))
        white = mix((0.96, 0.97, 1.0), m.horizon_rgb, haze * 0.5)
        fill = fills.Mottled(white, scale(white, 0.82), highest, line.base_y, 0.1, 30.0,
                             dice.seed())
        layers.append(Layer(shapes.Band(ridge, line), fill, label))
    return layers


def grass(dice: Dice, m: Mood, horizon: float) -> list[Layer]:
    """The ground: grass from the horizon down, hazier far away, textured."""
    far, near = ((0.62, 0.64, 0.32), (0.44, 0.50, 0.18)) if m.autumn else (
        (0.48, 0.68, 0.32), (0.24, 0.50, 0.14))
    far = mix(dice.tone(far), m.horizon_rgb, 0.2)
    edge = shapes.Wavy(horizon, 0.012, 14.0, dice.seed("shape"))
    fill = fills.Mottled(far, dice.tone(near), horizon, 1.0, 0.35, 24.0, dice.seed(),
                         octaves=2)
    return [Layer(shapes.Band(edge, shapes.flat(1.02)), fill, (OBJ["grass"], 0, 0))]


def water(dice: Dice, m: Mood, shape: object, y0: float, y1: float) -> list[Layer]:
    """A body of water in ``shape``, reflecting the sky's horizon colour near the top."""
    deep = dice.tone((0.10, 0.26, 0.40))
    far = mix(m.horizon_rgb, deep, 0.35)
    fill = fills.Water(far, deep, y0, y1, dice.seed())
    return [Layer(shape, fill, (OBJ["water"], 0, MAT["water"]))]


def lake(dice: Dice, m: Mood, horizon: float, depth: float) -> tuple[list[Layer], float]:
    """A lake spanning the image from the horizon down to a wavy shore; returns its area."""
    shore = shapes.Wavy(horizon + depth, 0.06, 4.0, dice.seed("shape"))
    band = shapes.Band(shapes.flat(horizon + 0.004), shore)
    return water(dice, m, band, horizon, horizon + depth), depth


def pond(dice: Dice, m: Mood, horizon: float) -> tuple[list[Layer], float]:
    """A small elliptical pond on the ground; returns its area."""
    rx, ry = dice.u(0.08, 0.18), dice.u(0.02, 0.045)
    cy = dice.u(horizon + 0.06, 0.9)
    shape = shapes.Ellipse(dice.u(0.15, 0.85), cy, rx, ry)
    return water(dice, m, shape, cy - ry, cy + ry), 3.14159 * rx * ry


def road(dice: Dice, horizon: float) -> list[Layer]:
    """A road running from the bottom edge towards the horizon, in perspective."""
    bx, bw = dice.u(0.2, 0.8), dice.u(0.3, 0.6)
    tx, ty = dice.u(0.3, 0.7), horizon + dice.u(0.01, 0.06)
    tw = dice.u(0.01, 0.03)
    shape = shapes.Polygon(((bx - bw / 2, 1.02), (bx + bw / 2, 1.02),
                            (tx + tw / 2, ty), (tx - tw / 2, ty)))
    asphalt = dice.pick(((0.36, 0.36, 0.38), (0.45, 0.43, 0.40), (0.55, 0.47, 0.36)))
    fill = fills.Road(dice.tone(asphalt), (0.92, 0.90, 0.80), tx, ty, bx, dice.p(0.6),
                      dice.seed())
    return [Layer(shape, fill, (OBJ["road"], 0, 0))]


def street(dice: Dice, y0: float, y1: float) -> list[Layer]:
    """A road crossing the image horizontally, with a dashed centre line."""
    asphalt = dice.tone((0.36, 0.36, 0.38))
    label = (OBJ["road"], 0, 0)
    body = Layer(shapes.Rect(-0.01, y0, 1.01, y1),
                 fills.Mottled(asphalt, scale(asphalt, 1.1), y0, y1, 0.1, 40.0, dice.seed()),
                 label)
    mid, pitch = (y0 + y1) / 2, dice.u(0.08, 0.12)
    dashes = shapes.Grid(-0.02, mid - 0.004, pitch, 0.008, int(1.1 / pitch), 1, pitch * 0.3,
                         0.003)
    return [body, Layer(dashes, fills.Flat((0.92, 0.90, 0.78)), label)]


def fence(dice: Dice, base: float) -> list[Layer]:
    """A picket fence along the ground line ``base``."""
    h = dice.u(0.05, 0.09)
    x0 = dice.u(-0.1, 0.4)
    x1 = min(1.1, x0 + dice.u(0.4, 1.0))
    pitch = dice.u(0.022, 0.035)
    n = max(1, int((x1 - x0) / pitch))
    pickets = shapes.Grid(x0, base - h, pitch, h, n, 1, pitch * 0.28, h / 2)
    x1 = x0 + n * pitch
    rails = tuple(shapes.Rect(x0, base - h * f, x1, base - h * f + h * 0.12)
                  for f in (0.78, 0.38))
    rgb = dice.pick(((0.92, 0.92, 0.90), (0.55, 0.38, 0.22), (0.70, 0.60, 0.45)))
    fill = fills.Mottled(rgb, scale(rgb, 0.85), base - h, base, 0.1, 60.0, dice.seed())
    return [Layer(shapes.Union((pickets,) + rails), fill, (OBJ["fence"], 0, 0))]
