"""Classifiers as people have them: ``timm:NAME --weights FILE``, ``timm:DIR`` (the Hub's timm
layout) and ``hf:DIR`` (transformers' image classifiers), written in their published layouts
with random weights. Each loads offline to the library's own logits on the preprocessing its
config declares (restated here by hand), with the config's class names and input size, and runs
the gradient methods through ``gandissect attribute``; a user's mistake is one line."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from gandissect.cli import main
from gandissect.errors import UserError
from gandissect.models.inputs import preprocess_inside
from gandissect.models.specs import resolve_classifier, resolve_classifier_and_preprocess

timm = pytest.importorskip("timm")
transformers = pytest.importorskip("transformers")

MEAN, STD = (0.4, 0.5, 0.6), (0.2, 0.3, 0.25)  # declared by the configs, unlike any default
LABELS = ["cat", "dog", "bird"]


def _images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _by_hand(images: torch.Tensor, mean, std) -> torch.Tensor:
    """[-1, 1] images -> ((images + 1) / 2 - mean) / std, channel by channel."""
    channels = [((images[:, c] + 1) / 2 - mean[c]) / std[c] for c in range(3)]
    return torch.stack(channels, 1)


def _logits(spec: str, weights, images: torch.Tensor) -> tuple[torch.nn.Module, torch.Tensor]:
    model = preprocess_inside(*resolve_classifier_and_preprocess(spec, weights)).eval()
    with torch.no_grad():
        return model, model(images)


# ------------------------------------------------------------------ timm
@pytest.fixture(scope="module")
def resnet18():
    """timm's ResNet-18 with a 7-class head (random weights, as a fine-tuned model)."""
    torch.manual_seed(0)
    return timm.create_model("resnet18", pretrained=False, num_classes=7).eval()


def _timm_layouts(model, folder: Path) -> dict[str, Path]:
    """The model's state dict as timm's Hub files and training checkpoints hold it."""
    from safetensors.torch import save_file

    state = model.state_dict()
    other = {key: torch.randn_like(value) if value.is_floating_point() else value
             for key, value in state.items()}
    files = {"bin": folder / "pytorch_model.bin", "safetensors": folder / "model.safetensors",
             "train_ema": folder / "model_best.pth.tar", "places": folder / "places365.pth.tar"}
    torch.save(state, files["bin"])
    save_file({key: value.contiguous() for key, value in state.items()},
              str(files["safetensors"]))
    # timm's train.py: the EMA weights (the ones evaluated) beside the trained ones, its
    # argparse options, the optimizer
    torch.save({"epoch": 3, "arch": "resnet18", "state_dict": other, "state_dict_ema": state,
                "optimizer": {"state": {}, "param_groups": [{"lr": 0.1}]},
                "version": 2, "args": argparse.Namespace(model="resnet18", lr=0.1),
                "metric": 71.2}, files["train_ema"])
    # the Places365 release: DataParallel names in {'epoch', 'arch', 'state_dict', ...}
    torch.save({"epoch": 90, "arch": "resnet18", "best_prec1": 54.7,
                "state_dict": {f"module.{key}": value for key, value in state.items()}},
               files["places"])
    return files


@pytest.mark.parametrize("layout", ["bin", "safetensors", "train_ema", "places"])
def test_timm_weights_in_any_layout_give_timms_logits(resnet18, tmp_path, layout):
    weights = _timm_layouts(resnet18, tmp_path)[layout]
    images = _images(2, 64)
    model, logits = _logits("timm:resnet18", weights, images)
    config = timm.data.resolve_model_data_config(resnet18)
    with torch.no_grad():
        expected = resnet18(_by_hand(images, config["mean"], config["std"]))
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)
    assert model.input_size == 224 and tuple(model.input_mean) == (0.485, 0.456, 0.406)
    assert model.class_names == [f"class_{index}" for index in range(7)]


def test_timm_without_weights_is_imagenet_shaped_and_named():
    model = resolve_classifier("timm:resnet18")
    assert model.fc.out_features == 1000 and model.class_names[:2] == ["tench", "goldfish"]


def _save_timm_folder(folder: Path, model, safe: bool, **config) -> Path:
    from timm.models import save_for_hf

    save_for_hf(model, str(folder), safe_serialization=safe, model_config=config or None,
                data_config={"input_size": (3, 32, 32), "mean": MEAN, "std": STD})
    return folder


@pytest.fixture(scope="module")
def timm_folders(tmp_path_factory):
    """A ConvNeXt (1000 classes, model.safetensors) and a ViT at 32 px with patches of 8 (3
    named classes, pytorch_model.bin) in the Hub's timm layout, as timm's save_for_hf writes
    it; and the models themselves."""
    torch.manual_seed(1)
    convnext = timm.create_model("convnext_atto", pretrained=False).eval()
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8,
                            num_classes=3).eval()
    root = tmp_path_factory.mktemp("timm")
    synsets = ["n0001", "n0002", "n0003"]
    return {
        "convnext": (_save_timm_folder(root / "convnext", convnext, True), convnext),
        "vit": (_save_timm_folder(root / "vit", vit, False, label_names=synsets,
                                  label_descriptions=dict(zip(synsets, LABELS))), vit),
    }


@pytest.mark.parametrize("name", ["convnext", "vit"])
def test_timm_hub_folders_give_timms_logits_sizes_and_names(timm_folders, name):
    folder, reference = timm_folders[name]
    config = json.loads((folder / "config.json").read_text())
    assert config["pretrained_cfg"]["input_size"] == [3, 32, 32]  # the layout as published
    assert (folder / ("model.safetensors" if name == "convnext" else "pytorch_model.bin")).is_file()
    images = _images(2, 32)
    for spec in (f"timm:{folder}", f"hf:{folder}"):  # the Hub's timm folders load either way
        model, logits = _logits(spec, None, images)
        with torch.no_grad():
            expected = reference(_by_hand(images, MEAN, STD))
        torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)
        assert model.input_size == 32
        assert (tuple(model.input_mean), tuple(model.input_std)) == (MEAN, STD)
        names = model.class_names
        assert names[:2] == ["tench", "goldfish"] if name == "convnext" else names == LABELS


# ------------------------------------------------------------------ transformers
def _hf_config(kind: str):
    labels = {"id2label": dict(enumerate(LABELS)),
              "label2id": {label: index for index, label in enumerate(LABELS)}}
    if kind == "resnet":
        return transformers.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1],
                                         layer_type="basic", **labels)
    if kind == "convnext":
        return transformers.ConvNextConfig(num_stages=2, hidden_sizes=[8, 16], depths=[1, 1],
                                           **labels)
    if kind == "vit":
        return transformers.ViTConfig(image_size=32, patch_size=8, hidden_size=16,
                                      num_hidden_layers=2, num_attention_heads=2,
                                      intermediate_size=32, **labels)
    return transformers.SwinConfig(image_size=32, patch_size=4, embed_dim=8, depths=[1, 1],
                                   num_heads=[1, 2], window_size=4, **labels)


def _hf_processor(kind: str):
    """The image processor each family is published with, at 32 px, each spelling its size
    another way: {shortest_edge}, a number (older files), {height, width}, crop_size."""
    declared = {"image_mean": list(MEAN), "image_std": list(STD)}
    if kind in ("resnet", "convnext"):
        return transformers.ConvNextImageProcessor(size={"shortest_edge": 32}, **declared)
    if kind == "vit":
        return transformers.ViTImageProcessor(size={"height": 32, "width": 32}, **declared)
    return transformers.DeiTImageProcessor(size={"height": 40, "width": 40},
                                           crop_size={"height": 32, "width": 32}, **declared)


HF_KINDS = ("resnet", "convnext", "vit", "swin")


@pytest.fixture(scope="module")
def hf_folders(tmp_path_factory):
    """Each family saved with save_pretrained (model.safetensors; ResNet as pytorch_model.bin)
    beside its image processor's preprocessor_config.json."""
    root = tmp_path_factory.mktemp("hf")
    folders = {}
    for kind in HF_KINDS:
        torch.manual_seed(2)
        model = transformers.AutoModelForImageClassification.from_config(_hf_config(kind))
        folder = root / kind
        model.eval().save_pretrained(folder, safe_serialization=kind != "resnet")
        if kind == "resnet":  # a folder with the pickled weights only, as older repositories
            for extra in folder.glob("*.safetensors"):
                extra.unlink()
            torch.save(model.state_dict(), folder / "pytorch_model.bin")
        _hf_processor(kind).save_pretrained(folder)
        if kind == "convnext":  # the size as a bare number, as older preprocessor files have
            path = folder / "preprocessor_config.json"
            config = json.loads(path.read_text())
            path.write_text(json.dumps({**config, "size": 32}))
        folders[kind] = (folder, model)
    return folders


@pytest.mark.parametrize("kind", HF_KINDS)
def test_hf_folders_give_transformers_logits_sizes_and_names(hf_folders, kind):
    folder, reference = hf_folders[kind]
    assert (folder / "config.json").is_file() and (folder / "preprocessor_config.json").is_file()
    images = _images(2, 32)
    model, logits = _logits(f"hf:{folder}", None, images)
    # the processor's own arithmetic on 8-bit values p = (x + 1) * 127.5
    pixels = (images + 1) * 127.5
    mean, std = torch.tensor(MEAN)[:, None, None], torch.tensor(STD)[:, None, None]
    with torch.no_grad():
        expected = reference(pixel_values=(pixels * (1 / 255) - mean) / std).logits
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)
    assert model.input_size == 32 and model.class_names == LABELS
    # the layers are the transformers model's, under ``model.``
    names = [name for name, _ in model.named_modules()]
    assert names[2:] == [f"model.{name}" for name, _ in reference.named_modules()][1:]


def test_the_image_processor_and_our_preprocessing_agree(hf_folders, tmp_path):
    """The trusted peer: ViTImageProcessor on an 8-bit image file gives the input our reading
    of the same file gives."""
    from gandissect.netdissect.folder import load_image

    folder, _ = hf_folders["vit"]
    model = resolve_classifier(f"hf:{folder}")
    array = (torch.rand(32, 32, 3, generator=torch.Generator().manual_seed(3)) * 255).byte()
    Image.fromarray(array.numpy()).save(tmp_path / "photo.png")
    processor = transformers.AutoImageProcessor.from_pretrained(str(folder))
    with Image.open(tmp_path / "photo.png") as picture:
        theirs = processor(images=picture.convert("RGB"), return_tensors="pt")["pixel_values"]
    ours = _by_hand(load_image(tmp_path / "photo.png", model.input_size)[None],
                    model.input_mean, model.input_std)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)


@pytest.mark.parametrize("kind", ["resnet", "vit"])
def test_gradients_flow_through_the_wrapper(hf_folders, kind):
    """Saliency on the wrapped model is the gradient of the transformers model's logit with
    respect to the [-1, 1] image, taken by hand through the restated preprocessing."""
    from gandissect.attribute import Saliency

    folder, reference = hf_folders[kind]
    model = preprocess_inside(*resolve_classifier_and_preprocess(f"hf:{folder}")).eval()
    images = _images(1, 32, seed=4)
    ours = Saliency(model).attribute(images, target=1)
    x = images.clone().requires_grad_(True)
    pixels = ((x + 1) * 127.5) / 255
    mean, std = torch.tensor(MEAN)[:, None, None], torch.tensor(STD)[:, None, None]
    reference(pixel_values=(pixels - mean) / std).logits[0, 1].backward()
    torch.testing.assert_close(ours, x.grad, rtol=1e-4, atol=1e-6)


def test_sizes_in_every_spelling(tmp_path):
    from gandissect.models.loaders.hf_classifiers import read_input

    cases = [({"size": {"height": 48, "width": 48}}, 48), ({"size": {"shortest_edge": 40}}, 40),
             ({"size": 36}, 36), ({"size": 64, "do_center_crop": True, "crop_size": 56}, 56),
             ({"do_resize": False}, 28)]
    for config, side in cases:
        (tmp_path / "preprocessor_config.json").write_text(json.dumps(
            {**config, "image_mean": [0.5] * 3, "image_std": [0.5] * 3,
             "rescale_factor": 1 / 127.5}))
        size, mean, std = read_input(tmp_path, image_size=28)
        # p / 127.5 - 0.5 over 0.5 is x / 2 - 0.25 over 0.25 on [0, 1] pixels x = p / 255
        assert size == side and mean == pytest.approx((0.25,) * 3)
        assert std == pytest.approx((0.25,) * 3)


# ------------------------------------------------------------------ the attribute command
@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    for index in range(2):
        array = (torch.rand(40, 48, 3, generator=torch.Generator().manual_seed(index)) * 255)
        Image.fromarray(array.byte().numpy()).save(folder / f"photo{index}.png")
    return folder


@pytest.fixture(scope="module")
def test_resnet_weights(tmp_path_factory) -> Path:
    """timm's tiny test ResNet (160 px, mean 0.5) fine-tuned to the 3 classes, as a file."""
    torch.manual_seed(5)
    path = tmp_path_factory.mktemp("weights") / "test_resnet.safetensors"
    from safetensors.torch import save_file

    model = timm.create_model("test_resnet", pretrained=False, num_classes=3)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


@pytest.mark.parametrize("source", ["timm_weights", "timm_folder", "hf_vit", "hf_swin"])
def test_attribute_command_runs_gradient_methods(source, photos, test_resnet_weights,
                                                 timm_folders, hf_folders, tmp_path, capsys):
    from gandissect.netdissect.folder import load_image

    spec, weights, size = {
        "timm_weights": ("timm:test_resnet", str(test_resnet_weights), 160),
        "timm_folder": (f"timm:{timm_folders['vit'][0]}", None, 32),
        "hf_vit": (f"hf:{hf_folders['vit'][0]}", None, 32),
        "hf_swin": (f"hf:{hf_folders['swin'][0]}", None, 32),
    }[source]
    out = tmp_path / "maps"
    argv = ["attribute", "--classifier", spec, "--images", str(photos), "--methods",
            "saliency,integrated_gradients", "--out", str(out), "--json", "--quiet",
            "--device", "cpu", *(["--weights", weights] if weights else [])]
    assert main(argv) == 0
    index = json.loads(capsys.readouterr().out)
    assert index["input_size"] == size and len(index["images"]) == 2
    model, _ = _logits(spec, weights, torch.zeros(1, 3, size, size))
    for record in index["images"]:
        image = load_image(photos / record["file"], size)[None]
        with torch.no_grad():
            probabilities = torch.softmax(model(image)[0], 0)
        assert record["predicted"] == model.class_names[int(probabilities.argmax())]
        assert record["probability"] == pytest.approx(float(probabilities.max()), abs=1e-5)
        for png in record["maps"].values():
            with Image.open(out / png) as picture:
                assert picture.size == (size, size)


def test_the_app_serves_them_at_their_size_with_their_names(timm_folders, hf_folders, photos):
    """The app's classifier side: an upload is read at the declared input size, the
    probabilities are named with the config's classes, and a gradient map explains them."""
    from gandissect.app.explain import ClassifierModels
    from gandissect.app.pictures import load_upload

    specs = [f"timm:{timm_folders['vit'][0]}", f"hf:{hf_folders['convnext'][0]}"]
    models = ClassifierModels(specs)
    for spec in specs:
        classifier = models.get(spec)
        assert classifier.input_size == 32 and classifier.class_names == LABELS
        image = load_upload(photos / "photo0.png", classifier.input_size)
        assert image.shape == (3, 32, 32)
        explanation = models.explain(spec, image, "integrated_gradients", "", None)
        assert list(explanation.probabilities) == LABELS
        assert explanation.pixel_map.shape == (32, 32)
        with torch.no_grad():
            expected = torch.softmax(classifier.model(image[None])[0], 0)
        assert explanation.target == int(expected.argmax())


# ------------------------------------------------------------------ mistakes, in one line
def _one_line(error: pytest.ExceptionInfo) -> str:
    text = str(error.value)
    assert "\n" not in text
    return text


def test_unknown_timm_names_get_the_closest_ones():
    with pytest.raises(UserError) as error:
        resolve_classifier("timm:resnet1B")
    text = _one_line(error)
    assert "unknown timm model 'resnet1B'" in text and "resnet18" in text


def test_weights_that_do_not_fit_are_named(timm_folders, tmp_path):
    torch.save(timm_folders["vit"][1].state_dict(), tmp_path / "vit.pth")
    with pytest.raises(UserError) as error:
        resolve_classifier("timm:resnet18", tmp_path / "vit.pth")
    assert "does not fit ResNet" in _one_line(error)


def test_folders_without_config_json(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    for spec in (f"timm:{tmp_path}", f"hf:{tmp_path}"):
        with pytest.raises(UserError) as error:
            resolve_classifier(spec)
        assert "has no config.json" in _one_line(error)


def test_folders_of_the_other_kind_say_what_they_hold(hf_folders, timm_folders, tmp_path):
    from gandissect.models.specs import resolve_segmenter

    transformers.SegformerConfig().save_pretrained(tmp_path)  # a segmenter's config.json
    with pytest.raises(UserError) as error:
        resolve_classifier(f"hf:{tmp_path}")
    assert "a segmenter, not a classifier: pass it as --segmenter hf:" in _one_line(error)
    for folder, kind in ((hf_folders["vit"][0], "hf"), (timm_folders["vit"][0], "timm")):
        with pytest.raises(UserError) as error:
            resolve_segmenter(f"hf:{folder}")
        assert f"it is an image classifier: pass it as --classifier {kind}:" in \
            _one_line(error)
    with pytest.raises(UserError) as error:
        resolve_classifier(f"timm:{hf_folders['vit'][0]}")
    assert "transformers vit model: pass it as hf:" in _one_line(error)


def test_layers_lists_an_hf_classifier_at_its_input_size(hf_folders, tmp_path, capsys):
    from gandissect.cli.layers import spelled_kind

    assert main(["layers", f"hf:{hf_folders['swin'][0]}"]) == 0
    listing = capsys.readouterr().out
    assert "a classifier, traced with a 32 px image" in listing
    assert "model.swin.encoder.layers.1 " in listing
    transformers.SegformerConfig().save_pretrained(tmp_path)
    assert spelled_kind(f"hf:{tmp_path}") == "segmenter"


def test_folders_refuse_a_weights_file(hf_folders, timm_folders, resnet18, tmp_path):
    torch.save(resnet18.state_dict(), tmp_path / "r18.pth")
    for spec in (f"hf:{hf_folders['vit'][0]}", f"timm:{timm_folders['vit'][0]}"):
        with pytest.raises(UserError) as error:
            resolve_classifier(spec, tmp_path / "r18.pth")
        assert "leave --weights out" in _one_line(error)


def test_a_hub_name_offline_is_one_line_without_a_download(monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError) as error:
        resolve_classifier("hf:gandissect-tests/no-such-classifier")
    assert "cannot fetch gandissect-tests/no-such-classifier" in _one_line(error)
    assert main(["layers", "hf:gandissect-tests/no-such-classifier"]) == 2
    assert "hf download" in capsys.readouterr().err


# ------------------------------------------------------------------ every method, every family
NOT_APPLICABLE = {
    # ReLU, BatchNorm and a GAP head: everything but LRP (its forward is not rebuilt)
    "resnet": {"lrp"},
    # GELU (no guided rule), LayerNorm after the pooling (CAM is not exact), LayerNorm (LRP)
    "convnext": {"guided_backprop", "deconvolution", "cam", "lrp"},
    # GELU, a class-token head (no CAM), attention (AttnLRP is not implemented)
    "vit": {"guided_backprop", "deconvolution", "cam", "lrp"},
    # GELU and attention; its LayerNorm comes before the average pool, so CAM holds
    "swin": {"guided_backprop", "deconvolution", "lrp"},
}


@pytest.mark.parametrize("kind", HF_KINDS)
def test_every_applicable_method_runs_on_each_family(kind, hf_folders, photos, tmp_path,
                                                     capsys):
    """``attribute --methods all``: a map from every method that applies, and for the others
    one line saying why, in attributions.json and on stderr; the same methods run in the app."""
    from gandissect.app.explain import ClassifierModels
    from gandissect.app.pictures import load_upload
    from gandissect.attribute.evaluate import METHODS

    spec = f"hf:{hf_folders[kind][0]}"
    out = tmp_path / "maps"
    assert main(["attribute", "--classifier", spec, "--images", str(photos), "--methods", "all",
                 "--out", str(out), "--json", "--quiet", "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    index = json.loads(captured.out)
    skipped = index["skipped"]
    assert set(skipped) == NOT_APPLICABLE[kind]
    assert all("\n" not in reason and reason for reason in skipped.values())
    assert all(f"skipped {method}" in captured.err for method in skipped)
    for record in index["images"]:
        assert set(record["maps"]) == set(METHODS) - NOT_APPLICABLE[kind]
        for png in record["maps"].values():
            assert (out / png).is_file()
    models = ClassifierModels([spec])
    image = load_upload(photos / "photo0.png", 32)
    layer = models.get(spec).layers and next(reversed(models.get(spec).layers))
    for method in sorted(set(METHODS) - NOT_APPLICABLE[kind]):
        explanation = models.explain(spec, image, method, layer, None)
        assert explanation.pixel_map.shape == (32, 32)
        assert bool(torch.isfinite(torch.as_tensor(explanation.pixel_map)).all())
