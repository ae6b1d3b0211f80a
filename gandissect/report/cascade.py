"""The cascading randomisation curve as an inline SVG line chart (Adebayo et al. 2018's figure):
for each attribution method, the Spearman rank correlation between its maps on the trained
model and on each stage of the cascade, from the logits layer down to the input layer."""

from __future__ import annotations

from html import escape

from gandissect.report.svg import CATEGORY_COLORS

__all__ = ["cascade_svg"]


def cascade_svg(curves: dict[str, dict[str, float]], stages: list[str]) -> str:
    """``curves``: method -> {stage: mean rank correlation} (``sanity_cascade`` of an
    ``evaluate_attribution`` result), ``stages`` in cascade order (top layer first). The chart
    starts at the trained model (correlation 1) and runs through the stages; the y axis spans
    -1 to 1; a stage a method lacks (NaN: every map constant) breaks its line. Returns a
    standalone ``<svg>`` document."""
    left, top, plot_w, plot_h, bottom, legend = 48, 16, max(60 * (len(stages) + 1), 240), 200, \
        56, 170
    width = left + plot_w + legend
    height = max(top + plot_h + bottom, top + 14 * len(curves) + 16)  # room for the legend
    points = ["trained", *stages]
    step = plot_w / max(len(points) - 1, 1)

    def x(i: int) -> float:
        return left + i * step

    def y(value: float) -> float:
        return top + (1 - value) / 2 * plot_h

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             'role="img" aria-label="cascading randomisation: rank correlation with the trained '
             'model\'s maps, by randomised layer" font-family="sans-serif" font-size="11">',
             f'<rect width="{width}" height="{height}" fill="white"/>']
    for tick in (-1.0, -0.5, 0.0, 0.5, 1.0):
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y(tick):.1f}" '
                     f'y2="{y(tick):.1f}" stroke="#ddd"/>')
        parts.append(f'<text x="{left - 6}" y="{y(tick) + 4:.1f}" text-anchor="end">'
                     f'{tick:g}</text>')
    for i, name in enumerate(points):
        parts.append(f'<text x="{x(i):.1f}" y="{top + plot_h + 16}" text-anchor="middle">'
                     f'{escape(name)}</text>')
    parts.append(f'<text x="{left + plot_w / 2:.1f}" y="{top + plot_h + bottom - 10}" '
                 'text-anchor="middle">randomised down to layer (logits first)</text>')
    for k, (method, curve) in enumerate(curves.items()):
        color = CATEGORY_COLORS[k % len(CATEGORY_COLORS)]
        values = [1.0, *(curve.get(stage, float("nan")) for stage in stages)]
        run: list[str] = []
        for i, value in enumerate([*values, float("nan")]):
            if value == value:  # not NaN
                run.append(f"{x(i):.1f},{y(value):.1f}")
                continue
            if run:
                parts.append(f'<polyline points="{" ".join(run)}" fill="none" '
                             f'stroke="{color}" stroke-width="2"/>')
            run = []
        ly = top + 14 * k + 6
        parts.append(f'<line x1="{left + plot_w + 12}" x2="{left + plot_w + 30}" y1="{ly}" '
                     f'y2="{ly}" stroke="{color}" stroke-width="2"/>')
        parts.append(f'<text x="{left + plot_w + 34}" y="{ly + 4}">{escape(method)}</text>')
    parts.append("</svg>")
    return "\n".join(parts)
