"""``gandissect explain-units``: one image's prediction decomposed over the units of a layer,
the top units with their Network Dissection labels (thin: it checks the options and calls
``gandissect.units_relevance`` and ``gandissect.netdissect``).

    gandissect explain-units --classifier sceneworld --image scene.png --layer layer4
        [--top 10] [--class NAME|INDEX] [--dissection DIR | --probe-n 300] [--out DIR] [--json]

Contributions are exact for a ``GAP(layer) -> nn.Linear`` head (pooled activation times class
weight; they sum with the bias to the class score), else gradient x activation (first order).
Labels (concept, IoU) come from ``--dissection DIR`` (a ``gandissect netdissect`` output
folder holding ``dissect.json``) or, without it, from a Network Dissection of the layer on
``--probe-n`` held-out SceneWorld scenes (world 1001). ``--out DIR`` writes
``unit_<k>.png``, each unit's activation map over the image, and ``units.json``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from gandissect.cli.common import add_classifier_arguments, add_device_argument
from gandissect.errors import UserError

__all__ = ["register"]

PROBE_SEED = 1001  # SceneWorld's held-out evaluation world


def _target(text: str | None, names: list[str]) -> int | None:
    if text is None:
        return None
    if text in names:
        return names.index(text)
    if text.isdigit() and int(text) < len(names):
        return int(text)
    raise UserError(f"--class {text!r} is not a class of the classifier; choose one of "
                    f"{', '.join(names)} (or an index)")


def _labels(args, model, layer: str, size: int) -> dict[int, tuple[str, float]]:
    from gandissect.dissect.results import load_dissection
    from gandissect.netdissect import SceneWorldProbe, netdissect
    from gandissect.units_relevance import unit_labels

    if args.dissection:
        labels = unit_labels(load_dissection(args.dissection), layer)
        if not labels:
            raise UserError(f"{args.dissection}/dissect.json has no layer {layer!r}; run "
                            f"`gandissect netdissect --layer {layer}` for it")
        return labels
    if args.probe_n == 0:
        return {}
    result = netdissect(model, [layer], SceneWorldProbe(PROBE_SEED, args.probe_n, size),
                        progress=not args.quiet)
    return unit_labels(result, layer)


def _run(args: argparse.Namespace) -> int:
    import torch
    from PIL import Image

    from gandissect.fileio import save_image, writable_folder, write_json
    from gandissect.models.inputs import preprocess_inside
    from gandissect.models.specs import resolve_classifier_and_preprocess
    from gandissect.netdissect.folder import load_image
    from gandissect.torchutil import model_device
    from gandissect.units_relevance import class_names, layer_units, unit_contributions
    from gandissect.visualize import overlay

    image_path = Path(args.image).expanduser()
    if not image_path.is_file():
        raise UserError(f"no image at {image_path}")
    if args.top < 1:
        raise UserError(f"--top must be at least 1, got {args.top}")
    if args.probe_n < 0:
        raise UserError(f"--probe-n must be 0 or more, got {args.probe_n}")
    if args.dissection and not (Path(args.dissection) / "dissect.json").is_file():
        raise UserError(f"no dissect.json in {args.dissection}; run `gandissect netdissect` "
                        "first")
    out = writable_folder(args.out, "--out folder") if args.out else None
    model = preprocess_inside(*resolve_classifier_and_preprocess(args.classifier, args.weights,
                                                                 args.device)).eval()
    size = int(getattr(model, "input_size", None) or 64)
    units = layer_units(model, args.layer, size)
    if args.top > units:
        raise UserError(f"--top {args.top} is more than the {units} units of {args.layer!r}")
    image = load_image(image_path, size)
    with torch.no_grad():
        probabilities = torch.softmax(model(image[None].to(model_device(model)))[0].float(), 0)
    names = class_names(model, probabilities.numel())
    found = unit_contributions(model, image[None], args.layer, _target(args.class_, names))
    labels = _labels(args, model, args.layer, size)
    target = int(found.target[0])
    top = found.top(args.top)
    records = []
    for unit in top:
        concept, iou = labels.get(unit, (None, None))
        records.append({"unit": unit, "contribution": float(found.contributions[0, unit]),
                        "concept": concept, "iou": iou})
    result = {"classifier": args.classifier, "image": str(image_path), "layer": args.layer,
              "predicted": names[int(probabilities.argmax())], "class": names[target],
              "class_index": target, "probability": float(probabilities[target]),
              "logit": float(found.logit[0]), "method": found.method,
              "bias": None if found.bias is None else float(found.bias[0]),
              "contributions_sum": float(found.contributions[0].sum()), "units": records}
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        maps = found.heatmaps(top, (size, size))
        for record, heat in zip(records, maps):
            record["heatmap"] = f"unit_{record['unit']}.png"
            picture = overlay(image, heat, mode="absolute", bar_height=0)
            save_image(out / record["heatmap"], Image.fromarray(picture))
        write_json(out / "units.json", result)
    if args.json:
        import json

        print(json.dumps(result))
        return 0
    how = ("exact: pooled activation x class weight" if found.exact
           else "gradient x activation, first order")
    print(f"{result['class']} ({result['probability']:.3f}), logit {result['logit']:.3f}; "
          f"units of {args.layer} ({how}):")
    for record in records:
        label = (f"{record['concept']}, IoU {record['iou']:.3f}" if record["concept"]
                 else "no dissection label")
        print(f"  unit {record['unit']:4d}  {record['contribution']:+8.3f}  {label}")
    if out is not None:
        print(f"wrote {len(records)} heatmaps and {out / 'units.json'}")
    return 0


def register(commands) -> None:
    """Add ``explain-units``."""
    parser = commands.add_parser(
        "explain-units", help="the units of a layer behind one image's prediction",
        description="One image's class score decomposed over the units of a layer: the top "
                    "units with their contributions and Network Dissection labels.")
    add_classifier_arguments(parser)
    parser.add_argument("--image", required=True, help="a PNG or JPEG image")
    parser.add_argument("--layer", required=True, help="a layer with (N, units, h, w) maps")
    parser.add_argument("--top", type=int, default=10, help="units to show (default 10)")
    parser.add_argument("--class", dest="class_", default=None, metavar="CLASS",
                        help="the class to explain, by name or index (default: the predicted)")
    parser.add_argument("--dissection", default=None, metavar="DIR",
                        help="a `gandissect netdissect` output folder with the layer's labels")
    parser.add_argument("--probe-n", type=int, default=300, metavar="N",
                        help="without --dissection: held-out SceneWorld scenes for a Network "
                             "Dissection of the layer (default 300; 0: no labels)")
    parser.add_argument("--out", default=None, help="folder for heatmaps and units.json")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_device_argument(parser)
    parser.set_defaults(run=_run)
