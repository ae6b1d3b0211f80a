"""``gandissect attribute``: a classifier's prediction for each image of a folder, and each
attribution method's map of it as an overlay PNG (thin: it checks the options and calls
``gandissect.attribute``).

    gandissect attribute --classifier sceneworld --images photos/ --methods gradcam,saliency
        --out maps [--weights FILE --layer layer4 --device cpu] [--json] [--quiet]

Images (``.jpg``, ``.jpeg``, ``.png``, found recursively) are resized to the classifier's
declared input size (shorter side, then the centre square; 64 for the shipped one) and
normalised as it declares; every file is read once before any work, so an unreadable one
fails at once. Each map explains the predicted class; ``OUT/attributions.json``
holds ``{"images": [{"file", "predicted", "probability", "maps": {method: png}}],
"skipped": {method: reason}}`` (paths relative to the image folder and to OUT), written once
every map is. ``--methods all`` runs every method that applies to the classifier and skips the
others (CAM without a pooled head, guided backpropagation on a GELU network, LRP on a
transformer: ``gandissect.attribute.applicability``), each with a one-line reason on stderr
and in ``skipped``; a method named in ``--methods`` that does not apply is an error, before
any work. Class names come from the
classifier's ``class_names`` attribute (a list, one name per output), else the index.

Each image is also checked against the classifier's training domain
(``gandissect.classifier_domain``: its BatchNorm statistics): a record's ``domain`` holds its
feature shift and verdict, the index's ``domain`` the bar, its unit and the files out of
domain, and each of those gets a warning line on stderr (its prediction may mean little).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gandissect.cli.attribution import METHOD_NAMES
from gandissect.cli.common import add_classifier_arguments, add_device_argument
from gandissect.errors import UserError

__all__ = ["register"]

INDEX = "attributions.json"


def _method_names(text: str) -> list[str]:
    """The ``--methods`` names, checked against ``gandissect.attribute.evaluate.METHODS``."""
    from gandissect.attribute.evaluate import METHODS

    if text.strip() == "all":
        return list(METHODS)
    names = list(dict.fromkeys(name.strip().replace("-", "_") for name in text.split(",")
                               if name.strip()))
    if not names:
        raise UserError(f"--methods needs 'all' or method names: {', '.join(METHODS)}")
    unknown = [name for name in names if name not in METHODS]
    if unknown:
        raise UserError(f"unknown attribution method{'s' if len(unknown) > 1 else ''} "
                        f"{', '.join(unknown)}; choose from all, {', '.join(METHODS)}")
    return names


def _class_names(model, classes: int) -> list[str]:
    names = getattr(model, "class_names", None) or getattr(model, "scene_names", None)
    if not names or len(names) != classes:
        return [str(index) for index in range(classes)]
    return [str(name) for name in names]


def _cam_layer(model, size: int, layer: str | None) -> str:
    """``layer``, checked; by default ``layer4`` if the model has one, a class-token ViT's last
    block's first norm, else its last layer with a map (``gandissect.spatial``: token sequences
    count, read on the patch grid)."""
    import torch

    from gandissect.spatial import default_map_layer, map_layers
    from gandissect.torchutil import model_device

    layers = map_layers(model, torch.zeros(2, 3, size, size, device=model_device(model)))
    if layer is None:
        if not layers:
            raise UserError("the classifier has no layer with an (N, units, h, w) output or "
                            "token map for the CAM-family methods; leave them out of --methods")
        return default_map_layer(model, layers)
    if layer not in layers:
        raise UserError(f"the classifier has no convolutional layer or token map {layer!r}; "
                        f"choose one of {', '.join(layers)}")
    return layer


def _applicable(model, size: int, methods: list[str], layer: str | None, every: bool
                ) -> tuple[dict, dict[str, str]]:
    """``(bound methods, {method: reason})``: each method bound to ``model`` and tried on one
    grey image; one that does not apply is skipped with its reason when ``every`` (``--methods
    all``), else a ``UserError``."""
    import sys

    import torch

    from gandissect.attribute.applicability import refusal
    from gandissect.attribute.evaluate import METHODS
    from gandissect.torchutil import model_device

    probe = torch.zeros(1, 3, size, size, device=model_device(model))
    bound, skipped = {}, {}
    for method in methods:
        try:
            if METHODS[method].layer and layer is None:
                layer = _cam_layer(model, size, None)
            bound[method] = METHODS[method].build(model, layer)
            reason = refusal(bound[method], probe)
        except UserError as error:
            reason = str(error)
        if reason is None:
            continue
        if not every:
            raise UserError(f"{method} does not apply to this classifier: {reason}")
        bound.pop(method, None)
        skipped[method] = reason
        print(f"skipped {method}: {reason}", file=sys.stderr)
    if not bound:
        raise UserError("no attribution method applies to this classifier")
    return bound, skipped


def _map_path(relative: Path, method: str) -> Path:
    """Where an image's map is written, relative to OUT: beside its folder path, named after
    the whole file name, so ``a.png`` and ``a.jpg`` never share a map."""
    return relative.parent / f"{relative.name}.{method}.png"


def _run(args: argparse.Namespace) -> int:
    import torch
    from PIL import Image
    from tqdm import tqdm

    from gandissect.attribute.evaluate import METHODS, pixel_maps
    from gandissect.classifier_domain import check_classifier_domain
    from gandissect.fileio import FolderLock, save_image, writable_folder, write_json
    from gandissect.models.inputs import preprocess_inside
    from gandissect.models.specs import resolve_classifier_and_preprocess
    from gandissect.netdissect.folder import image_files, load_image
    from gandissect.torchutil import model_device
    from gandissect.visualize import overlay

    methods = _method_names(args.methods)
    every = args.methods.strip() == "all"
    folder = Path(args.images).expanduser()
    files = image_files(folder)
    for path in files:  # an unreadable file fails here, before any work
        load_image(path, 8)
    out = writable_folder(args.out, "--out folder")
    model = preprocess_inside(*resolve_classifier_and_preprocess(args.classifier, args.weights,
                                                                 args.device)).eval()
    size = int(getattr(model, "input_size", None) or 64)
    layer = (_cam_layer(model, size, args.layer)
             if any(METHODS[m].layer for m in methods) and (args.layer or not every)
             else args.layer)
    bound, skipped = _applicable(model, size, methods, layer, every)
    methods = list(bound)
    layer = next((b.layer for m, b in bound.items() if METHODS[m].layer), layer)
    device = model_device(model)
    out.mkdir(parents=True, exist_ok=True)
    records, names, warnings = [], None, []
    with FolderLock(out, what="--out folder"):
        bar = tqdm(total=len(files) * len(methods), disable=args.quiet, desc="attribute",
                   unit="map")
        for path in files:
            image = load_image(path, size)
            x = image[None].to(device)
            with torch.no_grad():
                probabilities = torch.softmax(model(x)[0].float(), 0).cpu()
            names = names or _class_names(model, probabilities.numel())
            target = int(probabilities.argmax())
            relative = path.relative_to(folder)
            domain = check_classifier_domain(model, x, args.classifier)
            if domain.warning(0):
                warnings.append(f"{relative.as_posix()}: {domain.warning(0)}")
            maps = {}
            for method in methods:
                bar.set_postfix_str(f"{path.name} {method}")
                spec = METHODS[method]
                options = {k: v for k, v in spec.options.items() if k != "return_error"}
                raw = bound[method].attribute(x, target=target, **options)
                pixel_map = pixel_maps(raw.detach().float().cpu(), (size, size),
                                       spec.pixel_map)[0]
                picture = overlay(image, pixel_map, bar_height=0,
                                  mode="signed" if bool((pixel_map < 0).any()) else "absolute")
                maps[method] = _map_path(relative, method).as_posix()
                save_image(out / maps[method], Image.fromarray(picture))
                bar.update()
            records.append({"file": relative.as_posix(), "predicted": names[target],
                            "class_index": target,
                            "probability": float(probabilities[target]), "maps": maps,
                            "domain": {"feature_shift": domain.feature_shift[0],
                                       "verdict": domain.verdicts[0]}})
        bar.close()
        for warning in warnings:
            print(f"warning: {warning}", file=sys.stderr)
        result = {"classifier": args.classifier, "input_size": size, "layer": layer,
                  "images": records, "skipped": skipped,
                  "domain": {"bar": domain.bar, "unit": domain.unit, "layers": domain.layers,
                             "reference": domain.reference,
                             "out_of_domain": [r["file"] for r in records
                                               if r["domain"]["verdict"] == "out of domain"]}}
        write_json(out / INDEX, result)
    if args.json:
        import json

        print(json.dumps(result))
    else:
        for record in records:
            print(f"{record['file']}: {record['predicted']} ({record['probability']:.3f})")
        print(f"wrote {len(records) * len(methods)} maps and {out / INDEX}")
    return 0


def register(commands) -> None:
    """Add ``attribute``."""
    parser = commands.add_parser(
        "attribute", help="a classifier's prediction and attribution maps for a folder of images",
        description="For each image of a folder (resized to the classifier's input size): the "
                    "predicted class, its probability, and each method's map of that class as "
                    f"an overlay PNG; an index in OUT/{INDEX}.")
    add_classifier_arguments(parser)
    parser.add_argument("--images", required=True, metavar="DIR",
                        help="folder of .jpg / .jpeg / .png images (searched recursively)")
    parser.add_argument("--methods", default="all",
                        help=f"'all' (default) or comma-separated: {', '.join(METHOD_NAMES)}")
    parser.add_argument("--layer", default=None,
                        help="layer of the CAM-family methods (default layer4; in a ViT with "
                             "a class token its last block's first norm; else the last layer "
                             "with a map)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--json", action="store_true",
                        help=f"print {INDEX}'s object on stdout")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_device_argument(parser)
    parser.set_defaults(run=_run)
