"""``gandissect factors``: the mutual information between a classifier's units (and its
prediction) and each factor that generates SceneWorld scenes, and how often the prediction
changes when only one factor changes (thin: it checks the options and calls
``gandissect.factors``).

    gandissect factors --classifier sceneworld --layer layer4 [--n 500] [--pairs P]
        [--bins 8] [--figure mi.png] [--json]

Scenes ``0 .. n-1`` of SceneWorld world 1001 (held out from training). Prints ``{"factors",
"units": [{"unit", "mi": {factor: bits}, "mi_within_scene"}], "class_mi": {factor: bits},
"class_mi_within_scene", "sensitivity": {factor: rate}, "probability_shift": {factor: mean},
"pairs": {factor: count}}`` (see ``gandissect.factors``); ``--figure`` draws the units x
factors MI heatmap with the sensitivity bars.
"""

from __future__ import annotations

import argparse

from gandissect.cli.common import add_classifier_arguments, add_device_argument
from gandissect.errors import UserError

__all__ = ["register"]

PROBE_SEED = 1001  # SceneWorld's held-out evaluation world


def _run(args: argparse.Namespace) -> int:
    from gandissect.factors import factor_figure, factor_study
    from gandissect.fileio import save_image
    from gandissect.models.inputs import preprocess_inside
    from gandissect.models.specs import resolve_classifier_and_preprocess
    from gandissect.units_relevance import layer_units

    if args.n < 2:
        raise UserError(f"--n must be at least 2, got {args.n}")
    if args.pairs is not None and args.pairs < 1:
        raise UserError(f"--pairs must be at least 1, got {args.pairs}")
    if args.bins < 2:
        raise UserError(f"--bins must be at least 2, got {args.bins}")
    if args.figure and not args.figure.lower().endswith(".png"):
        raise UserError(f"--figure must name a .png file, got {args.figure}")
    model = preprocess_inside(*resolve_classifier_and_preprocess(args.classifier, args.weights,
                                                                 args.device)).eval()
    size = int(getattr(model, "input_size", None) or 64)
    layer_units(model, args.layer, size)  # one clear error for a wrong layer, before the work
    study = factor_study(model, args.layer, PROBE_SEED, args.n, size, args.pairs, args.bins,
                         args.batch)
    output = {"classifier": args.classifier, "seed": PROBE_SEED, **study.to_json()}
    if args.figure:
        save_image(args.figure, factor_figure(study))
        output["figure"] = args.figure
    if args.json:
        import json

        print(json.dumps(output))
        return 0
    print(f"{args.layer}: {len(output['units'])} units, {args.n} scenes, MI in bits "
          "(best unit, prediction) and how often the prediction changes with the factor alone")
    for j, factor in enumerate(study.factors):
        best = int(study.unit_mi[:, j].argmax())
        print(f"  {factor:9s} unit {best:4d} {study.unit_mi[best, j]:.3f}  class "
              f"{study.class_mi[factor]:.3f}  changes {study.sensitivity[factor]:.3f} "
              f"(probability shift {study.probability_shift[factor]:.3f}) of "
              f"{study.pairs[factor]} pairs")
    return 0


def register(commands) -> None:
    """Add ``factors``."""
    parser = commands.add_parser(
        "factors", help="units' and prediction's information about SceneWorld's factors",
        description="Mutual information between a layer's units (and the prediction) and "
                    "each factor generating SceneWorld scenes, and the prediction's "
                    "sensitivity to each factor alone.")
    add_classifier_arguments(parser)
    parser.add_argument("--layer", required=True, help="a layer with (N, units, h, w) maps")
    parser.add_argument("--n", type=int, default=500, help="probe scenes (default 500)")
    parser.add_argument("--pairs", type=int, default=None, metavar="P",
                        help="scenes varied per factor for the sensitivity (default: --n)")
    parser.add_argument("--bins", type=int, default=8,
                        help="equally populated bins of each unit's activation (default 8)")
    parser.add_argument("--batch", type=int, default=64, help="images per forward pass")
    parser.add_argument("--figure", default=None, metavar="PNG",
                        help="write the units x factors MI heatmap and sensitivity bars here")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    add_device_argument(parser)
    parser.set_defaults(run=_run)
