"""``gandissect attribute``: a classifier's prediction for each image of a folder, and each
attribution method's map of it as an overlay PNG (thin: it checks the options and calls
``gandissect.attribute``).

    gandissect attribute --classifier sceneworld --images photos/ --methods gradcam,saliency
        --out maps [--weights FILE --layer layer4 --device cpu] [--json] [--quiet]

Images (``.jpg``, ``.jpeg``, ``.png``, found recursively) are resized to the classifier's
declared input size (shorter side, then the centre square; 64 for the shipped one) and
normalised as it declares; every file is read once before any work, so an unreadable one
fails at once. Each map explains the predicted class; ``OUT/attributions.json``
holds ``{"images": [{"file", "predicted", "probability", "maps": {method: png}}]}`` (paths
relative to the image folder and to OUT), written once every map is. Class names come from the
classifier's ``class_names`` attribute (a list, one name per output), else the index.
"""

from __future__ import annotations

import argparse
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
    """``layer``, checked; by default ``layer4`` if the model has one, else its last layer with
    an ``(N, units, h, w)`` output."""
    import torch

    from gandissect.hooks import layer_shapes
    from gandissect.torchutil import model_device

    probe = torch.zeros(1, 3, size, size, device=model_device(model))
    layers = [name for name, shape in layer_shapes(model, probe).items()
              if isinstance(shape, tuple) and len(shape) == 4]
    if layer is None:
        if not layers:
            raise UserError("the classifier has no layer with an (N, units, h, w) output for "
                            "the CAM-family methods; leave them out of --methods")
        return "layer4" if "layer4" in layers else layers[-1]
    if layer not in layers:
        raise UserError(f"the classifier has no convolutional layer {layer!r}; choose one of "
                        f"{', '.join(layers)}")
    return layer


def _map_path(relative: Path, method: str) -> Path:
    """Where an image's map is written, relative to OUT: beside its folder path, named after
    the whole file name, so ``a.png`` and ``a.jpg`` never share a map."""
    return relative.parent / f"{relative.name}.{method}.png"


def _run(args: argparse.Namespace) -> int:
    import torch
    from PIL import Image
    from tqdm import tqdm

    from gandissect.attribute.evaluate import METHODS, pixel_maps
    from gandissect.fileio import FolderLock, save_image, writable_folder, write_json
    from gandissect.models.inputs import preprocess_inside
    from gandissect.models.specs import resolve_classifier_and_preprocess
    from gandissect.netdissect.folder import image_files, load_image
    from gandissect.torchutil import model_device
    from gandissect.visualize import overlay

    methods = _method_names(args.methods)
    folder = Path(args.images).expanduser()
    files = image_files(folder)
    for path in files:  # an unreadable file fails here, before any work
        load_image(path, 8)
    out = writable_folder(args.out, "--out folder")
    model = preprocess_inside(*resolve_classifier_and_preprocess(args.classifier, args.weights,
                                                                 args.device)).eval()
    size = int(getattr(model, "input_size", None) or 64)
    layer = (_cam_layer(model, size, args.layer) if any(METHODS[m].layer for m in methods)
             else args.layer)
    device = model_device(model)
    out.mkdir(parents=True, exist_ok=True)
    records, names = [], None
    with FolderLock(out, what="--out folder"):
        bound = {m: METHODS[m].build(model, layer) for m in methods}
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
                            "probability": float(probabilities[target]), "maps": maps})
        bar.close()
        result = {"classifier": args.classifier, "input_size": size, "layer": layer,
                  "images": records}
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
                        help="layer of the CAM-family methods (default layer4, else the last "
                             "convolutional layer)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--json", action="store_true",
                        help=f"print {INDEX}'s object on stdout")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_device_argument(parser)
    parser.set_defaults(run=_run)
