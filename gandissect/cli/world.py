"""``gandissect world sample|export``: sample sheets and Broden exports of SceneWorld."""

from __future__ import annotations

import argparse
from pathlib import Path

from gandissect.errors import UserError


def _check(args: argparse.Namespace) -> Path:
    """Validate the shared arguments before any long work; returns the output path."""
    from gandissect.fileio import empty_folder
    from gandissect.world.render import check_size

    if args.n <= 0:
        raise UserError(f"--n must be positive, got {args.n}")
    check_size(args.size)
    return empty_folder(args.out)


def run_sample(args: argparse.Namespace) -> int:
    """Write OUT/grid.png (images, label maps, legend) and OUT/images/*.png."""
    out = _check(args)
    from PIL import Image

    from gandissect.world.grid import sample_grid
    from gandissect.world.render import render_batch

    sheet = sample_grid(args.n, args.size, args.seed)
    (out / "images").mkdir(parents=True, exist_ok=True)
    batch = render_batch(args.seed, range(args.n), args.size)
    for i, image in enumerate(batch["image"]):
        Image.fromarray(image).save(out / "images" / f"{i:05d}.png")
    sheet.save(out / "grid.png")
    print(f"wrote {out / 'grid.png'} and {args.n} images in {out / 'images'}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    """Write a Broden-layout probe set of N scenes to OUT."""
    _check(args)
    from gandissect.world.broden import export_broden

    out = export_broden(args.out, args.n, args.size, args.seed, progress=True)
    print(f"wrote a Broden-layout dataset of {args.n} images to {out}")
    return 0


def _common(parser: argparse.ArgumentParser, n: int) -> None:
    parser.add_argument("--n", type=int, default=n, help=f"number of scenes (default {n})")
    parser.add_argument("--size", type=int, default=64, help="image size in pixels (16-1024)")
    parser.add_argument("--seed", type=int, default=0, help="world seed (default 0)")
    parser.add_argument("--out", required=True, help="output directory (new or empty)")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``world`` command and its ``sample`` and ``export`` subcommands."""
    world = subparsers.add_parser("world", help="SceneWorld: render labelled outdoor scenes")
    sub = world.add_subparsers(dest="world_command", metavar="SUBCOMMAND")
    sub.required = True
    sample = sub.add_parser("sample", help="write a sample sheet with label maps and legend")
    _common(sample, 16)
    sample.set_defaults(run=run_sample)
    export = sub.add_parser("export", help="write a Broden-layout probe dataset")
    _common(export, 1000)
    export.set_defaults(run=run_export)
