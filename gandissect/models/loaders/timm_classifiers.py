"""timm classifiers: ``timm:NAME`` with a weights file, or ``timm:DIR``, a Hub-style timm folder.

``timm:NAME --weights FILE``: the architecture ``NAME`` (``resnet50``, ``convnext_tiny``,
``vit_base_patch16_224``, with or without a pretrained tag such as ``resnet50.a1_in1k``) is
built with ``timm.create_model(NAME, pretrained=False)`` (nothing is downloaded) and the file's
state dict loaded into it: ``model.safetensors``, ``pytorch_model.bin`` or a training
checkpoint of timm's ``train.py`` (``{"state_dict", "state_dict_ema", "args", ...}``: the EMA
weights are taken when there are some, as timm's own ``load_checkpoint`` does), ``module.``
prefixes removed. The class count is read from the file's head (``fc``, ``head``,
``head.fc``, ...), so a Places365 or a fine-tuned model loads like an ImageNet one. Without
``--weights`` the model is random, with 1000 classes.

``timm:DIR``: a folder as the Hugging Face Hub holds timm models (``hf download timm/NAME
--local-dir DIR``, or written by timm's ``save_for_hf``): ``config.json`` with
``architecture``, ``num_classes``, ``model_args`` (optional, e.g. ``img_size``),
``label_names`` / ``label_descriptions`` (optional) and ``pretrained_cfg`` (``input_size``,
``mean``, ``std``, ...), beside ``model.safetensors`` or ``pytorch_model.bin``.

Preprocessing is declared on the model as ``gandissect.models.inputs.preprocess_for`` reads it:
``input_size`` (the side of ``pretrained_cfg``'s ``input_size``), ``input_mean`` and
``input_std`` (on [0, 1] pixels), as timm's ``resolve_model_data_config`` resolves them.
Images are resized to the input size (shorter side, then the centre square); timm's
``crop_pct`` (resize a little larger, then crop) is not applied. ``class_names``: the folder's
``label_descriptions`` of its ``label_names`` (ImageNet synsets become "tench, Tinca tinca"),
else the ``label_names``, else ImageNet-1k's names for a 1000-class model, else
``class_0``, ``class_1``, ...
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gandissect.errors import UserError
from gandissect.models.loaders.classifiers import head_classes, imagenet_class_names
from gandissect.models.loaders.files import WRAPPER_KEYS, fit_state_dict, read_state_dict
from gandissect.models.loaders.huggingface import first_line, folder_state_dict, read_json
from gandissect.models.loaders.stylegan2 import allowing_namespace

__all__ = ["EMA_WRAPPERS", "INSTALL", "class_names", "is_timm_folder", "load_timm_classifier",
           "timm_folder_classifier", "timm_name_classifier"]

INSTALL = "pip install 'gandissect[timm]'"
# the averaged (EMA) weights first, as timm's load_checkpoint(use_ema=True) takes them
EMA_WRAPPERS = ("state_dict_ema", "model_ema", *WRAPPER_KEYS)
CONFIG_FILE = "config.json"
_HUB_PREFIXES = ("hf-hub:", "hf_hub:", "local-dir:")


def _timm() -> Any:
    try:
        import timm
    except ImportError:
        raise UserError(f"timm: classifiers need timm: {INSTALL}") from None
    return timm


def _check_name(timm: Any, name: str) -> None:
    """A ``UserError`` unless timm knows the architecture ``name`` (with the closest names)."""
    if name.startswith(_HUB_PREFIXES) or "/" in name or "\\" in name:
        raise UserError(f"no folder {name} here (timm: takes an architecture name with "
                        "--weights FILE, or a local folder); download a Hub model with `hf "
                        "download timm/NAME --local-dir DIR` and pass timm:DIR")
    if timm.is_model(name):
        return
    close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
    hint = (f"did you mean {', '.join(close)}?" if close else
            "timm.list_models('resnet*') lists the names")
    raise UserError(f"unknown timm model {name!r}; {hint}")


def _create(timm: Any, name: str, **kwargs: Any) -> nn.Module:
    try:
        return timm.create_model(name, pretrained=False, **kwargs)
    except (TypeError, ValueError, KeyError, RuntimeError, AssertionError) as error:
        shown = f" with {kwargs}" if kwargs else ""
        raise UserError(f"timm cannot build {name}{shown}: {first_line(error)}") from None


def _default(timm: Any, name: str) -> nn.Module:
    """``name`` with its default head, on the meta device where it builds there (no memory,
    no time)."""
    try:
        with torch.device("meta"):
            return timm.create_model(name, pretrained=False)
    except Exception:  # an architecture whose initialisation reads tensor values
        return _create(timm, name)


def _names(labels: Any, count: int) -> list[str] | None:
    """A ``label_names`` entry (a list, or ``{id: name}``) as a list of ``count`` names."""
    if isinstance(labels, Mapping):
        try:
            labels = {int(key): value for key, value in labels.items()}
        except (TypeError, ValueError):
            return None
        labels = [labels.get(index) for index in range(count)]
    if not isinstance(labels, list | tuple) or len(labels) != count or None in labels:
        return None
    return [str(label) for label in labels]


def class_names(count: int, labels: Any = None, descriptions: Any = None) -> list[str]:
    """The names of a model's ``count`` outputs (see the module docstring)."""
    names = _names(labels, count)
    if names is not None:
        if isinstance(descriptions, Mapping) and all(name in descriptions for name in names):
            return [str(descriptions[name]) for name in names]
        return names
    return imagenet_class_names(count) or [f"class_{index}" for index in range(count)]


def _declare(model: nn.Module, timm: Any, names: list[str],
             pretrained_cfg: Mapping[str, Any] | None = None) -> nn.Module:
    """Set ``input_size``, ``input_mean``, ``input_std`` and ``class_names`` on ``model``:
    ``pretrained_cfg``'s values where it has them, else timm's for the architecture."""
    data = dict(timm.data.resolve_model_data_config(model))
    data.update({key: pretrained_cfg[key] for key in ("input_size", "mean", "std")
                 if pretrained_cfg and pretrained_cfg.get(key) is not None})
    size = [int(side) for side in data["input_size"]]
    model.input_size = size[-2]  # images are square here: the height (timm's are square too)
    model.input_mean = tuple(float(value) for value in data["mean"])
    model.input_std = tuple(float(value) for value in data["std"])
    model.class_names = names
    return model


def timm_name_classifier(name: str, weights: str | Path | None = None,
                         device: str | torch.device = "cpu") -> nn.Module:
    """timm architecture ``name`` in eval mode, random unless ``weights`` (a state dict or a
    timm training checkpoint, see the module docstring), with its preprocessing and class names
    declared."""
    timm = _timm()
    _check_name(timm, name)
    state = None
    if weights is not None:
        with allowing_namespace():  # timm's train.py saves its argparse options as ``args``
            state = read_state_dict(weights, EMA_WRAPPERS)
    num_classes = None
    if state is not None:
        num_classes = head_classes(_default(timm, name), state)
    model = _create(timm, name, **({"num_classes": num_classes} if num_classes else {}))
    if state is not None:
        fit_state_dict(model, state, str(weights))
    names = class_names(int(model.num_classes))
    return _declare(model, timm, names).to(device).eval()


def is_timm_folder(folder: Path) -> bool:
    """Whether ``folder/config.json`` describes a timm model (``architecture``, no
    ``model_type``)."""
    path = folder / CONFIG_FILE
    if not path.is_file():
        return False
    config = read_json(path)
    return "architecture" in config and "model_type" not in config


def timm_folder_classifier(folder: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """The timm model of a Hub-style folder (see the module docstring), in eval mode, with its
    preprocessing and class names declared."""
    folder = Path(folder).expanduser()
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise UserError(f"{folder} has no {CONFIG_FILE}: timm:DIR takes a folder as the Hugging "
                        "Face Hub holds timm models (`hf download timm/NAME --local-dir DIR`)")
    config = read_json(path)
    if "architecture" not in config:
        kind = config.get("model_type")
        raise UserError(f"{path} names no timm architecture" + (
            f"; it holds a transformers {kind} model: pass it as hf:{folder}" if kind else
            " (its 'architecture' entry)"))
    timm = _timm()
    pretrained_cfg = config.get("pretrained_cfg", config)  # older exports: one flat dict
    name = str(config["architecture"])
    _check_name(timm, name)
    arguments = dict(config.get("model_args") or {})
    count = config.get("num_classes", pretrained_cfg.get("num_classes"))
    if count is not None:
        arguments["num_classes"] = int(count)
    model = _create(timm, name, **arguments)
    fit_state_dict(model, folder_state_dict(folder), str(folder))
    labels = config.get("label_names", pretrained_cfg.get("label_names"))
    descriptions = config.get("label_descriptions", pretrained_cfg.get("label_descriptions"))
    names = class_names(int(model.num_classes), labels, descriptions)
    return _declare(model, timm, names, pretrained_cfg).to(device).eval()


def load_timm_classifier(target: str, weights: str | Path | None = None,
                         device: str | torch.device = "cpu") -> nn.Module:
    """``timm:NAME`` (with ``weights``) or ``timm:DIR``: see the module docstring."""
    path = Path(target).expanduser()
    if path.is_dir():
        if weights is not None:
            raise UserError(f"{path} holds its weights: leave --weights out with timm:DIR")
        return timm_folder_classifier(path, device)
    if path.is_file():
        raise UserError(f"timm: takes an architecture name or a folder, not the file {path}; "
                        f"pass it as --weights {path} with timm:NAME (its architecture)")
    return timm_name_classifier(target, weights, device)
