"""torchvision classifiers with a user weights file: ``torchvision:ARCH`` and ``weights=PATH``."""

from __future__ import annotations

import pytest
import torch
import torchvision

from gandissect.models.inputs import IMAGENET_MEAN, IMAGENET_STD, preprocess_for
from gandissect.models.specs import resolve_classifier


@pytest.fixture(scope="module")
def places(tmp_path_factory):
    """A random ResNet-18 with 7 classes (as a Places365 one has 365), its weights file, and
    its logits on a small batch."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=7).eval()
    for module in model.modules():  # non-trivial running statistics
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("classifiers") / "resnet18_random7.pth"
    state = model.state_dict()
    torch.save(state, path)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        logits = model(x)
    return path, state, x, logits


def _saved(state: dict, layout: str, path):
    if layout == "safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path.with_suffix(
            ".safetensors")))
        return path.with_suffix(".safetensors")
    if layout == "dataparallel":
        state = {f"module.{k}": v for k, v in state.items()}
    elif layout != "bare":
        state = {layout: state, "epoch": 90, "arch": "resnet18", "best_prec1": 54.7}
    torch.save(state, path)
    return path


@pytest.mark.parametrize("layout", ["bare", "dataparallel", "state_dict", "model", "safetensors"])
def test_weights_in_any_common_layout_reproduce_the_model(places, tmp_path, layout):
    _, state, x, logits = places
    weights = _saved(state, layout, tmp_path / "w.pth")
    model = resolve_classifier("torchvision:resnet18", weights=weights)
    assert model.fc.out_features == 7 and not model.training
    with torch.no_grad():
        assert torch.equal(model(x), logits)


def test_densenet_files_with_pre_0_3_names_load(tmp_path):
    import re

    torch.manual_seed(0)
    model = torchvision.models.densenet121(weights=None, num_classes=3).eval()
    old = {re.sub(r"(denselayer\d+\.(?:norm|relu|conv))([12])", r"\1.\2", k): v
           for k, v in model.state_dict().items()}
    assert "features.denseblock1.denselayer1.norm.1.weight" in old
    torch.save({"state_dict": old}, tmp_path / "densenet.pth")
    loaded = resolve_classifier("torchvision:densenet121", weights=tmp_path / "densenet.pth")
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_preprocessing_is_declared_and_applied(places):
    model = resolve_classifier("torchvision:resnet18", weights=places[0])
    assert model.input_size == 224
    assert (model.input_mean, model.input_std) == (IMAGENET_MEAN, IMAGENET_STD)
    white = preprocess_for(model)(torch.ones(1, 3, 1, 1))[0, :, 0, 0]
    expected = (1 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert torch.allclose(white, expected)


def test_without_weights_the_architecture_is_random_with_1000_classes():
    model = resolve_classifier("torchvision:resnet18")
    assert model.fc.out_features == 1000 and model.input_size == 224


def test_keys_that_do_not_fit_are_named(places, tmp_path):
    state = dict(places[1])
    state.pop("layer1.0.conv1.weight")
    state["head.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "w.pth")
    with pytest.raises(ValueError, match=r"w.pth does not fit ResNet; missing keys: "
                                         r"layer1.0.conv1.weight; unexpected keys: head.weight"):
        resolve_classifier("torchvision:resnet18", weights=tmp_path / "w.pth")


def test_weights_of_another_architecture_are_refused(places):
    with pytest.raises(ValueError, match=r"does not fit ResNet; missing keys: "
                                         r"layer1.2.conv1.weight.*more"):
        resolve_classifier("torchvision:resnet34", weights=places[0])


def test_unknown_architectures_list_the_known_ones():
    with pytest.raises(ValueError, match="unknown torchvision classifier 'resnet19'; known: "
                                         ".*resnet18"):
        resolve_classifier("torchvision:resnet19")


def test_weights_only_go_with_architectures(places):
    with pytest.raises(ValueError, match="weights apply to torchvision:ARCH and plug-in"):
        resolve_classifier("sceneworld", weights=places[0])
