"""An inline SVG bar graph: interpretable units per concept, grouped by category."""

from __future__ import annotations

from html import escape

__all__ = ["concept_bars", "CATEGORY_COLORS"]

CATEGORY_COLORS = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948",
                   "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"]


def _legend_step(category: str) -> int:
    """Horizontal room of one legend entry: swatch, gap, name (about 7 px a character at
    11 px), space before the next."""
    return 24 + 7 * len(category)


def concept_bars(counts: list[tuple[str, str, int]], categories: list[str],
                 what: str = "interpretable units per concept, by label",
                 empty: str = "No interpretable units.") -> str:
    """``counts`` is ``[(category, concept, units), ...]``; bars sorted within each category by
    count, categories in the given order; ``what`` the chart shows (its accessible name),
    ``empty`` the sentence when there is nothing to draw. Returns an ``<svg>`` element (no
    external refs)."""
    ordered = [item for category in categories
               for item in sorted((c for c in counts if c[0] == category),
                                  key=lambda c: (-c[2], c[1]))]
    if not ordered:
        return f'<p class="empty">{escape(empty)}</p>'
    bar, gap, top, label_room, axis = 16, 4, 24, 90, 28
    peak = max(units for _, _, units in ordered)
    plot = 140
    shown = [c for c in categories if any(o[0] == c for o in ordered)]
    legend_width = sum(_legend_step(c) for c in shown)
    # wide enough for the bars and for the legend above them (one bar, long category names)
    width = axis + max(len(ordered) * (bar + gap), legend_width) + 10
    height = top + plot + label_room
    parts = [f'<svg class="bars" width="{width}" height="{height}" role="img" '
             f'aria-label="{escape(what)}">']
    parts.append(f'<line x1="{axis}" y1="{top + plot}" x2="{width}" y2="{top + plot}" '
                 'stroke="#888"/>')
    x = axis
    for category, concept, units in ordered:
        color = CATEGORY_COLORS[categories.index(category) % len(CATEGORY_COLORS)]
        h = plot * units / peak
        y = top + plot - h
        tip = escape(f"{concept} ({category}): {units} units")
        parts.append(f'<rect x="{x}" y="{y:.1f}" width="{bar}" height="{h:.1f}" '
                     f'fill="{color}"><title>{tip}</title></rect>')
        parts.append(f'<text x="{x + bar / 2}" y="{y - 3:.1f}" font-size="10" '
                     f'text-anchor="middle">{units}</text>')
        label_y = top + plot + 8
        parts.append(f'<text x="{x + bar / 2}" y="{label_y}" font-size="10" text-anchor="end" '
                     f'transform="rotate(-60 {x + bar / 2} {label_y})">{escape(concept)}</text>')
        x += bar + gap
    legend_x = axis
    for category in shown:
        color = CATEGORY_COLORS[categories.index(category) % len(CATEGORY_COLORS)]
        parts.append(f'<rect x="{legend_x}" y="4" width="10" height="10" fill="{color}"/>'
                     f'<text x="{legend_x + 14}" y="13" font-size="11">{escape(category)}</text>')
        legend_x += _legend_step(category)
    parts.append("</svg>")
    return "".join(parts)
