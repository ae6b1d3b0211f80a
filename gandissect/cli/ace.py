"""``gandissect ace``: how much of a concept its top units remove, ranked by IoU, by ACE, by
the ACE top K improved by swaps, and as the app's brush ranks them (``gandissect.ace.ace_report``;
causal weights and swap sets shipped beside the dissection are used as they are)."""

from __future__ import annotations

import argparse
from pathlib import Path

from gandissect.cli.common import add_generator_arguments, load_generator, print_result
from gandissect.errors import UserError
from gandissect.paths import cache_dir

# ``gandissect.causal.ACE_EPOCHS`` (a test checks), written out so that --help loads no torch
REFERENCE_EPOCHS = 10


def _dissection_for(args, generator, segmenter, cache: Path):
    """The dissection to rank by, and the folders of causal weights shipped beside it."""
    from gandissect.dissect import dissect, load_dissection
    from gandissect.dissect.sources import shipped_dissection
    from gandissect.models.registry import shipped_dissection_dir

    if args.dissection:
        result = load_dissection(args.dissection, stats=True)
        if args.layer not in [layer.layer for layer in result.layers]:
            raise UserError(f"{args.dissection} has no layer {args.layer!r}")
        return result, [Path(args.dissection) / "ace"]
    shipped = shipped_dissection(generator, segmenter, args.layer, args.dissect_samples,
                                 args.dissect_seed)
    if shipped is not None:
        return shipped, [shipped_dissection_dir() / "ace"]
    return dissect(generator, segmenter, [args.layer], n=args.dissect_samples,
                   seed=args.dissect_seed, cache_dir=cache / "dissect",
                   progress=not args.quiet, checkpoint_seconds=args.checkpoint_seconds), []


def _run_ace(args: argparse.Namespace) -> int:
    from gandissect.ace import ace_report
    from gandissect.causal import ConceptRef, check_learnable
    from gandissect.dissect import check_layers
    from gandissect.fileio import FolderLock
    from gandissect.models.specs import resolve_segmenter

    if min(args.samples, args.units, args.selection_samples, args.dissect_samples) < 1:
        raise UserError("--samples, --units, --selection-samples and --dissect-samples must be "
                        "positive")
    if args.epochs < 0:
        raise UserError(f"--epochs must be 0 or more, got {args.epochs}")
    if not 0 <= args.keep < float("inf"):
        raise UserError(f"--keep must be a finite number >= 0, got {args.keep}")
    cache = Path(args.cache) if args.cache else cache_dir()
    generator = load_generator(args)
    segmenter = resolve_segmenter(args.segmenter, weights=args.segmenter_weights)
    check_layers(generator, [args.layer])
    concept = ConceptRef.find(segmenter, args.concept, args.category)
    check_learnable(generator, segmenter, concept)  # before the dissection and the learning
    with FolderLock(cache / "ace", what="--cache folder"):
        dissection, shipped = _dissection_for(args, generator, segmenter, cache)
        result = ace_report(generator, segmenter, dissection, args.layer, concept, k=args.units,
                            n=args.samples, seed=args.seed, selection_n=args.selection_samples,
                            selection_seed=args.selection_seed, epochs=args.epochs,
                            cache_dir=cache / "ace", progress=not args.quiet,
                            checkpoint_seconds=args.checkpoint_seconds, keep=args.keep,
                            refine=args.refine, shipped=shipped)
    print_result(result, args.json)
    return 0


def register(commands) -> None:
    """Add ``ace``."""
    parser = commands.add_parser(
        "ace", help="fraction of a concept removed by ablating its top units (IoU and ACE)")
    parser.add_argument("--concept", required=True, help="e.g. tree, dome, door, brick, cloud")
    parser.add_argument("--category", help="the concept's category when its name is ambiguous")
    parser.add_argument("--units", type=int, default=20, help="K, the number of units ablated")
    parser.add_argument("--samples", type=int, default=1000, help="evaluation samples")
    parser.add_argument("--seed", type=int, default=3, help="evaluation latent seed")
    add_generator_arguments(parser)
    parser.add_argument("--layer", default="layer4")
    parser.add_argument("--dissection", help="a `gandissect dissect` output folder to rank by; "
                        "default: the one shipped with the generator when it has these "
                        "settings, else dissect now (cached)")
    parser.add_argument("--dissect-samples", type=int, default=10000)
    parser.add_argument("--dissect-seed", type=int, default=1)
    parser.add_argument("--selection-samples", type=int, default=200,
                        help="samples that teach the ACE weights")
    parser.add_argument("--selection-seed", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=REFERENCE_EPOCHS,
                        help=f"epochs of the ACE selection (default {REFERENCE_EPOCHS}, the "
                             f"reference's)")
    parser.add_argument("--keep", type=float, default=0.0,
                        help="weight of a term that keeps the labels of the other pixels "
                             "while the ACE weights learn to remove the concept (default 0: "
                             "the reference's objective; 1 brings sky's collateral under 10%%)")
    parser.add_argument("--refine", action=argparse.BooleanOptionalAction, default=True,
                        help="also rank the ACE top K improved by exact swaps on the selection "
                             "images (\"refined\" in the result; default on: the app's brushes "
                             "paint with it; --no-refine skips it)")
    parser.add_argument("--cache", default=None,
                        help="cache folder (default $XDG_CACHE_HOME/gandissect, else "
                             "~/.cache/gandissect)")
    parser.add_argument("--checkpoint-seconds", type=float, default=30.0,
                        help="save progress at least this often (a killed run resumes)")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(run=_run_ace)
