"""``gandissect layers MODEL``: every layer of a model and its output shape."""

from __future__ import annotations

import argparse

from gandissect.models.spellings import spellings


def _run(args: argparse.Namespace) -> int:
    import torch

    from gandissect.hooks import get_layer, layer_shapes
    from gandissect.models.specs import resolve_classifier

    model = resolve_classifier(args.model, args.weights)
    x = torch.zeros(1, 3, args.size, args.size)
    for name, shape in layer_shapes(model, x).items():
        print(f"{name:40s} {type(get_layer(model, name)).__name__:24s} {shape}")
    return 0


def register(commands) -> None:
    """Add ``layers``."""
    parser = commands.add_parser("layers", help="list a model's layers and their output shapes")
    parser.add_argument("model", help=f"the model: {spellings('classifier')}")
    parser.add_argument("--weights", help="a state-dict file (loaded without running code)")
    parser.add_argument("--size", type=int, default=64, help="input image size for the trace")
    parser.set_defaults(run=_run)
