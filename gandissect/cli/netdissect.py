"""``gandissect netdissect``: Network Dissection of a classifier's layers (thin: it checks the
options and calls ``gandissect.netdissect``).

    gandissect netdissect --classifier sceneworld --layer layer4 --out out/nd
        [--dataset sceneworld|broden:DIR|folder:DIR|masks:DIR --segmenter sceneworld
         --segmenter-weights FILE --n N --seed S
         --size PX --quantile 0.995 --min-iou 0.04 --top-k 12 --batch B --images 8 --no-html
         --formulas 3 --formula-beam 5]

``--classifier``: ``sceneworld`` (the shipped one), a ``.safetensors`` file written by this
project (e.g. a training snapshot), ``torchvision:ARCH`` (``--weights`` for trained weights;
inputs normalised as the model declares) or ``package.module:factory``
(``gandissect.models.specs``). ``--dataset folder:DIR`` dissects on your own images, labelled
by ``--segmenter`` (``gandissect.netdissect.folder``); ``--dataset masks:DIR`` on your own
images with your own label PNGs (``gandissect.netdissect.masks``). ``--formulas N`` also labels
each unit with a formula of up to N concepts (AND, OR, AND NOT; ``gandissect.netdissect.formulas``):
``formula`` and ``formula_iou`` in ``dissect.json`` and the report.
"""

from __future__ import annotations

import argparse
from contextlib import nullcontext
from pathlib import Path

from gandissect.cli.common import add_classifier_arguments, add_device_argument
from gandissect.errors import UserError

__all__ = ["add_probe_arguments", "register"]

# ``gandissect.netdissect.datasets.DATASETS``
DATASETS = "sceneworld, broden:DIR, folder:DIR or masks:DIR"


def _run(args: argparse.Namespace) -> int:
    from gandissect.dissect import check_layers
    from gandissect.fileio import FolderLock, writable_folder
    from gandissect.models.specs import resolve_classifier_and_preprocess
    from gandissect.netdissect import netdissect
    from gandissect.netdissect.datasets import resolve_probe

    if args.n is not None and args.n < 1:
        raise UserError(f"--n must be at least 1, got {args.n}")
    if args.images < 0:
        raise UserError("--images must be 0 or more")
    if args.formulas is not None:
        from gandissect.netdissect.formulas import check_formula_settings

        check_formula_settings(args.formulas, args.formula_beam)
    out = writable_folder(args.out)
    model, preprocess = resolve_classifier_and_preprocess(args.classifier, args.weights,
                                                          args.device)
    layers = check_layers(model, args.layer or ["layer4"])
    probe = resolve_probe(args.dataset, args.n, args.seed, args.size, args.segmenter,
                          args.device, getattr(model, "input_size", None),
                          args.segmenter_weights)
    cache = Path(args.cache) if args.cache else out / "cache"
    with (nullcontext() if cache.resolve() == out.resolve()  # netdissect locks its cache
          else FolderLock(out, what="--out folder")):
        result = netdissect(model, layers, probe, args.quantile, args.min_iou, args.top_k,
                            args.batch, preprocess, progress=not args.quiet, cache_dir=cache,
                            checkpoint_seconds=args.checkpoint_seconds)
        if args.formulas is not None:
            from gandissect.netdissect.formulas import label_formulas

            label_formulas(result, model, probe, args.formulas, args.formula_beam, preprocess,
                           progress=not args.quiet)
        _write(args, result, out, model, probe, preprocess)
    return 0


def _write(args, result, out: Path, model, probe, preprocess) -> None:
    from gandissect.netdissect import write_netdissect_report

    result.settings.update(classifier_name=args.classifier)
    path = write_netdissect_report(result, out, model, probe, preprocess, html=not args.no_html,
                                   images=min(args.images, args.top_k))
    for layer, summary in result.settings["summary"].items():
        print(f"{layer}: {summary['detectors']} of {summary['units']} units are detectors, "
              f"{summary['unique_detectors']} unique concepts")
    print(f"wrote {path}" + ("" if args.no_html else f" and {out / 'report.html'}"))


def add_probe_arguments(parser: argparse.ArgumentParser, n: int | None) -> None:
    """The options ``netdissect`` and ``netdissect-experiment`` share: the classifier, its
    layers, the probe size and seed, the threshold and the output folder."""
    add_classifier_arguments(parser)
    parser.add_argument("--layer", action="append",
                        help="layer to dissect (repeat for several)")
    parser.add_argument("--n", type=int, default=n,
                        help=f"number of probe images (default {n or '2000 / all of Broden'})")
    parser.add_argument("--seed", type=int, default=1001,
                        help="SceneWorld world seed (held out from training; default 1001)")
    parser.add_argument("--quantile", type=float, default=0.995,
                        help="per-unit threshold level (0.995: the top 0.5%%)")
    parser.add_argument("--min-iou", type=float, default=0.04, help="detector above this IoU")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def register(commands) -> None:
    """Add ``netdissect``."""
    parser = commands.add_parser(
        "netdissect", help="label each unit of a classifier's layers with the concept it detects",
        description="Network Dissection: threshold each unit at its top 0.5% level, upsample "
                    "to the probe labels and score it against every concept by IoU.")
    add_probe_arguments(parser, None)
    parser.add_argument("--dataset", default="sceneworld",
                        help=f"probe images: {DATASETS} (folder: your own .jpg / .png images, "
                             "labelled by --segmenter; masks: with your own label PNGs)")
    parser.add_argument("--segmenter", default=None,
                        help="the segmenter that labels a folder: dataset (default sceneworld; "
                             "same spellings as for gandissect dissect)")
    parser.add_argument("--segmenter-weights", default=None, metavar="FILE",
                        help="state dict file for a torchvision:ARCH or plug-in --segmenter")
    parser.add_argument("--size", type=int, default=None,
                        help="image size (SceneWorld: rendered at it, default 64; Broden: "
                             "resized to it; folder: resized to it, default the classifier's "
                             "input size)")
    parser.add_argument("--top-k", type=int, default=12, help="top images kept per unit")
    parser.add_argument("--batch", type=int, default=32, help="images per batch")
    parser.add_argument("--images", type=int, default=8, help="top images shown per unit")
    parser.add_argument("--no-html", action="store_true", help="write only the JSON and stats")
    parser.add_argument("--formulas", type=int, default=None, metavar="N",
                        help="also label each unit with a formula of up to N concepts (AND, "
                             "OR, AND NOT; 1 to 5; beam search by IoU, Mu and Andreas 2020)")
    parser.add_argument("--formula-beam", type=int, default=5,
                        help="formulas kept per step of the --formulas search (default 5)")
    parser.add_argument("--cache", default=None,
                        help="folder for the resumable statistics (OUT/cache)")
    parser.add_argument("--checkpoint-seconds", type=float, default=30.0,
                        help="save the statistics at least this often (a killed run resumes)")
    add_device_argument(parser)
    parser.set_defaults(run=_run)
