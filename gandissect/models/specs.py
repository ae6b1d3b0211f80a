"""One spelling for every model on the command line and in the app, resolved to a model.

    sceneworld                 a shipped model (``gandissect.models.registry``)
    FILE.safetensors           weights written by this project (their config rebuilds them)
    dcgan:PATH                 a DCGAN of PyTorch's DCGAN code (pytorch/examples, the tutorial)
    nvidia:PATH                NVIDIA's StyleGAN2-ADA / StyleGAN3 network pickle (.pkl, G_ema)
    proggan:PATH               a GAN Dissection ProGAN checkpoint (.pth, .pt or .safetensors)
    stylegan2:PATH             a StyleGAN2 checkpoint of rosinality's stylegan2-pytorch (.pt)
    torchscript:PATH           a TorchScript generator (``torch.jit.save``)
    torchvision:ARCH           a torchvision classifier; its weights from ``weights=PATH``;
                               as a segmenter, a torchvision segmentation model (FCN, DeepLabV3,
                               LR-ASPP) with ``weights=PATH``
    upp:DIR                    GAN Dissection's Unified Perceptual Parsing segmenter folder
    semseg:DIR                 a CSAIL ADE20K scene-parsing model folder (encoder, decoder, YAML)
    timm:NAME_OR_DIR           a timm classifier: an architecture with ``weights=PATH``, or a
                               Hub-style timm folder (config.json and weights)
    hf:NAME_OR_DIR             a Hugging Face transformers segmenter or image classifier
                               (save_pretrained folder, or a Hub name where there is a network)
    package.module:factory     a function returning the model, imported with importlib

``resolve_generator``, ``resolve_classifier`` and ``resolve_segmenter`` check what they return
(latent size, image shape and range, segmenter interface) so a wrong file fails here, before
any long job. A spec is ``scheme:target`` only when the part before the first colon is a known
scheme, so paths may hold colons (``proggan:C:\\gans\\church.pth``).

To add a format, add its loader to the scheme table of its kind, e.g.
``GENERATOR_SCHEMES["biggan"] = load_biggan`` with ``load_biggan(target, device, z_dim) ->
nn.Module``, and its name to ``gandissect.models.spellings.SCHEMES`` (the help texts, which
list the spellings without loading torch).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gandissect.errors import UserError
from gandissect.models import registry
from gandissect.models import spellings as names
from gandissect.models.inputs import Preprocess, preprocess_for
from gandissect.models.loaders.classifiers import torchvision_classifier
from gandissect.models.loaders.dcgan import load_dcgan
from gandissect.models.loaders.files import existing_file, fit_state_dict, read_state_dict
from gandissect.models.loaders.hf_classifiers import load_hf_classifier
from gandissect.models.loaders.huggingface import load_hf_segmenter
from gandissect.models.loaders.nvidia import nvidia_generator
from gandissect.models.loaders.plugins import (
    check_generator,
    import_factory,
    is_factory_spec,
    load_torchscript,
    scripted_generator,
)
from gandissect.models.loaders.proggan import load_proggan
from gandissect.models.loaders.segmenters import (
    load_semseg,
    load_torchvision_segmenter,
    load_upp,
)
from gandissect.models.loaders.stylegan2 import load_stylegan2
from gandissect.models.loaders.timm_classifiers import load_timm_classifier

__all__ = [
    "CLASSIFIER_SCHEMES",
    "GENERATOR_SCHEMES",
    "SEGMENTER_SCHEMES",
    "SEGMENTER_WEIGHTS",
    "check_segmenter",
    "configure_generator",
    "resolve_classifier",
    "resolve_classifier_and_preprocess",
    "resolve_generator",
    "resolve_segmenter",
    "set_class",
    "set_latent",
    "set_truncation",
    "spellings",
]

Device = str | torch.device
GeneratorLoader = Callable[[str, Device, int | None], nn.Module]
ClassifierLoader = Callable[[str, str | Path | None, Device], nn.Module]
SegmenterLoader = Callable[[str, Device], Any]


def _proggan(target: str, device: Device, z_dim: int | None) -> nn.Module:
    generator = load_proggan(target, device)
    # the format fixes the range, and random or early weights may leave it: no range check
    return check_generator(generator, z_dim, check_range=False, name=f"proggan:{target}")


def _stylegan2(target: str, device: Device, z_dim: int | None) -> nn.Module:
    return check_generator(load_stylegan2(target, device), z_dim, check_range=False,
                           name=f"stylegan2:{target}")


def _torchscript(target: str, device: Device, z_dim: int | None) -> nn.Module:
    return scripted_generator(load_torchscript(target, device), z_dim)


def _dcgan(target: str, device: Device, z_dim: int | None) -> nn.Module:
    return check_generator(load_dcgan(target, device), z_dim, check_range=False,
                           name=f"dcgan:{target}")


GENERATOR_SCHEMES: dict[str, GeneratorLoader] = {
    "dcgan": _dcgan,
    "nvidia": nvidia_generator,  # checked on a latent there (conditional models need a class)
    "proggan": _proggan,
    "stylegan2": _stylegan2,
    "torchscript": _torchscript,
}
CLASSIFIER_SCHEMES: dict[str, ClassifierLoader] = {
    "torchvision": torchvision_classifier,
    "timm": load_timm_classifier,  # timm:NAME with weights=PATH, or timm:DIR
    "hf": load_hf_classifier,  # the same scheme as a segmenter: the --classifier option decides
}
SEGMENTER_SCHEMES: dict[str, SegmenterLoader] = {
    "hf": load_hf_segmenter,
    "upp": load_upp,
    "semseg": load_semseg,
    "torchvision": load_torchvision_segmenter,
}
SEGMENTER_WEIGHTS = ("torchvision",)  # segmenter schemes whose loader takes ``weights=PATH``
_TABLES = {"generator": GENERATOR_SCHEMES, "classifier": CLASSIFIER_SCHEMES,
           "segmenter": SEGMENTER_SCHEMES}

def spellings(schemes: Mapping[str, Callable]) -> str:
    """The valid spellings for a kind of model (its loader table), for error messages."""
    kind = next(k for k, table in _TABLES.items() if table is schemes)
    return names.spellings(kind, schemes)


def _scheme(spec: str, schemes: Mapping[str, Callable]) -> tuple[str, str] | None:
    scheme, colon, target = spec.partition(":")
    if not colon or scheme not in schemes:
        return None
    if not target:
        raise UserError(f"{spec!r} names no {names.target(scheme)} after the colon")
    return scheme, target


def _unknown(kind: str, spec: str, schemes: Mapping[str, Callable]) -> UserError:
    return UserError(f"unknown {kind} {spec!r}; valid spellings: {spellings(schemes)}")


def _plugin(spec: str, kind: str) -> Any:
    model = import_factory(spec)()
    if kind != "segmenter" and not isinstance(model, nn.Module):
        raise UserError(f"{spec} returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def _project_file(spec: str, device: Device, kind: str) -> nn.Module:
    return registry.load_weights_file(existing_file(spec), device, kind)


def resolve_generator(spec: str, device: Device = "cpu", z_dim: int | None = None) -> nn.Module:
    """The generator ``spec`` names (see the module docstring), checked and in eval mode: it
    has ``z_dim`` and ``resolution`` and returns ``(N, 3, H, W)`` images."""
    found = _scheme(spec, GENERATOR_SCHEMES)
    if found:
        scheme, target = found
        return GENERATOR_SCHEMES[scheme](target, device, z_dim)
    if spec in names.SHIPPED:
        return registry.load_generator(spec, device)
    if spec.endswith(".safetensors"):
        return check_generator(_project_file(spec, device, "generator"), z_dim, check_range=False)
    if is_factory_spec(spec):
        return check_generator(_plugin(spec, "generator").to(device), z_dim, name=spec)
    raise _unknown("generator", spec, GENERATOR_SCHEMES)


def set_truncation(generator: nn.Module, psi: float | None) -> nn.Module:
    """Set a style generator's truncation ``psi`` in [0, 1] (None: leave it); other generators
    have none, and asking for one is an error."""
    if psi is None:
        return generator
    if not hasattr(generator, "truncation"):
        raise UserError("--truncation applies to style-based generators (stylegan2:PATH, "
                        f"nvidia:PATH); {type(generator).__name__} samples z directly")
    if not 0 <= psi <= 1:
        raise UserError(f"truncation psi must lie in [0, 1], got {psi}")
    generator.truncation = float(psi)
    return generator


def set_latent(generator: nn.Module, law: str | None) -> nn.Module:
    """Set the law a generator's latents are drawn from: ``"normal"`` (standard normal, the
    default) or ``"uniform"`` (on [-1, 1], as much DCGAN code samples); None leaves it. A
    generator with its own ``sample_latent`` method keeps it, and asking for another law is an
    error."""
    if law is None:
        return generator
    from gandissect.dissect.latents import LAWS

    if law not in LAWS:
        raise UserError(f"unknown latent law {law!r}; use one of {', '.join(LAWS)}")
    if callable(getattr(generator, "sample_latent", None)):
        raise UserError(f"{type(generator).__name__} samples its own latents (sample_latent); "
                        "leave --latent out")
    generator.latent = law
    return generator


def set_class(generator: nn.Module, index: int | None) -> nn.Module:
    """Choose the class a class-conditional generator draws (``n_classes`` classes, its
    ``class_index`` attribute); None leaves it. A generator without classes refuses one, and a
    conditional one with no class chosen says to choose one."""
    classes = getattr(generator, "n_classes", 0) or 0
    if index is None:
        if classes and getattr(generator, "class_index", None) is None:
            raise UserError(f"this generator is class-conditional ({classes} classes): pass "
                            f"--class K with K in 0..{classes - 1}")
        return generator
    if not classes:
        raise UserError(f"--class applies to class-conditional generators; "
                        f"{type(generator).__name__} has no classes")
    if not 0 <= index < classes:
        raise UserError(f"--class must lie in 0..{classes - 1}, got {index}")
    generator.class_index = int(index)
    return generator


def configure_generator(generator: nn.Module, truncation: float | None = None,
                        latent: str | None = None, class_index: int | None = None) -> nn.Module:
    """``set_truncation``, ``set_latent`` and ``set_class`` in one call, as every command
    that samples a generator applies its options."""
    return set_class(set_latent(set_truncation(generator, truncation), latent), class_index)


def resolve_classifier(spec: str, weights: str | Path | None = None,
                       device: Device = "cpu") -> nn.Module:
    """The classifier ``spec`` names, in eval mode, with ``weights`` (a state dict file) loaded
    into a ``torchvision:`` or plug-in architecture. Declared preprocessing stays on the
    model (``input_mean`` / ``input_std`` / ``input_size``)."""
    found = _scheme(spec, CLASSIFIER_SCHEMES)
    if found:
        scheme, target = found
        return CLASSIFIER_SCHEMES[scheme](target, weights, device)
    if weights is not None and not is_factory_spec(spec):
        raise UserError(f"weights apply to torchvision:ARCH and plug-in classifiers (and "
                        f"timm:NAME), not {spec!r} (its file holds its weights)")
    if spec in names.SHIPPED:
        return registry.load_classifier(spec, device)
    if spec.endswith(".safetensors"):
        return _project_file(spec, device, "classifier")
    if is_factory_spec(spec):
        model = _plugin(spec, "classifier")
        if weights is not None:
            fit_state_dict(model, read_state_dict(weights), str(weights))
        return model.to(device).eval()
    raise _unknown("classifier", spec, CLASSIFIER_SCHEMES)


def resolve_classifier_and_preprocess(
        spec: str, weights: str | Path | None = None, device: Device = "cpu"
) -> tuple[nn.Module, Preprocess | None]:
    """``resolve_classifier``'s model and the function that maps [-1, 1] images to its declared
    input (``gandissect.models.inputs.preprocess_for``; None when it takes [-1, 1])."""
    model = resolve_classifier(spec, weights, device)
    return model, preprocess_for(model, spec)


def check_segmenter(segmenter: Any, name: str) -> Any:
    """``segmenter`` if it has the interface dissection uses; a clear error otherwise:
    ``segment(images) -> {category: (N, H, W) codes}``, ``categories`` and ``concepts``
    (category -> names by code, code 0 ``"none"``)."""
    categories = getattr(segmenter, "categories", None)
    concepts = getattr(segmenter, "concepts", None)
    if not callable(getattr(segmenter, "segment", None)) or not categories \
            or not isinstance(concepts, Mapping) or any(c not in concepts for c in categories):
        raise UserError(f"{name} is not a segmenter: it needs segment(images) -> {{category: "
                        "label codes}, a categories list and concepts {category: names}")
    if isinstance(segmenter, nn.Module):
        segmenter.eval()
    return segmenter


def resolve_segmenter(spec: str, device: Device = "cpu",
                      weights: str | Path | None = None) -> Any:
    """The segmenter ``spec`` names, checked for the segmenter interface; ``weights`` (a state
    dict file) for a ``torchvision:ARCH`` or plug-in segmenter, which are architectures."""
    found = _scheme(spec, SEGMENTER_SCHEMES)
    if weights is not None and not (found and found[0] in SEGMENTER_WEIGHTS) \
            and (found or not is_factory_spec(spec)):
        raise UserError(f"segmenter weights apply to torchvision:ARCH and plug-in segmenters, "
                        f"not {spec!r} (its files hold its weights)")
    if found:
        scheme, target = found
        loader = SEGMENTER_SCHEMES[scheme]
        segmenter = (loader(target, device, weights=weights) if scheme in SEGMENTER_WEIGHTS
                     else loader(target, device))
        return check_segmenter(segmenter, spec)
    if spec in names.SHIPPED:
        return registry.load_segmenter(spec, device)
    if spec.endswith(".safetensors"):
        return check_segmenter(_project_file(spec, device, "segmenter"), spec)
    if is_factory_spec(spec):
        segmenter = _plugin(spec, "segmenter")
        if weights is not None:
            if not isinstance(segmenter, nn.Module):
                raise UserError(f"{spec} is no torch.nn.Module: segmenter weights cannot be "
                                "loaded into it")
            fit_state_dict(segmenter, read_state_dict(weights), str(weights))
        if isinstance(segmenter, nn.Module):
            segmenter = segmenter.to(device)
        return check_segmenter(segmenter, spec)
    raise _unknown("segmenter", spec, SEGMENTER_SCHEMES)
