"""Door insertion by context on the shipped SceneWorld generator, as in GAN Dissection.

    python benchmarks/bench_insertion_context.py [--samples 200] [--figure PNG]

Inserts the top K = 20 door units (at their 0.99 quantiles, layer4 of the shipped dissection)
in every 2x2-cell window of 200 images (seed 5), one window at a time, for the IoU ranking, the
shipped ACE ranking and the app's door brush (the ACE top 20 improved by swaps, which leads the
brush's ranking), and groups the windows by the object covering more than half of them before
the edit. Per context: windows, images, mean door pixels added per window and the share
of windows that gain a door (4 pixels or more). Prints a table and one JSON line; with
--figure also draws where doors appear on the first scenes with buildings and the bars by
context.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from gandissect.ace import ranked_units, units_by_ace, units_by_iou
from gandissect.causal import ConceptRef, context_table, insertion_maps
from gandissect.dissect import latents, load_dissection
from gandissect.intervene import Stroke, render_edited
from gandissect.models.registry import load_generator, load_segmenter, shipped_dissection_dir
from gandissect.visualize import apply_colormap

LAYER, CELL, SEED = "layer4", 2, 5
PAPER_CONTEXTS = ("building", "tree", "sky", "grass")


def to_rgb(image: torch.Tensor) -> np.ndarray:
    """A [-1, 1] ``(3, H, W)`` image as ``(H, W, 3)`` uint8."""
    return ((image.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()


def heat_overlay(image: np.ndarray, added: torch.Tensor, cell_px: int, top: float) -> np.ndarray:
    """``image`` with each window's door pixels added painted over the window's central cell
    block (the window's own 2x2 cells overlap their neighbours'), on the heat colour map."""
    grid = added.clamp(min=0).numpy() / top
    block = np.kron(grid, np.ones((cell_px, cell_px)))
    offset = cell_px * CELL // 2 - cell_px // 2
    values = np.zeros(image.shape[:2])
    values[offset:offset + block.shape[0], offset:offset + block.shape[1]] = block
    weight = 0.8 * np.sqrt(np.clip(values, 0, 1))[..., None]
    colour = apply_colormap(values, "heat") * 255
    return (image * (1 - weight) + colour * weight).round().astype(np.uint8)


def bars(tables: dict[str, dict], width: int, font, min_windows: int = 50) -> Image.Image:
    """A bar chart of mean door pixels added per window, by context (GAN Dissection's first, then
    the others with ``min_windows`` windows or more), one bar per ranking."""
    others = [c for c in next(iter(tables.values())) if c not in PAPER_CONTEXTS]
    contexts = [c for c in (*PAPER_CONTEXTS, *others)
                if all(t[c]["windows"] >= min_windows for t in tables.values())]
    top = max(t[c]["added_pixels"] for t in tables.values() for c in contexts)
    row, label_w = 22, 90
    chart = Image.new("RGB", (width, 40 + row * len(contexts) * len(tables)), "white")
    draw = ImageDraw.Draw(chart)
    draw.text((4, 4), "door pixels added per 2x2-cell window, by what the window showed "
              "(share of windows gaining a door)", fill="black", font=font)
    colours = {"iou": (200, 80, 40), "ace": (60, 110, 200), "ace+swaps": (90, 170, 90)}
    y = 30
    for context in contexts:
        for ranking, table in tables.items():
            entry = table[context]
            length = max(0.0, entry["added_pixels"]) / top * (width - label_w - 200)
            draw.text((4, y + 3), f"{context}" if ranking == "iou" else "", fill="black",
                      font=font)
            draw.rectangle([label_w, y + 2, label_w + length, y + row - 4],
                           fill=colours.get(ranking, (100, 100, 100)))
            draw.text((label_w + length + 6, y + 3),
                      f"{ranking}: {entry['added_pixels']:.2f} px ({entry['appears']:.0%}, "
                      f"{entry['windows']} windows)", fill="black", font=font)
            y += row
    return chart


def figure(path: Path, images: torch.Tensor, edited: torch.Tensor, added: torch.Tensor,
           best: list[tuple[int, int]], tables: dict[str, dict], cell_px: int) -> None:
    """Scenes (top), door pixels added by window (middle), the best window's edit with its
    box (bottom), then the bar chart by context."""
    scale, pad = 3, 6
    font = ImageFont.load_default(size=13)
    top = max(float(added.max()), 1.0)
    size = images.shape[-1] * scale
    width = len(images) * (size + pad) + pad
    grid = Image.new("RGB", (width, 3 * (size + pad) + pad + 20), "white")
    draw = ImageDraw.Draw(grid)
    for column, (image, after, heat, (y, x)) in enumerate(zip(images, edited, added, best)):
        clean = to_rgb(image)
        tiles = [clean, heat_overlay(clean, heat, cell_px, top), to_rgb(after)]
        left = pad + column * (size + pad)
        for r, tile in enumerate(tiles):
            picture = Image.fromarray(tile).resize((size, size), Image.NEAREST)
            grid.paste(picture, (left, pad + r * (size + pad)))
        box_top = pad + 2 * (size + pad) + y * cell_px * scale
        box_left = left + x * cell_px * scale
        extent = CELL * cell_px * scale - 1
        draw.rectangle([box_left, box_top, box_left + extent, box_top + extent],
                       outline=(255, 230, 0), width=2)
    draw.text((pad, 3 * (size + pad) + 2), f"rows: scene; door pixels added when the IoU door "
              f"units are inserted in the 2x2-cell window centred there (white = {top:.0f}); "
              "the window that adds most, edited (box)", fill="black", font=font)
    chart = bars(tables, width, font)
    canvas = Image.new("RGB", (width, grid.height + chart.height), "white")
    canvas.paste(grid, (0, 0))
    canvas.paste(chart, (0, grid.height))
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--units", type=int, default=20)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--examples", type=int, default=6)
    parser.add_argument("--figure", type=Path, help="where to draw the figure (PNG)")
    args = parser.parse_args()
    generator, segmenter = load_generator(), load_segmenter()
    dissection = load_dissection(shipped_dissection_dir(), stats=True)
    door = ConceptRef.find(segmenter, "door")
    ace_dir = shipped_dissection_dir() / "ace"
    values = dissection.layer(LAYER).stats["insertion"]
    rankings = {"iou": units_by_iou(dissection, LAYER, door)[:args.units],
                "ace": units_by_ace(generator, segmenter, dissection, LAYER, door,
                                    cache_dir=ace_dir)[0][:args.units]}
    brush, method = ranked_units(generator, segmenter, dissection, LAYER, door, ace_dir)
    if method == "ace+swaps":
        rankings["ace+swaps"] = brush[:args.units]
    z = latents(SEED, range(args.samples), generator.z_dim)
    objects = segmenter.concepts["object"]
    contexts = [name for name in objects if name != "none"]
    tables, maps = {}, {}
    for ranking, units in rankings.items():
        start = time.perf_counter()
        added, shares = insertion_maps(generator, segmenter, LAYER, units, door, values, z,
                                       cell=CELL, batch=args.batch, progress=True)
        maps[ranking] = added, shares
        tables[ranking] = context_table(added, shares, [objects.index(c) for c in contexts],
                                        contexts)
        seconds = time.perf_counter() - start
        windows = added[0].numel() * len(z)
        print(f"\n{ranking} units {units}: {windows} edits in {seconds:.0f} s")
        print(f"{'context':10s} {'windows':>8s} {'images':>7s} {'added px':>9s} {'appears':>8s}")
        for context, entry in tables[ranking].items():
            if entry["windows"]:
                mark = " *" if context in PAPER_CONTEXTS else ""
                print(f"{context:10s} {entry['windows']:8d} {entry['images']:7d} "
                      f"{entry['added_pixels']:9.2f} {entry['appears']:8.3f}{mark}")
    print("* the contexts GAN Dissection measured")
    if args.figure:
        added, shares = maps["iou"]
        building = shares[:, objects.index("building")] > 0.5
        chosen = [i for i in range(len(z)) if building[i].any()][:args.examples]
        best = [divmod(int(added[i].flatten().argmax()), added.shape[-1]) for i in chosen]
        cell_px = generator.resolution // (added.shape[-1] + CELL - 1)
        masks = torch.zeros(len(chosen), added.shape[-1] + CELL - 1, added.shape[-1] + CELL - 1)
        for k, (y, x) in enumerate(best):
            masks[k, y:y + CELL, x:x + CELL] = 1
        with torch.no_grad():
            images = generator(z[chosen])
        edited = render_edited(generator, z[chosen], LAYER,
                               [Stroke(rankings["iou"], "insert", masks)], values)
        figure(args.figure, images, edited, added[chosen], best, tables, cell_px)
        print(f"figure: {args.figure}")
    print(json.dumps({"units": rankings, "door_insertion_by_context": tables}))


if __name__ == "__main__":
    main()
