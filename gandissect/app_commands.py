"""``gandissect app``: start the Gradio app (thin: it reads the options, opens the workspace
and launches ``app.ui``). ``python -m app`` takes the same options.

    gandissect app [--host 127.0.0.1 --port 7860 --generator sceneworld --segmenter sceneworld
        --classifier sceneworld ... --layer layer4 --dissection DIR --samples 1000 --seed 1
        --cache DIR --canvas 512 --device cpu]

Wire it in with ``from gandissect import app_commands; app_commands.register(commands)``.
"""

from __future__ import annotations

import argparse
import sys

from gandissect.ace_commands import DEFAULT_CACHE
from gandissect.cli import add_device_argument

__all__ = ["register", "config_from_args"]


def config_from_args(args: argparse.Namespace):
    """The ``app.workspace.AppConfig`` the options describe."""
    from pathlib import Path

    from app.workspace import AppConfig

    if args.port is not None and not 0 < args.port < 65536:
        raise ValueError(f"--port must lie in [1, 65535], got {args.port}")
    if args.samples < 1:
        raise ValueError("--samples must be at least 1")
    if args.canvas < 64:
        raise ValueError("--canvas must be at least 64 pixels")
    classifiers = args.classifier or ["sceneworld"]
    weights = {}
    if args.weights is not None:
        from gandissect.models.loaders.plugins import is_factory_spec

        takers = [c for c in classifiers if c.startswith("torchvision:") or is_factory_spec(c)]
        if len(takers) != 1:
            raise ValueError(f"--weights belongs to one torchvision:ARCH or plug-in classifier; "
                             f"this app has {len(takers)} ({', '.join(takers) or 'none'})")
        weights = {takers[0]: args.weights}
    return AppConfig(generator=args.generator, segmenter=args.segmenter,
                     classifiers=classifiers, classifier_weights=weights, layer=args.layer,
                     dissection=args.dissection, samples=args.samples, seed=args.seed,
                     truncation=args.truncation, cache=Path(args.cache), device=args.device,
                     canvas=args.canvas)


def _run_app(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    from app.ui import build_app, launch
    from app.workspace import Workspace

    print(f"gandissect app: loading {config.generator} and its dissection ...", file=sys.stderr)
    workspace = Workspace.open(config)
    if workspace.problem:
        print(f"gandissect app: {workspace.problem}", file=sys.stderr)
    else:
        print(f"gandissect app: dissection {workspace.scenes.source} (cache: {config.cache})",
              file=sys.stderr)
    print(f"gandissect app: open http://{args.host}:{args.port} in a browser", file=sys.stderr)
    try:
        launch(build_app(workspace), args.host, args.port)
    finally:
        workspace.close()
    return 0


def register(commands) -> None:
    """Add ``app``."""
    from gandissect.models.specs import add_generator_arguments

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
    parser.add_argument("--layer", default="layer4", help="the generator layer to paint on")
    parser.add_argument("--dissection", default=None,
                        help="a `gandissect dissect` folder of this generator and layer "
                             "(default: the shipped one, or computed once and cached)")
    parser.add_argument("--samples", type=int, default=1000,
                        help="latents to dissect when the app computes the dissection")
    parser.add_argument("--seed", type=int, default=1, help="their latent seed")
    parser.add_argument("--cache", default=str(DEFAULT_CACHE / "app"),
                        help="cache folder for the dissection and learned causal effects")
    parser.add_argument("--canvas", type=int, default=512,
                        help="about the painting canvas's side in pixels (the scene enlarged "
                             "by a whole factor)")
    add_device_argument(parser)
    parser.set_defaults(run=_run_app)

