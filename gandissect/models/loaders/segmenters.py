"""Segmenters of real images, loaded from the files their authors publish.

    upp:DIR            Unified Perceptual Parsing (CSAILVision/unifiedparsing), the segmenter of
                       GAN Dissection: objects, parts and materials of Broden+
    semseg:DIR         CSAIL's ADE20K scene parsing (CSAILVision/semantic-segmentation-pytorch):
                       the 150 ADE20K objects
    torchvision:ARCH   torchvision's segmentation models with a weights file: the 21 VOC classes

Every segmenter takes images in [-1, 1] of any size, converts them to its network's input
convention (channel order, mean and std, resolution), and returns its labels at the input size:
``segment(images) -> {category: (N, H, W) codes}`` and, differentiable,
``probabilities(images) -> {category: (N, codes, H, W)}`` (``segment`` is their argmax; code 0
is "none"). They are ``nn.Module``s: ``.to(device)`` moves them.

Checkpoints are read without running code (``read_state_dict``). CSAIL's files carry the
training-time buffers of their synchronised BatchNorm (``_tmp_running_mean``,
``_tmp_running_var``, ``_running_iter``), which inference does not use and which are dropped.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from gandissect.errors import UserError
from gandissect.models.inputs import IMAGENET_MEAN, IMAGENET_STD
from gandissect.models.loaders.files import fit_state_dict, read_state_dict
from gandissect.models.scene_parsing import (
    Bottleneck,
    DeepStemResNet,
    MobileNetV2,
    OneConv,
    PyramidPooling,
    UnifiedUPerNet,
    UPerNet,
)

__all__ = ["SEMSEG_ARCHS", "TORCHVISION_SEGMENTERS", "ImageSegmenter", "SceneParsingSegmenter",
           "TorchvisionSegmenter", "UnifiedParsingSegmenter", "ade20k_names", "load_semseg",
           "load_torchvision_segmenter", "load_upp"]

UPP_MEAN_BGR = (102.9801, 115.9465, 122.7717)  # subtracted from BGR pixels in 0..255
UPP_SIZE = 256  # GAN Dissection's segmentation size (its ``segsizes=[256]``)
SEMSEG_SHORT_SIDE, SEMSEG_LONG_SIDE = 300, 1000  # CSAIL's test: first scale, longest side cap
TORCHVISION_SIZE = 520  # the shorter side torchvision's segmentation weights resize to
SEMSEG_ARCHS = ("resnet18dilated-ppm_deepsup", "resnet50dilated-ppm_deepsup",
                "resnet101dilated-ppm_deepsup", "resnet50-upernet", "resnet101-upernet",
                "mobilenetv2dilated-c1_deepsup")
TORCHVISION_SEGMENTERS = ("fcn_resnet50", "fcn_resnet101", "deeplabv3_resnet50",
                          "deeplabv3_resnet101", "deeplabv3_mobilenet_v3_large",
                          "lraspp_mobilenet_v3_large")
_RESNET_DEPTHS = {"resnet18": (False, (2, 2, 2, 2)), "resnet50": (True, (3, 4, 6, 3)),
                  "resnet101": (True, (3, 4, 23, 3))}  # bottleneck blocks?, blocks per layer
_SYNC_BN_BUFFERS = ("_tmp_running_mean", "_tmp_running_var", "_running_iter")
_CHUNK = 2 ** 24  # probability values computed at once by ``segment`` (64 MB of float32)
_EPOCH = re.compile(r"^(encoder|decoder)_epoch_(\d+)\.pth$")


# ------------------------------------------------------------------------------ segmenters
class ImageSegmenter(nn.Module):
    """What the real-image segmenters share: ``categories``, ``concepts`` and ``segment``
    as the argmax of ``probabilities`` (computed a few images at a time, so that hundreds of
    classes at full resolution fit in memory)."""

    categories: list[str]
    concepts: dict[str, list[str]]

    def probabilities(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """(N, 3, H, W) images in [-1, 1] -> {category: (N, codes, H, W) probabilities}."""
        raise NotImplementedError

    @torch.no_grad()
    def segment(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """(N, 3, H, W) images in [-1, 1] -> {category: (N, H, W) long codes}, the most
        probable code of every pixel."""
        codes = sum(len(self.concepts[c]) for c in self.categories)
        step = max(1, _CHUNK // (codes * images.shape[-2] * images.shape[-1]))
        found: dict[str, list[torch.Tensor]] = {c: [] for c in self.categories}
        for start in range(0, len(images), step):
            for category, p in self.probabilities(images[start:start + step]).items():
                found[category].append(p.argmax(1))
        return {c: torch.cat(found[c]) for c in self.categories}

    def fingerprint(self) -> str:
        """The input settings, which change the labels as much as the weights do (mixed into
        the cache keys by ``gandissect.dissect.identity.fingerprint``)."""
        return json.dumps(self.settings(), sort_keys=True)

    def settings(self) -> dict:
        """The input convention (channel order, normalisation, sizes)."""
        return {}


def _resize(images: torch.Tensor, size: tuple[int, int], area: bool = False) -> torch.Tensor:
    """``images`` at ``size``: bilinear, antialiased when shrinking, or, with ``area``, box
    averages when both sides shrink (GAN Dissection's adaptive average pooling)."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    if area and images.shape[-2] >= size[0] and images.shape[-1] >= size[1]:
        return F.adaptive_avg_pool2d(images, size)
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False,
                         antialias=True)


def _upsample(logits: torch.Tensor, size) -> torch.Tensor:
    return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)


class UnifiedParsingSegmenter(ImageSegmenter):
    """Unified Perceptual Parsing's ResNet + UPerNet, as GAN Dissection runs it.

    Input: RGB [-1, 1] -> BGR in 0..255 minus ``UPP_MEAN_BGR`` (std 1), resized to
    ``sizes[k] x sizes[k]`` (default 256 only; several sizes average their probabilities).
    Logits are upsampled to the input size before the softmax.

    Categories: ``object`` and ``material`` are the heads' classes (their class 0, "-", is
    "none"). ``part``: every part name of the objects that have parts, once, in the order of
    the objects' codes; at a pixel the parts compete within the pixel's most probable object
    (its own softmax, as the network was trained), its part "-" and objects without parts
    giving "none". Unlike GAN Dissection, which kept the parts of sky, building and person
    only and counted a part named like an object (a building's door) as that object, every
    object's parts are kept and stay in ``part``.
    """

    def __init__(self, encoder: nn.Module, decoder: UnifiedUPerNet, labels: UppLabels,
                 sizes: tuple[int, ...] = (UPP_SIZE,)) -> None:
        super().__init__()
        self.encoder, self.decoder, self.sizes = encoder, decoder, tuple(sizes)
        self.categories = ["object", "part", "material"]
        part_names = list(dict.fromkeys(p for _, parts in labels.object_parts for p in parts
                                        if p != "-"))
        self.concepts = {"object": ["none", *labels.objects[1:]], "part": ["none", *part_names],
                         "material": ["none", *labels.materials[1:]]}
        code = {name: k for k, name in enumerate(self.concepts["part"])} | {"-": 0}
        self.part_sizes = [len(parts) for _, parts in labels.object_parts]
        channels = [code[p] for _, parts in labels.object_parts for p in parts]
        owners = [owner for owner, parts in labels.object_parts for _ in parts]
        # part channel -> part code, and the object each channel belongs to
        self.register_buffer("part_codes", F.one_hot(torch.tensor(channels),
                                                     len(self.concepts["part"])).float(),
                             persistent=False)
        self.register_buffer("channel_owner", torch.tensor(owners), persistent=False)
        self.register_buffer("mean", torch.tensor(UPP_MEAN_BGR)[:, None, None],
                             persistent=False)

    def settings(self) -> dict:
        return {"input": "BGR 0..255 minus mean", "mean": list(UPP_MEAN_BGR),
                "sizes": list(self.sizes)}

    def network_input(self, images: torch.Tensor) -> torch.Tensor:
        """[-1, 1] RGB images as the network takes them (before resizing)."""
        return ((images + 1) * 127.5).flip(1) - self.mean

    def probabilities(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.network_input(images)
        size = images.shape[-2:]
        total: dict[str, torch.Tensor] = {}
        for side in self.sizes:
            logits = self.decoder(self.encoder(_resize(x, (side, side), area=True)))
            found = {k: _upsample(v, size) for k, v in logits.items()}
            found["part"] = torch.cat([chunk.softmax(1) for chunk in
                                       found["part"].split(self.part_sizes, 1)], 1)
            found["object"], found["material"] = (found["object"].softmax(1),
                                                  found["material"].softmax(1))
            total = {k: total.get(k, 0) + v / len(self.sizes) for k, v in found.items()}
        owner = total["object"].argmax(1, keepdim=True)  # (N, 1, H, W)
        mine = (owner == self.channel_owner[None, :, None, None]).to(total["part"].dtype)
        parts = torch.einsum("nchw,cp->nphw", total["part"] * mine, self.part_codes)
        without = 1 - mine.amax(1)  # pixels whose object has no parts: "none"
        parts = parts + F.pad(without[:, None], (0, 0, 0, 0, 0, parts.shape[1] - 1))
        return {"object": total["object"], "part": parts, "material": total["material"]}


class SceneParsingSegmenter(ImageSegmenter):
    """One of CSAIL's ADE20K scene-parsing networks (encoder + decoder).

    Input: RGB in [0, 1] normalised with the ImageNet mean and std, resized (bilinear) so that
    the shorter side is ``sizes[k]`` (default 300, the first of CSAIL's test scales) and the
    longer at most 1000, each side rounded up to a multiple of ``padding`` (8, or 32 for
    UPerNet); several sizes average their probabilities. Logits are upsampled to the input size
    before the softmax. Category ``object``: the 150 ADE20K classes (code k = class k - 1);
    the network labels every pixel, so "none" has probability 0.
    """

    def __init__(self, encoder: nn.Module, decoder: nn.Module, names: list[str],
                 padding: int, sizes: tuple[int, ...] = (SEMSEG_SHORT_SIDE,)) -> None:
        super().__init__()
        self.encoder, self.decoder = encoder, decoder
        self.padding, self.sizes = int(padding), tuple(sizes)
        self.categories = ["object"]
        self.concepts = {"object": ["none", *names]}
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN)[:, None, None],
                             persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD)[:, None, None], persistent=False)

    def settings(self) -> dict:
        return {"input": "RGB 0..1, ImageNet mean and std", "sizes": list(self.sizes),
                "longest": SEMSEG_LONG_SIDE, "padding": self.padding}

    def network_size(self, height: int, width: int, side: int) -> tuple[int, int]:
        """The size an image of ``height x width`` is resized to for short side ``side``."""
        scale = min(side / min(height, width), SEMSEG_LONG_SIDE / max(height, width))
        return tuple(-(-int(length * scale) // self.padding) * self.padding
                     for length in (height, width))

    def network_input(self, images: torch.Tensor) -> torch.Tensor:
        """[-1, 1] RGB images as the network takes them (before resizing)."""
        return ((images + 1) / 2 - self.mean) / self.std

    def probabilities(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.network_input(images)
        size = images.shape[-2:]
        total = 0
        for side in self.sizes:
            resized = _resize(x, self.network_size(*size, side))
            logits = _upsample(self.decoder(self.encoder(resized)), size)
            total = total + logits.softmax(1) / len(self.sizes)
        return {"object": F.pad(total, (0, 0, 0, 0, 1, 0))}  # code 0, "none": never


class TorchvisionSegmenter(ImageSegmenter):
    """A torchvision segmentation model (FCN, DeepLabV3, LR-ASPP).

    Input as torchvision's weights declare it: the shorter side resized to ``size`` (520,
    bilinear, antialiased), RGB in [0, 1] normalised with the ImageNet mean and std. The
    ``out`` logits are upsampled to the input size before the softmax. Category ``object``:
    the model's classes, code 0 its background ("none"); 21 classes are VOC's.
    """

    def __init__(self, model: nn.Module, names: list[str], size: int = TORCHVISION_SIZE) -> None:
        super().__init__()
        self.model, self.size = model, int(size)
        self.categories = ["object"]
        self.concepts = {"object": ["none", *names[1:]]}
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN)[:, None, None],
                             persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD)[:, None, None], persistent=False)

    def settings(self) -> dict:
        return {"input": "RGB 0..1, ImageNet mean and std", "shorter_side": self.size}

    def network_input(self, images: torch.Tensor) -> torch.Tensor:
        """[-1, 1] RGB images as the network takes them (before resizing)."""
        return ((images + 1) / 2 - self.mean) / self.std

    def probabilities(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        height, width = images.shape[-2:]
        short, long = sorted((height, width))
        longer = int(self.size * long / short)  # as torchvision's resize of the shorter side
        size = (self.size, longer) if height <= width else (longer, self.size)
        logits = self.model(_resize(self.network_input(images), size))["out"]
        return {"object": _upsample(logits, (height, width)).softmax(1)}


# ------------------------------------------------------------------------------ files
def _directory(target: str, scheme: str) -> Path:
    directory = Path(target).expanduser()
    if not directory.is_dir():
        raise UserError(f"{scheme}:{target}: no such folder (it should hold the model's "
                        "encoder_epoch_N.pth and decoder_epoch_N.pth)")
    return directory


def _checkpoints(directory: Path, scheme: str, epoch: int | None = None) -> tuple[Path, Path]:
    """The encoder and decoder files: of ``epoch`` when both exist, else the latest pair."""
    epochs: dict[str, set[int]] = {"encoder": set(), "decoder": set()}
    for path in directory.iterdir():
        found = _EPOCH.match(path.name)
        if found:
            epochs[found.group(1)].add(int(found.group(2)))
    pairs = epochs["encoder"] & epochs["decoder"]
    if not pairs:
        raise UserError(f"{scheme}:{directory} holds no encoder_epoch_N.pth and "
                        "decoder_epoch_N.pth pair; download both files of the model into it")
    chosen = epoch if epoch in pairs else max(pairs)
    return (directory / f"encoder_epoch_{chosen}.pth",
            directory / f"decoder_epoch_{chosen}.pth")


def _read(path: Path) -> dict[str, torch.Tensor]:
    """A CSAIL checkpoint's tensors without its synchronised BatchNorm's training buffers."""
    return {key: value for key, value in read_state_dict(path).items()
            if key.rsplit(".", 1)[-1] not in _SYNC_BN_BUFFERS}


def _fit(model: nn.Module, state: dict[str, torch.Tensor], source: Path) -> nn.Module:
    """``fit_state_dict``, the BatchNorm counters (absent from files saved before PyTorch
    0.4.1, unused in evaluation) taken from ``model`` where the file has none."""
    own = model.state_dict()
    state = {**{k: v for k, v in own.items() if k.endswith("num_batches_tracked")}, **state}
    fit_state_dict(model, state, str(source))
    return model


def _build(build, state: dict[str, torch.Tensor], path: Path, what: str) -> nn.Module:
    """``build(state)``, a file that lacks the layout's keys reported in one line."""
    try:
        return _fit(build(state), state, path)
    except KeyError as missing:
        raise UserError(f"{path} is not {what}: it has no {missing.args[0]} (download it "
                        "again, or check that the folder holds this model's files)") from None


def _check_resnet(encoder: nn.Module, arch: str, path: Path) -> None:
    bottleneck, depths = _RESNET_DEPTHS[arch]
    found = tuple(len(getattr(encoder, f"layer{i}")) for i in (1, 2, 3, 4))
    kind = type(encoder.layer1[0])
    if found != depths or (kind is Bottleneck) != bottleneck:
        raise UserError(f"{path} is not a {arch} encoder (blocks per layer {found}, "
                        f"{kind.__name__} blocks); the config names another model than these "
                        "files")


# ------------------------------------------------------------------------------ upp:DIR
@dataclass(frozen=True)
class UppLabels:
    """Broden+ label names: objects and materials by class (class 0 is "-"), and the objects
    with parts, by object code, with their part names in the part head's order."""

    objects: list[str]
    materials: list[str]
    object_parts: list[tuple[int, list[str]]]


def _read_json_labels(path: Path) -> UppLabels:
    try:
        data = json.loads(path.read_text())
        objects, materials = list(map(str, data["object"])), list(map(str, data["material"]))
        parts = {str(k): list(map(str, v)) for k, v in data["object_part"].items()}
        code = {name: k for k, name in enumerate(objects)}
        owners = sorted((code[name], names) for name, names in parts.items())
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise UserError(f"{path} is not GAN Dissection's labels.json (lists 'object', "
                        f"'material' and a dict 'object_part'): {error!r}") from None
    return UppLabels(objects, materials, owners)


def _read_csv_labels(directory: Path) -> UppLabels:
    def names(path: Path) -> list[str]:
        with path.open(newline="") as stream:
            rows = sorted((int(row["label"]), row["name"]) for row in csv.DictReader(stream))
        return [name for _, name in rows]

    try:
        objects = names(directory / "object.csv")
        materials = names(directory / "material.csv")
        with (directory / "object_part_hierarchy.csv").open(newline="") as stream:
            owners = sorted((int(row["object_label"]), row["part_names"].split(";"))
                            for row in csv.DictReader(stream))
    except (ValueError, KeyError, TypeError) as error:
        raise UserError(f"{directory}: cannot read unifiedparsing's label csv files "
                        f"(object.csv, material.csv, object_part_hierarchy.csv): {error!r}"
                        ) from None
    return UppLabels(objects, materials, owners)


def _upp_labels(directory: Path) -> UppLabels:
    """GAN Dissection's ``labels.json``, else unifiedparsing's ``meta_file/joint_dataset`` csv
    files copied into the folder."""
    if (directory / "labels.json").is_file():
        return _read_json_labels(directory / "labels.json")
    needed = ("object.csv", "material.csv", "object_part_hierarchy.csv")
    if all((directory / name).is_file() for name in needed):
        return _read_csv_labels(directory)
    raise UserError(f"upp:{directory} has no label list: put GAN Dissection's labels.json "
                    "(from its upp-resnet50-upernet download) in the folder, or "
                    "unifiedparsing's meta_file/joint_dataset/{object,material,"
                    "object_part_hierarchy}.csv")


def load_upp(target: str, device: str | torch.device = "cpu") -> UnifiedParsingSegmenter:
    """``upp:DIR``: a Unified Perceptual Parsing model folder (``encoder_epoch_N.pth``,
    ``decoder_epoch_N.pth`` of a ResNet-50/101 + UPerNet, and its label list), in eval mode
    on ``device``."""
    directory = _directory(target, "upp")
    labels = _upp_labels(directory)
    encoder_path, decoder_path = _checkpoints(directory, "upp")
    encoder = _build(DeepStemResNet.from_state, _read(encoder_path), encoder_path,
                     "a Unified Perceptual Parsing ResNet encoder")
    if not isinstance(encoder.layer1[0], Bottleneck):
        raise UserError(f"{encoder_path} is not a ResNet-50/101 encoder (basic blocks)")
    decoder = _build(UnifiedUPerNet.from_state, _read(decoder_path), decoder_path,
                     "a Unified Perceptual Parsing UPerNet decoder")
    outputs = decoder.heads
    named = {"object": len(labels.objects), "material": len(labels.materials),
             "part": sum(len(parts) for _, parts in labels.object_parts)}
    wrong = [f"{k}: {named[k]} names, {outputs[k]} outputs" for k in named
             if named[k] != outputs[k]]
    if wrong:
        raise UserError(f"upp:{directory}: the label list does not fit the decoder "
                        f"({'; '.join(wrong)}); use the labels of this model")
    segmenter = UnifiedParsingSegmenter(encoder, decoder, labels)
    return segmenter.to(device).eval()


# ------------------------------------------------------------------------------ semseg:DIR
def ade20k_names(csv_path: Path | None = None) -> list[str]:
    """The 150 ADE20K class names by class. From ``object150_info.csv`` (CSAIL's file, whose
    ``Name`` column joins synonyms and the words of a name alike with ';') when given: a row
    that is the ADE20K benchmark's takes its readable name ("chest of drawers"), any other row
    its first word, made unique; else our copy of the benchmark's names."""
    table = resources.files("gandissect.models.loaders").joinpath("ade20k_object150.tsv")
    known = [line.split("\t") for line in table.read_text().splitlines() if line]
    if csv_path is None:
        return [name for _, name in known]
    readable = dict(known)
    try:
        with csv_path.open(newline="") as stream:
            rows = sorted((int(row["Idx"]), row["Name"]) for row in csv.DictReader(stream))
    except (ValueError, KeyError, TypeError) as error:
        raise UserError(f"{csv_path} is not CSAIL's object150_info.csv (columns Idx, Name): "
                        f"{error!r}") from None
    names: list[str] = []
    for index, cell in rows:
        name = readable.get(cell, cell.split(";")[0])
        names.append(name if name not in names else f"{name} ({index})")
    return names


def _semseg_config(directory: Path) -> tuple[str, str, int | None, int | None]:
    """Encoder and decoder names, checkpoint epoch and padding: from the folder's config YAML
    (CSAIL's ``config/ade20k-*.yaml``), else from the folder's published name
    (``ade20k-resnet50dilated-ppm_deepsup``)."""
    configs = sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")])
    if len(configs) > 1:
        raise UserError(f"semseg:{directory} holds several configs "
                        f"({', '.join(p.name for p in configs)}); keep this model's only")
    if configs:
        import yaml

        try:
            config = yaml.safe_load(configs[0].read_text()) or {}
            model, dataset = config.get("MODEL", {}), config.get("DATASET", {})
            encoder, decoder = str(model["arch_encoder"]), str(model["arch_decoder"])
        except (yaml.YAMLError, KeyError, TypeError, AttributeError) as error:
            raise UserError(f"{configs[0]} is not one of CSAIL's configs (MODEL: arch_encoder, "
                            f"arch_decoder): {error!r}") from None
        found = re.search(r"epoch_(\d+)", str((config.get("TEST") or {}).get("checkpoint", "")))
        padding = dataset.get("padding_constant")
        return (encoder.lower(), decoder.lower(), int(found.group(1)) if found else None,
                int(padding) if padding else None)
    named = re.fullmatch(r"ade20k-(\w+)-(\w+)", directory.resolve().name)
    if named:
        return named.group(1), named.group(2), None, None
    raise UserError(f"semseg:{directory} names no architecture: put the model's config YAML "
                    "(CSAIL's config/ade20k-ARCH.yaml) in the folder, or keep the published "
                    "folder name ade20k-ENCODER-DECODER")


def load_semseg(target: str, device: str | torch.device = "cpu") -> SceneParsingSegmenter:
    """``semseg:DIR``: one of CSAIL's ADE20K models (``encoder_epoch_N.pth``,
    ``decoder_epoch_N.pth``, its config YAML or published folder name, optionally
    ``object150_info.csv``), in eval mode on ``device``."""
    directory = _directory(target, "semseg")
    encoder_arch, decoder_arch, epoch, padding = _semseg_config(directory)
    if f"{encoder_arch}-{decoder_arch}" not in SEMSEG_ARCHS:
        raise UserError(f"semseg: encoder {encoder_arch} with decoder {decoder_arch} is not "
                        f"supported; supported: {', '.join(SEMSEG_ARCHS)}")
    encoder_path, decoder_path = _checkpoints(directory, "semseg", epoch)
    if encoder_arch.startswith("mobilenetv2"):
        encoder = _build(MobileNetV2.from_state, _read(encoder_path), encoder_path,
                         "a MobileNetV2 encoder")
    else:
        base = encoder_arch.removesuffix("dilated")
        encoder = _build(lambda s: DeepStemResNet.from_state(s, base != encoder_arch),
                         _read(encoder_path), encoder_path, f"a {base} encoder")
        _check_resnet(encoder, base, encoder_path)
    kind = {"ppm_deepsup": PyramidPooling, "upernet": UPerNet, "c1_deepsup": OneConv}
    decoder = _build(kind[decoder_arch].from_state, _read(decoder_path), decoder_path,
                     f"a {decoder_arch} decoder")
    classes = decoder.classes
    csv_path = directory / "object150_info.csv"
    names = ade20k_names(csv_path if csv_path.is_file() else None)
    if len(names) != classes:
        raise UserError(f"semseg:{directory}: the decoder has {classes} classes but "
                        f"{len(names)} names; put the model's object150_info.csv in the folder")
    padding = padding or (32 if decoder_arch == "upernet" else 8)  # CSAIL's configs
    return SceneParsingSegmenter(encoder, decoder, names, padding).to(device).eval()


# ------------------------------------------------------------------------------ torchvision
def _class_names(arch: str, classes: int) -> list[str]:
    import torchvision

    categories = next(iter(torchvision.models.get_model_weights(arch))).meta["categories"]
    if classes == len(categories):
        return list(categories)
    return [f"class {k}" for k in range(classes)]


def load_torchvision_segmenter(arch: str, device: str | torch.device = "cpu",
                               weights: str | Path | None = None) -> TorchvisionSegmenter:
    """``torchvision:ARCH``: a torchvision segmentation model with its weights file (a state
    dict, as torchvision releases them; ``aux_classifier.*`` keys, used only in training, are
    dropped), in eval mode on ``device``. Nothing is downloaded."""
    import torchvision

    if arch not in TORCHVISION_SEGMENTERS:
        raise UserError(f"unknown torchvision segmenter {arch!r}; known: "
                        f"{', '.join(TORCHVISION_SEGMENTERS)}")
    if weights is None:
        raise UserError(f"torchvision:{arch} needs its weights: --segmenter-weights FILE "
                        "(torchvision's released .pth, e.g. from download.pytorch.org/models/)")
    state = {k: v for k, v in read_state_dict(weights).items()
             if not k.startswith("aux_classifier.")}
    head = ("classifier.low_classifier.weight" if arch.startswith("lraspp")
            else "classifier.4.weight")
    if head not in state:
        raise UserError(f"{weights} is not torchvision {arch} weights: it has no {head}")
    classes = int(state[head].shape[0])
    model = torchvision.models.get_model(arch, weights=None, weights_backbone=None,
                                         num_classes=classes, aux_loss=False)
    fit_state_dict(model, state, str(weights))
    return TorchvisionSegmenter(model, _class_names(arch, classes)).to(device).eval()
