"""``gandissect netdissect-experiment rotation|checkpoints|layers``: the three experiments of
Network Dissection, each a JSON and a PNG plot (``gandissect.netdissect.experiments``).

    gandissect netdissect-experiment rotation|checkpoints|layers --out DIR [--n 1000 --seed 1001
        --layer L ... --classifier NAME]
        rotation: [--layer layer4 --alphas 0,0.2,...,1 --rotations 3 --rotation-seed 0]
        checkpoints: [--checkpoints models/classifier_checkpoints --no-init]

They write ``DIR/netdissect_<name>.json`` and ``DIR/netdissect_<name>.png``.
"""

from __future__ import annotations

import argparse
import json

from gandissect.cli.netdissect import add_probe_arguments
from gandissect.errors import UserError

__all__ = ["register"]


def _alphas(text: str) -> list[float]:
    try:
        alphas = [float(a) for a in text.split(",")]
    except ValueError:
        raise UserError(f"--alphas takes comma-separated numbers, got {text!r}") from None
    if any(not 0 <= a <= 1 for a in alphas):
        raise UserError(f"--alphas must lie in [0, 1], got {text}")
    return alphas


def _run(args: argparse.Namespace) -> int:
    from gandissect.dissect.core import check_settings
    from gandissect.evaluate.metrics import check_held_out
    from gandissect.fileio import writable_folder, write_json
    from gandissect.models.specs import resolve_classifier_and_preprocess
    from gandissect.netdissect import experiments

    check_settings(args.n, args.quantile, batch=args.batch, min_iou=args.min_iou)
    check_held_out(args.seed)
    alphas = _alphas(args.alphas) if args.experiment == "rotation" else None
    out = writable_folder(args.out)
    common = dict(n=args.n, seed=args.seed, quantile=args.quantile, min_iou=args.min_iou,
                  batch=args.batch, progress=not args.quiet)
    if args.experiment == "checkpoints":
        result = experiments.checkpoints_experiment(args.checkpoints,
                                                    args.layer or experiments.LAYERS,
                                                    initial=not args.no_init, **common)
        plot = experiments.plot_checkpoints
    else:
        model, preprocess = resolve_classifier_and_preprocess(args.classifier, args.weights)
        if args.experiment == "rotation":
            layers = args.layer or ["layer4"]
            if len(layers) != 1:
                raise UserError("the rotation experiment rotates one layer; give one --layer")
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


def register(commands) -> None:
    """Add ``netdissect-experiment``."""
    experiment = commands.add_parser(
        "netdissect-experiment", help="Network Dissection experiments (JSON + PNG plot)",
        description="rotation: a random rotation of a layer's basis keeps accuracy but not "
                    "detectors; checkpoints: detectors over training snapshots; layers: "
                    "detectors layer by layer.")
    experiment.add_argument("experiment", choices=["rotation", "checkpoints", "layers"])
    add_probe_arguments(experiment, 1000)
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
    experiment.set_defaults(run=_run)
