"""``gandissect edit``: render samples with units ablated or inserted, everywhere or under a
mask, and save the originals beside the edits. On a style layer (``layer5.style``) ``--shift
ALPHA`` moves each unit's style by ALPHA standard deviations instead (StyleSpace's edit)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from gandissect.cli.common import add_generator_arguments, load_generator
from gandissect.errors import UserError

if TYPE_CHECKING:
    import torch


READABLE = 256  # pixels a side each picture of edit.png has at least, unless --scale says


def _read_mask(path: str, size: int) -> torch.Tensor:
    """The ``(size, size)`` mask in [0, 1] of a grayscale image: white edits, black keeps."""
    from gandissect.imagefiles import read_mask

    return read_mask(path, size)


def _box_mask(box: str, size: int) -> torch.Tensor:
    import torch

    try:
        y0, x0, y1, x1 = (int(v) for v in box.split(","))
    except ValueError:
        raise UserError("--box takes four integers: top,left,bottom,right (pixels)") from None
    if not (y0 < y1 and x0 < x1):
        raise UserError(f"--box {box} is empty: bottom must exceed top and right exceed left")
    if min(y0, x0) < 0 or max(y1, x1) > size:
        raise UserError(f"--box must lie inside the {size}x{size} image")
    mask = torch.zeros(size, size)
    mask[y0:y1, x0:x1] = 1
    return mask


def _parse_units(text: str) -> list[int]:
    try:
        return [int(u) for u in text.split(",") if u.strip()]
    except ValueError:
        raise UserError("--units takes comma-separated unit ids, e.g. 3,17,42") from None


def _check_shift(args: argparse.Namespace, generator) -> None:
    """``--shift`` is a style edit of its own: refuse what it cannot combine with."""
    from gandissect.styles import check_style_layer

    if args.mode != "ablate" or args.strength != 1.0:
        raise UserError("--shift ALPHA is the edit (s + ALPHA * sigma): leave out --mode and "
                        "--strength, or leave out --shift")
    if args.shift != args.shift or abs(args.shift) == float("inf"):
        raise UserError(f"--shift takes a finite number of standard deviations, got {args.shift}")
    check_style_layer(generator, args.layer)


def _shifted(generator, z, layer: str, units: list[int], alpha: float, mask):
    """Images of ``z`` with the ``units``' styles of ``layer`` moved by ``alpha`` sigmas."""
    import torch

    from gandissect.styles import StyleShift, style_shift, style_statistics

    sigma = style_statistics(generator, layer)[1]
    with torch.no_grad(), StyleShift(generator, layer, style_shift(units, sigma, alpha), mask):
        return generator(z)


def _run_edit(args: argparse.Namespace) -> int:
    import torch
    from PIL import Image

    from gandissect.dissect import check_layers
    from gandissect.dissect.latents import sample_latents
    from gandissect.dissect.sources import read_dissection
    from gandissect.intervene import Stroke, render_edited
    from gandissect.models.specs import resolve_segmenter
    from gandissect.report.images import image_grid

    if args.samples < 1 or args.k < 1 or (args.scale is not None and args.scale < 1):
        raise UserError("--samples, --k and --scale must be positive")
    generator = load_generator(args)
    check_layers(generator, [args.layer])
    size = generator.resolution
    mask = None
    if args.mask:
        mask = _read_mask(args.mask, size)
    elif args.box:
        mask = _box_mask(args.box, size)
    insert_values = dissection = None
    if args.shift is not None:
        _check_shift(args, generator)
    if not args.units and not (args.concept and args.dissection):
        raise UserError("give --units, or --concept with --dissection DIR to pick them")
    if args.mode == "insert" and not args.dissection:
        raise UserError("insertion needs --dissection DIR (each unit's 0.99 quantile)")
    if args.dissection:  # of this generator (and segmenter, when it names the concept)
        segmenter = None if args.units else resolve_segmenter(args.segmenter,
                                                               weights=args.segmenter_weights)
        dissection = read_dissection(args.dissection, generator, segmenter, args.layer,
                                     rank=segmenter is not None)
    if args.units:
        units = _parse_units(args.units)
    else:
        from gandissect.ace import units_by_iou
        from gandissect.causal import ConceptRef

        concept = ConceptRef.find(segmenter, args.concept)
        units = units_by_iou(dissection, args.layer, concept)[:args.k]
    if args.mode == "insert":
        insert_values = dissection.layer(args.layer).stats[
            "insertion"]
    z = sample_latents(generator, args.seed, range(args.samples))
    with torch.no_grad():
        before = generator(z)
    if args.shift is None:
        after = render_edited(generator, z, args.layer,
                              [Stroke(units, args.mode, mask, args.strength)], insert_values)
    else:
        after = _shifted(generator, z, args.layer, units, args.shift, mask)
    scale = args.scale or max(1, -(-READABLE // size))  # whole-pixel enlargement
    pairs = torch.stack([before, after], 1).flatten(0, 1)
    pairs = torch.nn.functional.interpolate(pairs, scale_factor=scale, mode="nearest")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image_grid(pairs, columns=2 * min(args.samples, 4))).save(out / "edit.png")
    shifted = ("" if args.shift is None
               else f" shifted by {args.shift:g} standard deviations of their styles")
    print(f"units {units}{shifted}: wrote {out / 'edit.png'} (each original left of its edit, "
          f"{size * scale} px)")
    return 0


def register(commands) -> None:
    """Add ``edit``."""
    parser = commands.add_parser("edit", help="render samples with units ablated or inserted")
    add_generator_arguments(parser)
    parser.add_argument("--layer", default="layer4")
    parser.add_argument("--units", help="comma-separated unit ids")
    parser.add_argument("--concept", help="pick the concept's top units from --dissection")
    parser.add_argument("--k", type=int, default=15, help="how many units with --concept")
    parser.add_argument("--dissection", help="a `gandissect dissect` output folder")
    parser.add_argument("--mode", choices=["ablate", "insert"], default="ablate")
    parser.add_argument("--mask", help="a grayscale PNG at the generator's resolution")
    parser.add_argument("--box", help="top,left,bottom,right in pixels (instead of --mask)")
    parser.add_argument("--strength", type=float, default=1.0)
    parser.add_argument("--shift", type=float, default=None, metavar="ALPHA",
                        help="style layers (LAYER.style) only, instead of --mode: move each "
                             "unit's style by ALPHA standard deviations, s + ALPHA * sigma "
                             "(StyleSpace; sigma: the style's spread over the generator's "
                             "untruncated latents), everywhere or under --mask / --box")
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--scale", type=int, default=None,
                        help=f"enlarge each picture of edit.png this many times (nearest; "
                             f"default: to at least {READABLE} px)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True)
    parser.set_defaults(run=_run_edit)
