"""What a brush of the app removes on the shipped generator, against the size of the object.

    python benchmarks/bench_paint_effect.py [--concept object/tree] [--scenes 60]
        [--units 15 20 25 30 40] [--grow 0 1]

For the first ``--scenes`` scenes (seeds 0, 1, ...) whose segmented concept (the tree by
default) covers at least ``--min-share`` of the picture (6%): paint the concept's pixels (grown
by ``--grow`` layer cells), press Remove with its brush (each ``--units`` count, ranked by the
shipped causal weights and swaps, strength 1), and measure, in the 8-bit pictures the app shows:

- removed: the share of the concept's pixels that are no longer segmented as it;
- change outside: the mean absolute change (0-255) farther than one layer cell from the paint;
- relabelled outside: the share of those far pixels whose segmented label (of the concept's
  category) changed: the collateral of ``gandissect ace``, whose bar is 10%;
- relabelled near: the same share among the pixels within one cell of the paint that were not
  the concept (what a stronger brush changes around the object, a door's facade).

Prints, for each setting, the median over all scenes and over each third of them by the
object's size (its share of the picture), and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import tempfile

import numpy as np
import torch
import torch.nn.functional as F

from gandissect.app import paint
from gandissect.app.canvas import paint_value
from gandissect.app.pictures import pixels
from gandissect.app.session import Session
from gandissect.app.workspace import AppConfig, Workspace
from gandissect.world.dataset import image_to_tensor

MEASURES = ("removed", "change_outside", "relabelled_outside", "relabelled_near")


def labels_of(ws: Workspace, category: str, picture: np.ndarray) -> np.ndarray:
    """The segmented ``category`` codes of an ``(H, W, 3)`` uint8 picture."""
    return ws.scenes.segment(image_to_tensor(picture)[None])[category][0].numpy()


def grown(mask: np.ndarray, pixels_: int) -> np.ndarray:
    """``mask`` grown by ``pixels_`` in every direction (a square neighbourhood)."""
    if pixels_ == 0:
        return mask
    near = torch.from_numpy(mask.astype(np.float32))[None, None]
    return F.max_pool2d(near, 2 * pixels_ + 1, stride=1, padding=pixels_)[0, 0].numpy() > 0


def remove(ws: Workspace, key: str, seed: int, mask: np.ndarray, units: int) -> np.ndarray:
    """The picture the app shows after one Remove stroke of ``key``'s brush over ``mask``."""
    session = Session()
    paint.choose_scene(ws, session, seed)
    paint.apply_brush(ws, session, paint_value(mask, ws.scale), key, "remove", 1.0, units)
    return paint.scene_pictures(ws, session)[1]


def summary(rows: list[dict], sizes: np.ndarray) -> dict:
    """Medians of each measure over all scenes and over each third of them by object size."""
    third = np.digitize(sizes, np.quantile(sizes, [1 / 3, 2 / 3]))
    groups = {"all": np.ones(len(sizes), bool)}
    for index, name in enumerate(("small", "middle", "large")):
        chosen = third == index
        if chosen.any():
            groups[f"{name} {sizes[chosen].min():.1%}-{sizes[chosen].max():.1%}"] = chosen
    return {name: {"scenes": int(chosen.sum()), **{
        key: round(float(np.median([r[key] for r, c in zip(rows, chosen) if c])), 3)
        for key in MEASURES}} for name, chosen in groups.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concept", default="object/tree")
    parser.add_argument("--min-share", type=float, default=0.06)
    parser.add_argument("--scenes", type=int, default=60)
    parser.add_argument("--units", type=int, nargs="+", default=[15, 20, 25, 30, 40])
    parser.add_argument("--grow", type=int, nargs="+", default=[0, 1],
                        help="grow the paint by this many layer cells")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as cache:
        ws = Workspace.open(AppConfig(cache=cache, canvas=256, progress=False))
        if ws.problem:
            raise SystemExit(ws.problem)
        cell = ws.scenes.resolution // ws.scenes.cells[0]
        concept = ws.scenes.concept(args.concept)
        settings = [(k, g) for g in args.grow for k in args.units]
        rows: dict = {s: [] for s in settings}
        sizes, seeds, seed = [], [], 0
        while len(seeds) < args.scenes:
            picture = pixels(ws.scenes.render(ws.scenes.latent(seed)))
            labels = labels_of(ws, concept.category, picture)
            mask = labels == concept.code
            if mask.mean() >= args.min_share:
                for units, grow in settings:
                    paint_mask = grown(mask, grow * cell)
                    after = remove(ws, args.concept, seed, paint_mask, units)
                    far = ~grown(paint_mask, cell)
                    change = np.abs(picture.astype(np.int16) - after.astype(np.int16)).mean(-1)
                    after_labels = labels_of(ws, concept.category, after)
                    relabelled = after_labels != labels
                    near = ~far & ~mask
                    rows[units, grow].append({
                        "removed": 1 - float((after_labels[mask] == concept.code).mean()),
                        "change_outside": float(change[far].mean()) if far.any() else 0.0,
                        "relabelled_outside": float(relabelled[far].mean()) if far.any()
                        else 0.0,
                        "relabelled_near": float(relabelled[near].mean()) if near.any()
                        else 0.0})
                sizes.append(float(mask.mean()))
                seeds.append(seed)
            seed += 1
        ws.close()
    sizes = np.array(sizes)
    results = {f"{k} units, paint grown {g} cells": summary(rows[k, g], sizes)
               for k, g in settings}
    print(f"remove {args.concept} over {len(seeds)} scenes (covering {args.min_share:.1%} or "
          f"more); medians of: {' / '.join(MEASURES)}")
    first = next(iter(results.values()))
    print(f"{'setting':32s}" + "".join(f"{f'{b} ({n})':>30s}"
                                       for b, n in ((b, first[b]["scenes"]) for b in first)))
    for name, result in results.items():
        print(f"{name:32s}" + "".join(
            "".join(f"{result[b][m]!s:>7s}" for m in MEASURES) + "  " for b in first))
    print(json.dumps({"concept": args.concept, "scenes": seeds,
                      "share": [round(s, 4) for s in sizes],
                      "settings": results}))


if __name__ == "__main__":
    main()
