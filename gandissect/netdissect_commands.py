"""``gandissect netdissect`` and ``gandissect netdissect-experiment``: Network Dissection of
classifiers from the command line (thin: it validates and calls ``gandissect.netdissect``).

    gandissect netdissect --classifier sceneworld --layer layer4 --out out/nd
        [--dataset sceneworld|broden:DIR|folder:DIR --segmenter sceneworld --n N --seed S
         --size PX --quantile 0.995 --min-iou 0.04 --top-k 12 --batch B --images 8 --no-html]
    gandissect netdissect-experiment rotation|checkpoints|layers --out DIR [--n 1000 --seed 1001
        --layer L ... --classifier NAME]
        rotation: [--layer layer4 --alphas 0,0.2,...,1 --rotations 3 --rotation-seed 0]
        checkpoints: [--checkpoints models/classifier_checkpoints --no-init]

``--classifier``: ``sceneworld`` (the shipped one), a ``.safetensors`` file written by this
project (e.g. a training snapshot), ``torchvision:ARCH`` (``--weights`` for trained weights;
inputs normalised as the model declares) or ``package.module:factory``
(``gandissect.models.specs``). ``--dataset folder:DIR`` dissects on your own images, labelled
by ``--segmenter`` (``gandissect.netdissect.folder``). Experiments write
``DIR/netdissect_<name>.json`` and ``DIR/netdissect_<name>.png``.

Wire it in with ``from gandissect import netdissect_commands; netdissect_commands.register(c)``.
"""

from __future__ import annotations

import argparse
import json
from contextlib import nullcontext
from pathlib import Path

from gandissect.cli import add_device_argument

__all__ = ["register", "add_classifier_arguments", "load_classifier_spec", "probe_from_spec"]


def load_classifier_spec(spec: str, weights: str | None = None, device: str = "cpu"):
    """``(model, preprocess)`` for a ``--classifier`` spelling (see the module docstring)."""
    from gandissect.models.specs import resolve_classifier
    from gandissect.netdissect import preprocess_for

    model = resolve_classifier(spec, weights, device)
    return model, preprocess_for(model, spec)


DATASETS = "sceneworld, broden:DIR or folder:DIR"


def probe_from_spec(spec: str, n: int | None, seed: int, size: int | None,
                    segmenter: str | None = None, device: str = "cpu",
                    input_size: int | None = None):
    """The probe set a ``--dataset`` spelling names: ``sceneworld``, ``broden:DIR`` or
    ``folder:DIR`` (images labelled by ``segmenter``, default the shipped one, resized to
    ``size``, else to the classifier's ``input_size``, else 64)."""
    from gandissect.netdissect import BrodenProbe, FolderProbe, SceneWorldProbe

    if segmenter is not None and not spec.startswith("folder:"):
        raise ValueError("--segmenter labels a folder:DIR dataset; SceneWorld and Broden bring "
                         "their own labels")
    if spec == "sceneworld":
        from gandissect.evaluate.metrics import check_held_out

        check_held_out(seed)
        return SceneWorldProbe(seed, 2000 if n is None else n, size or 64)
    kind, _, directory = spec.partition(":")
    if kind == "broden" and directory:
        return BrodenProbe(directory, n, size)
    if kind == "folder" and directory:
        from gandissect.models.specs import resolve_segmenter

        return FolderProbe(directory, resolve_segmenter(segmenter or "sceneworld", device),
                           size or input_size or 64, n)
    raise ValueError(f"unknown dataset {spec!r}: use {DATASETS}")


def _run_netdissect(args: argparse.Namespace) -> int:
    from gandissect.dissect import check_layers
    from gandissect.dissect_commands import _writable_folder
    from gandissect.fileio import FolderLock
    from gandissect.netdissect import netdissect

    if args.n is not None and args.n < 1:
        raise ValueError(f"--n must be at least 1, got {args.n}")
    if args.images < 0:
        raise ValueError("--images must be 0 or more")
    out = Path(args.out)
    _writable_folder(out)
    model, preprocess = load_classifier_spec(args.classifier, args.weights, args.device)
    layers = check_layers(model, args.layer or ["layer4"])
    probe = probe_from_spec(args.dataset, args.n, args.seed, args.size, args.segmenter,
                            args.device, getattr(model, "input_size", None))
    cache = Path(args.cache) if args.cache else out / "cache"
    with (nullcontext() if cache.resolve() == out.resolve()  # netdissect locks its cache
          else FolderLock(out, what="--out folder")):
        result = netdissect(model, layers, probe, args.quantile, args.min_iou, args.top_k,
                            args.batch, preprocess, progress=not args.quiet, cache_dir=cache,
                            checkpoint_seconds=args.checkpoint_seconds)
        _write_netdissect(args, result, out, model, probe, preprocess)
    return 0


def _write_netdissect(args, result, out: Path, model, probe, preprocess) -> None:
    from gandissect.netdissect import write_netdissect_report

    result.settings.update(classifier_name=args.classifier)
    path = write_netdissect_report(result, out, model, probe, preprocess, html=not args.no_html,
                                   images=min(args.images, args.top_k))
    for layer, summary in result.settings["summary"].items():
        print(f"{layer}: {summary['detectors']} of {summary['units']} units are detectors, "
              f"{summary['unique_detectors']} unique concepts")
    print(f"wrote {path}" + ("" if args.no_html else f" and {out / 'report.html'}"))


def _run_experiment(args: argparse.Namespace) -> int:
    from gandissect.dissect.core import check_settings
    from gandissect.dissect_commands import _writable_folder
    from gandissect.evaluate.metrics import check_held_out
    from gandissect.fileio import write_json
    from gandissect.netdissect import experiments

    check_settings(args.n, args.quantile, batch=args.batch, min_iou=args.min_iou)
    check_held_out(args.seed)
    out = Path(args.out)
    _writable_folder(out)
    common = dict(n=args.n, seed=args.seed, quantile=args.quantile, min_iou=args.min_iou,
                  batch=args.batch, progress=not args.quiet)
    if args.experiment == "checkpoints":
        result = experiments.checkpoints_experiment(args.checkpoints,
                                                    args.layer or experiments.LAYERS,
                                                    initial=not args.no_init, **common)
        plot = experiments.plot_checkpoints
    else:
        model, preprocess = load_classifier_spec(args.classifier, args.weights)
        if args.experiment == "rotation":
            layers = args.layer or ["layer4"]
            if len(layers) != 1:
                raise ValueError("the rotation experiment rotates one layer; give one --layer")
            alphas = [float(a) for a in args.alphas.split(",")]
            if any(not 0 <= a <= 1 for a in alphas):
                raise ValueError(f"--alphas must lie in [0, 1], got {args.alphas}")
            result = experiments.rotation_experiment(model, layers[0], alphas,
                                                     rotation_seed=args.rotation_seed,
                                                     rotations=args.rotations,
                                                     preprocess=preprocess, **common)
            plot = experiments.plot_rotation
        else:
            result = experiments.layers_experiment(model, args.layer or experiments.LAYERS,
                                                   preprocess=preprocess, **common)
            plot = experiments.plot_layers
        result["classifier"] = args.classifier
    stem = out / f"netdissect_{args.experiment}"
    write_json(stem.with_suffix(".json"), result)
    plot(result, stem.with_suffix(".png"))
    print(json.dumps(_headline(result)))
    print(f"wrote {stem.with_suffix('.json')} and {stem.with_suffix('.png')}")
    return 0


def _headline(result: dict) -> dict:
    """The numbers worth a line on the terminal."""
    if result["experiment"] == "rotation":
        return {f"alpha={c['alpha']:g}": {k: c[f"{k}_mean"] for k in ("top1", "detectors",
                                                                     "unique_detectors")}
                for c in result["curve"]}
    if result["experiment"] == "checkpoints":
        return {f"{r['images_seen']}": {"top1": r["top1"], **{
            layer: [s["detectors"], s["unique_detectors"]] for layer, s in r["layers"].items()}}
            for r in result["runs"]}
    return {layer: [s["detectors"], s["unique_detectors"], s["units"]]
            for layer, s in result["summary"].items()}


def add_classifier_arguments(parser: argparse.ArgumentParser) -> None:
    """``--classifier`` and ``--weights``, as every command that takes a classifier spells them."""
    from gandissect.models.specs import CLASSIFIER_SCHEMES, spellings

    parser.add_argument("--classifier", default="sceneworld",
                        help=f"the classifier: {spellings(CLASSIFIER_SCHEMES)}")
    parser.add_argument("--weights", default=None,
                        help="state dict file (.pth, .pt, .safetensors) for a torchvision: or "
                             "plug-in classifier")


def _common(parser: argparse.ArgumentParser, n: int | None) -> None:
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
    """Add ``netdissect`` and ``netdissect-experiment`` to an argparse sub-parsers action."""
    parser = commands.add_parser(
        "netdissect", help="label each unit of a classifier's layers with the concept it detects",
        description="Network Dissection: threshold each unit at its top 0.5% level, upsample "
                    "to the probe labels and score it against every concept by IoU.")
    _common(parser, None)
    parser.add_argument("--dataset", default="sceneworld",
                        help=f"probe images: {DATASETS} (your own .jpg / .png images, "
                             "labelled by --segmenter)")
    parser.add_argument("--segmenter", default=None,
                        help="the segmenter that labels a folder: dataset (default sceneworld; "
                             "same spellings as for gandissect dissect)")
    parser.add_argument("--size", type=int, default=None,
                        help="image size (SceneWorld: rendered at it, default 64; Broden: "
                             "resized to it; folder: resized to it, default the classifier's "
                             "input size)")
    parser.add_argument("--top-k", type=int, default=12, help="top images kept per unit")
    parser.add_argument("--batch", type=int, default=32, help="images per batch")
    parser.add_argument("--images", type=int, default=8, help="top images shown per unit")
    parser.add_argument("--no-html", action="store_true", help="write only the JSON and stats")
    parser.add_argument("--cache", default=None,
                        help="folder for the resumable statistics (OUT/cache)")
    parser.add_argument("--checkpoint-seconds", type=float, default=30.0,
                        help="save the statistics at least this often (a killed run resumes)")
    add_device_argument(parser)
    parser.set_defaults(run=_run_netdissect)

    experiment = commands.add_parser(
        "netdissect-experiment", help="Network Dissection experiments (JSON + PNG plot)",
        description="rotation: a random rotation of a layer's basis keeps accuracy but not "
                    "detectors; checkpoints: detectors over training snapshots; layers: "
                    "detectors layer by layer.")
    experiment.add_argument("experiment", choices=["rotation", "checkpoints", "layers"])
    _common(experiment, 1000)
    experiment.add_argument("--alphas", default="0,0.2,0.4,0.6,0.8,1",
                            help="rotation: comma-separated fractions of the rotation")
    experiment.add_argument("--rotation-seed", type=int, default=0,
                            help="rotation: seed of the first random Q")
    experiment.add_argument("--rotations", type=int, default=3,
                            help="rotation: number of random Q averaged (seeds from "
                                 "--rotation-seed on)")
    experiment.add_argument("--checkpoints", default=None,
                            help="checkpoints: folder of images_NNNNNNNN.safetensors "
                                 "(default models/classifier_checkpoints)")
    experiment.add_argument("--no-init", action="store_true",
                            help="checkpoints: leave out the randomly initialised baseline")
    experiment.add_argument("--batch", type=int, default=50, help="images per batch")
    experiment.set_defaults(run=_run_experiment)
