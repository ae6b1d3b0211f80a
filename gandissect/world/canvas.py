"""The canvas: paints layers in painter's order with anti-aliased colour and exact labels.

Colour uses analytic coverage, ``clip(0.5 - d / pixel, 0, 1)`` from the shape's signed
distance ``d``. Labels follow the pixel centre: a layer claims a pixel when ``d <= 0``, i.e.
coverage >= 0.5, so each pixel carries the label of the topmost shape covering its centre.
Each layer only touches its bounding-box slice of the canvas.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

KEEP = None  # a layer's label for a category it leaves unchanged
LABELLED = ("object", "part", "material")


@dataclass(frozen=True)
class Layer:
    """A shape, how to colour it, and what it labels.

    ``labels`` gives (object, part, material) codes; ``None`` keeps what lies below (shading,
    glows), 0 erases (an occluder without a part or material). ``soft`` widens the
    anti-aliasing ramp to that many scene units (glows); ``opacity`` scales coverage.
    ``owner``: the object code of the prop a layer with a KEEP object label belongs to (a sun's
    glow, a building's windows and door), so that a counterfactual scene can leave it out with
    its prop; painting ignores it, and so do equality and hashing.
    """

    shape: object
    fill: object
    labels: tuple[int | None, int | None, int | None] = (None, None, None)
    soft: float = 0.0
    opacity: float = 1.0
    owner: int | None = field(default=None, compare=False)


class Canvas:
    """An RGB float image plus object/part/material label maps, all of one square size."""

    def __init__(self, size: int) -> None:
        self.size = size
        centres = (np.arange(size, dtype=np.float64) + 0.5) / size
        self.xs = centres[None, :]
        self.ys = centres[:, None]
        self.rgb = np.zeros((size, size, 3), dtype=np.float64)
        self.labels = {cat: np.zeros((size, size), dtype=np.uint8) for cat in LABELLED}

    def _window(self, layer: Layer) -> tuple[slice, slice] | None:
        x0, y0, x1, y1 = layer.shape.bbox()
        pad = 1.0 + layer.soft * self.size * 0.5
        s = self.size
        c0 = max(0, math.floor(x0 * s - pad))
        c1 = min(s, math.ceil(x1 * s + pad))
        r0 = max(0, math.floor(y0 * s - pad))
        r1 = min(s, math.ceil(y1 * s + pad))
        if c0 >= c1 or r0 >= r1:
            return None
        return slice(r0, r1), slice(c0, c1)

    def paint(self, layer: Layer) -> None:
        """Composite one layer over the canvas (colour and labels)."""
        window = self._window(layer)
        if window is None:
            return
        rows, cols = window
        x, y = self.xs[:, cols], self.ys[rows, :]
        d = layer.shape.distance(x, y)
        scale = self.size if layer.soft <= 0.0 else 1.0 / layer.soft
        cover = np.minimum(np.maximum(d * -scale + 0.5, 0.0), 1.0)
        if layer.opacity != 1.0:
            cover = cover * layer.opacity
        region = self.rgb[rows, cols]
        region += (layer.fill.color(x, y) - region) * cover[..., None]
        inside = d <= 0.0
        for cat, code in zip(LABELLED, layer.labels):
            if code is not None:
                self.labels[cat][rows, cols][inside] = code

    def paint_all(self, layers: list[Layer]) -> None:
        """Paint layers in order (first is bottom-most)."""
        for layer in layers:
            self.paint(layer)

    def to_uint8(self, gain: tuple[float, float, float]) -> np.ndarray:
        """Apply the scene's per-channel lighting gain and quantise to uint8."""
        rgb = self.rgb * np.asarray(gain, dtype=np.float64)
        return np.floor(np.clip(rgb, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
