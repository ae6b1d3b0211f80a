"""Editing real scenes through the shipped generator, measured against SceneWorld's truth.

    python benchmarks/bench_invert_edit.py [--seed 1001] [--scenes 30] [--edits 12]
        [--figure docs/cannot_draw.png] [--picture docs/real_image_edits.png] [--threads 2]

Held-out scenes of world ``--seed`` (1001 by default; the encoder trains on world 104 and the
inversion's settings were chosen on world 1000) are inverted into the shipped generator with
its encoder (``gandissect.invert.invert``), then edited as the app's Paint tab edits them
(``gandissect.invert.edit``): the brush's 30 units at ``layer4`` under the painted cells,
blended into the image outside them.

- **reconstruction** (the first ``--scenes`` scenes): PSNR and the segmenter's object-label
  agreement between image and reconstruction, before adaptation (the generator's own layers,
  the optimised latent and ``layer4`` features) and after (its last layers adapted to the
  image); the same for the generator's own image of the latent found (``G(z)``); seconds
  per inversion.
- **removal** (tree, cloud, dome, door; ``--edits`` scenes each where the object covers at
  least 1% of the image): paint the object's cells, press Remove, and compare with the world's
  counterfactual ``render(seed, i, 64, without=(name,))``: the share of the object's pixels
  whose segmented label (the concept's category) is the counterfactual's true label, the mean
  pixel error (0-255) against the counterfactual there, and the mean change outside the object
  grown by one layer cell (8 px). Beside it the same share for the unedited reconstruction and
  for the units ablated alone on the inverted features (without taking the inversion back in
  the painted cells, ``gandissect.invert.edit``'s first step).
- **insertion** (trees on grass, domes on buildings; ``--edits`` scenes each where the world
  has a place, ``can_add``): paint the cells of the object the world adds (``add=(name,)``),
  press Draw, and measure the share of the added object's pixels segmented as it, against the
  share in the unedited image.
- **latency**: seconds per inversion and per edit (one stroke rendered and blended).

``--figure``: what this GAN cannot draw: each object's and part's pixel share in the images
against the generator's own images of the latents found (no optimised features, no
adaptation: what it draws when it must draw the scene itself; Bau et al., ICCV 2019), over the
``--scenes`` scenes. ``--picture``: the first scene of each edit: image, reconstruction, edit,
the world's truth. ``--no-edits``: the reconstruction (and ``--figure``) only. Prints tables and
one JSON line.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F

from gandissect.app.workspace import AppConfig, Workspace
from gandissect.hooks import Trace
from gandissect.intervene import Stroke, render_edited
from gandissect.invert import blend, invert, label_agreement, psnr
from gandissect.invert import edit as edit_inverted
from gandissect.world import can_add, concepts, render

REMOVALS = (("object", "tree"), ("object", "cloud"), ("object", "dome"), ("part", "door"))
INSERTIONS = (("object", "tree"), ("object", "dome"))
UNITS = 30
MIN_SHARE = 0.01


def code(category: str, name: str) -> int:
    """The world's label code of a concept."""
    return next(c.code for c in concepts(category) if c.name == name)


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """``(1, 3, H, W)`` in [-1, 1] -> ``(H, W, 3)`` uint8, as the app shows it."""
    return ((image[0].clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()


def cells_of(mask: np.ndarray, cells: tuple[int, int]) -> torch.Tensor:
    """The layer cells a pixel mask touches (GANPaint's max-pooling)."""
    m = torch.from_numpy(mask.astype(np.float32))[None, None]
    return F.adaptive_max_pool2d(m, cells)[0, 0]


def grown(mask: np.ndarray, pixels: int) -> np.ndarray:
    """``mask`` grown by ``pixels`` in every direction."""
    m = torch.from_numpy(mask.astype(np.float32))[None, None]
    return F.max_pool2d(m, 2 * pixels + 1, stride=1, padding=pixels)[0, 0].numpy() > 0


def before_adaptation(generator, inv) -> torch.Tensor:
    """The shipped generator's own image of the inversion's latent and ``layer4`` features."""
    features = inv.features.detach()
    with torch.no_grad(), Trace(generator, inv.layer, retain_output=False,
                                edit=lambda _out: features):
        return generator(inv.z)


def edit(ws: Workspace, inv, key: str, mode: str, cells: torch.Tensor) -> torch.Tensor:
    """One stroke of the app's brush over ``cells``, blended into the image."""
    scenes = ws.scenes
    if mode == "remove":
        units, _ = scenes.brush_units(key, UNITS)
        stroke = Stroke(units, "ablate", cells)
    else:
        units, _, drawing = scenes.draw_units(key, UNITS)
        stroke = Stroke(units, "insert", cells, 1.0,
                        None if drawing is None else drawing.values,
                        None if drawing is None else drawing.weights)
    return edit_inverted(inv, [stroke], scenes.insert_values)


def labels(ws: Workspace, image: torch.Tensor, category: str) -> np.ndarray:
    """The segmenter's ``category`` codes of an image in [-1, 1]."""
    return ws.scenes.segment(image)[category][0].numpy()


def reconstruction_rows(ws, encoder, seed: int, indices, steps) -> tuple[list[dict], list]:
    """Reconstruction figures per scene, and (image, the generator's own image of the latent
    found) for the figure."""
    rows, pairs = [], []
    generator, segmenter = ws.scenes.generator, ws.scenes.segmenter
    for index in indices:
        image = render(seed, index, 64).image
        inv = invert(generator, image, encoder=encoder, progress=lambda *a: None, steps=steps)
        before = before_adaptation(generator, inv)
        with torch.no_grad():
            own = generator(inv.z)  # the generator's own image of the latent found
        rows.append({
            "index": index, "seconds": inv.seconds, "psnr_latent": psnr(own, inv.target),
            "agreement_latent": label_agreement(segmenter, inv.target, own),
            "psnr_before": psnr(before, inv.target), "psnr": inv.psnr,
            "agreement_before": label_agreement(segmenter, inv.target, before),
            "agreement": label_agreement(segmenter, inv.target, inv.reconstruction)})
        pairs.append((inv.target, own))
    return rows, pairs


def scenes_with(seed: int, category: str, name: str, count: int, insertion: bool,
                start: int = 0) -> list[int]:
    """The first ``count`` scenes of world ``seed`` where the concept covers 1% or more
    (``insertion``: where the world has a place to add it)."""
    found, index, wanted = [], start, code(category, name)
    while len(found) < count:
        if insertion:
            if can_add(seed, index, name):
                found.append(index)
        elif (render(seed, index, 64).labels[category] == wanted).mean() >= MIN_SHARE:
            found.append(index)
        index += 1
    return found


def removal_rows(ws, encoder, seed: int, category: str, name: str, count: int,
                 steps, examples: list) -> list[dict]:
    """Remove the concept where it is, against the world's counterfactual; the first scene's
    pictures go to ``examples``."""
    rows = []
    key = f"{category}/{name}"
    for index in scenes_with(seed, category, name, count, insertion=False):
        scene = render(seed, index, 64)
        truth = render(seed, index, 64, without=(name,))
        mask = scene.labels[category] == code(category, name)
        inv = invert(ws.scenes.generator, scene.image, encoder=encoder,
                     progress=lambda *a: None, steps=steps)
        start = time.perf_counter()
        out = edit(ws, inv, key, "remove", cells_of(mask, ws.scenes.cells))
        seconds = time.perf_counter() - start
        if not rows:
            examples.append((f"remove {name}", scene.image, inv.reconstruction, out,
                             truth.image))
        after = labels(ws, out, category)
        plain = labels(ws, inv.reconstruction, category)
        units, _ = ws.scenes.brush_units(f"{category}/{name}", UNITS)
        cells = cells_of(mask, ws.scenes.cells)
        only_units = blend(inv.target, render_edited(inv.generator, inv.z, inv.layer,
                                                     [Stroke(units, "ablate", cells)]), cells)
        after_units = labels(ws, only_units, category)
        picture = to_uint8(out).astype(np.int16)
        far = ~grown(mask, 64 // ws.scenes.cells[0])
        rows.append({
            "index": index, "share": float(mask.mean()), "edit_seconds": seconds,
            "matches": float((after[mask] == truth.labels[category][mask]).mean()),
            "matches_unedited": float((plain[mask] == truth.labels[category][mask]).mean()),
            "matches_units_only": float((after_units[mask]
                                         == truth.labels[category][mask]).mean()),
            "error_inside": float(np.abs(picture - truth.image)[mask].mean()),
            "change_outside": float(np.abs(picture - scene.image)[far].mean())})
    return rows


def insertion_rows(ws, encoder, seed: int, category: str, name: str, count: int,
                   steps, examples: list) -> list[dict]:
    """Draw the concept where the world would add it; the first scene's pictures go to
    ``examples``."""
    rows = []
    key, wanted = f"{category}/{name}", code(category, name)
    for index in scenes_with(seed, category, name, count, insertion=True):
        scene = render(seed, index, 64)
        truth = render(seed, index, 64, add=(name,))
        added = (truth.labels[category] == wanted) & (scene.labels[category] != wanted)
        if not added.any():
            continue
        inv = invert(ws.scenes.generator, scene.image, encoder=encoder,
                     progress=lambda *a: None, steps=steps)
        out = edit(ws, inv, key, "draw", cells_of(added, ws.scenes.cells))
        if not rows:
            examples.append((f"draw {name}", scene.image, inv.reconstruction, out,
                             truth.image))
        after = labels(ws, out, category)
        plain = labels(ws, inv.target, category)
        rows.append({
            "index": index, "share": float(added.mean()),
            "drawn": float((after[added] == wanted).mean()),
            "drawn_unedited": float((plain[added] == wanted).mean()),
            "error_inside": float(np.abs(to_uint8(out).astype(np.int16)
                                         - truth.image)[added].mean())})
    return rows


def examples_figure(examples: list, path: str) -> None:
    """One row per edit: the image, its reconstruction, the edit, the world's truth."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    titles = ("image", "reconstruction", "edited", "the world's truth")
    fig, axes = plt.subplots(len(examples), 4, figsize=(6.4, 1.75 * len(examples)), dpi=100,
                             squeeze=False)
    for row, (what, image, rebuilt, edited, truth) in zip(axes, examples):
        for column, (ax, picture) in enumerate(zip(row, (image, to_uint8(rebuilt),
                                                         to_uint8(edited), truth))):
            ax.imshow(picture, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if ax is axes[0, column]:
                ax.set_title(titles[column], fontsize=9)
        row[0].set_ylabel(what, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def mean(rows: list[dict], key: str) -> float:
    return round(float(np.mean([r[key] for r in rows])), 4) if rows else float("nan")


def cannot_draw_figure(ws, pairs, path: str) -> dict:
    """Each object's pixel share in the images against their reconstructions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names, share = [], []
    for category in ("object", "part"):
        found = list(concepts(category))
        counts = np.zeros((2, 256))
        for image, rebuilt in pairs:
            for row, picture in enumerate((image, rebuilt)):
                counts[row] += np.bincount(labels(ws, picture, category).ravel(),
                                           minlength=256)
        counts /= counts.sum(1, keepdims=True)
        names += [c.name for c in found]
        share += [counts[:, c.code] for c in found]
    share = np.array(share).T
    order = [i for i in np.argsort(-share[0]) if share[0, i] > 0]
    fig, ax = plt.subplots(figsize=(7.5, 3.2), dpi=120)
    x = np.arange(len(order))
    ax.bar(x - 0.2, share[0, order], 0.4, label="images")
    ax.bar(x + 0.2, share[1, order], 0.4, label="the generator's own image of the latent found")
    ax.set_xticks(x, [names[i] for i in order], rotation=40, ha="right")
    ax.set_yscale("log")
    ax.set_ylabel("share of pixels (segmented)")
    ax.set_title(f"What the generator cannot draw ({len(pairs)} held-out scenes)")
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return {names[i]: [round(float(share[0, i]), 4), round(float(share[1, i]), 4)]
            for i in order}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1001)
    parser.add_argument("--scenes", type=int, default=30)
    parser.add_argument("--edits", type=int, default=12)
    parser.add_argument("--encoder", help="an encoder file (default: the shipped one)")
    parser.add_argument("--no-encoder", action="store_true",
                        help="start from random latents instead")
    parser.add_argument("--figure", help="write the 'cannot draw' bar chart here")
    parser.add_argument("--picture", help="write one example of each edit here")
    parser.add_argument("--no-edits", action="store_true",
                        help="measure the reconstruction (and --figure) only")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from gandissect.models.registry import load_encoder, load_weights_file

    encoder = (None if args.no_encoder else load_weights_file(args.encoder) if args.encoder
               else load_encoder("sceneworld"))
    steps = None
    with tempfile.TemporaryDirectory() as cache:
        ws = Workspace.open(AppConfig(cache=cache, canvas=256, progress=False))
        if ws.problem:
            raise SystemExit(ws.problem)
        rows, pairs = reconstruction_rows(ws, encoder, args.seed, range(args.scenes), steps)
        result = {"reconstruction": {k: mean(rows, k) for k in rows[0] if k != "index"},
                  "scenes": args.scenes, "seed": args.seed, "encoder": encoder is not None}
        print(f"reconstruction of {args.scenes} scenes of world {args.seed}: "
              + ", ".join(f"{k} {v}" for k, v in result["reconstruction"].items()))
        if args.figure:
            result["cannot_draw"] = cannot_draw_figure(ws, pairs, args.figure)
            print(f"wrote {args.figure}: {result['cannot_draw']}")
        result["removal"], result["insertion"], examples = {}, {}, []
        if args.no_edits:
            ws.close()
            print(json.dumps(result))
            return
        for category, name in REMOVALS:
            got = removal_rows(ws, encoder, args.seed, category, name, args.edits, steps,
                               examples)
            result["removal"][name] = {k: mean(got, k) for k in got[0] if k != "index"}
            print(f"remove {name}: {result['removal'][name]}")
        for category, name in INSERTIONS:
            got = insertion_rows(ws, encoder, args.seed, category, name, args.edits, steps,
                                 examples)
            result["insertion"][name] = {k: mean(got, k) for k in got[0] if k != "index"}
            print(f"draw {name}: {result['insertion'][name]}")
        ws.close()
    if args.picture:
        examples_figure(examples, args.picture)
        print(f"wrote {args.picture}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
