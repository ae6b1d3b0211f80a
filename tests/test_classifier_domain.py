"""The classifier's per-image domain check: the per-image shift restated by a loop, the
standardised score against a reference, the shipped classifier's verdicts (skimage's astronaut
photo flagged, held-out scenes not), classifiers it cannot judge, the app's warning and
``gandissect attribute``'s domain entries."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from gandissect.classifier_domain import (
    GENERIC_IMAGE_SHIFT_BAR,
    SHIPPED_CLASSIFIER_REFERENCES,
    ClassifierDomainReference,
    check_classifier_domain,
    classifier_domain_reference,
    per_image_shifts,
)
from gandissect.world import render_batch
from gandissect.world.dataset import image_to_tensor


def astronaut(size: int = 64) -> np.ndarray:
    """skimage's astronaut photo (offline), shorter side resized and centre cropped, uint8."""
    import skimage.data

    image = Image.fromarray(skimage.data.astronaut())
    return np.asarray(image.resize((size, size), Image.Resampling.BILINEAR))


def as_tensor(pixels: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(pixels.copy()).permute(2, 0, 1).float()[None] / 127.5 - 1


@pytest.fixture(scope="module")
def shipped():
    from gandissect.models.registry import load_classifier

    return load_classifier("sceneworld").eval()


def trained_bn_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.Conv2d(4, 5, 3, stride=2, padding=1), nn.BatchNorm2d(5), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 3))
    model.train()
    with torch.no_grad():  # learn running statistics on some images
        for _ in range(20):
            model(torch.randn(16, 3, 8, 8) * 0.5 + 0.2)
    return model.eval()


# ---------------------------------------------------------------- definitions


def test_the_per_image_shift_is_the_kl_of_each_images_positions():
    model = trained_bn_model()
    images = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    shifts = per_image_shifts(model, images)
    assert list(shifts) == ["1", "4"]
    bn = model[1]
    with torch.no_grad():
        features = model[0](images).double()
    for n in range(3):
        kls = []
        for c in range(4):
            values = [float(features[n, c, r, q]) for r in range(8) for q in range(8)]
            mean = sum(values) / len(values)
            var = sum((v - mean) ** 2 for v in values) / len(values) + bn.eps
            running_mean = float(bn.running_mean[c])
            running_var = float(bn.running_var[c]) + bn.eps
            kls.append(0.5 * (math.log(running_var / var)
                              + (var + (mean - running_mean) ** 2) / running_var - 1))
        assert shifts["1"][n].item() == pytest.approx(sum(kls) / 4, rel=1e-9)


def test_with_a_reference_the_score_is_the_rms_of_standardised_excess():
    model = trained_bn_model()
    images = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    shifts = per_image_shifts(model, images)
    reference = ClassifierDomainReference({"1": (0.2, 0.1), "4": (0.3, 0.05)}, bar=2.0)
    model.domain_reference = reference
    check = check_classifier_domain(model, images, "tiny")
    assert check.unit == "in-domain standard deviations" and check.bar == 2.0
    for n in range(4):
        excess = [max(0.0, (float(shifts["1"][n]) - 0.2) / 0.1),
                  max(0.0, (float(shifts["4"][n]) - 0.3) / 0.05)]
        score = math.sqrt(sum(e * e for e in excess) / 2)
        assert check.feature_shift[n] == pytest.approx(score, abs=1e-4)
        assert check.verdicts[n] == ("out of domain" if score > 2.0 else "in domain")
    # the reference built from images: each layer's mean and standard deviation
    built = classifier_domain_reference(model, images, bar=3.0)
    assert built.layers["4"][0] == pytest.approx(float(shifts["4"].mean()), abs=1e-6)
    assert built.layers["4"][1] == pytest.approx(float(shifts["4"].std()), abs=1e-6)
    # a reference for other layers is not used: the generic bar in nats
    model.domain_reference = ClassifierDomainReference({"9": (0.1, 0.1)})
    generic = check_classifier_domain(model, images)
    assert generic.unit == "nats" and generic.bar == GENERIC_IMAGE_SHIFT_BAR
    assert generic.feature_shift[0] == pytest.approx(
        (float(shifts["1"][0]) + float(shifts["4"][0])) / 2, abs=1e-4)


def test_classifiers_without_trained_batchnorm_are_unknown_and_never_warn():
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(3))
    fresh = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(3))
    vector = trained_bn_model()
    vector[1] = nn.Identity()
    vector[4] = nn.Identity()
    vector[7] = nn.Sequential(nn.Flatten(), nn.BatchNorm1d(5))  # no positions to average
    vector[7][1].running_mean.fill_(0.5)
    images = torch.rand(2, 3, 8, 8) * 2 - 1
    for model in (plain, fresh.eval(), vector.eval()):
        check = check_classifier_domain(model, images)
        assert check.verdicts == ["unknown", "unknown"] and check.feature_shift == [None, None]
        assert check.warning(0) is None and check.layers == []
    with pytest.raises(ValueError, match=r"x\[None\]"):
        check_classifier_domain(trained_bn_model(), images[0])


# ---------------------------------------------------------------- the shipped classifier


def test_the_shipped_classifier_has_its_reference(shipped):
    from gandissect.dissect.identity import fingerprint

    reference = SHIPPED_CLASSIFIER_REFERENCES[fingerprint(shipped)]
    assert set(reference.layers) == set(per_image_shifts(shipped, torch.zeros(1, 3, 64, 64)))


def test_the_astronaut_is_out_of_domain_and_held_out_scenes_are_not(shipped):
    photo = as_tensor(astronaut())
    with torch.no_grad():
        assert float(shipped(photo).softmax(1).max()) > 0.99  # confidently wrong
    check = check_classifier_domain(shipped, photo)
    assert check.verdicts == ["out of domain"] and check.classifier == "sceneworld"
    assert "looks unlike the sceneworld classifier's training images" in check.warning(0)
    assert f"bar {check.bar:g}" in check.warning(0)
    scenes = image_to_tensor(render_batch(1000, range(64), 64)["image"])
    in_domain = check_classifier_domain(shipped, scenes)
    assert set(in_domain.verdicts) == {"in domain"}
    assert max(in_domain.feature_shift) < check.feature_shift[0]
    assert in_domain.to_json(3)["verdict"] == "in domain"


def test_the_app_warns_about_an_uploaded_photo_only(tmp_path):
    from gandissect.app import classifiers
    from gandissect.app.explain import ClassifierModels

    ws = SimpleNamespace(classifiers=ClassifierModels(["sceneworld"]))
    upload = tmp_path / "astronaut.png"
    Image.fromarray(astronaut(128)).save(upload)
    _, scores, text = classifiers.explain(ws, "sceneworld", "layer4", "Upload", 0, str(upload),
                                          "gradcam", -1)
    assert "**Warning:** this image looks unlike the sceneworld classifier's" in text
    assert "its prediction may mean little" in text
    _, _, text = classifiers.explain(ws, "sceneworld", "layer4", "SceneWorld scene", 3, None,
                                     "gradcam", -1)
    assert "Warning" not in text


def test_attribute_records_the_domain_and_warns_on_stderr(tmp_path, capsys):
    from gandissect.cli import main

    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(astronaut(96)).save(folder / "astronaut.png")
    scene = render_batch(1000, [5], 64)["image"][0]
    Image.fromarray(scene).save(folder / "scene.png")
    assert main(["attribute", "--images", str(folder), "--methods", "saliency", "--out",
                 str(tmp_path / "out"), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "astronaut.png: this image looks unlike" in err and "scene.png" not in err
    index = json.loads((tmp_path / "out" / "attributions.json").read_text())
    verdicts = {r["file"]: r["domain"]["verdict"] for r in index["images"]}
    assert verdicts == {"astronaut.png": "out of domain", "scene.png": "in domain"}
    assert index["domain"]["out_of_domain"] == ["astronaut.png"]
    assert index["domain"]["unit"] == "in-domain standard deviations"
