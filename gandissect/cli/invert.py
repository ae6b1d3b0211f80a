"""``gandissect invert`` and ``gandissect edit-image``: invert a picture into a generator
(``gandissect.invert``), then, for ``edit-image``, remove or draw a concept under a painted
mask with the app's brush units and blend the edit into the picture."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gandissect.brushes import BRUSH_EXCLUDED, BRUSH_UNITS
from gandissect.cli.common import (
    add_device_argument,
    add_generator_arguments,
    load_generator,
    print_result,
)
from gandissect.errors import UserError
from gandissect.models.spellings import SHIPPED


def _encoder(args: argparse.Namespace, device):
    """The encoder to start from: ``--encoder FILE``, else the shipped generator's when its
    file exists, else None (random starts)."""
    from gandissect.models.registry import load_weights_file, shipped_path

    if args.no_encoder:
        if args.encoder:
            raise UserError("give --encoder FILE or --no-encoder, not both")
        return None
    if args.encoder:
        if not Path(args.encoder).is_file():
            raise UserError(f"the encoder {args.encoder} does not exist")
        return load_weights_file(args.encoder, device)
    if args.generator in SHIPPED and shipped_path("encoder", args.generator).is_file():
        return load_weights_file(shipped_path("encoder", args.generator), device)
    return None


def _steps(args: argparse.Namespace) -> dict | None:
    """``--steps N``: every optimisation stage runs N steps (random starts unchanged)."""
    if args.steps is None:
        return None
    if args.steps < 0:
        raise UserError(f"--steps must be 0 or more, got {args.steps}")
    return {stage: args.steps for stage in ("search", "latent", "features", "adapt")}


def _invert(args: argparse.Namespace, generator, pixels, encoder):
    """Invert with a progress bar on stderr."""
    from tqdm import tqdm

    from gandissect.invert import invert

    bar = tqdm(desc="invert", unit="step", total=1)

    def progress(done: int, total: int, stage: str) -> None:
        bar.total = total
        bar.set_postfix_str(stage, refresh=False)
        bar.update(done - bar.n)

    try:
        return invert(generator, pixels, args.layer, encoder=encoder, adapt=not args.no_adapt,
                      progress=progress, steps=_steps(args), seed=args.seed)
    finally:
        bar.close()


def _segmenter(args: argparse.Namespace, device):
    """The segmenter, checked up front to label ``--category``."""
    from gandissect.models.specs import resolve_segmenter

    segmenter = resolve_segmenter(args.segmenter, device, weights=args.segmenter_weights)
    concepts = getattr(segmenter, "concepts", None)
    if isinstance(concepts, dict) and args.category not in concepts:
        raise UserError(f"the segmenter has no {args.category!r} labels; --category takes one "
                        f"of {', '.join(concepts)}")
    return segmenter


def _picture(images):
    from PIL import Image

    from gandissect.world.dataset import tensor_to_image

    return Image.fromarray(tensor_to_image(images)[0])


def _prepare(args: argparse.Namespace):
    """Generator, encoder, segmenter, the picture and the output folder, checked before any
    long work."""
    from gandissect.fileio import writable_folder
    from gandissect.hooks import get_layer
    from gandissect.imagefiles import read_image

    generator = load_generator(args, args.device)
    get_layer(generator, args.layer)
    out = writable_folder(args.out)
    encoder = _encoder(args, args.device)
    segmenter = _segmenter(args, args.device)
    pixels, note = read_image(args.image, int(generator.resolution))
    if note:
        print(f"note: {note}", file=sys.stderr)
    return generator, encoder, segmenter, pixels, out


def _report(inv, segmenter, category: str, encoder) -> dict:
    from gandissect.invert import label_agreement

    return {"psnr": round(inv.psnr, 3),
            "stages": {stage: round(value, 3) for stage, value in inv.stages.items()},
            f"{category}_agreement": round(label_agreement(segmenter, inv.target,
                                                           inv.reconstruction, category), 4),
            "layer": inv.layer, "start": "encoder" if encoder is not None else "random starts",
            "adapted": bool(inv.adapted), "seconds": round(inv.seconds, 2)}


def _run_invert(args: argparse.Namespace) -> int:
    from gandissect.fileio import save_image, write_json

    generator, encoder, segmenter, pixels, out = _prepare(args)
    inv = _invert(args, generator, pixels, encoder)
    result = {"image": str(args.image), **_report(inv, segmenter, args.category, encoder)}
    save_image(out / "reconstruction.png", _picture(inv.reconstruction))
    write_json(out / "inversion.json", result)
    if args.json:
        print_result(result, True)
    else:
        print(f"PSNR {inv.psnr:.2f} dB, {args.category} label agreement "
              f"{result[f'{args.category}_agreement']:.3f}, {inv.seconds:.1f} s: wrote "
              f"{out / 'reconstruction.png'} and {out / 'inversion.json'}")
    return 0


def _dissection(args: argparse.Namespace, generator, segmenter):
    """The dissection of ``--layer`` and its folder: ``--dissection DIR``, else the one shipped
    beside the shipped generator."""
    from gandissect.dissect.sources import read_dissection
    from gandissect.models.registry import shipped_dissection_dir

    if args.dissection:
        folder = Path(args.dissection)
    elif args.generator in SHIPPED:
        folder = shipped_dissection_dir(args.generator)
    else:
        raise UserError("picking a concept's units needs the generator's dissection: give "
                        "--dissection DIR (a `gandissect dissect` output folder)")
    if not (folder / "dissect.json").is_file():
        raise UserError(f"no dissection in {folder}: run `gandissect dissect` first")
    return read_dissection(folder, generator, segmenter, args.layer), folder


def _brush(args: argparse.Namespace, dissection, segmenter):
    """The concept of ``--concept`` (``name`` or ``category/name``) among the dissection's
    brushes (concepts some unit of the layer has as its best of their category)."""
    from gandissect.causal import ConceptRef
    from gandissect.dissect.counts import best_in_category

    brushes = sorted(f"{category}/{name}"
                     for (category, name), units in best_in_category(dissection, args.layer).items()
                     if units and category not in BRUSH_EXCLUDED)
    category, _, name = args.concept.rpartition("/")
    matches = [key for key in brushes if key.split("/")[1] == name
               and (not category or key.split("/")[0] == category)]
    if len(matches) != 1:
        problem = "is in several categories" if matches else "is no brush of this layer"
        raise UserError(f"{args.concept!r} {problem}; brushes: {', '.join(brushes)}")
    category, name = matches[0].split("/")
    return ConceptRef.find(segmenter, name, category)


def _stroke(args: argparse.Namespace, generator, segmenter, dissection, folder, concept, mask):
    """The brush's stroke under ``mask``, chosen as the app chooses it: removal ablates the
    concept's top ``--units`` (``ace.ranked_units``); drawing applies the learned drawing
    where one is shipped, else inserts the top units' high quantiles."""
    from gandissect.ace import cached_drawing, ranked_units
    from gandissect.intervene import Stroke

    ace_dirs = [folder / "ace"]
    if args.mode == "draw":
        drawing = cached_drawing(generator, segmenter, dissection, args.layer, concept, ace_dirs)
        if drawing is not None:
            return Stroke(drawing.units, "insert", mask, args.strength, drawing.values,
                          drawing.weights), "draw"
    ranking, method = ranked_units(generator, segmenter, dissection, args.layer, concept,
                                   ace_dirs)
    mode = "ablate" if args.mode == "remove" else "insert"
    return Stroke(ranking[:args.units], mode, mask, args.strength), method


def _run_edit_image(args: argparse.Namespace) -> int:
    from gandissect.fileio import save_image, write_json
    from gandissect.imagefiles import read_mask
    from gandissect.intervene import pool_mask
    from gandissect.invert import edit

    if args.units < 1 or not 0 <= args.strength <= 1:
        raise UserError("--units must be positive and --strength lie in [0, 1]")
    generator, encoder, segmenter, pixels, out = _prepare(args)
    mask = read_mask(args.mask, int(generator.resolution), resize=True)
    dissection, folder = _dissection(args, generator, segmenter)
    concept = _brush(args, dissection, segmenter)
    cells = pool_mask(mask, tuple(dissection.layer(args.layer).shape[1:]))
    stroke, method = _stroke(args, generator, segmenter, dissection, folder, concept, cells)
    inv = _invert(args, generator, pixels, encoder)
    insert_values = dissection.layer(args.layer).stats["insertion"]
    result_image = edit(inv, [stroke], insert_values)
    changed = int((result_image != inv.target).any(1).sum())
    result = {"image": str(args.image), "concept": f"{concept.category}/{concept.name}",
              "mode": args.mode, "units": list(stroke.units), "ranking": method,
              "cells_painted": int((cells > 0).sum()), "pixels_changed": changed,
              **_report(inv, segmenter, args.category, encoder)}
    save_image(out / "edited.png", _picture(result_image))
    save_image(out / "reconstruction.png", _picture(inv.reconstruction))
    write_json(out / "edit.json", result)
    if args.json:
        print_result(result, True)
    else:
        verb = "removed" if args.mode == "remove" else "drew"
        print(f"{verb} {result['concept']} with {len(stroke.units)} units in "
              f"{result['cells_painted']} cells (reconstruction PSNR {inv.psnr:.2f} dB, "
              f"{inv.seconds:.1f} s): wrote {out / 'edited.png'}")
    return 0


def _add_inversion_arguments(parser: argparse.ArgumentParser) -> None:
    add_generator_arguments(parser)
    add_device_argument(parser)
    parser.add_argument("--image", required=True, help="an RGB picture (PNG or JPEG); resized "
                                                       "to the generator's resolution")
    parser.add_argument("--layer", default="layer4", help="the layer whose features are "
                                                          "optimised and edited")
    parser.add_argument("--encoder", default=None, metavar="FILE",
                        help="an encoder weights file (default: the shipped generator's shipped "
                             "encoder, when there is one)")
    parser.add_argument("--no-encoder", action="store_true",
                        help="start from random latents even when an encoder is shipped")
    parser.add_argument("--no-adapt", action="store_true",
                        help="leave the layers after --layer as the generator has them")
    parser.add_argument("--steps", type=int, default=None, metavar="N",
                        help="optimisation steps of every stage (default: "
                             "gandissect.invert.DEFAULT_STEPS)")
    parser.add_argument("--category", default="object",
                        help="the segmenter category whose label agreement is reported")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random starts")
    parser.add_argument("--out", required=True, help="the output folder")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def register(commands) -> None:
    """Add ``invert`` and ``edit-image``."""
    parser = commands.add_parser("invert", help="invert a picture into a generator")
    _add_inversion_arguments(parser)
    parser.set_defaults(run=_run_invert)

    parser = commands.add_parser("edit-image",
                                 help="remove or draw a concept in a real picture")
    _add_inversion_arguments(parser)
    parser.add_argument("--concept", required=True, help="a brush: NAME or CATEGORY/NAME")
    parser.add_argument("--mode", choices=["remove", "draw"], required=True)
    parser.add_argument("--mask", required=True,
                        help="a grayscale PNG, white where to edit, at the generator's "
                             "resolution or a multiple of it")
    parser.add_argument("--dissection", default=None, metavar="DIR",
                        help="the generator's dissection (default: the shipped one beside the "
                             "shipped generator)")
    parser.add_argument("--units", type=int, default=BRUSH_UNITS,
                        help=f"units a removal (or a drawing without a learned one) edits "
                             f"(default {BRUSH_UNITS})")
    parser.add_argument("--strength", type=float, default=1.0)
    parser.set_defaults(run=_run_edit_image)
