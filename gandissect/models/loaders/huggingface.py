"""Hugging Face ``transformers`` semantic-segmentation models as segmenters (``hf:NAME_OR_DIR``).

A segmenter is read from a folder written by ``save_pretrained`` (``config.json``, the weights
as ``model.safetensors`` or ``pytorch_model.bin``, sharded or not, ``preprocessor_config.json``
and, for OneFormer, its tokenizer files) or, where the machine has a network, from the Hub by
name (kept in the Hub's cache). Architectures (``config.json``'s ``model_type``):

    segformer     SegformerForSemanticSegmentation     per-pixel class logits
    upernet       UperNetForSemanticSegmentation       per-pixel class logits
    mask2former   Mask2FormerForUniversalSegmentation  class logits and a mask per query
    oneformer     OneFormerForUniversalSegmentation    the same, told "the task is semantic"

Nothing in the folder runs as code: the model class is chosen from the table above (never a
config's ``auto_map``), weights are read with safetensors or ``torch.load(weights_only=True)``,
and the preprocessing is read as plain JSON from ``preprocessor_config.json`` (or from the
``image_processor`` entry of the ``processor_config.json`` that transformers 5 writes).

Preprocessing (the image processor's, restated as differentiable tensor operations): [-1, 1]
images become [0, 255] pixels, resized (``size``: ``height``/``width``, ``shortest_edge`` with an
optional ``longest_edge``, or ``max_height``/``max_width``; rounded up to ``size_divisor``),
multiplied by ``rescale_factor`` when ``do_rescale`` and normalised with ``image_mean`` /
``image_std``. Resampling follows ``resample`` (nearest, bilinear or bicubic, antialiased as the
image processor's torchvision backend does; Lanczos is taken as bicubic). ``do_reduce_labels``
concerns training annotations only: the model's outputs index ``id2label`` either way.

Post-processing, at the input size, each architecture's own (as its image processor's
``post_process_semantic_segmentation``): logit models (``logits``) upsample their logits
(bilinear) and take a softmax. Query models score class c at a pixel as
``sum_q softmax(class logits of q, null class dropped)[c] * sigmoid(mask logits of q)``;
Mask2Former (``query_masks``) upsamples the mask logits before the sigmoid, OneFormer
(``query_scores``) the class scores after it. The scores divided by their sum over the classes
are the probabilities. (Mask2Former's own post-processing resizes the mask logits to 384 x 384
whatever the input, then the scores to the input size; we resize the mask logits straight to
the input size: the labels agree on nearly every pixel.)

Label codes: category ``object``; code 0 is ``"none"``; the classes of ``id2label`` take codes
1..K in id order, except that a class named background, unlabeled, other, void or none is
"none" (code 0), and classes of the same name share a code. ``probabilities`` sums the
probabilities of the classes that share a code; ``segment`` is its argmax.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from gandissect.errors import UserError
from gandissect.models.loaders.files import read_state_dict

__all__ = ["ARCHITECTURES", "CONFIG_FILE", "NONE_NAMES", "PREPROCESSOR_FILE", "PROCESSOR_FILE",
           "HuggingFaceSegmenter", "Preprocessing", "build_hf_model", "concept_codes",
           "first_line", "folder_state_dict", "hf_folder", "load_hf_segmenter",
           "quiet_transformers", "read_json", "read_preprocessing"]

# model_type -> (model class in transformers, its post-processing: see the module docstring)
ARCHITECTURES = {
    "segformer": ("SegformerForSemanticSegmentation", "logits"),
    "upernet": ("UperNetForSemanticSegmentation", "logits"),
    "mask2former": ("Mask2FormerForUniversalSegmentation", "query_masks"),
    "oneformer": ("OneFormerForUniversalSegmentation", "query_scores"),
}
# class names that mean "no object here": they become code 0, "none"
NONE_NAMES = frozenset({"background", "unlabeled", "unlabelled", "other", "others", "void",
                        "none", "__background__"})
INSTALL = "pip install 'gandissect[hf]'"
CONFIG_FILE, PREPROCESSOR_FILE = "config.json", "preprocessor_config.json"
PROCESSOR_FILE = "processor_config.json"  # transformers 5 nests the image processor's in it
_SAFE_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
_PICKLED_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt",
                    "special_tokens_map.json")
_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# the image processors' defaults for what a preprocessor_config.json leaves out
_DEFAULT_SIZE = {"segformer": {"height": 512, "width": 512},
                 "upernet": {"height": 512, "width": 512},
                 "mask2former": {"shortest_edge": 800, "longest_edge": 1333},
                 "oneformer": {"shortest_edge": 800, "longest_edge": 1333}}
_DEFAULT_DIVISOR = {"mask2former": 32}  # the only processor that rounds its resized size up
_RESAMPLE = {0: "nearest", 1: "bicubic", 2: "bilinear", 3: "bicubic"}  # PIL's numbering
_HUB_NAME = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")
_SEMANTIC_TASK = "the task is semantic"  # OneFormer's task prompt for semantic segmentation


# ------------------------------------------------------------------------- label codes
def concept_codes(id2label: Mapping[Any, str], num_labels: int) -> tuple[list[str], list[int]]:
    """Concept names by code (code 0 ``"none"``) and the code of each class id 0..K-1.

    Background-like classes (``NONE_NAMES``, any case) take code 0; the others codes 1.. in id
    order, classes of the same name sharing one.
    """
    labels = {int(key): str(value).strip() for key, value in id2label.items()}
    if sorted(labels) != list(range(num_labels)):
        raise UserError(f"config.json's id2label names classes {_few(sorted(labels))}, not the "
                        f"model's {num_labels} classes 0..{num_labels - 1}")
    names, codes = ["none"], []
    for class_id in range(num_labels):
        name = labels[class_id]
        if name.lower() in NONE_NAMES:
            codes.append(0)
            continue
        if name not in names:
            names.append(name)
        codes.append(names.index(name))
    return names, codes


def first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def _few(items: list) -> str:
    return ", ".join(map(str, items[:5])) + (", ..." if len(items) > 5 else "")


# ------------------------------------------------------------------------- preprocessing
@dataclass(frozen=True)
class Preprocessing:
    """What the image processor does to an image, as data (see the module docstring)."""

    size: Mapping[str, int] | None  # None: the model sees the image at its own size
    mode: str = "bilinear"
    size_divisor: int = 0
    scale: float = 1 / 255  # on [0, 255] pixels
    mean: tuple[float, float, float] = _IMAGENET_MEAN
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def input_size(self, height: int, width: int) -> tuple[int, int]:
        """The (height, width) the model sees for an image of ``height`` x ``width``."""
        size = self.size
        if size is None:
            return height, width
        if "height" in size:
            new = size["height"], size["width"]
        elif "max_height" in size:
            ratio = min(size["max_height"] / height, size["max_width"] / width)
            new = int(height * ratio), int(width * ratio)
        else:
            new = _shortest_edge(height, width, size["shortest_edge"], size.get("longest_edge"))
        if self.size_divisor:
            new = tuple(math.ceil(side / self.size_divisor) * self.size_divisor for side in new)
        return max(new[0], 1), max(new[1], 1)


def _shortest_edge(height: int, width: int, short_target: int,
                   long_limit: int | None) -> tuple[int, int]:
    """The shorter side becomes ``short_target`` (keeping the aspect ratio), unless the longer
    side would then pass ``long_limit``: then the longer side is about ``long_limit``."""
    short, long = min(height, width), max(height, width)
    target: float = short_target
    limited = long_limit is not None and long * short_target / short > long_limit
    if limited:
        target = long_limit * short / long
    new_short = round(target) if limited else short_target
    if new_short == short:
        return height, width
    new_long = int(target * long / short)
    return (new_short, new_long) if height <= width else (new_long, new_short)


def _size_rule(size: Any, max_size: Any, square: bool, source: Path) -> dict[str, int]:
    if isinstance(size, int):
        if square:
            return {"height": size, "width": size}
        return {"shortest_edge": size, **({"longest_edge": int(max_size)} if max_size else {})}
    if isinstance(size, list | tuple) and len(size) == 2:
        return {"height": int(size[0]), "width": int(size[1])}
    if isinstance(size, Mapping):
        rule = {key: int(value) for key, value in size.items() if value is not None}
        for keys in (("height", "width"), ("max_height", "max_width"),
                     ("shortest_edge", "longest_edge"), ("shortest_edge",)):
            if set(keys) <= set(rule):
                return {key: rule[key] for key in keys}
    raise UserError(f"{source}: size {size!r} is not a size this loader reads (height/width, "
                    "shortest_edge[/longest_edge], max_height/max_width or a number)")


def read_preprocessing(folder: Path, model_type: str) -> Preprocessing:
    """The preprocessing ``folder/preprocessor_config.json`` declares for a ``model_type``
    model (the image processor's defaults for what it leaves out)."""
    path, config = folder / PREPROCESSOR_FILE, None
    if path.is_file():
        config = read_json(path)
    elif (folder / PROCESSOR_FILE).is_file():  # a whole processor saved by transformers 5
        path = folder / PROCESSOR_FILE
        config = read_json(path).get("image_processor")
    if not isinstance(config, dict):
        raise UserError(f"{folder} has no {PREPROCESSOR_FILE} (the image size, mean and std the "
                        "model expects); save it beside the model with AutoImageProcessor."
                        "from_pretrained(NAME).save_pretrained(DIR)")
    size = None
    if config.get("do_resize", True):
        size = _size_rule(config.get("size", _DEFAULT_SIZE[model_type]), config.get("max_size"),
                          model_type in ("segformer", "upernet"), path)
    normalize = config.get("do_normalize", True)
    return Preprocessing(
        size=size,
        mode=_RESAMPLE.get(int(config.get("resample", 2)), "bilinear"),
        size_divisor=int(config.get("size_divisor") or _DEFAULT_DIVISOR.get(model_type, 0)),
        scale=float(config.get("rescale_factor", 1 / 255)) if config.get("do_rescale", True)
        else 1.0,
        mean=_triple(config.get("image_mean", _IMAGENET_MEAN)) if normalize else (0.0,) * 3,
        std=_triple(config.get("image_std", _IMAGENET_STD)) if normalize else (1.0,) * 3,
    )


def _triple(value: Any) -> tuple[float, float, float]:
    values = [float(value)] * 3 if isinstance(value, int | float) else [float(v) for v in value]
    return values[0], values[1], values[2]


def read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"cannot read {path} as JSON ({error}); download it again") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} holds a {type(data).__name__}, not a JSON object")
    return data


# ------------------------------------------------------------------------- the segmenter
class HuggingFaceSegmenter(nn.Module):
    """A ``transformers`` segmentation model behind the segmenter interface.

    ``segment(images)`` gives ``{"object": (N, H, W) codes}`` and ``probabilities(images)``
    ``{"object": (N, codes, H, W)}`` (differentiable w.r.t. the images), for (N, 3, H, W)
    images in [-1, 1] of any size; ``concepts["object"]`` names the codes (code 0 ``"none"``).
    Calling it gives the log-probabilities (a softmax of them is ``probabilities``).

    Example:
        >>> segmenter = load_hf_segmenter("face-parsing/")   # a save_pretrained folder
        >>> segmenter.segment(images)["object"].shape        # (N, H, W)
    """

    def __init__(self, model: nn.Module, kind: str, names: list[str], codes: list[int],
                 preprocessing: Preprocessing, task_tokens: torch.Tensor | None = None) -> None:
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.kind = kind
        self.preprocessing = preprocessing
        self.categories = ["object"]
        self.concepts = {"object": list(names)}
        self.register_buffer("codes", torch.tensor(codes, dtype=torch.long), persistent=False)
        self.register_buffer("mean", torch.tensor(preprocessing.mean).view(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer("std", torch.tensor(preprocessing.std).view(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer("task_tokens", task_tokens, persistent=False)

    def fingerprint(self) -> str:
        """What the segmenter computes with beyond its weights (for the caches' keys)."""
        tokens = None if self.task_tokens is None else self.task_tokens.tolist()
        return f"{self.kind}|{self.preprocessing}|{self.codes.tolist()}|{tokens}"

    def pixel_values(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) images in [-1, 1] -> the model's input, as its image processor makes
        it from the same images saved as 8-bit RGB (without the rounding to 8 bits)."""
        pixels = ((images.float() + 1) * 127.5).clamp(0, 255)
        size = self.preprocessing.input_size(*images.shape[-2:])
        if size != tuple(images.shape[-2:]):
            mode = self.preprocessing.mode
            pixels = F.interpolate(pixels, size=size, mode=mode,
                                   **({} if mode == "nearest" else
                                      {"align_corners": False, "antialias": True}))
        return (pixels * self.preprocessing.scale - self.mean) / self.std

    def _outputs(self, images: torch.Tensor) -> Any:
        pixel_values = self.pixel_values(images)
        if self.task_tokens is None:
            return self.model(pixel_values=pixel_values)
        tokens = self.task_tokens.expand(len(pixel_values), -1)
        return self.model(pixel_values=pixel_values, task_inputs=tokens)

    def _class_probabilities(self, outputs: Any, index: int,
                             size: tuple[int, int]) -> torch.Tensor:
        """(classes, H, W) probabilities of image ``index`` of a batch's outputs."""
        if self.kind == "logits":
            return _resized(outputs.logits[index], size).softmax(0)
        classes = outputs.class_queries_logits[index].softmax(-1)[:, :-1]  # drop the null class
        masks = outputs.masks_queries_logits[index]
        if self.kind == "query_masks":
            masks = _resized(masks, size)
        scores = torch.einsum("qc,qhw->chw", classes, masks.sigmoid())
        if self.kind == "query_scores":
            scores = _resized(scores, size)
        return scores / scores.sum(0, keepdim=True).clamp_min(1e-12)

    def _by_code(self, probabilities: torch.Tensor) -> torch.Tensor:
        """(classes, H, W) -> (codes, H, W): the probabilities of classes sharing a code add."""
        merged = probabilities.new_zeros((len(self.concepts["object"]), *probabilities.shape[1:]))
        return merged.index_add(0, self.codes, probabilities)

    def probabilities(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """(N, 3, H, W) images in [-1, 1] -> ``{"object": (N, codes, H, W)}`` per-pixel
        probabilities of the codes (summing to 1), differentiable w.r.t. ``images``; computed
        on the segmenter's device, returned on the images'."""
        outputs = self._outputs(images.to(self.mean.device))
        size = tuple(images.shape[-2:])
        probabilities = torch.stack([self._by_code(self._class_probabilities(outputs, i, size))
                                     for i in range(len(images))])
        return {"object": probabilities.to(images.device)}

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{"object": (N, codes, H, W)}`` log-probabilities (see ``probabilities``)."""
        return {category: p.clamp_min(1e-30).log()
                for category, p in self.probabilities(images).items()}

    @torch.no_grad()
    def segment(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """(N, 3, H, W) images in [-1, 1] -> ``{"object": (N, H, W)}`` long label codes, the
        argmax of ``probabilities`` (computed image by image to bound the memory), on the
        images' device."""
        outputs = self._outputs(images.to(self.mean.device))
        size = tuple(images.shape[-2:])
        labels = torch.stack([self._by_code(self._class_probabilities(outputs, i, size)).argmax(0)
                              for i in range(len(images))])
        return {"object": labels.to(images.device)}


def _resized(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(C, h, w) -> (C, H, W), bilinear."""
    if tuple(maps.shape[-2:]) == size:
        return maps
    return F.interpolate(maps[None], size=size, mode="bilinear", align_corners=False)[0]


# ------------------------------------------------------------------------- loading
def _transformers() -> Any:
    try:
        import transformers
    except ImportError:
        raise UserError("hf: segmenters need Hugging Face transformers: "
                        f"{INSTALL}") from None
    return transformers


@contextlib.contextmanager
def quiet_transformers(transformers: Any) -> Iterator[None]:
    """transformers' progress bars and load reports off (restored after): a mismatch is raised
    here as one line instead."""
    logging = transformers.utils.logging
    verbosity, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)
        if bars:
            logging.enable_progress_bar()


def _offline() -> bool:
    import huggingface_hub

    flag = os.environ.get("HF_HUB_OFFLINE", "").strip().upper()
    return flag in {"1", "ON", "YES", "TRUE"} or bool(huggingface_hub.constants.HF_HUB_OFFLINE)


def _has_weights(folder: Path) -> bool:
    return any((folder / name).is_file() for name in (*_SAFE_WEIGHTS, *_PICKLED_WEIGHTS))


def _fetch(name: str) -> Path:
    """The Hub's cached copy of model ``name``, downloaded first when the machine is online:
    the configs, the tokenizer files and the safetensors weights (a pickle only where there are
    none). A ``UserError`` in one line when it cannot be had."""
    import huggingface_hub
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    files = [CONFIG_FILE, PREPROCESSOR_FILE, PROCESSOR_FILE, *_TOKENIZER_FILES]
    safe = [*files, "*.safetensors", "model.safetensors.index.json"]
    with contextlib.suppress(Exception):  # not in the cache
        folder = Path(huggingface_hub.snapshot_download(name, allow_patterns=safe,
                                                        local_files_only=True))
        if (folder / CONFIG_FILE).is_file() and _has_weights(folder):
            return folder
    offline = (f"cannot fetch {name} from the Hugging Face Hub: no network, and no folder "
               f"{name} here; on a machine with internet run `hf download {name} --local-dir "
               "DIR` (older huggingface_hub: `huggingface-cli download`) and pass hf:DIR")
    if _offline():
        raise UserError(offline)
    try:
        folder = Path(huggingface_hub.snapshot_download(name, allow_patterns=safe))
        if not _has_weights(folder):
            folder = Path(huggingface_hub.snapshot_download(
                name, allow_patterns=[*files, "pytorch_model*.bin", _PICKLED_WEIGHTS[1]]))
    except GatedRepoError:
        raise UserError(f"{name} is gated on the Hugging Face Hub: accept its terms on its page "
                        "and log in with `hf auth login`, then try again") from None
    except RepositoryNotFoundError:
        raise UserError(f"no model {name} on the Hugging Face Hub (nor a folder {name} here); "
                        "check the name, or log in with `hf auth login` if it is "
                        "private") from None
    except Exception as error:  # the network's errors come in many types
        raise UserError(f"{offline} ({first_line(error)})") from None
    return folder


def hf_folder(target: str) -> Path:
    path = Path(target).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise UserError(f"hf: takes a folder written by save_pretrained (config.json, weights, "
                        f"{PREPROCESSOR_FILE}) or a Hub name, not the file {path}")
    if _HUB_NAME.fullmatch(target) and ".." not in target:
        return _fetch(target)
    raise UserError(f"folder {path} does not exist (hf: takes a save_pretrained folder or a "
                    "Hub name such as nvidia/segformer-b0-finetuned-ade-512-512)")


def folder_state_dict(folder: Path) -> dict[str, torch.Tensor]:
    """The folder's weights, from safetensors where it has them, else from pickles read with
    ``weights_only`` (a pickle that would run code is refused)."""
    for single, index in (_SAFE_WEIGHTS, _PICKLED_WEIGHTS):
        if (folder / single).is_file():
            return read_state_dict(folder / single)
        if (folder / index).is_file():
            shards = sorted(set(read_json(folder / index).get("weight_map", {}).values()))
            state: dict[str, torch.Tensor] = {}
            for shard in shards:
                state.update(read_state_dict(folder / shard))
            return state
    raise UserError(f"{folder} holds no weights ({', '.join(_SAFE_WEIGHTS + _PICKLED_WEIGHTS)});"
                    " download the model's weight files into it")


def _architecture(folder: Path) -> tuple[str, str, str]:
    """(model_type, model class name, post-processing) from ``config.json``, read as JSON."""
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise UserError(f"{folder} has no {CONFIG_FILE}: hf: takes a folder written by "
                        "save_pretrained (or `hf download NAME --local-dir DIR`)")
    config = read_json(path)
    model_type = config.get("model_type")
    supported = ", ".join(class_name for class_name, _ in ARCHITECTURES.values())
    timm_folder = "architecture" in config and not model_type  # timm's Hub layout
    classifier = timm_folder or any("ForImageClassification" in str(name)
                                    for name in config.get("architectures") or [])
    hint = (f"; it is an image classifier: pass it as --classifier "
            f"{'timm' if timm_folder else 'hf'}:{folder}" if classifier else "")
    if model_type not in ARCHITECTURES:
        raise UserError(f"{folder} holds a {model_type or 'model of no model_type'}, not a "
                        f"semantic-segmentation model hf: reads ({supported}){hint}")
    class_name, kind = ARCHITECTURES[model_type]
    declared = config.get("architectures") or [class_name]
    if class_name not in declared:
        raise UserError(f"{folder} holds a {declared[0]}, not a {class_name} (hf: reads "
                        f"{supported}){hint}")
    return model_type, class_name, kind


def build_hf_model(transformers: Any, folder: Path, class_name: str) -> nn.Module:
    model_class = getattr(transformers, class_name)
    config = model_class.config_class.from_pretrained(str(folder), local_files_only=True)
    if getattr(config, "use_pretrained_backbone", False):
        config.use_pretrained_backbone = False  # the folder's weights hold the backbone
    state = folder_state_dict(folder)
    try:
        model, info = model_class.from_pretrained(None, config=config, state_dict=state,
                                                  output_loading_info=True)
    except ImportError as error:  # a backbone from another library (timm)
        raise UserError(f"the model in {folder} needs {error.name or 'another package'}: "
                        f"pip install {error.name or 'timm'}") from None
    except (RuntimeError, ValueError) as error:
        raise UserError(f"the weights in {folder} do not fit its {CONFIG_FILE} "
                        f"({first_line(error)})") from None
    # the auxiliary head only helps training; a checkpoint may leave it out
    missing = sorted(key for key in info["missing_keys"] if not key.startswith("auxiliary_head"))
    if missing:
        raise UserError(f"the weights in {folder} do not fit its {CONFIG_FILE}: missing "
                        f"{_few(missing)} ({len(missing)} tensors)")
    return model.float().eval()


def _task_tokens(transformers: Any, folder: Path, length: int) -> torch.Tensor:
    """OneFormer's task input: "the task is semantic" tokenized with the folder's tokenizer
    and padded to ``length``, as ids with the padding zeroed (as OneFormerProcessor does)."""
    if not any((folder / name).is_file() for name in ("tokenizer.json", "vocab.json")):
        raise UserError(f"{folder} has no tokenizer files (vocab.json and merges.txt, or "
                        "tokenizer.json): OneFormer needs them to say which task it runs; "
                        "download the whole model folder")
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(
            str(folder), local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError) as error:
        raise UserError(f"cannot read the tokenizer in {folder} ({first_line(error)}); "
                        "download the model folder again") from None
    tokens = tokenizer([_SEMANTIC_TASK], padding="max_length", max_length=length,
                       truncation=True)
    ids = torch.tensor(tokens["input_ids"]) * torch.tensor(tokens["attention_mask"])
    return ids.float()


def load_hf_segmenter(target: str, device: str | torch.device = "cpu") -> HuggingFaceSegmenter:
    """The segmenter of a ``save_pretrained`` folder or a Hub name (``hf:NAME_OR_DIR``), on
    ``device``, in eval mode; a ``UserError`` in one line when it cannot be read."""
    transformers = _transformers()
    folder = hf_folder(target)
    model_type, class_name, kind = _architecture(folder)
    preprocessing = read_preprocessing(folder, model_type)
    with quiet_transformers(transformers):
        model = build_hf_model(transformers, folder, class_name)
        task_tokens = (_task_tokens(transformers, folder, model.config.task_seq_len)
                       if model_type == "oneformer" else None)
    names, codes = concept_codes(model.config.id2label, model.config.num_labels)
    return HuggingFaceSegmenter(model, kind, names, codes, preprocessing, task_tokens).to(device)
