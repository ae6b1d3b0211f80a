"""A readable sample sheet: images, colour-coded label maps per category, and a legend."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from gandissect.errors import UserError
from gandissect.world.concepts import PIXEL_CATEGORIES, concepts, palette
from gandissect.world.render import WorldSample, check_size, render

GAP, TITLE_W, CAPTION_H, SWATCH = 3, 64, 14, 11
INK, PAPER = (20, 20, 20), (255, 255, 255)


def colorize(labels: np.ndarray, category: str) -> np.ndarray:
    """(H, W) codes -> (H, W, 3) uint8 legend colours (0 = black)."""
    table = np.zeros((256, 3), dtype=np.uint8)
    table[: len(palette(category))] = palette(category)
    return table[labels]


def _tile(rgb: np.ndarray, scale: int) -> Image.Image:
    image = Image.fromarray(rgb)
    if scale == 1:
        return image
    return image.resize((rgb.shape[1] * scale, rgb.shape[0] * scale), Image.NEAREST)


def _block(samples: list[WorldSample], cols: int, tile: int, scale: int) -> Image.Image:
    """One block of up to ``cols`` samples: an image row with captions, then one row per map."""
    font = ImageFont.load_default()
    rows = ("image",) + PIXEL_CATEGORIES
    height = len(rows) * (tile + GAP) + CAPTION_H
    block = Image.new("RGB", (TITLE_W + cols * (tile + GAP), height), PAPER)
    draw = ImageDraw.Draw(block)
    for r, name in enumerate(rows):
        y = r * (tile + GAP) + (CAPTION_H if r else 0)
        draw.text((4, y + tile // 2 - 6), name, fill=INK, font=font)
        for c, s in enumerate(samples):
            rgb = s.image if name == "image" else colorize(s.labels[name], name)
            x = TITLE_W + c * (tile + GAP)
            block.paste(_tile(rgb, scale), (x, y))
            if name == "image":
                draw.text((x + 1, y + tile + 1), s.scene_name, fill=INK, font=font)
    return block


def _legend(width: int) -> Image.Image:
    """Swatches with names, one wrapped paragraph per category."""
    font = ImageFont.load_default()
    line_h = SWATCH + 5
    lines: list[list[tuple[str, tuple[int, int, int]]]] = []
    for cat in PIXEL_CATEGORIES + ("scene",):
        entries = [(f"{cat}:", None)] + [(c.name, c.color) for c in concepts(cat)]
        line, x = [], 4
        for text, color in entries:
            w = int(font.getlength(text)) + (SWATCH + 4 if color else 0) + 10
            if x + w > width and line:
                lines.append(line)
                line, x = [("", None)], 4 + TITLE_W
            line.append((text, color))
            x += max(w, TITLE_W if color is None else 0)
        lines.append(line)
    legend = Image.new("RGB", (width, len(lines) * line_h + 8), PAPER)
    draw = ImageDraw.Draw(legend)
    for row, line in enumerate(lines):
        x, y = 4, 4 + row * line_h
        for text, color in line:
            if color is None:
                draw.text((x, y), text, fill=INK, font=font)
                x = max(x + int(font.getlength(text)) + 10, 4 + TITLE_W)
                continue
            draw.rectangle((x, y, x + SWATCH, y + SWATCH), fill=color, outline=INK)
            draw.text((x + SWATCH + 4, y), text, fill=INK, font=font)
            x += SWATCH + 4 + int(font.getlength(text)) + 10
    return legend


def sample_grid(n: int = 16, size: int = 64, seed: int = 0, cols: int = 8) -> Image.Image:
    """Render scenes ``0 .. n-1`` and lay out images, label maps and a legend.

    Small images are upscaled (nearest) to at least 128 px so label maps stay legible. Each
    block of ``cols`` scenes shows the image (scene name beneath) and its object, part,
    material and colour maps; the legend names every concept's colour.
    """
    if n <= 0:
        raise UserError(f"n must be positive, got {n}")
    check_size(size)
    samples = [render(seed, i, size) for i in range(n)]
    scale = max(1, math.ceil(128 / size))
    tile = size * scale
    cols = min(cols, n)
    blocks = [_block(samples[i:i + cols], cols, tile, scale) for i in range(0, n, cols)]
    width = blocks[0].width
    legend = _legend(width)
    sheet = Image.new("RGB", (width, sum(b.height + GAP * 3 for b in blocks) + legend.height),
                      PAPER)
    y = 0
    for b in blocks:
        sheet.paste(b, (0, y))
        y += b.height + GAP * 3
    sheet.paste(legend, (0, y))
    return sheet
