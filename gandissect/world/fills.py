"""Fills: the colour of a shape at each pixel (flat, gradients, and procedural textures).

A fill's ``color(x, y)`` takes the same (1, W) / (H, 1) grids as shapes and returns RGB in
[0, 1] as an array broadcastable to (H, W, 3). Textures are defined in scene units, so they
look the same at every resolution (finer detail simply resolves at larger sizes).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gandissect.world.noise import fractal_noise, hash_unit, triangle_wave, value_noise
from gandissect.world.shapes import Ridge

RGBf = tuple[float, float, float]


def _rgb(c: RGBf) -> np.ndarray:
    return np.asarray(c, dtype=np.float64)


def _mix(a: RGBf, b: RGBf, t: np.ndarray) -> np.ndarray:
    """Blend colours a -> b by weights ``t`` (any shape); returns t.shape + (3,)."""
    ca, cb = _rgb(a), _rgb(b)
    return ca + (cb - ca) * t[..., None]


def _line_coverage(t: np.ndarray, half_width: float, pixel: float) -> np.ndarray:
    """Anti-aliased coverage of lines at the integers of ``t`` (t in line-pitch units)."""
    dist = np.abs(t - np.floor(t + 0.5))
    return np.clip(0.5 - (dist - half_width) / pixel, 0.0, 1.0)


@dataclass(frozen=True)
class Flat:
    """A single colour."""

    rgb: RGBf

    def color(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return _rgb(self.rgb)


@dataclass(frozen=True)
class Gradient:
    """Vertical gradient from ``top`` at y0 to ``bottom`` at y1."""

    top: RGBf
    bottom: RGBf
    y0: float
    y1: float

    def color(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        t = np.clip((y - self.y0) / (self.y1 - self.y0), 0.0, 1.0)
        return _mix(self.top, self.bottom, t)


@dataclass(frozen=True)
class Mottled:
    """Vertical gradient modulated by fractal noise: grass, foliage, clouds, domes."""

    top: RGBf
    bottom: RGBf
    y0: float
    y1: float
    amp: float
    freq: float
    seed: int
    x_shade: float = 0.0  # brighter left, darker right, by this much across [x0, x1]
    x0: float = 0.0
    x1: float = 1.0
    octaves: int = 1

    def color(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        t = np.clip((y - self.y0) / (self.y1 - self.y0), 0.0, 1.0)
        noise = fractal_noise if self.octaves > 1 else value_noise
        gain = (noise(x, y, self.freq, self.seed) - 0.5) * self.amp + 1.0
        if self.x_shade:
            u = np.clip((x - self.x0) / (self.x1 - self.x0), 0.0, 1.0)
            gain = gain + (u - 0.35) * -self.x_shade
        return _mix(self.top, self.bottom, t) * gain[..., None]


@dataclass(frozen=True)
class Masonry:
    """Brick or stone courses: per-block tone jitter and anti-aliased mortar joints."""

    base: RGBf
    mortar: RGBf
    x0: float
    y0: float
    block_w: float
    block_h: float
    jitter: float
    joint: float  # mortar half-width, as a fraction of block height
    pixel: float
    seed: int

    def color(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        v = (y - self.y0) / self.block_h
        row = np.floor(v)
        shift = (row - np.floor(row * 0.5) * 2.0) * 0.5  # odd courses offset half a block
        u = (x - self.x0) / self.block_w + shift
        tone = hash_unit(np.floor(u), row, self.seed)
        block = _rgb(self.base) * ((tone - 0.5) * self.jitter + 1.0)[..., None]
        joint_h = _line_coverage(v, self.joint, self.pixel / self.block_h)
        joint_v = _line_coverage(u, self.joint * self.block_h / self.block_w,
                                 self.pixel / self.block_w)
        joint = np.maximum(joint_h, joint_v)
        return block + (_rgb(self.mortar) - block) * joint[..., None]


@dataclass(frozen=True)
class Glass:
    """Curtain-wall glass: sky-tinted panes, a diagonal sheen, and mullions."""

    tint: RGBf
    sheen: RGBf
    mullion: RGBf
    x0: float
    y0: float
    pane_w: float
    pane_h: float
    pixel: float

    def color(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        diag = triangle_wave((x - self.x0) * 2.0 + (y - self.y0) * 1.3)
        pane = _mix(self.tint, self.sheen, diag * diag)
        mu = _line_coverage((x - self.x0) / self.pane_w, 0.06, self.pixel / self.pane_w)
        mv = _line_coverage((y - self.y0) / self.pane_h, 0.05, self.pixel / self.pane_h)
        frame = np.maximum(mu, mv)
        return pane + (_rgb(self.mullion) - pane) * frame[..., None]


@dataclass(frozen=True)
class Water:
    """Water: sky reflection near the horizon fading to deep water, with noisy ripples."""

    far: RGBf
    near: RGBf
    y0: float
    y1: float
    seed: int

    def color(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        t = np.clip((y - self.y0) / (self.y1 - self.y0), 0.0, 1.0)
        base = _mix(self.far, self.near, t)
        wobble = value_noise(x, y, 6.0, self.seed) * 1.2
        ripple = triangle_wave((y - self.y0) * 70.0 + wobble)
        glint = np.clip((ripple - 0.55) * 2.5, 0.0, 1.0) * 0.22 - 0.07
        return base * (glint + 1.0)[..., None]


@dataclass(frozen=True)
class Rock:
    """Mountain rock: lit and shaded flanks of the ridge, darker towards the foot."""

    lit: RGBf
    shade: RGBf
    ridge: Ridge
    y1: float
    seed: int

    def color(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        side = self.ridge.lit_side(x)[None, :]
        top = self.ridge.extent()[0]
        depth = np.clip((y - top) / (self.y1 - top), 0.0, 1.0)
        rgb = _mix(self.shade, self.lit, side)
        gain = (fractal_noise(x, y, 14.0, self.seed) - 0.5) * 0.25 + 1.05 - depth * 0.25
        return rgb * gain[..., None]


@dataclass(frozen=True)
class Road:
    """Asphalt with a dashed centre line converging to a vanishing point."""

    asphalt: RGBf
    paint: RGBf
    top_x: float
    top_y: float
    bottom_x: float
    dash: bool
    seed: int

    def color(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        depth = np.clip((y - self.top_y) / (1.0 - self.top_y), 0.001, 1.0)
        gain = (value_noise(x, y, 40.0, self.seed) - 0.5) * 0.12 + 1.0
        rgb = _rgb(self.asphalt) * gain[..., None]
        if not self.dash:
            return rgb
        centre = self.top_x + (self.bottom_x - self.top_x) * depth
        line = np.clip(0.5 - (np.abs(x - centre) / depth - 0.012) * 40.0, 0.0, 1.0)
        on = triangle_wave(1.0 / (depth + 0.15) * 1.2) > 0.5
        line = line * on
        return rgb + (_rgb(self.paint) - rgb) * line[..., None]
