"""The shipped SceneWorld models, by name, and the weight files they live in.

Weights are safetensors files whose metadata holds the JSON ``config`` that rebuilds the
architecture, so loading never runs code from a file::

    generator = load_generator("sceneworld")     # models/sceneworld_generator.safetensors
    segmenter = load_segmenter("sceneworld")
    classifier = load_classifier("sceneworld")

User formats (``proggan:PATH``, ``torchvision:ARCH``, ...) resolve through
``gandissect.models.specs``, which calls these functions for the names in ``SHIPPED``.
"""

from __future__ import annotations

import json
import os
from importlib import import_module, resources
from pathlib import Path

import torch
from torch import nn

from gandissect.errors import UserError
from gandissect.models.loaders.files import fit_state_dict
from gandissect.models.spellings import SHIPPED

__all__ = [
    "SEEDS",
    "SHIPPED",
    "build",
    "load_classifier",
    "load_encoder",
    "load_generator",
    "load_segmenter",
    "models_dir",
    "read_weights",
    "save_weights",
    "shipped_path",
]

# World seeds used for training; evaluation must use others (the eval commands refuse these).
SEEDS = {"generator": 101, "segmenter": 102, "classifier": 103, "encoder": 104}

# architecture name in a file's config -> "module:class" that rebuilds it from that config
_ARCHITECTURES = {
    "proggan": "gandissect.models.proggan:ProGANGenerator",
    "segmenter": "gandissect.models.segmenter:Segmenter",
    "scene_classifier": "gandissect.models.classifier:SceneClassifier",
    "encoder": "gandissect.models.encoder:LatentEncoder",
}
_KINDS = {"generator": ("proggan",), "segmenter": ("segmenter",),
          "classifier": ("scene_classifier",),
          "encoder": ("encoder",)}  # what each kind of model may be built as


def models_dir() -> Path:
    """Where the shipped weights are: ``$GANDISSECT_MODELS``, the checkout's ``models/``, or the
    copy installed with the package."""
    if os.environ.get("GANDISSECT_MODELS"):
        return Path(os.environ["GANDISSECT_MODELS"])
    checkout = Path(__file__).resolve().parents[2] / "models"
    if checkout.is_dir():
        return checkout
    return Path(str(resources.files("gandissect") / "shipped"))


def shipped_path(kind: str, name: str = "sceneworld") -> Path:
    """The file of shipped model ``name`` of ``kind`` (generator, segmenter, classifier)."""
    return models_dir() / f"{name}_{kind}.safetensors"


def shipped_dissection_dir(name: str = "sceneworld") -> Path:
    """The dissection shipped beside generator ``name`` (``dissect.json``, ``stats_<layer>.pt``
    and, in ``ace/``, its brushes' learned causal weights), as ``gandissect dissect`` wrote it."""
    return models_dir() / f"{name}_generator_dissection"


def save_weights(model: nn.Module, path: str | Path, config: dict, **metadata: str) -> None:
    """Write ``model``'s weights and its ``config`` to a safetensors file, atomically."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    temporary = path.with_name(f".{path.name}.tmp")
    save_file(state, str(temporary), metadata={"config": json.dumps(config), **metadata})
    os.replace(temporary, path)


def read_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict, dict]:
    """Read a safetensors weights file: ``(state_dict, config, other metadata)``."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"no weights at {path}; train them with `gandissect train ...` or set "
            "GANDISSECT_MODELS to the folder that holds them"
        )
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
            state = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 (not a dict)
    except Exception as error:  # safetensors raises its own error types
        raise UserError(f"cannot read {path} as safetensors ({error}): it is damaged or "
                        "truncated; download or export it again") from None
    try:
        config = json.loads(metadata.pop("config", "{}"))
    except json.JSONDecodeError:
        config = None
    if not isinstance(config, dict):
        raise UserError(f"{path} has a damaged model config in its metadata; export it again")
    return state, config, metadata


def build(config: dict) -> nn.Module:
    """Rebuild an architecture from the ``config`` stored with its weights."""
    config = dict(config)
    name = config.pop("architecture", None)
    if name is None:
        raise UserError("the weights name no architecture: not a file written by gandissect "
                        "(for other formats use a loader scheme such as proggan:PATH)")
    if name not in _ARCHITECTURES:
        raise UserError(f"unknown architecture {name!r}; known: {sorted(_ARCHITECTURES)}")
    module_name, class_name = _ARCHITECTURES[name].split(":")
    try:
        return getattr(import_module(module_name), class_name)(**config)
    except TypeError as error:  # settings the architecture does not take
        raise UserError(f"the {name} config {config} does not fit: {error}") from None


def load_weights_file(path: str | Path, device: str | torch.device = "cpu",
                      kind: str | None = None) -> nn.Module:
    """Build the model a weights file describes and load its weights, in eval mode; with
    ``kind`` (generator, segmenter, classifier), refuse a file of another kind."""
    state, config, _ = read_weights(path)
    name = config.get("architecture")
    if kind is not None and name in _ARCHITECTURES and name not in _KINDS[kind]:
        other = next(k for k, names in _KINDS.items() if name in names)
        raise UserError(f"{path} holds a {other}, not a {kind}")
    try:
        model = build(config)
    except UserError as error:
        raise UserError(f"{path}: {error}") from None
    fit_state_dict(model, state, str(path))
    return model.to(device).eval()


def architecture_kind(path: str | Path) -> str | None:
    """The kind of model (generator, segmenter, classifier) a project weights file holds, from
    its config; None when the config names no architecture this project builds."""
    name = read_weights(path)[1].get("architecture")
    return next((kind for kind, names in _KINDS.items() if name in names), None)


def _load(kind: str, name: str, device) -> nn.Module:
    if name not in SHIPPED:
        raise UserError(f"unknown {kind} {name!r}; shipped: {', '.join(SHIPPED)} (user models: "
                        "see gandissect.models.specs)")
    return load_weights_file(shipped_path(kind, name), device)


def load_generator(name: str = "sceneworld", device: str | torch.device = "cpu") -> nn.Module:
    """The generator called ``name``: images in [-1, 1] (unclamped) from ``(N, z_dim)`` latents."""
    return _load("generator", name, device)


def load_segmenter(name: str = "sceneworld", device: str | torch.device = "cpu") -> nn.Module:
    """The segmenter called ``name``: images in [-1, 1] -> per-category label logits."""
    return _load("segmenter", name, device)


def load_classifier(name: str = "sceneworld", device: str | torch.device = "cpu") -> nn.Module:
    """The scene classifier called ``name``: images in [-1, 1] -> scene logits."""
    return _load("classifier", name, device)


def load_encoder(name: str = "sceneworld", device: str | torch.device = "cpu") -> nn.Module:
    """The encoder of generator ``name``: images in [-1, 1] -> that generator's latents."""
    if name in SHIPPED and not shipped_path("encoder", name).is_file():
        raise UserError(f"no encoder at {shipped_path('encoder', name)}: train one with "
                        f"`gandissect train encoder --run DIR` and copy "
                        f"DIR/{name}_encoder.safetensors there")
    return _load("encoder", name, device)
