"""``gandissect unit-stats MODEL --layer L --out DIR``: per-unit quantiles, top scenes and
object means of a model's layers over SceneWorld (``gandissect.unitstats``)."""

from __future__ import annotations

import argparse

from gandissect.models.spellings import spellings


def _run(args: argparse.Namespace) -> int:
    from gandissect.models.specs import resolve_classifier
    from gandissect.unitstats import collect_unit_stats, write_unit_stats

    model = resolve_classifier(args.model, args.weights)
    stats = collect_unit_stats(model, args.layer, args.n, args.size, args.seed, args.batch,
                               args.top_k)
    settings = {"model": args.model, "weights": args.weights, "layers": args.layer, "n": args.n,
                "size": args.size, "seed": args.seed, "top_k": args.top_k,
                "images": "SceneWorld RGB scaled to [-1, 1]"}
    path = write_unit_stats(args.out, stats, settings)
    print(f"wrote {path} and the statistics' states ({len(stats)} layers)")
    return 0


def register(commands) -> None:
    """Add ``unit-stats``."""
    parser = commands.add_parser(
        "unit-stats", help="per-unit quantiles, top scenes and object means over SceneWorld")
    parser.add_argument("model", help=f"the model: {spellings('classifier')}")
    parser.add_argument("--layer", action="append", required=True,
                        help="dotted layer name (repeat for several layers)")
    parser.add_argument("--weights", help="a state-dict file (loaded without running code)")
    parser.add_argument("--n", type=int, default=256, help="number of SceneWorld scenes")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--top-k", type=int, default=8)
    parser.add_argument("--out", required=True, help="output directory")
    parser.set_defaults(run=_run)
