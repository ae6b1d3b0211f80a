"""Units behind a prediction (``gandissect.units_relevance``, ``explain-units``,
``unit-relevance``): the exact decomposition restated by a loop, gradient x activation against
it and against a hand-derived gradient on a non-linear head, ablation that restores the model
and hurts a class more through its top units than through random ones, and the commands."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import hook_count
from PIL import Image
from torch import nn

import gandissect.units_relevance as relevance
from gandissect.cli import main
from gandissect.hooks import Trace
from gandissect.units_relevance import (
    ablated_units,
    ablation_accuracy,
    class_unit_ranking,
    sceneworld_scenes,
    unit_contributions,
)


@pytest.fixture(scope="module")
def classifier():
    from gandissect.models.registry import load_classifier

    return load_classifier("sceneworld")


@pytest.fixture(scope="module")
def scenes():
    """120 held-out scenes of world 1001: 60 to rank units on, 60 to measure accuracy on."""
    return sceneworld_scenes(1001, 0, 120, 64)


def test_contributions_plus_bias_are_the_logit_exactly(classifier, scenes):
    images = scenes[0][:3]
    found = unit_contributions(classifier, images, "layer4")
    assert found.method == "pooled_linear" and found.exact
    with Trace(classifier, "layer4") as trace, torch.no_grad():
        logits = classifier(images)
    weight, bias = classifier.fc.weight.tolist(), classifier.fc.bias.tolist()
    for n in range(images.shape[0]):
        c = int(logits[n].argmax())
        assert int(found.target[n]) == c
        total = bias[c]
        for k, unit_map in enumerate(trace.output[n].tolist()):
            cells = [value for row in unit_map for value in row]
            share = sum(cells) / len(cells) * weight[c][k]
            assert found.contributions[n, k].item() == pytest.approx(share, rel=1e-5, abs=1e-6)
            total += share
        assert total == pytest.approx(float(logits[n, c]), abs=1e-4)
        assert float(found.contributions[n].sum() + found.bias[n]) == pytest.approx(
            float(logits[n, c]), abs=1e-4)


def test_gradient_x_activation_equals_the_exact_decomposition_on_a_pooled_head(
        classifier, scenes, monkeypatch):
    images = scenes[0][:4]
    exact = unit_contributions(classifier, images, "layer4", target=2)
    monkeypatch.setattr(relevance, "_pooled_linear", lambda *args: None)
    first_order = unit_contributions(classifier, images, "layer4", target=2)
    assert first_order.method == "gradient_x_activation" and first_order.bias is None
    torch.testing.assert_close(first_order.contributions, exact.contributions, rtol=1e-4,
                               atol=1e-6)


class MLPHead(nn.Module):
    """A convolution, global average pooling, then a two-layer MLP: no pooled linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Conv2d(3, 5, 3, 2, 1)
        self.hidden = nn.Linear(5, 7)
        self.out = nn.Linear(7, 3)

    def forward(self, x):
        pooled = self.features(x).mean((2, 3))
        return self.out(torch.relu(self.hidden(pooled)))


def test_a_non_linear_head_gets_gradient_x_activation():
    torch.manual_seed(0)
    model = MLPHead().eval()
    x = torch.randn(3, 3, 16, 16)
    found = unit_contributions(model, x, "features", target=[0, 1, 2])
    assert found.method == "gradient_x_activation"
    with torch.no_grad():
        pooled = model.features(x).mean((2, 3))
        active = (model.hidden(pooled) > 0).double()
    w1, w2 = model.hidden.weight.detach().double(), model.out.weight.detach().double()
    for n, c in enumerate([0, 1, 2]):
        for k in range(5):
            # d score / d A_kij = (1/hw) sum_m w2[c, m] [h_m > 0] w1[m, k], the same at every ij
            slope = sum(float(w2[c, m] * active[n, m] * w1[m, k]) for m in range(7))
            assert float(found.contributions[n, k]) == pytest.approx(
                float(pooled[n, k]) * slope, rel=1e-5, abs=1e-7)


def test_ablation_zeroes_the_units_and_restores_the_model(classifier, scenes):
    images = scenes[0][:4]
    with torch.no_grad():
        before = classifier(images)
    hooks = hook_count(classifier)
    with ablated_units(classifier, "layer4", [3, 17]), Trace(classifier, "layer4") as trace, \
            torch.no_grad():
        changed = classifier(images)
    assert float(trace.output[:, [3, 17]].abs().max()) == 0
    assert float(trace.output.abs().max()) > 0 and not torch.equal(changed, before)
    with pytest.raises(RuntimeError), ablated_units(classifier, "layer4", [0]):
        raise RuntimeError("the hook goes even so")
    assert hook_count(classifier) == hooks
    with torch.no_grad():
        assert torch.equal(classifier(images), before)


def test_top_units_hurt_their_class_more_than_random_units(classifier, scenes):
    images, labels = scenes
    ranking = class_unit_ranking(classifier, images[:60], labels[:60], "layer4")
    classes = [c for c in ranking.classes if int((labels[60:] == c).sum()) >= 5][:2]
    k = 30
    top = ablation_accuracy(classifier, images[60:], labels[60:], "layer4",
                            {c: ranking.top(c, k) for c in classes}, k)
    chance = torch.Generator().manual_seed(0)
    random = ablation_accuracy(classifier, images[60:], labels[60:], "layer4",
                               {c: torch.randperm(160, generator=chance)[:k].tolist()
                                for c in classes}, k)
    own = sum(top.classes[c].accuracy_ablated for c in classes)
    assert own < sum(random.classes[c].accuracy_ablated for c in classes)
    for c in classes:
        entry = top.classes[c]
        assert entry.accuracy - entry.accuracy_ablated > \
            entry.others_accuracy - entry.others_accuracy_ablated
        assert top.drop_matrix()[classes.index(c), c] == pytest.approx(
            entry.accuracy - entry.accuracy_ablated)


@pytest.fixture(scope="module")
def scene_png(tmp_path_factory):
    from gandissect.world import render_batch

    path = tmp_path_factory.mktemp("image") / "scene.png"
    Image.fromarray(render_batch(1001, [5], 64)["image"][0]).save(path)
    return path


def test_unit_relevance_command_json_and_figure(tmp_path, capsys):
    figure = tmp_path / "drop.png"
    assert main(["unit-relevance", "--classifier", "sceneworld", "--layer", "layer4",
                 "--units", "3", "--n", "18", "--eval-n", "12", "--figure", str(figure),
                 "--json", "--device", "cpu"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["method"] == "pooled_linear" and printed["classes"]
    for entry in printed["classes"].values():
        assert set(entry) == {"units", "accuracy", "accuracy_ablated", "others_accuracy",
                              "others_accuracy_ablated", "accuracy_kept_only",
                              "others_accuracy_kept_only"}
        assert len(entry["units"]) == 3
    assert Image.open(figure).size[0] > 100


def test_explain_units_command(scene_png, tmp_path, capsys):
    out = tmp_path / "units"
    assert main(["explain-units", "--classifier", "sceneworld", "--image", str(scene_png),
                 "--layer", "layer4", "--top", "4", "--probe-n", "20", "--out", str(out),
                 "--json", "--quiet", "--device", "cpu"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["method"] == "pooled_linear"
    assert printed["contributions_sum"] + printed["bias"] == pytest.approx(printed["logit"],
                                                                         abs=1e-4)
    contributions = [unit["contribution"] for unit in printed["units"]]
    assert len(contributions) == 4 and contributions == sorted(contributions, reverse=True)
    assert all(unit["concept"] and 0 <= unit["iou"] <= 1 for unit in printed["units"])
    assert all((out / unit["heatmap"]).is_file() for unit in printed["units"])
    assert json.loads((out / "units.json").read_text())["units"] == printed["units"]


@pytest.mark.parametrize("argv, message", [
    (["explain-units", "--image", "IMAGE", "--layer", "layer9"], "no layer with maps"),
    (["explain-units", "--image", "missing.png", "--layer", "layer4"], "no image at"),
    (["explain-units", "--image", "IMAGE", "--layer", "layer4", "--top", "161"], "161"),
    (["unit-relevance", "--layer", "layer4", "--units", "161"], "more than the 160 units"),
    (["unit-relevance", "--layer", "fc", "--units", "2"], "no layer with maps"),
])
def test_mistakes_are_one_line(argv, message, scene_png, capsys):
    argv = [str(scene_png) if arg == "IMAGE" else arg for arg in argv]
    assert main([*argv, "--device", "cpu"]) == 2
    error = capsys.readouterr().err.strip()
    assert message in error and "\n" not in error


def test_the_app_shows_the_units_behind_a_prediction():
    from types import SimpleNamespace

    from gandissect.app import classifiers
    from gandissect.app.explain import ClassifierModels
    from gandissect.app.session import Session

    ws, session = SimpleNamespace(classifiers=ClassifierModels(["sceneworld"])), Session()
    text, gallery = classifiers.explain_units(ws, session, "sceneworld", "layer4",
                                              "SceneWorld scene", 3, None, -1)
    assert "exact" in text and text.count("run Network Dissection for labels") == 8
    assert len(gallery) == 8 and gallery[0][0].ndim == 3
    classifiers.run_netdissect(ws, session, "sceneworld", "layer4", 10, progress=False)
    text, gallery = classifiers.explain_units(ws, session, "sceneworld", "layer4",
                                              "SceneWorld scene", 3, None, -1)
    assert "run Network Dissection" not in text
    labels = ws.classifiers.result(session.netdissect).layers[0].units
    top = int(gallery[0][1].split(":")[0].split()[1])
    assert f"{labels[top].label} ({labels[top].category})" in text
