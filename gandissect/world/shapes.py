"""Shapes as signed distances in scene units (negative inside), evaluated on pixel grids.

Every shape takes ``x`` of shape (1, W) and ``y`` of shape (H, 1) (pixel centres in scene
units, y pointing down) and returns an (H, W) signed distance. The renderer turns distance into
analytic anti-aliased coverage. Distances are exact or close enough near edges, which is all
anti-aliasing needs. Only IEEE-exact operations are used (see ``noise``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from gandissect.world.noise import noise1

Box = tuple[float, float, float, float]  # x0, y0, x1, y1


@dataclass(frozen=True)
class Rect:
    """Axis-aligned rectangle."""

    x0: float
    y0: float
    x1: float
    y1: float

    def bbox(self) -> Box:
        return (self.x0, self.y0, self.x1, self.y1)

    def distance(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        dx = np.maximum(self.x0 - x, x - self.x1)
        dy = np.maximum(self.y0 - y, y - self.y1)
        return np.maximum(dx, dy)


@dataclass(frozen=True)
class Ellipse:
    """Axis-aligned ellipse, optionally cut off below ``cut_y`` (a flat bottom, a dome)."""

    cx: float
    cy: float
    rx: float
    ry: float
    cut_y: float | None = None

    def bbox(self) -> Box:
        y1 = self.cy + self.ry if self.cut_y is None else min(self.cy + self.ry, self.cut_y)
        return (self.cx - self.rx, self.cy - self.ry, self.cx + self.rx, y1)

    def distance(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        u = (x - self.cx) / self.rx
        v = (y - self.cy) / self.ry
        r = min(self.rx, self.ry)
        d = np.sqrt(u * u + v * v) * r - r
        if self.cut_y is not None:
            d = np.maximum(d, y - self.cut_y)
        return d


@dataclass(frozen=True)
class Polygon:
    """Convex polygon; vertices in either winding order."""

    points: tuple[tuple[float, float], ...]

    def bbox(self) -> Box:
        xs = [p[0] for p in self.points]
        ys = [p[1] for p in self.points]
        return (min(xs), min(ys), max(xs), max(ys))

    def _edges(self) -> list[tuple[float, float, float, float]]:
        pts = self.points
        area2 = sum(
            pts[i][0] * pts[i - 1][1] - pts[i - 1][0] * pts[i][1] for i in range(len(pts))
        )
        sign = -1.0 if area2 > 0 else 1.0
        edges = []
        for i in range(len(pts)):
            ax, ay = pts[i - 1]
            bx, by = pts[i]
            ex, ey = bx - ax, by - ay
            norm = math.sqrt(ex * ex + ey * ey)
            edges.append((ax, ay, sign * ey / norm, -sign * ex / norm))
        return edges

    def distance(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        d = None
        for ax, ay, nx, ny in self._edges():
            e = (x - ax) * nx + (y - ay) * ny
            d = e if d is None else np.maximum(d, e)
        return d


@dataclass(frozen=True)
class Union:
    """Union of shapes (minimum distance)."""

    parts: tuple

    def bbox(self) -> Box:
        boxes = [p.bbox() for p in self.parts]
        return (
            min(b[0] for b in boxes),
            min(b[1] for b in boxes),
            max(b[2] for b in boxes),
            max(b[3] for b in boxes),
        )

    def distance(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        d = self.parts[0].distance(x, y)
        for part in self.parts[1:]:
            d = np.minimum(d, part.distance(x, y))
        return d


@dataclass(frozen=True)
class Grid:
    """A regular grid of equal rectangles (windows, fence pickets): one shape, one pass.

    Cells of size ``pitch_x`` x ``pitch_y`` start at (x0, y0); each holds a centred
    rectangle of half-size (hw, hh).
    """

    x0: float
    y0: float
    pitch_x: float
    pitch_y: float
    nx: int
    ny: int
    hw: float
    hh: float

    def bbox(self) -> Box:
        x1 = self.x0 + self.nx * self.pitch_x
        y1 = self.y0 + self.ny * self.pitch_y
        return (self.x0, self.y0, x1, y1)

    def _axis(self, t: np.ndarray, t0: float, pitch: float, n: int, half: float) -> np.ndarray:
        cell = np.clip(np.floor((t - t0) / pitch), 0, n - 1)
        return np.abs(t - (cell + 0.5) * pitch - t0) - half

    def distance(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        dx = self._axis(x, self.x0, self.pitch_x, self.nx, self.hw)
        dy = self._axis(y, self.y0, self.pitch_y, self.ny, self.hh)
        return np.maximum(dx, dy)


@dataclass(frozen=True)
class Ridge:
    """A mountain ridge line: the highest of several tent-shaped peaks, plus 1-D noise.

    ``peaks`` holds (x, top_y, slope) triples; the curve is the smallest y (highest point).
    """

    peaks: tuple[tuple[float, float, float], ...]
    base_y: float
    rough: float
    seed: int

    def extent(self) -> tuple[float, float]:
        top = min(p[1] for p in self.peaks) - self.rough
        return (top, self.base_y)

    def heights(self, x: np.ndarray) -> np.ndarray:
        """Per-column ridge y, for the 1-D column coordinates ``x``."""
        xs = np.ravel(x)
        h = np.full(xs.shape, self.base_y)
        for px, top, slope in self.peaks:
            h = np.minimum(h, np.abs(xs - px) * slope + top)
        jag = noise1(xs, 23.0, self.seed) * 0.6 + noise1(xs, 61.0, self.seed + 1) * 0.4
        return h + (jag - 0.5) * self.rough

    def lit_side(self, x: np.ndarray) -> np.ndarray:
        """1.0 on the sunlit (left) flank of the dominant peak, 0.0 on the shaded flank."""
        xs = np.ravel(x)
        best = np.full(xs.shape, np.inf)
        lit = np.zeros(xs.shape)
        for px, top, slope in self.peaks:
            h = np.abs(xs - px) * slope + top
            lit = np.where(h < best, (xs < px) * 1.0, lit)
            best = np.minimum(best, h)
        return lit


@dataclass(frozen=True)
class Wavy:
    """A gently wavy horizontal line: ``base_y`` plus smooth 1-D noise of amplitude ``amp``."""

    base_y: float
    amp: float
    freq: float
    seed: int

    def extent(self) -> tuple[float, float]:
        return (self.base_y - self.amp * 0.5, self.base_y + self.amp * 0.5)

    def heights(self, x: np.ndarray) -> np.ndarray:
        return self.base_y + (noise1(np.ravel(x), self.freq, self.seed) - 0.5) * self.amp


@dataclass(frozen=True)
class Band:
    """The region between two curves (``top`` above ``bottom``), between x0 and x1."""

    top: object
    bottom: object
    x0: float = 0.0
    x1: float = 1.0

    def bbox(self) -> Box:
        return (self.x0, self.top.extent()[0], self.x1, self.bottom.extent()[1])

    def distance(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        xs = np.ravel(x)
        top = self.top.heights(xs)[None, :]
        bottom = self.bottom.heights(xs)[None, :]
        d = np.maximum(top - y, y - bottom)
        if self.x0 > 0.0 or self.x1 < 1.0:
            d = np.maximum(d, np.maximum(self.x0 - x, x - self.x1))
        return d


def flat(y: float) -> Wavy:
    """A straight horizontal line at ``y`` (a Wavy curve of zero amplitude)."""
    return Wavy(y, 0.0, 1.0, 0)
