"""``gandissect eval segmenter|classifier|generator``: the model cards' metrics, as JSON."""

from __future__ import annotations

import argparse

from gandissect.cli import add_device_argument, print_result

DEFAULTS = {"segmenter": (1000, 1000), "classifier": (2000, 1001), "generator": (5000, 2000)}


def _run_eval(args: argparse.Namespace) -> int:
    from gandissect.models.registry import load_classifier, load_generator, load_segmenter

    n = args.n if args.n is not None else DEFAULTS[args.model][0]
    seed = args.seed if args.seed is not None else DEFAULTS[args.model][1]
    progress = not args.quiet
    if n < 1:
        raise ValueError(f"--n must be at least 1, got {n}")
    if args.model == "segmenter":
        from gandissect.evaluate.segmenter import evaluate_segmenter

        result = evaluate_segmenter(load_segmenter(args.name, args.device), n, seed,
                                    progress=progress)
    elif args.model == "classifier":
        from gandissect.evaluate.classifier import evaluate_classifier

        result = evaluate_classifier(load_classifier(args.name, args.device), n, seed,
                                     progress=progress)
    else:
        from gandissect.evaluate.generator import comparison_grid, evaluate_generator

        generator = load_generator(args.name, args.device)
        result = evaluate_generator(generator, load_segmenter(device=args.device),
                                    load_classifier(device=args.device), n, seed,
                                    progress=progress)
        if args.grid:  # only once the evaluation has succeeded
            comparison_grid(generator, seed).save(args.grid)
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
    add_device_argument(parser)
    parser.set_defaults(run=_run_eval)
