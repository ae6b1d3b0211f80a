"""``gandissect eval segmenter|classifier|generator``: the model cards' metrics, as JSON
(``gandissect.evaluate``)."""

from __future__ import annotations

import argparse

from gandissect.cli.common import add_device_argument, print_result
from gandissect.errors import UserError

DEFAULTS = {"segmenter": (1000, 1000), "classifier": (2000, 1001), "generator": (5000, 2000)}


def _run_eval(args: argparse.Namespace) -> int:
    from gandissect.fileio import image_format, save_image
    from gandissect.models.registry import load_classifier, load_generator, load_segmenter

    n = args.n if args.n is not None else DEFAULTS[args.model][0]
    seed = args.seed if args.seed is not None else DEFAULTS[args.model][1]
    progress = not args.quiet
    if n < 1:
        raise UserError(f"--n must be at least 1, got {n}")
    for path in (args.grid, args.material_grid):
        if path is not None:
            image_format(path)  # a bad name fails now, not after the evaluation
    if args.model == "segmenter":
        from gandissect.evaluate.segmenter import evaluate_segmenter

        result = evaluate_segmenter(load_segmenter(args.name, args.device), n, seed,
                                    progress=progress)
    elif args.model == "classifier":
        from gandissect.evaluate.classifier import evaluate_classifier

        result = evaluate_classifier(load_classifier(args.name, args.device), n, seed,
                                     progress=progress)
    else:
        from gandissect.evaluate.generator import (
            comparison_grid,
            evaluate_generator,
            material_grid,
        )

        generator = load_generator(args.name, args.device)
        segmenter = load_segmenter(device=args.device)
        result = evaluate_generator(generator, segmenter, load_classifier(device=args.device),
                                    n, seed, progress=progress)
        if args.grid:  # only once the evaluation has succeeded
            save_image(args.grid, comparison_grid(generator, seed))
        if args.material_grid:
            save_image(args.material_grid, material_grid(generator, segmenter, seed))
    print_result(result, args.json)
    return 0


def register(commands) -> None:
    """Add ``eval``."""
    parser = commands.add_parser("eval", help="measure a shipped model on fresh SceneWorld images")
    parser.add_argument("model", choices=sorted(DEFAULTS))
    parser.add_argument("--name", default="sceneworld", help="which model (default: shipped)")
    parser.add_argument("--n", type=int, default=None,
                        help="images (defaults: segmenter 1000, classifier 2000, generator 5000)")
    parser.add_argument("--seed", type=int, default=None,
                        help="world / latent seed, never a training seed "
                             "(defaults 1000, 1001, 2000)")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--grid", help="generator: also save 64 generated beside 64 real images")
    parser.add_argument("--material-grid",
                        help="generator: also save 12 real and 12 generated images of buildings "
                             "with their segmented materials (PNG)")
    add_device_argument(parser)
    parser.set_defaults(run=_run_eval)
