"""User models on the command line, with the same commands as the shipped ones."""

from __future__ import annotations

import json
import re
import warnings

import pytest
import torch
import torchvision
from conftest import end_to_end

from gandissect.cli import main
from gandissect.models.proggan import ProGANGenerator
from gandissect.models.registry import shipped_path

needs_segmenter = pytest.mark.skipif(not shipped_path("segmenter").is_file(),
                                     reason="the shipped segmenter is not in models/")


@pytest.fixture(scope="module")
def proggan_file(tmp_path_factory):
    """A tiny random ProGAN (32 px, z_dim 16, 8 units at 8x8) saved in the GAN Dissection layout."""
    torch.manual_seed(0)
    generator = ProGANGenerator(16, [8, 8, 8, 4]).eval()
    folder = tmp_path_factory.mktemp("byo_cli")
    torch.save({"state_dict": generator.state_dict()}, folder / "tiny.pth")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.trace(generator, torch.randn(1, 16)), str(folder / "tiny.pt"))
    return folder


@needs_segmenter
@pytest.mark.parametrize("scheme, name", [("proggan", "tiny.pth"), ("torchscript", "tiny.pt")])
def test_dissect_a_user_generator_in_one_command(proggan_file, tmp_path, capsys, scheme, name):
    spec = f"{scheme}:{proggan_file / name}"
    out = tmp_path / "out"
    assert main(["dissect", "--generator", spec, "--layer", "layer4", "--samples", "16",
                 "--batch", "8", "--top-k", "2", "--images", "1", "--out", str(out),
                 "--device", "cpu"]) == 0
    data = json.loads((out / "dissect.json").read_text())
    assert data["settings"]["generator_name"] == spec and data["settings"]["z_dim"] == 16
    (layer,) = data["layers"]
    assert layer["layer"] == "layer4" and len(layer["units"]) == 8
    assert (out / "report.html").is_file()
    assert "layer4: " in capsys.readouterr().out


def test_edit_a_user_generator(proggan_file, tmp_path, capsys):
    out = tmp_path / "edit"
    assert main(["edit", "--generator", f"proggan:{proggan_file / 'tiny.pth'}", "--layer",
                 "layer4", "--units", "0,3", "--box", "0,0,16,16", "--samples", "2",
                 "--out", str(out)]) == 0
    assert (out / "edit.png").is_file() and "units [0, 3]" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--layer", "layer9"], "no layer named 'layer9'.*Valid layers: layer1"),
    (["--generator", "proggan:missing.pth"], "weights file missing.pth does not exist"),
    (["--generator", "church.pth"],
     "valid spellings: sceneworld, FILE.safetensors, dcgan:PATH, nvidia:PATH, proggan:PATH"),
])
def test_dissect_refuses_before_any_work(proggan_file, tmp_path, capsys, argv, message):
    argv = ["--generator", f"proggan:{proggan_file / 'tiny.pth'}", *argv]
    assert main(["dissect", *argv, "--samples", "16", "--out", str(tmp_path / "out"),
                 "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert not (tmp_path / "out" / "cache").exists()


def test_netdissect_a_torchvision_classifier_with_user_weights(tmp_path, capsys):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=5)
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}},
               tmp_path / "resnet18_places.pth.tar")
    out = tmp_path / "nd"
    assert main(["netdissect", "--classifier", "torchvision:resnet18", "--weights",
                 str(tmp_path / "resnet18_places.pth.tar"), "--layer", "layer4", "--n", "8",
                 "--batch", "8", "--images", "1", "--no-html", "--quiet", "--device", "cpu",
                 "--out", str(out)]) == 0
    data = json.loads((out / "dissect.json").read_text())
    assert data["settings"]["classifier_name"] == "torchvision:resnet18"
    assert len(data["layers"][0]["units"]) == 512


def test_evaluate_attribution_feeds_a_torchvision_classifier_its_normalisation(tmp_path,
                                                                              monkeypatch):
    from gandissect.attribute import evaluate
    from gandissect.models.inputs import IMAGENET_MEAN, IMAGENET_STD, normalize

    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=6).eval()  # SceneWorld's 6
    torch.save(model.state_dict(), tmp_path / "r18.pth")
    seen = []
    monkeypatch.setattr(evaluate, "evaluate_attribution",
                        lambda model, **_: seen.append(model) or {"settings": {}})
    assert main(["evaluate-attribution", "--classifier", "torchvision:resnet18", "--weights",
                 str(tmp_path / "r18.pth"), "--n", "2", "--json", "--quiet"]) == 0
    images = torch.rand(2, 3, 64, 64) * 2 - 1  # the evaluation's [-1, 1] scenes
    with torch.no_grad():
        assert torch.allclose(seen[0](images),
                              model(normalize(IMAGENET_MEAN, IMAGENET_STD)(images)), atol=1e-5)


def test_dissect_without_sketches_writes_the_same_result_in_a_small_file(tmp_path):
    """--no-sketch (how the shipped generator's dissection is written) drops only the quantile
    sketches; the app and the other commands read the folder as before."""
    from conftest import toy_generator, toy_segmenter

    from gandissect.dissect import load_dissection
    from gandissect.dissect.sources import check_dissection

    toy = ["--generator", "conftest:toy_generator", "--segmenter",
           "conftest:toy_segmenter", "--samples", "64", "--batch", "16", "--no-html"]
    assert main(["dissect", *toy, "--out", str(tmp_path / "full")]) == 0
    assert main(["dissect", *toy, "--no-sketch", "--out", str(tmp_path / "small")]) == 0
    full, small = tmp_path / "full", tmp_path / "small"
    assert (small / "dissect.json").read_text() == (full / "dissect.json").read_text()
    stats = torch.load(small / "stats_layer4.pt", weights_only=True)
    whole = torch.load(full / "stats_layer4.pt", weights_only=True)
    assert "quantile" not in stats and set(whole) - set(stats) == {"quantile"}
    assert (small / "stats_layer4.pt").stat().st_size < (full / "stats_layer4.pt").stat().st_size
    result = load_dissection(small, stats=True)
    check_dissection(result, toy_generator(), toy_segmenter(), "layer4", str(small))


@needs_segmenter
@pytest.mark.parametrize("scheme, name", [("proggan", "tiny.pth"), ("torchscript", "tiny.pt")])
def test_end_to_end(proggan_file, tmp_path, scheme, name):
    """layers, dissect, edit, ace and the app's Paint tab on a user's ProGAN, both formats."""
    end_to_end(f"{scheme}:{proggan_file / name}", "sceneworld", "layer4", tmp_path)
