"""``gandissect layers MODEL``: every layer of a generator, classifier or segmenter and its
output shape.

The kind of model comes from its spelling (``proggan:`` is a generator, ``torchvision:`` a
classifier, ...), from a project weights file's config, or from what a plug-in factory returns
(an object with ``segment`` is a segmenter, one with ``z_dim`` a generator); ``--kind`` says it
where the spelling does not (``sceneworld`` names all three: the classifier unless told).
A generator is traced from one latent of its own law; a classifier at its declared
``input_size`` (``--size`` overrides it, 64 when it declares none); a segmenter at ``--size``.
A classifier's layer whose output is read as a map other than itself (a vision transformer's
tokens on the patch grid, a channels-last stage: ``gandissect.spatial``) shows that map,
``-> map (C, h, w)``: the layers the CAM family and Network Dissection take.
"""

from __future__ import annotations

import argparse

from gandissect.cli.common import add_latent_arguments
from gandissect.models.spellings import SCHEMES, SHIPPED, spellings

KINDS = ("generator", "classifier", "segmenter")


def spelled_kind(spec: str) -> str | None:
    """The kind of model a spelling's scheme names; a scheme of several kinds names a
    classifier, except torchvision's segmentation architectures and ``hf:`` folders of
    segmentation models."""
    scheme, colon, target = spec.partition(":")
    kinds = [kind for kind in KINDS if colon and scheme in SCHEMES[kind]]
    if len(kinds) > 1 and scheme == "hf":  # the folder's config.json says which
        from gandissect.models.loaders.hf_classifiers import folder_kind

        return folder_kind(target)
    if len(kinds) > 1:
        from gandissect.models.loaders.segmenters import TORCHVISION_SEGMENTERS

        segmenting = scheme == "torchvision" and target in TORCHVISION_SEGMENTERS
        return "segmenter" if segmenting else "classifier"
    return kinds[0] if kinds else None


def _model(args: argparse.Namespace):
    """``(kind, model)`` for the command line's MODEL, ``--kind`` and ``--weights``."""
    from gandissect.errors import UserError
    from gandissect.models import specs

    kind = args.kind or spelled_kind(args.model)
    if kind is None and args.model.endswith(".safetensors"):
        from gandissect.models.registry import architecture_kind

        kind = architecture_kind(args.model)
    if kind is None and args.model not in SHIPPED and specs.is_factory_spec(args.model) \
            and not any(args.model.partition(":")[0] in SCHEMES[k] for k in KINDS):
        made = specs.import_factory(args.model)()
        kind = ("segmenter" if callable(getattr(made, "segment", None)) else
                "generator" if getattr(made, "z_dim", None) else "classifier")
    kind = kind or "classifier"
    if args.weights is not None and kind == "generator":
        raise UserError(f"--weights applies to classifiers and segmenters; {args.model} is a "
                        "generator")
    if kind == "generator":
        generator = specs.resolve_generator(args.model)
        return kind, specs.configure_generator(generator, latent=args.latent,
                                               class_index=args.class_index)
    if kind == "segmenter":
        return kind, specs.resolve_segmenter(args.model, weights=args.weights)
    return kind, specs.resolve_classifier(args.model, args.weights)


def _segmenting(segmenter):
    """A module whose forward is ``segmenter.segment`` (``layer_shapes`` runs a module)."""
    import torch

    class Segmenting(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = segmenter

        def forward(self, images):
            return self.model.segment(images)

    return Segmenting()


def _run(args: argparse.Namespace) -> int:
    import torch

    from gandissect.dissect.latents import sample_latents
    from gandissect.errors import UserError
    from gandissect.hooks import get_layer, layer_shapes
    from gandissect.torchutil import model_device

    if args.size is not None and args.size < 1:
        raise UserError("--size must be a positive number of pixels")
    kind, model = _model(args)
    if kind == "generator":
        inputs = sample_latents(model, 0, [0])
        what = f"one latent ({model.z_dim} values)"
    else:
        size = args.size or (getattr(model, "input_size", None) if kind == "classifier"
                             else None) or 64
        inputs = torch.zeros(1, 3, int(size), int(size))
        what = f"a {size} px image"
    if not isinstance(model, torch.nn.Module):
        raise UserError(f"{args.model} is not a torch module: it has no layers to list")
    inputs = inputs.to(model_device(model))
    if kind == "segmenter":
        shapes = {name.removeprefix("model."): shape
                  for name, shape in layer_shapes(_segmenting(model), inputs).items()
                  if name != "model"}
    else:
        shapes = layer_shapes(model, inputs)
    maps = {}
    if kind == "classifier":
        from gandissect.spatial import map_layers

        maps = map_layers(model, inputs.expand(2, *inputs.shape[1:]))
    print(f"{args.model}: a {kind}, traced with {what}")
    for name, shape in shapes.items():
        as_map = (f" -> map {maps[name]}" if name in maps and shape[1:] != maps[name]
                  else "")
        print(f"{name:40s} {type(get_layer(model, name)).__name__:24s} {shape}{as_map}")
    return 0


def register(commands) -> None:
    """Add ``layers``."""
    parser = commands.add_parser(
        "layers", help="list a model's layers and their output shapes",
        description="Every layer of a generator, classifier or segmenter with its output shape: "
                    "the names --layer takes.")
    parser.add_argument("model", help=f"the model: a generator ({spellings('generator')}), a "
                                      "classifier or a segmenter")
    parser.add_argument("--kind", choices=KINDS, default=None,
                        help="what the model is, where its spelling does not say (sceneworld: "
                             "classifier unless told)")
    parser.add_argument("--weights", help="a classifier's or torchvision:ARCH segmenter's "
                                          "state-dict file (loaded without running code)")
    parser.add_argument("--size", type=int, default=None,
                        help="input image size for the trace (default: the classifier's "
                             "declared input size, else 64)")
    add_latent_arguments(parser)
    parser.set_defaults(run=_run)
