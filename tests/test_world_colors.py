"""Colour names: the fast lookup table equals a plain per-pixel restatement of the rule."""

from __future__ import annotations

import numpy as np

from gandissect.world import concept, render
from gandissect.world.colors import PROTOTYPES


def slow_color_name(r: int, g: int, b: int) -> str:
    """The rule, one pixel at a time in plain Python floats."""

    def lab(rgb):
        lin = [((v // 8) * 8 + 4) / 255.0 if q else v / 255.0 for v, q in zip(rgb, quant)]
        lin = [c * c for c in lin]
        m = ((0.4124, 0.3576, 0.1805), (0.2126, 0.7152, 0.0722), (0.0193, 0.1192, 0.9505))
        white = (0.9505, 1.0, 1.089)
        t = [(row[0] * lin[0] + row[1] * lin[1] + row[2] * lin[2]) / w
             for row, w in zip(m, white)]
        f = [v ** (1.0 / 3.0) if v > 0.008856 else v * 7.787 + 16.0 / 116.0 for v in t]
        return (116.0 * f[1] - 16.0, 500.0 * (f[0] - f[1]), 200.0 * (f[1] - f[2]))

    quant = (True, True, True)
    pixel = lab((r, g, b))
    quant = (False, False, False)
    best = min(PROTOTYPES, key=lambda p: sum((a - b) ** 2 for a, b in zip(pixel, lab(p[1]))))
    return best[0]


def test_color_labels_match_slow_rule():
    rng = np.random.default_rng(0)
    for index in range(4):
        s = render(0, index, 64)
        for y, x in rng.integers(0, 64, size=(25, 2)):
            r, g, b = (int(v) for v in s.image[y, x])
            expected = concept(slow_color_name(r, g, b), "color").code
            assert s.labels["color"][y, x] == expected, (r, g, b)


def test_obvious_colors():
    cases = {(250, 250, 250): "white", (5, 5, 5): "black", (220, 30, 30): "red",
             (40, 150, 40): "green", (40, 70, 210): "blue", (250, 225, 40): "yellow"}
    for rgb, name in cases.items():
        assert slow_color_name(*rgb) == name
        image = np.array([[rgb]], dtype=np.uint8)
        from gandissect.world.colors import color_labels

        assert color_labels(image)[0, 0] == concept(name, "color").code
