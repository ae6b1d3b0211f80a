"""What every command shares: the ``--device``, model and ``--json`` options, and how a result
is printed. Nothing here imports torch at import time, so ``--help`` stays fast."""

from __future__ import annotations

import argparse
import json

from gandissect.models.spellings import spellings

__all__ = ["add_classifier_arguments", "add_device_argument", "add_generator_arguments",
           "add_latent_arguments", "load_generator", "print_result"]


def print_result(result: dict, as_json: bool) -> None:
    """A command's result: one JSON object on stdout, or one ``key value`` line per entry."""
    if as_json:
        print(json.dumps(result))
        return
    width = max(map(len, result), default=0) + 2
    for key, value in result.items():
        print(f"{key:{width}s}{value}")


def _device(text: str) -> str:
    """A torch device that exists on this machine; ``auto``: cuda when torch sees a GPU."""
    import torch

    if text == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(
            f"unknown device {text!r}: use cpu, cuda or cuda:N") from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(
            f"{text!r}: torch sees no CUDA GPU on this machine; use --device cpu")
    return text


def add_device_argument(parser: argparse.ArgumentParser,
                        what: str = "where the models run") -> None:
    """``--device``: a torch device that exists on this machine (default: cuda when torch sees
    a GPU, else cpu), checked as the arguments are parsed, before any work starts."""
    parser.add_argument("--device", type=_device, default="auto",
                        help=f"{what}: cpu, cuda, cuda:N (default: cuda when torch sees a GPU, "
                             "else cpu)")


def add_latent_arguments(parser: argparse.ArgumentParser) -> None:
    """``--latent`` and ``--class``: what a generator's latents are drawn from and the class a
    class-conditional one draws."""
    parser.add_argument("--latent", choices=["normal", "uniform"], default=None,
                        help="the law of the generator's latents: standard normal (default) or "
                             "uniform on [-1, 1] (as much DCGAN code samples); a generator with "
                             "its own sample_latent(n, generator) method uses that")
    parser.add_argument("--class", dest="class_index", type=int, default=None, metavar="K",
                        help="the class a class-conditional generator draws")


def add_generator_arguments(parser: argparse.ArgumentParser) -> None:
    """``--generator``, ``--truncation`` and ``--segmenter``, as every command that draws and
    segments samples spells them."""
    parser.add_argument("--generator", default="sceneworld",
                        help=f"the generator: {spellings('generator')}")
    parser.add_argument("--truncation", type=float, default=None, metavar="PSI",
                        help="truncation psi in [0, 1] for style-based generators (stylegan2:, "
                             "nvidia:)")
    add_latent_arguments(parser)
    parser.add_argument("--segmenter", default="sceneworld",
                        help=f"the segmenter: {spellings('segmenter')}")
    parser.add_argument("--segmenter-weights", default=None, metavar="FILE",
                        help="state dict file (.pth, .pt, .safetensors) for a torchvision:ARCH "
                             "or plug-in segmenter")


def load_generator(args: argparse.Namespace, device=None):
    """The generator ``add_generator_arguments``' options name, with its truncation, latent law
    and class set (``gandissect.models.specs.configure_generator``)."""
    from gandissect.models.specs import configure_generator, resolve_generator

    generator = resolve_generator(args.generator, "cpu" if device is None else device)
    return configure_generator(generator, args.truncation, args.latent, args.class_index)


def add_classifier_arguments(parser: argparse.ArgumentParser) -> None:
    """``--classifier`` and ``--weights``, as every command that takes a classifier spells them."""
    parser.add_argument("--classifier", default="sceneworld",
                        help=f"the classifier: {spellings('classifier')}")
    parser.add_argument("--weights", default=None,
                        help="state dict file (.pth, .pt, .safetensors) for a torchvision: or "
                             "plug-in classifier")
