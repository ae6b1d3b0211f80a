"""What a painting brush is, for the app's Paint tab and ``gandissect edit-image`` alike (no
imports: the command line reads it before torch loads)."""

# The units a brush removes by default (the app's Paint tab, gandissect edit-image): on the
# shipped generator, painting over a whole tree, door or dome, 30 of the ranking remove
# 0.86 / 0.65 / 1.0 of it against 0.60 / 0.45 / 0.69 for GANPaint's 15, while the labels around
# the paint change no more (dome: 9.8% of the pixels within a cell, against 8.8%; farther away
# under 1%). benchmarks/bench_paint_effect.py.
BRUSH_UNITS = 30
BRUSH_EXCLUDED = ("color", "scene")  # categories that are not things one paints
