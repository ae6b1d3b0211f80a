"""``gandissect app``: start the Gradio app (thin: it turns the options into an
``AppConfig`` and calls ``gandissect.app.ui.serve``). ``python -m gandissect.app`` takes the
same options.

    gandissect app [--host 127.0.0.1 --port 7860 --generator sceneworld --segmenter sceneworld
        --segmenter-weights FILE --classifier sceneworld ... --dataset sceneworld|masks:DIR
        --layer layer4 --dissection DIR --samples 1000 --seed 1 --cache DIR --canvas 512
        --device cpu]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from gandissect.cli.common import add_device_argument, add_generator_arguments
from gandissect.errors import UserError
from gandissect.paths import app_cache_dir

__all__ = ["register", "config_from_args"]


def config_from_args(args: argparse.Namespace):
    """The ``gandissect.app.workspace.AppConfig`` the options describe."""
    from gandissect.app.workspace import AppConfig

    if args.port is not None and not 0 < args.port < 65536:
        raise UserError(f"--port must lie in [1, 65535], got {args.port}")
    if args.samples < 1:
        raise UserError("--samples must be at least 1")
    if args.canvas < 64:
        raise UserError("--canvas must be at least 64 pixels")
    classifiers = args.classifier or ["sceneworld"]
    weights = {}
    if args.weights is not None:
        from gandissect.models.loaders.plugins import is_factory_spec

        takers = [c for c in classifiers if c.startswith("torchvision:") or is_factory_spec(c)]
        if len(takers) != 1:
            raise UserError(f"--weights belongs to one torchvision:ARCH or plug-in classifier; "
                            f"this app has {len(takers)} ({', '.join(takers) or 'none'})")
        weights = {takers[0]: args.weights}
    if args.dataset != "sceneworld":  # a folder that does not fit is refused before the start
        from gandissect.netdissect.datasets import resolve_probe

        resolve_probe(args.dataset, None, seed=0, size=None)  # the seed is SceneWorld's
    return AppConfig(generator=args.generator, segmenter=args.segmenter,
                     segmenter_weights=args.segmenter_weights, dataset=args.dataset,
                     classifiers=classifiers, classifier_weights=weights, layer=args.layer,
                     dissection=args.dissection, samples=args.samples, seed=args.seed,
                     truncation=args.truncation, latent=args.latent,
                     class_index=args.class_index,
                     cache=Path(args.cache) if args.cache else app_cache_dir(), device=args.device,
                     canvas=args.canvas)


def _check_weights(config) -> None:
    """Load the classifier that ``--weights`` belongs to, so that a file that does not fit is
    refused in one line before the app starts (not later, inside the Classifiers tab)."""
    from gandissect.models.specs import resolve_classifier

    for spec, weights in config.classifier_weights.items():
        resolve_classifier(spec, weights, config.device)


def _run_app(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    _check_weights(config)
    from gandissect.app.ui import serve

    serve(config, args.host, args.port)
    return 0


def register(commands) -> None:
    """Add ``app``."""
    parser = commands.add_parser(
        "app", help="the Gradio app: paint to edit scenes, browse units, explain classifiers",
        description="Start the app in the browser (no network access: analytics off).")
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on")
    parser.add_argument("--port", type=int, default=7860, help="port to serve on")
    add_generator_arguments(parser)
    parser.add_argument("--classifier", action="append",
                        help="a classifier for the Classifiers tab (repeat for several; "
                             "default sceneworld); same spellings as gandissect netdissect")
    parser.add_argument("--weights", default=None,
                        help="state dict file (.pth, .pt, .safetensors) for the one "
                             "torchvision:ARCH or plug-in classifier")
    parser.add_argument("--dataset", default="sceneworld",
                        help="the Classifiers tab's probe images for Network Dissection: "
                             "sceneworld (held-out scenes), masks:DIR (your images with your "
                             "label PNGs), broden:DIR or folder:DIR (labelled by the shipped "
                             "segmenter); as gandissect netdissect --dataset")
    parser.add_argument("--layer", default="layer4", help="the generator layer to paint on")
    parser.add_argument("--dissection", default=None,
                        help="a `gandissect dissect` folder of this generator and layer "
                             "(default: the shipped one, or computed once and cached)")
    parser.add_argument("--samples", type=int, default=1000,
                        help="latents to dissect when the app computes the dissection")
    parser.add_argument("--seed", type=int, default=1, help="their latent seed")
    parser.add_argument("--cache", default=None,
                        help="cache folder for the dissection, learned causal effects and the "
                             "log (default $XDG_CACHE_HOME/gandissect/app, else "
                             "~/.cache/gandissect/app)")
    parser.add_argument("--canvas", type=int, default=512,
                        help="about the painting canvas's side in pixels (the scene enlarged "
                             "by a whole factor)")
    add_device_argument(parser)
    parser.set_defaults(run=_run_app)

