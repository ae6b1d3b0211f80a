"""Per-pixel colour names (the 11 Broden colours) from the final rendered RGB.

The rule: quantise each channel to 5 bits (bin centre ``(v // 8) * 8 + 4``), convert to
CIELAB with gamma 2 (``linear = v * v``), a fixed sRGB->XYZ matrix and a Newton cube root, and
take the nearest colour prototype (several per name) by squared Lab distance; ties go to the
first prototype. Everything is IEEE-exact arithmetic, so the table is the same everywhere; it
is computed once per process for all 32768 bins.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from gandissect.world.concepts import code_of

# (name, sRGB) prototypes; several per name cover light and dark shades.
PROTOTYPES: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("black", (12, 12, 12)), ("black", (40, 36, 32)),
    ("blue", (40, 80, 200)), ("blue", (100, 150, 220)), ("blue", (150, 190, 235)),
    ("blue", (30, 50, 110)),
    ("brown", (120, 75, 35)), ("brown", (85, 58, 40)), ("brown", (150, 105, 65)),
    ("green", (50, 140, 50)), ("green", (100, 170, 60)), ("green", (30, 80, 35)),
    ("green", (150, 190, 90)),
    ("grey", (128, 128, 128)), ("grey", (88, 88, 94)), ("grey", (182, 182, 182)),
    ("orange", (240, 140, 30)), ("orange", (215, 110, 40)),
    ("pink", (240, 160, 190)), ("pink", (215, 130, 150)),
    ("purple", (120, 50, 150)), ("purple", (80, 50, 110)), ("purple", (170, 120, 200)),
    ("red", (200, 30, 30)), ("red", (145, 28, 28)),
    ("white", (246, 246, 246)), ("white", (222, 226, 234)),
    ("yellow", (240, 220, 50)), ("yellow", (222, 200, 110)),
)

_MATRIX = (
    (0.4124, 0.3576, 0.1805),
    (0.2126, 0.7152, 0.0722),
    (0.0193, 0.1192, 0.9505),
)
_WHITE = (0.9505, 1.0, 1.089)
_EPS = 0.008856


def _lab_f(t: np.ndarray) -> np.ndarray:
    """CIELAB's f(t): a Newton cube root above the knee, the linear segment below."""
    s = np.maximum(t, _EPS)
    r = s * 0.6 + 0.4
    for _ in range(7):
        r = (r + r + s / (r * r)) / 3.0
    return np.where(t > _EPS, r, t * 7.787 + 16.0 / 116.0)


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) sRGB values in [0, 255] -> (..., 3) CIELAB (gamma-2 approximation)."""
    c = np.asarray(rgb, dtype=np.float64) / 255.0
    lin = [c[..., i] * c[..., i] for i in range(3)]
    fs = []
    for row, white in zip(_MATRIX, _WHITE):
        v = lin[0] * row[0] + lin[1] * row[1] + lin[2] * row[2]
        fs.append(_lab_f(v / white))
    fx, fy, fz = fs
    return np.stack([fy * 116.0 - 16.0, (fx - fy) * 500.0, (fy - fz) * 200.0], axis=-1)


def name_colors(rgb: np.ndarray) -> np.ndarray:
    """Colour codes (1-based, category 'color') for (..., 3) RGB values, nearest prototype."""
    lab = srgb_to_lab(rgb)
    protos = srgb_to_lab(np.asarray([p[1] for p in PROTOTYPES], dtype=np.float64))
    best = np.full(lab.shape[:-1], np.inf)
    code = np.zeros(lab.shape[:-1], dtype=np.uint8)
    for (name, _), p in zip(PROTOTYPES, protos):
        d0 = lab[..., 0] - p[0]
        d1 = lab[..., 1] - p[1]
        d2 = lab[..., 2] - p[2]
        dist = d0 * d0 + d1 * d1 + d2 * d2
        code = np.where(dist < best, np.uint8(code_of(name, "color")), code)
        best = np.minimum(best, dist)
    return code


@lru_cache(maxsize=1)
def color_table() -> np.ndarray:
    """The 32768-entry lookup table: colour code per 5-bit-quantised RGB bin."""
    levels = np.arange(32, dtype=np.float64) * 8.0 + 4.0
    r, g, b = np.meshgrid(levels, levels, levels, indexing="ij")
    table = name_colors(np.stack([r, g, b], axis=-1))
    table.setflags(write=False)
    return table.reshape(-1)


def color_labels(image: np.ndarray) -> np.ndarray:
    """(H, W) colour-name codes for an (H, W, 3) uint8 image."""
    q = (image >> 3).astype(np.intp)
    index = (q[..., 0] << 10) | (q[..., 1] << 5) | q[..., 2]
    return color_table()[index]
