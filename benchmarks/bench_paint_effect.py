"""What the app's tree brush does on the shipped generator, over many scenes.

    python benchmarks/bench_paint_effect.py [--scenes 30] [--units 15]

For the first ``--scenes`` scenes (seeds 0, 1, ...) whose segmented tree covers at least 6% of
the picture: paint the tree's pixels, press Remove with the default brush (15 units, ranked by
the shipped causal weights, strength 1), and measure, in the 8-bit pictures the app shows, the
share of the painted tree pixels that are no longer tree (segmented) and the mean absolute
change (0-255) farther than one layer cell from the paint. Prints the median and quartiles
and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import tempfile

import numpy as np
import torch
import torch.nn.functional as F

from gandissect.app import paint
from gandissect.app.canvas import png_data_uri
from gandissect.app.pictures import pixels
from gandissect.app.session import Session
from gandissect.app.workspace import AppConfig, Workspace
from gandissect.world.dataset import image_to_tensor


def tree_pixels(ws: Workspace, picture: np.ndarray) -> np.ndarray:
    """The segmented tree mask of an ``(H, W, 3)`` uint8 picture."""
    code = ws.scenes.concept("object/tree").code
    return (ws.scenes.segment(image_to_tensor(picture)[None])["object"][0] == code).numpy()


def painted(mask: np.ndarray, scale: int) -> str:
    """``mask`` (image pixels) painted on the canvas, as the page sends it."""
    big = np.repeat(np.repeat(mask, scale, 0), scale, 1)
    layer = np.zeros((*big.shape, 4), np.uint8)
    layer[big] = 255
    return json.dumps({"strokes": [1], "mask": png_data_uri(layer)})


def outside_change(before: np.ndarray, after: np.ndarray, painted: np.ndarray,
                   cell: int) -> float:
    """Mean absolute change (0-255) farther than one layer cell from ``painted``."""
    near = torch.from_numpy(painted.astype(np.float32))[None, None]
    near = F.max_pool2d(near, 2 * cell + 1, stride=1, padding=cell)[0, 0].numpy() > 0
    change = np.abs(before.astype(np.int16) - after.astype(np.int16)).mean(-1)
    return float(change[~near].mean()) if (~near).any() else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=30)
    parser.add_argument("--units", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as cache:
        ws = Workspace.open(AppConfig(cache=cache, canvas=256, progress=False))
        if ws.problem:
            raise SystemExit(ws.problem)
        scale, cell = ws.scale, ws.scenes.resolution // ws.scenes.cells[0]
        removed, outside, seeds = [], [], []
        seed = 0
        while len(seeds) < args.scenes:
            picture = pixels(ws.scenes.render(ws.scenes.latent(seed)))
            tree = tree_pixels(ws, picture)
            if tree.mean() >= 0.06:
                session = Session()
                paint.choose_scene(ws, session, seed)
                paint.apply_brush(ws, session, painted(tree, scale), "object/tree", "remove",
                                  1.0, args.units)
                after = paint.scene_pictures(ws, session)[1]
                removed.append(1 - (tree_pixels(ws, after) & tree).sum() / tree.sum())
                outside.append(outside_change(picture, after, tree, cell))
                seeds.append(seed)
            seed += 1
        ws.close()
    q = {name: [round(float(v), 3) for v in np.quantile(values, [0.25, 0.5, 0.75])]
         for name, values in (("removed", removed), ("outside_change", outside))}
    print(f"remove tree, {args.units} units, over {len(seeds)} scenes: share of the painted tree "
          f"pixels removed, quartiles {q['removed']}; change farther than a cell from the paint "
          f"(0-255), quartiles {q['outside_change']}")
    print(json.dumps({"scenes": seeds, "units": args.units, "removed_quartiles": q["removed"],
                      "outside_change_quartiles": q["outside_change"]}))


if __name__ == "__main__":
    main()
