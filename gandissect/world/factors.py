"""The factors that generate a SceneWorld scene, and controlled variants of a scene.

Every random draw of a scene decides one factor (the draw names it, see ``props.Dice``):

- ``scene``: the scene kind the recipe builds.
- ``layout``: horizon height, which props are present (road, pond, far mountains, fence) and
  how many (buildings, trees).
- ``shape``: the form of each prop: church style (dome, tower), tree kind, roof gables,
  windows, crowns, clouds, noisy outlines (ridges, shores) and every other draw inside a prop
  not named otherwise (so also the place of a sun, pond or cloud within its prop).
- ``material``: building materials (brick, stone, plaster, glass).
- ``palette``: colours: season, colour picks and the jitter of every colour.
- ``lighting``: time of day (sky type), sky colours, light level and tint, sun, lit windows.
- ``scale``: the sizes of buildings and trees.
- ``position``: where buildings, trees and fences stand.
- ``texture``: the seeds of the noise textures (bricks, mottling, ridges, water).

A scene's draws are one stream (``render.scene_rng``), so re-drawing one factor cannot be a
re-seeded sub-stream without changing every shipped scene. Instead ``render_variant`` records
the scene's draws, each keyed by (factor, the line of code that drew it, how many times that
line drew that factor before), and composes the scene again, replaying every recorded draw
except the chosen factor's, which come from a fresh stream of their own. Where the changed
factor changes what is drawn (a glass facade draws other things than a brick one), a draw with
no recording comes from a fixed fallback stream, so variants stay deterministic.

``scene_factors`` reads each factor as one discrete code:

- ``scene``: the scene's name.
- ``layout``: the horizon (the first layout draw of every recipe) in thirds of its range:
  ``high``, ``middle``, ``low``.
- ``shape``: the first shape pick (church style or tree kind), else ``none``.
- ``material``: the first building's material, else ``none``.
- ``palette``: the season, ``autumn`` or ``summer`` (the first palette draw).
- ``lighting``: the sky type, ``day``, ``dusk`` or ``overcast`` (the first lighting draw).
- ``scale``: the first size draw in thirds of its range (``small``, ``medium``, ``large``),
  else ``none``.
- ``position``: the first position draw (a ground line or an x) in thirds of its range
  (``near``, ``middle``, ``far``), else ``none``.
- ``texture``: the first noise seed modulo 3 (a control: nothing should carry it).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from gandissect.errors import UserError
from gandissect.world.compose import compose
from gandissect.world.props import Dice
from gandissect.world.render import WorldSample, check_size, paint, scene_rng

FACTORS = ("scene", "layout", "shape", "material", "palette", "lighting", "scale", "position",
           "texture")
_FALLBACK = 2**32 - 1


def _codes(cls: type) -> set:
    """The code objects of a class's methods and the functions nested in them."""
    found, todo = set(), [f.__code__ for f in vars(cls).values() if hasattr(f, "__code__")]
    todo += [f.__wrapped__.__code__ for f in vars(cls).values() if hasattr(f, "__wrapped__")]
    while todo:
        code = todo.pop()
        found.add(code)
        todo += [c for c in code.co_consts if hasattr(c, "co_code")]
    return found


class FactorDice(Dice):
    """Dice that name each draw's factor, record the draws, and may replay a recording.

    ``replay``: draws of an earlier composition to reuse; ``change``: the factor whose draws
    come from ``fresh`` instead; ``fallback``: the stream for draws with no recording.
    """

    def __init__(self, rng: np.random.Generator, replay: dict | None = None,
                 change: str | None = None, fresh: np.random.Generator | None = None,
                 fallback: np.random.Generator | None = None) -> None:
        super().__init__(rng)
        self.replay, self.change, self.fresh, self.fallback = replay, change, fresh, fallback
        self.draws: dict = {}  # (factor, site, occurrence) -> (kind, args, value)
        self.first: dict[str, tuple] = {}  # factor -> (kind, args, value) of its first draw
        self.first_pick: dict[str, object] = {}
        self._counts: dict = {}
        self._tags: list[str] = []

    @contextmanager
    def tagged(self, factor: str) -> Iterator[None]:
        self._tags.append(factor)
        try:
            yield
        finally:
            self._tags.pop()

    def _site(self) -> tuple[str, int]:
        frame = sys._getframe(2)
        while frame.f_code in _DICE_CODES:
            frame = frame.f_back
        return frame.f_code.co_filename, frame.f_lineno

    def _draw(self, kind: str, args: tuple, factor: str | None, default: str):
        factor = factor or (self._tags[-1] if self._tags else default)
        site = self._site()
        occurrence = self._counts.get((factor, site), 0)
        self._counts[factor, site] = occurrence + 1
        key = (factor, site, occurrence)
        if self.replay is None:
            value = _sample(self.rng, kind, args)
        elif factor == self.change:
            value = _sample(self.fresh, kind, args)
        elif self.replay.get(key, (None, None))[:2] == (kind, args):
            value = self.replay[key][2]
        else:
            value = _sample(self.fallback, kind, args)
        self.draws[key] = (kind, args, value)
        self.first.setdefault(factor, (kind, args, value))
        return value

    def _random(self, factor: str | None, default: str) -> float:
        return self._draw("random", (), factor, default)

    def _integers(self, lo: int, hi: int, factor: str | None, default: str) -> int:
        return self._draw("integers", (lo, hi), factor, default)

    def pick(self, options: tuple, factor: str | None = None):
        chosen = super().pick(options, factor)
        name = factor or (self._tags[-1] if self._tags else None)
        if name is None and not isinstance(options[0], tuple):
            name = "shape"
        if name in ("shape", "material"):
            self.first_pick.setdefault(name, chosen)
        return chosen


_DICE_CODES = _codes(Dice) | _codes(FactorDice)


def _sample(rng: np.random.Generator, kind: str, args: tuple):
    return float(rng.random()) if kind == "random" else int(rng.integers(*args))


def _check(factor: str | None) -> None:
    if factor is not None and factor not in FACTORS:
        raise UserError(f"unknown factor {factor!r}; choose from {', '.join(FACTORS)}")


def _record(seed: int, index: int, size: int):
    dice = FactorDice(scene_rng(seed, index))
    return compose(dice.rng, 1.0 / size, dice), dice


def _third(first: tuple | None, names: tuple[str, str, str]) -> str:
    if first is None or first[0] != "random":
        return "none"
    return names[min(2, int(first[2] * 3))]


def scene_factors(seed: int, index: int) -> dict[str, str]:
    """The discrete code of every factor of scene ``index`` of world ``seed`` (see module)."""
    layout, dice = _record(seed, index, 64)
    first = dice.first
    sky = ("day", "day", "day", "dusk", "overcast")[first["lighting"][2]]
    texture = first.get("texture")
    shape = dice.first_pick.get("shape", "none")
    return {
        "scene": layout.scene,
        "layout": _third(first.get("layout"), ("high", "middle", "low")),
        "shape": "mixed" if shape is None else str(shape),
        "material": str(dice.first_pick.get("material", "none")),
        "palette": "autumn" if first["palette"][2] < 0.25 else "summer",
        "lighting": sky,
        "scale": _third(first.get("scale"), ("small", "medium", "large")),
        "position": _third(first.get("position"), ("near", "middle", "far")),
        "texture": "none" if texture is None else f"t{texture[2] % 3}",
    }


def render_variant(seed: int, index: int, factor: str | None, variant: int = 0,
                   size: int = 64) -> WorldSample:
    """Scene ``index`` of world ``seed`` with ``factor`` re-drawn (variant number ``variant``)
    and every other factor held; ``factor=None`` gives the scene itself, bit for bit."""
    _check(factor)
    check_size(size)
    _, original = _record(seed, index, size)
    code = FACTORS.index(factor) + 1 if factor else 0
    fresh = scene_rng(seed, index) if factor is None else np.random.Generator(
        np.random.PCG64(np.random.SeedSequence([seed, index, code, int(variant)])))
    fallback = np.random.Generator(np.random.PCG64(np.random.SeedSequence(
        [seed, index, code, int(variant), _FALLBACK])))
    dice = FactorDice(scene_rng(seed, index), original.draws, factor, fresh, fallback)
    return paint(compose(dice.rng, 1.0 / size, dice), size)
