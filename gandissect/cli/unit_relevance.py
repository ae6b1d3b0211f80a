"""``gandissect unit-relevance``: the units of a layer that matter most to each class, and
every class's accuracy when they are ablated (thin: it checks the options and calls
``gandissect.units_relevance``).

    gandissect unit-relevance --classifier sceneworld --layer layer4 --units 10
        [--n 600] [--eval-n N] [--figure drop.png] [--json]

Units are ranked per class by their mean contribution to the class over the class's scenes
among SceneWorld world 1001's scenes ``0 .. n-1`` (Bau et al. 2020, PNAS); accuracy is
measured on the next ``--eval-n`` scenes (default ``n``), held out from the ranking. Prints
``{"classes": {name: {"units", "accuracy", "accuracy_ablated", "others_accuracy",
"others_accuracy_ablated", "accuracy_kept_only", "others_accuracy_kept_only"}}}``: the class's
accuracy and the other classes' (pooled over their scenes) before and after its top ``K`` units
are zeroed, and both when only those ``K`` units are kept. ``--figure`` draws the class x class
accuracy-drop matrix.
"""

from __future__ import annotations

import argparse

from gandissect.cli.common import add_classifier_arguments, add_device_argument
from gandissect.errors import UserError

__all__ = ["register"]

PROBE_SEED = 1001  # SceneWorld's held-out evaluation world


def _run(args: argparse.Namespace) -> int:
    from gandissect.fileio import save_image
    from gandissect.models.inputs import preprocess_inside
    from gandissect.models.specs import resolve_classifier_and_preprocess
    from gandissect.units_relevance import (
        ablation_accuracy,
        accuracy_drop_figure,
        class_names,
        class_unit_ranking,
        layer_units,
        sceneworld_scenes,
    )

    eval_n = args.n if args.eval_n is None else args.eval_n
    if args.n < 1 or eval_n < 1:
        raise UserError(f"--n and --eval-n must be at least 1, got {args.n} and {eval_n}")
    if args.units < 1:
        raise UserError(f"--units must be at least 1, got {args.units}")
    if args.figure and not args.figure.lower().endswith(".png"):
        raise UserError(f"--figure must name a .png file, got {args.figure}")
    model = preprocess_inside(*resolve_classifier_and_preprocess(args.classifier, args.weights,
                                                                 args.device)).eval()
    size = int(getattr(model, "input_size", None) or 64)
    units = layer_units(model, args.layer, size)
    if args.units > units:
        raise UserError(f"--units {args.units} is more than the {units} units of "
                        f"{args.layer!r}")
    probe, probe_labels = sceneworld_scenes(PROBE_SEED, 0, args.n, size)
    images, labels = sceneworld_scenes(PROBE_SEED, args.n, eval_n, size)
    ranking = class_unit_ranking(model, probe, probe_labels, args.layer, batch=args.batch)
    result = ablation_accuracy(model, images, labels, args.layer,
                               ranking.top_units(args.units), args.units, batch=args.batch)
    names = class_names(model, len(result.accuracy))
    output = {"classifier": args.classifier, "layer": args.layer, "units": args.units,
              "method": ranking.method, "probe": {"seed": PROBE_SEED, "ranked_on": [0, args.n],
                                                  "measured_on": [args.n, args.n + eval_n]},
              "classes": {names[c]: entry.to_json() for c, entry in result.classes.items()}}
    if args.figure:
        save_image(args.figure, accuracy_drop_figure(result, names))
        output["figure"] = args.figure
    if args.json:
        import json

        print(json.dumps(output))
        return 0
    print(f"top {args.units} units of {args.layer} per class ({ranking.method}), accuracy on "
          f"{eval_n} held-out scenes: class before -> ablated (others before -> ablated), "
          "kept only (others)")
    for name, entry in output["classes"].items():
        print(f"  {name:12s} {entry['accuracy']:.3f} -> {entry['accuracy_ablated']:.3f}  "
              f"({entry['others_accuracy']:.3f} -> {entry['others_accuracy_ablated']:.3f})  "
              f"{entry['accuracy_kept_only']:.3f} ({entry['others_accuracy_kept_only']:.3f})")
    return 0


def register(commands) -> None:
    """Add ``unit-relevance``."""
    parser = commands.add_parser(
        "unit-relevance", help="each class's most relevant units and accuracy when ablated",
        description="Rank a layer's units per class by their contribution to it over "
                    "SceneWorld probe scenes; ablate each class's top units and report every "
                    "class's accuracy.")
    add_classifier_arguments(parser)
    parser.add_argument("--layer", required=True, help="a layer with (N, units, h, w) maps")
    parser.add_argument("--units", type=int, required=True, metavar="K",
                        help="units ablated per class")
    parser.add_argument("--n", type=int, default=600,
                        help="probe scenes the units are ranked on (default 600)")
    parser.add_argument("--eval-n", type=int, default=None, metavar="N",
                        help="held-out scenes accuracy is measured on (default: --n)")
    parser.add_argument("--batch", type=int, default=64, help="images per forward pass")
    parser.add_argument("--figure", default=None, metavar="PNG",
                        help="write the class x class accuracy-drop matrix here")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    add_device_argument(parser)
    parser.set_defaults(run=_run)
