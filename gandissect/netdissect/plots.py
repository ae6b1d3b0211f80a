"""Small PNG charts drawn with PIL (no plotting library): line panels and grouped bars.

A figure is a row of panels; each panel has its own y axis:

    Lines(title, x_labels, {"detectors": [...], "unique": [...]}, y_label)
    Bars(title, group_labels, {"detectors": [...], "unique": [...]}, y_label)
    draw_figure([panel, ...], "docs/plot.png", title="...")
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

__all__ = ["Lines", "Bars", "draw_figure", "PALETTE"]

PALETTE = [(78, 121, 167), (242, 142, 43), (89, 161, 79), (225, 87, 89), (118, 183, 178),
           (237, 201, 72), (176, 122, 161), (156, 117, 95)]
_PANEL_W, _PANEL_H = 520, 380
_LEFT, _RIGHT, _TOP, _BOTTOM = 64, 16, 40, 62


@dataclass
class Lines:
    """Lines over categorical x positions (evenly spaced, labelled ``x_labels``)."""

    title: str
    x_labels: list[str]
    series: dict[str, list[float]]
    y_label: str = ""
    x_label: str = ""
    y_range: tuple[float, float] | None = None  # None: 0 .. a round maximum
    spread: dict[str, list[tuple[float, float]]] = field(default_factory=dict)  # error bars


@dataclass
class Bars:
    """Grouped bars: one group per label, one bar per series, value printed on top."""

    title: str
    x_labels: list[str]
    series: dict[str, list[float]]
    y_label: str = ""
    x_label: str = ""
    y_range: tuple[float, float] | None = None
    notes: list[str] = field(default_factory=list)  # a line of text under each group


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: bitmap font only
        return ImageFont.load_default()


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    step = 10 ** math.floor(math.log10(value))
    for factor in (1, 2, 2.5, 5, 10):
        if factor * step >= value:
            return factor * step
    return 10 * step


def _y_range(panel: Lines | Bars) -> tuple[float, float]:
    if panel.y_range is not None:
        return panel.y_range
    values = [v for vs in panel.series.values() for v in vs if v is not None]
    values += [high for bars in getattr(panel, "spread", {}).values() for _, high in bars]
    return 0.0, _nice_max(max(values, default=1.0) * 1.08)


def _text(draw: ImageDraw.ImageDraw, xy, text: str, font, anchor: str = "la",
          fill=(30, 30, 30)) -> None:
    draw.text(xy, text, font=font, fill=fill, anchor=anchor)


def _axes(image: Image.Image, draw, ox: int, panel: Lines | Bars, low: float, high: float):
    """Frame, grid, y ticks, titles; returns the plot box and the value -> y mapping."""
    small, normal = _font(12), _font(14)
    x0, y0 = ox + _LEFT, _TOP
    x1, y1 = ox + _PANEL_W - _RIGHT, _PANEL_H - _BOTTOM
    _text(draw, ((x0 + x1) / 2, 12), panel.title, normal, "ma")

    def to_y(value: float) -> float:
        return y1 - (value - low) / (high - low or 1) * (y1 - y0)

    for k in range(6):
        value = low + (high - low) * k / 5
        y = to_y(value)
        draw.line([(x0, y), (x1, y)], fill=(228, 228, 228))
        label = f"{value:.2f}" if high - low <= 2 else f"{value:g}"
        _text(draw, (x0 - 6, y), label, small, "rm")
    draw.rectangle([x0, y0, x1, y1], outline=(120, 120, 120))
    if panel.y_label:
        label = Image.new("RGBA", (y1 - y0, 18), (255, 255, 255, 0))
        ImageDraw.Draw(label).text(((y1 - y0) / 2, 9), panel.y_label, font=small,
                                   fill=(30, 30, 30), anchor="mm")
        turned = label.rotate(90, expand=True)
        image.paste(turned, (ox + 4, y0), turned)
    if panel.x_label:
        below = 44 if getattr(panel, "notes", None) else 28  # under the tick labels (and notes)
        _text(draw, ((x0 + x1) / 2, y1 + below), panel.x_label, small, "ma")
    return (x0, y0, x1, y1), to_y


def _legend_top(panel: Lines | Bars, box: tuple, to_y) -> int:
    """Top left of the plot, unless the data there is high: then bottom left."""
    x0, y0, x1, y1 = box
    height = 18 * len(panel.series) + 12
    left = [v for vs in panel.series.values() for v in vs[: max(1, (len(vs) + 1) // 2)]
            if v is not None]
    crowded = any(to_y(v) < y0 + height + 8 for v in left)
    return y1 - height if crowded else y0 + 8


def _legend(draw, x: int, y: int, names: list[str]) -> None:
    small = _font(12)
    for k, name in enumerate(names):
        color = PALETTE[k % len(PALETTE)]
        draw.rectangle([x, y + 18 * k + 2, x + 12, y + 18 * k + 12], fill=color)
        _text(draw, (x + 18, y + 18 * k), name, small)


def _draw_lines(image: Image.Image, draw, ox: int, panel: Lines) -> None:
    low, high = _y_range(panel)
    (x0, y0, x1, y1), to_y = _axes(image, draw, ox, panel, low, high)
    small = _font(12)
    count = len(panel.x_labels)
    step = (x1 - x0 - 40) / max(count - 1, 1)
    xs = [x0 + 20 + step * i for i in range(count)]
    for x, label in zip(xs, panel.x_labels):
        draw.line([(x, y1), (x, y1 + 4)], fill=(120, 120, 120))
        _text(draw, (x, y1 + 7), label, small, "ma")
    for k, (name, values) in enumerate(panel.series.items()):
        color = PALETTE[k % len(PALETTE)]
        for x, (low_value, high_value) in zip(xs, panel.spread.get(name, [])):
            top, bottom = to_y(high_value), to_y(low_value)
            draw.line([(x, top), (x, bottom)], fill=color, width=1)
            draw.line([(x - 5, top), (x + 5, top)], fill=color, width=1)
            draw.line([(x - 5, bottom), (x + 5, bottom)], fill=color, width=1)
        points = [(x, to_y(v)) for x, v in zip(xs, values) if v is not None]
        if len(points) > 1:
            draw.line(points, fill=color, width=3)
        for x, y in points:
            draw.ellipse([x - 4, y - 4, x + 4, y + 4], fill=color)
    _legend(draw, x0 + 10, _legend_top(panel, (x0, y0, x1, y1), to_y), list(panel.series))


def _draw_bars(image: Image.Image, draw, ox: int, panel: Bars) -> None:
    low, high = _y_range(panel)
    (x0, y0, x1, y1), to_y = _axes(image, draw, ox, panel, low, high)
    small = _font(12)
    groups, series = len(panel.x_labels), list(panel.series.values())
    width = (x1 - x0) / max(groups, 1)
    bar = min(28.0, 0.8 * width / max(len(series), 1))
    for g, label in enumerate(panel.x_labels):
        center = x0 + width * (g + 0.5)
        left = center - bar * len(series) / 2
        for k, values in enumerate(series):
            value = values[g]
            top = to_y(value)
            draw.rectangle([left + k * bar + 1, top, left + (k + 1) * bar - 1, y1],
                           fill=PALETTE[k % len(PALETTE)])
            _text(draw, (left + (k + 0.5) * bar, top - 2), f"{value:g}", _font(11), "md")
        _text(draw, (center, y1 + 7), label, small, "ma")
        if g < len(panel.notes):
            _text(draw, (center, y1 + 24), panel.notes[g], _font(11), "ma",
                  fill=(90, 90, 90))
    _legend(draw, x0 + 10, _legend_top(panel, (x0, y0, x1, y1), to_y), list(panel.series))


def draw_figure(panels: list[Lines | Bars], path: str | Path, title: str = "",
                caption: str = "") -> Path:
    """Draw ``panels`` side by side into a PNG at ``path`` (parents created)."""
    head = 34 if title else 0
    foot = 22 if caption else 0
    image = Image.new("RGB", (_PANEL_W * len(panels), _PANEL_H + head + foot), "white")
    draw = ImageDraw.Draw(image)
    if title:
        _text(draw, (image.width / 2, 10), title, _font(17), "ma")
    for k, panel in enumerate(panels):
        sub = Image.new("RGB", (_PANEL_W, _PANEL_H), "white")
        sub_draw = ImageDraw.Draw(sub)
        (_draw_lines if isinstance(panel, Lines) else _draw_bars)(sub, sub_draw, 0, panel)
        image.paste(sub, (k * _PANEL_W, head))
    if caption:
        _text(draw, (12, head + _PANEL_H + 2), caption, _font(12), fill=(70, 70, 70))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, optimize=True)
    return path
