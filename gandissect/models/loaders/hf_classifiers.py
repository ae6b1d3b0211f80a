"""Hugging Face ``transformers`` image classifiers (``hf:NAME_OR_DIR`` as a ``--classifier``).

A classifier is read from a folder written by ``save_pretrained`` (``config.json``, the weights
as ``model.safetensors`` or ``pytorch_model.bin``, sharded or not, and the image processor's
``preprocessor_config.json``) or, where the machine has a network, from the Hub by name (kept in
the Hub's cache; offline, one line says how to get the folder). Any architecture of
``AutoModelForImageClassification`` loads: ResNet, ConvNeXt, ViT, DeiT, Swin, ... The model
class is the one ``config.json``'s ``model_type`` maps to there (never a config's
``auto_map``), and weights are read with safetensors or ``torch.load(weights_only=True)``, so
nothing in the folder runs as code. A folder of timm's Hub layout (``config.json`` with
``architecture``) loads as ``timm:DIR`` does.

The model is a ``HuggingFaceClassifier``: ``forward(images)`` takes the model's input (as
``pixel_values``) and returns the logits tensor. Its layers are the transformers model's, under
``model.``: ``model.resnet.encoder.stages.3``, ``model.convnext.encoder.stages.3``,
``model.swin.encoder.layers.3``, ``model.vit.layers.11`` (transformers 5; ``encoder.layer`` in
4.x); the head is ``model.classifier`` (``model.classifier.1`` for ResNet, after its flatten).

Preprocessing, from ``preprocessor_config.json`` (or the ``image_processor`` entry of the
``processor_config.json`` that transformers 5 may write), declared as ``input_size``,
``input_mean`` and ``input_std`` for ``gandissect.models.inputs.preprocess_for``: the input
size is ``crop_size`` when the processor crops (``do_center_crop``), else ``size`` in any of its
spellings (``{"height", "width"}``: the height; ``{"shortest_edge"}``; a number); the processor
maps 8-bit pixels p to ``(p * rescale_factor - image_mean) / image_std``, which is
``(p / 255 - mean) / std`` with ``mean = image_mean / (255 rescale_factor)`` and ``std`` alike.
Images are resized to the input size (shorter side, then the centre square); ConvNeXt's
``crop_pct`` (resize larger, then crop) is not applied. ``class_names``: ``id2label`` in id
order.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gandissect.errors import UserError
from gandissect.models.loaders.huggingface import (
    ARCHITECTURES,
    CONFIG_FILE,
    PREPROCESSOR_FILE,
    PROCESSOR_FILE,
    build_hf_model,
    hf_folder,
    quiet_transformers,
    read_json,
)
from gandissect.models.loaders.timm_classifiers import is_timm_folder, timm_folder_classifier

__all__ = ["HuggingFaceClassifier", "INSTALL", "folder_kind", "load_hf_classifier",
           "read_input"]

INSTALL = "pip install 'gandissect[hf]'"
_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class HuggingFaceClassifier(nn.Module):
    """A ``transformers`` image classifier whose ``forward(images)`` returns the logits.

    ``images`` are the model's input (``pixel_values``: normalised as ``input_mean`` /
    ``input_std`` declare, ``input_size`` pixels square); ``class_names`` names the outputs.

    Example:
        >>> classifier = load_hf_classifier("vit-base-patch16-224/")  # a save_pretrained folder
        >>> classifier(pixel_values).shape                            # (N, 1000)
    """

    def __init__(self, model: nn.Module, input_size: int, mean: tuple[float, ...],
                 std: tuple[float, ...], class_names: list[str]) -> None:
        super().__init__()
        self.model = model.eval()
        self.input_size = int(input_size)
        self.input_mean, self.input_std = tuple(mean), tuple(std)
        self.class_names = list(class_names)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) model inputs -> (N, classes) logits."""
        return self.model(pixel_values=images).logits


def _transformers() -> Any:
    try:
        import transformers
    except ImportError:
        raise UserError(f"hf: classifiers need Hugging Face transformers: {INSTALL}") from None
    return transformers


def _side(size: Any, source: Path) -> int:
    """The square side a processor's ``size`` or ``crop_size`` makes."""
    if isinstance(size, int | float):
        return int(size)
    if isinstance(size, list | tuple) and size:
        return int(size[0])
    if isinstance(size, Mapping):
        for key in ("height", "shortest_edge"):
            if size.get(key) is not None:
                return int(size[key])
    raise UserError(f"{source}: size {size!r} is not a size this loader reads ({{height, "
                    "width}, {shortest_edge} or a number)")


def _processor_config(folder: Path) -> tuple[dict, Path]:
    path = folder / PREPROCESSOR_FILE
    if path.is_file():
        return read_json(path), path
    if (folder / PROCESSOR_FILE).is_file():
        config = read_json(folder / PROCESSOR_FILE).get("image_processor")
        if isinstance(config, dict):
            return config, folder / PROCESSOR_FILE
    raise UserError(f"{folder} has no {PREPROCESSOR_FILE} (the image size, mean and std the model "
                    "expects); save it beside the model with AutoImageProcessor."
                    "from_pretrained(NAME).save_pretrained(DIR)")


def read_input(folder: Path, image_size: Any = None) -> tuple[int, tuple[float, ...],
                                                               tuple[float, ...]]:
    """``(input_size, mean, std)`` of the folder's image processor, mean and std on [0, 1]
    pixels (see the module docstring); ``image_size`` (the model config's) when it does not
    resize."""
    config, path = _processor_config(folder)
    if config.get("do_center_crop") and config.get("crop_size") is not None:
        side = _side(config["crop_size"], path)
    elif config.get("do_resize", True) and config.get("size") is not None:
        side = _side(config["size"], path)
    else:
        side = _side(image_size if image_size is not None else 224, path)
    scale = float(config.get("rescale_factor", 1 / 255)) if config.get("do_rescale", True) else 1
    per_unit = 255 * scale  # the processor's factor on [0, 1] pixels
    if abs(per_unit - 1) < 1e-6:
        per_unit = 1.0
    if config.get("do_normalize", True):
        mean, std = config.get("image_mean", _IMAGENET_MEAN), config.get("image_std", _IMAGENET_STD)
    else:
        mean, std = (0.0,) * 3, (1.0,) * 3
    mean = [float(mean)] * 3 if isinstance(mean, int | float) else [float(m) for m in mean]
    std = [float(std)] * 3 if isinstance(std, int | float) else [float(s) for s in std]
    return side, tuple(m / per_unit for m in mean), tuple(s / per_unit for s in std)


def _classifier_class(transformers: Any, folder: Path, config: Mapping[str, Any]) -> str:
    """The image-classification class of ``config.json`` (``model_type``, ``architectures``),
    or one line saying what the folder holds instead."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES as CLASSIFIERS,
    )

    model_type = config.get("model_type")
    declared = list(config.get("architectures") or [])
    if folder_kind(str(folder)) == "segmenter":
        raise UserError(f"{folder} holds a {declared[0] if declared else model_type}, a "
                        f"segmenter, not a classifier: pass it as --segmenter hf:{folder}")
    if model_type not in CLASSIFIERS:
        raise UserError(f"{folder} holds a {model_type or 'model of no model_type'}, not an image "
                        "classifier of transformers' AutoModelForImageClassification")
    candidates = CLASSIFIERS[model_type]
    candidates = (candidates,) if isinstance(candidates, str) else tuple(candidates)
    if declared and declared[0] not in candidates:
        raise UserError(f"{folder} holds a {declared[0]}, not an image classifier "
                        f"({', '.join(candidates)}): it has no classification head")
    return declared[0] if declared else candidates[0]


def folder_kind(target: str) -> str:
    """``"segmenter"`` when ``target`` is a local folder whose ``config.json`` names a
    semantic-segmentation model, else ``"classifier"`` (for a spelling's kind: ``hf:`` names
    both)."""
    path = Path(target).expanduser() / CONFIG_FILE
    if not path.is_file():
        return "classifier"
    config = read_json(path)
    declared = [str(name) for name in config.get("architectures") or []]
    segmenter = config.get("model_type") in ARCHITECTURES or any(
        "Segmentation" in name for name in declared)
    return "segmenter" if segmenter else "classifier"


def load_hf_classifier(target: str, weights: str | Path | None = None,
                       device: str | torch.device = "cpu") -> nn.Module:
    """The classifier of a ``save_pretrained`` folder or a Hub name (``hf:NAME_OR_DIR``), on
    ``device``, in eval mode; a ``UserError`` in one line when it cannot be read."""
    if weights is not None:
        raise UserError(f"hf:{target} holds its weights: leave --weights out with hf:")
    folder = hf_folder(target)
    if is_timm_folder(folder):
        return timm_folder_classifier(folder, device)
    transformers = _transformers()
    if not (folder / CONFIG_FILE).is_file():
        raise UserError(f"{folder} has no {CONFIG_FILE}: hf: takes a folder written by "
                        "save_pretrained (or `hf download NAME --local-dir DIR`)")
    class_name = _classifier_class(transformers, folder, read_json(folder / CONFIG_FILE))
    with quiet_transformers(transformers):
        model = build_hf_model(transformers, folder, class_name)
    size, mean, std = read_input(folder, getattr(model.config, "image_size", None))
    labels = {int(key): str(value) for key, value in model.config.id2label.items()}
    count = int(model.config.num_labels)
    names = [labels.get(index, f"class_{index}") for index in range(count)]
    return HuggingFaceClassifier(model, size, mean, std, names).to(device).eval()
