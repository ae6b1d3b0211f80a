"""Does Draw draw? Strokes painted through the app's callbacks where GAN Dissection says each
object belongs, on the shipped generator, before and after the brushes learned to draw.

    python benchmarks/bench_draw.py [--cache DIR] [--scenes 30] [--figure docs/draw_brushes.png]

First it learns (or reads back) the drawing edit of each GANPaint brush
(``gandissect.ace.units_for_drawing``: which units draw the concept where it belongs and with
what values, learned on selection seed 6) into ``DIR/app/ace`` (``draw_layer4_*.pt``: the files
shipped in ``models/sceneworld_generator_dissection/ace/``). Then, for each kind of stroke:

- a door on a facade (its 2x2-cell window more than half building),
- a dome on a roof (a window whose tenth or more is roof),
- a tree on grass (a window more than half grass),

it takes the first ``--scenes`` scenes from number 20,000 on (the app's scene numbers, never a
selection image) that have room for one (``gandissect.causal.drawing_windows``, none of the
concept there yet), paints that window on the Paint tab's canvas and presses Draw at
strength 1, twice: in an app whose brushes draw with the top 15 units of their removal ranking,
each writing its 0.99 quantile (as the app did before; the shipped dissection copied without
the drawings), and in the app as shipped (the learned drawing weighs every unit). Measured in
the 8-bit picture the app shows, segmented: the concept pixels the stroke added to the image, and
whether it visibly drew one (8 pixels or more: a door covers 34 on average), and the mean
absolute change (0-255) farther than one layer cell from the stroke. Prints a line per kind and
one JSON line; ``--figure`` draws three strokes of each kind: the scene with the stroke
outlined, drawn the old way, drawn now.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from gandissect.ace import draw_context
from gandissect.app import paint
from gandissect.app.canvas import paint_value
from gandissect.app.session import Session
from gandissect.app.workspace import AppConfig, Workspace
from gandissect.causal import drawing_windows
from gandissect.models.registry import shipped_dissection_dir
from gandissect.world.dataset import image_to_tensor

KINDS = {"door": "part/door", "dome": "object/dome", "tree": "object/tree"}
BRUSHES = ("object/tree", "object/grass", "part/door", "object/sky", "object/cloud",
           "material/brick", "object/dome")
FIRST_SCENE, VISIBLE = 20_000, 8


def strokes(ws: Workspace, key: str, count: int) -> list[tuple[int, np.ndarray]]:
    """``(scene, window mask at image resolution)`` for the first ``count`` scenes from
    ``FIRST_SCENE`` on with room for a stroke of ``key`` where it belongs."""
    scenes = ws.scenes
    concept = scenes.concept(key)
    context, share = draw_context(scenes.segmenter, concept)
    found, seed = [], FIRST_SCENE
    while len(found) < count:
        z = scenes.latent(seed)
        pairs, windows = drawing_windows(scenes.generator, scenes.segmenter, scenes.layer,
                                         concept, context, z, per_image=1, min_share=share,
                                         seed=seed)
        if len(pairs):
            window = windows[int(pairs[0, 1])].numpy()
            cell = scenes.resolution // window.shape[0]
            found.append((seed, np.repeat(np.repeat(window > 0, cell, 0), cell, 1)))
        seed += 1
    return found


def draw(ws: Workspace, key: str, seed: int, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The scene before and after one Draw stroke over ``mask``, as the app shows them."""
    session = Session()
    paint.choose_scene(ws, session, seed)
    before = paint.scene_pictures(ws, session)[1]
    paint.apply_brush(ws, session, paint_value(mask, ws.scale), key, "draw", 1.0, 15)
    return before, paint.scene_pictures(ws, session)[1]


def concept_pixels(ws: Workspace, key: str, picture: np.ndarray) -> np.ndarray:
    concept = ws.scenes.concept(key)
    labels = ws.scenes.segment(image_to_tensor(picture)[None])[concept.category][0]
    return (labels == concept.code).numpy()


def change_outside(before: np.ndarray, after: np.ndarray, mask: np.ndarray, cell: int) -> float:
    """Mean absolute change (0-255) farther than one layer cell from ``mask``."""
    near = torch.from_numpy(mask.astype(np.float32))[None, None]
    near = F.max_pool2d(near, 2 * cell + 1, stride=1, padding=cell)[0, 0].numpy() > 0
    change = np.abs(before.astype(np.int16) - after.astype(np.int16)).mean(-1)
    return float(change[~near].mean())


def measure(ws: Workspace, key: str, found) -> tuple[dict, list]:
    added, outside, examples = [], [], []
    cell = ws.scenes.resolution // ws.scenes.cells[0]
    for seed, mask in found:
        before, after = draw(ws, key, seed, mask)
        gained = int(concept_pixels(ws, key, after).sum() - concept_pixels(ws, key, before).sum())
        added.append(gained)
        outside.append(change_outside(before, after, mask, cell))
        examples.append((before, after, mask))
    values = np.array(added)
    return {"strokes": len(values), "visible_share": round(float((values >= VISIBLE).mean()), 3),
            "pixels_mean": round(float(values.mean()), 1),
            "pixels_median": float(np.median(values)),
            "change_outside_median": round(float(np.median(outside)), 2)}, examples


def outlined(picture: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``picture`` with the edge of ``mask`` in magenta."""
    inner = np.pad(mask, 1)
    edge = mask & ~(inner[2:, 1:-1] & inner[:-2, 1:-1] & inner[1:-1, 2:] & inner[1:-1, :-2])
    marked = picture.copy()
    marked[edge] = (255, 0, 255)
    return marked


def figure(path: str, examples: dict, per_kind: int = 3, scale: int = 3) -> None:
    """One row per kind of stroke, ``per_kind`` strokes a row, each three pictures: the scene
    with the stroke outlined, drawn by the removal ranking, drawn by the learned drawing."""
    def gap(picture, axis):
        shape = list(picture.shape)
        shape[axis] = 2 if axis == 1 else 4
        return np.full(shape, 255, np.uint8)

    rows = []
    for old, new in examples.values():
        blocks = []
        for (before, was, mask), (_, now, _) in list(zip(old, new))[:per_kind]:
            triple = [outlined(before, mask), was, now]
            block = np.concatenate([triple[0], gap(before, 1), triple[1], gap(before, 1),
                                    triple[2]], 1)
            blocks += [block, gap(block, 1), gap(block, 1), gap(block, 1)]
        row = np.concatenate(blocks[:-3], 1)
        rows += [row, gap(row, 0)]
    grid = np.concatenate(rows[:-1], 0)
    Image.fromarray(grid).resize((grid.shape[1] * scale, grid.shape[0] * scale),
                                 Image.NEAREST).save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", default=None, help="folder for the learned drawings")
    parser.add_argument("--scenes", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--figure", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cache = Path(args.cache or tempfile.mkdtemp(prefix="bench-draw-"))
    shipped = Workspace.open(AppConfig(cache=cache / "app", progress=True))
    if shipped.problem:
        raise SystemExit(shipped.problem)
    for key in BRUSHES:
        learned = shipped.scenes.learn_drawing(key)
        print(f"{key}: drawing learned, {len(learned.units)} units weighted, "
              f"{learned.validation_pixels:g} pixels a held-out stroke", flush=True)
    with tempfile.TemporaryDirectory() as folder:
        copy = Path(folder) / "dissection"
        shutil.copytree(shipped_dissection_dir(), copy,
                        ignore=shutil.ignore_patterns("draw_*"))
        before_ws = Workspace.open(AppConfig(cache=Path(folder) / "app", dissection=str(copy),
                                             progress=False))
        results, examples = {}, {}
        for kind, key in KINDS.items():
            found = strokes(shipped, key, args.scenes)
            old, old_examples = measure(before_ws, key, found)
            new, new_examples = measure(shipped, key, found)
            results[kind] = {"before": old, "learned": new, "scenes": [s for s, _ in found]}
            examples[kind] = (old_examples, new_examples)
            print(f"{kind:5s} {args.scenes} strokes: visibly drawn (>= {VISIBLE} px) "
                  f"{old['visible_share']:.0%} -> {new['visible_share']:.0%}; pixels added "
                  f"mean {old['pixels_mean']} -> {new['pixels_mean']}, median "
                  f"{old['pixels_median']:g} -> {new['pixels_median']:g}; change farther than a "
                  f"cell from the stroke (0-255), median {old['change_outside_median']} -> "
                  f"{new['change_outside_median']}", flush=True)
        before_ws.close()
    shipped.close()
    if args.figure:
        figure(args.figure, examples)
        print(f"wrote {args.figure}")
    print(json.dumps({"cache": str(cache), "visible_pixels": VISIBLE, "kinds": results}))


if __name__ == "__main__":
    main()
