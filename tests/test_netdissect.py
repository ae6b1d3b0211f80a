"""Network Dissection of classifiers: definitions restated the slow way on planted models,
the rotation's invariance, detector counting, streaming, errors, and a CLI smoke run."""

from __future__ import annotations

import gc
import json
import weakref

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from gandissect.cli import main
from gandissect.dissect.results import LayerDissection, UnitScore
from gandissect.hooks import Trace
from gandissect.models.registry import load_classifier
from gandissect.netdissect import (
    BrodenProbe,
    ProbeBatch,
    ProbeSet,
    RotatedBasis,
    SceneWorldProbe,
    fractional_rotation,
    netdissect,
    preprocess_for,
    random_rotation,
    unique_detectors,
)
from gandissect.netdissect.experiments import (
    plot_checkpoints,
    plot_layers,
    plot_rotation,
    rotation_experiment,
)
from gandissect.stats import IoUTally

SIZE = 32  # planted images; the planted layer is at half this resolution


class PlantedProbe(ProbeSet):
    """Images with a square of concept "square" (object) and a scene "indoor"/"outdoor".

    Channel 0 is high (1 .. 1.5) on the square, low (-1 .. -0.9) elsewhere; channel 1 is
    noise; channel 2 is high on every pixel of outdoor images. Squares sit on even pixels, so
    the 2x pooled planted layer sees them exactly. ``batches`` counts its calls and keeps weak
    references to what it yields.
    """

    categories = ("object", "scene")
    concepts = {"object": ["none", "square", "stripe"], "scene": ["none", "indoor", "outdoor"]}

    def __init__(self, n: int = 16, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.n = n
        self.object = torch.zeros(n, SIZE, SIZE, dtype=torch.int64)
        self.scene = torch.randint(1, 3, (n,), generator=g)
        for i in range(n):
            side = 2 * int(torch.randint(3, 6, (1,), generator=g))
            y, x = (2 * torch.randint(0, (SIZE - side) // 2 + 1, (2,), generator=g)).tolist()
            self.object[i, y:y + side, x:x + side] = 1
            self.object[i, SIZE - 2:, :] = 2  # a stripe along the bottom
        noise = torch.rand(n, 3, SIZE, SIZE, generator=g)
        square = (self.object == 1).float()
        outdoor = (self.scene == 2).float()[:, None, None].expand(-1, SIZE, SIZE)
        self.pixels = torch.stack([
            square * (1 + 0.5 * noise[:, 0]) + (1 - square) * (-1 + 0.1 * noise[:, 0]),
            noise[:, 1] * 2 - 1,
            outdoor * (0.5 + 0.5 * noise[:, 2]) + (1 - outdoor) * (-1 + 0.1 * noise[:, 2]),
        ], 1)
        self.calls, self.yielded = 0, []

    def __len__(self) -> int:
        return self.n

    def batches(self, size: int):
        self.calls += 1
        for start in range(0, self.n, size):
            ids = torch.arange(start, min(start + size, self.n))
            labels = torch.stack([self.object[ids],
                                  self.scene[ids][:, None, None].expand(-1, SIZE, SIZE)], 1)
            batch = ProbeBatch(ids, self.pixels[ids].clone(), labels)
            self.yielded.append(weakref.ref(batch))
            yield batch

    def images(self, ids):
        return self.pixels[list(ids)]


class PlantedNet(nn.Module):
    """``mix`` (full resolution): unit 0 = channel 0 (the square), unit 1 = a mixture, unit 2 =
    channel 2 (outdoor scenes); ``units``: ``mix`` pooled 2x; then a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.mix = nn.Conv2d(3, 3, 1, bias=False)
        with torch.no_grad():
            self.mix.weight.copy_(torch.tensor([[1.0, 0, 0], [0.3, -0.8, 0.5], [0, 0, 1]])
                                  [:, :, None, None])
        self.units = nn.AvgPool2d(2)
        self.head = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.units(self.mix(x)).mean((2, 3)))


def slow_iou(maps: torch.Tensor, thresholds: torch.Tensor, labels: torch.Tensor,
             concepts: dict[str, list[str]], categories: tuple[str, ...]) -> torch.Tensor:
    """IoU by the definition: loop over images, units and concepts; a unit's active pixels
    count in a concept's union only in images where the concept's category is labelled."""
    upsampled = F.interpolate(maps, size=labels.shape[2:], mode="bilinear", align_corners=False)
    pairs = [(k, code) for k, c in enumerate(categories) for code in range(1, len(concepts[c]))]
    inter = torch.zeros(maps.shape[1], len(pairs))
    unit_area = torch.zeros(maps.shape[1], len(pairs))
    concept_area = torch.zeros(len(pairs))
    for image in range(maps.shape[0]):
        for j, (k, code) in enumerate(pairs):
            concept = labels[image, k] == code
            concept_area[j] += concept.sum()
            category_labelled = bool((labels[image, k] > 0).any())
            for unit in range(maps.shape[1]):
                active = upsampled[image, unit] > thresholds[unit]
                inter[unit, j] += (active & concept).sum()
                if category_labelled:
                    unit_area[unit, j] += active.sum()
    union = unit_area + concept_area - inter
    return torch.where(union > 0, inter / union.clamp(min=1), torch.zeros(()))


def traced(model: nn.Module, layer: str, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad(), Trace(model, layer) as trace:
        model(images)
    return trace.output


def test_planted_units_and_slow_iou_with_category_conditioned_denominator():
    probe = PlantedProbe(n=16)
    coverage = float((probe.object == 1).float().mean())
    quantile = 1 - 0.95 * coverage  # unit 0's top pixels: about 95% of the square's
    model = PlantedNet()
    result = netdissect(model, ["mix", "units"], probe, quantile=quantile, batch=5)
    square, mixed, outdoor = result.layer("mix").units
    assert (square.label, square.category) == ("square", "object") and square.iou > 0.9
    assert square.interpretable
    assert (outdoor.label, outdoor.category) == ("outdoor", "scene")  # a full-image mask
    assert result.layer("units").units[0].label == "square"
    labels = torch.stack([probe.object, probe.scene[:, None, None].expand(-1, SIZE, SIZE)], 1)
    for name in ("mix", "units"):  # full resolution, and pooled 2x (upsampled)
        layer = result.layer(name)
        maps = traced(model, name, probe.pixels)
        # Every (unit, concept) IoU equals the slow definition at the pipeline's thresholds.
        expected = slow_iou(maps, layer.stats["thresholds"], labels, probe.concepts,
                            probe.categories)
        tally = IoUTally([0])
        tally.load_state_dict(layer.stats["iou"])
        assert torch.allclose(tally.result().float(), expected, atol=1e-6)
        # The threshold is the exact quantile of the unit's activations (sketch tolerance).
        exact = torch.quantile(maps.transpose(0, 1).reshape(3, -1), quantile, dim=1)
        assert torch.allclose(layer.stats["thresholds"], exact, rtol=1e-2, atol=1e-3)
        summary = result.settings["summary"][name]
        assert summary["units"] == 3 and summary["detectors"] == len(layer.interpretable())
    assert probe.calls == 2  # two passes over a stream, nothing stored in between


def test_stream_is_consumed_batch_by_batch_and_nothing_is_kept():
    probe = PlantedProbe(n=24)

    class Checked(PlantedProbe):
        def batches(self, size):
            for k, batch in enumerate(super().batches(size)):
                if k >= 2:  # the batch before last must be gone when the next one is made
                    assert self.yielded[-3]() is None
                yield batch

    checked = Checked(n=24)
    netdissect(PlantedNet(), "units", checked, quantile=0.9, batch=4)
    gc.collect()
    assert all(ref() is None for ref in checked.yielded)
    small = netdissect(PlantedNet(), "units", PlantedProbe(n=8), quantile=0.9, batch=4)
    large = netdissect(PlantedNet(), "units", probe, quantile=0.9, batch=4)
    for key in ("thresholds", "mean_map"):
        assert small.layer("units").stats[key].shape == large.layer("units").stats[key].shape


def test_bad_layer_is_reported_with_valid_layers_before_any_work():
    probe = PlantedProbe(n=4)
    with pytest.raises(ValueError, match=r"no layer named 'unitz'.*Did you mean units.*Valid"):
        netdissect(PlantedNet(), ["units", "unitz"], probe)
    assert probe.calls == 0


def test_unique_detectors_count_distinct_concepts_per_category():
    def unit(i, label, category, good):
        return UnitScore(i, label, category, 0.1 if good else 0.01, 1.0, [], [], good)

    layer = LayerDissection("l", (5, 1, 1), [
        unit(0, "tree", "object", True), unit(1, "tree", "object", True),
        unit(2, "water", "object", True), unit(3, "water", "material", True),
        unit(4, "sky", "object", False)])
    assert unique_detectors(layer) == 3  # tree, water (object), water (material); sky is no
    assert len(layer.interpretable()) == 4


def test_scene_labels_are_full_image_masks():
    from gandissect.world import render_batch

    batch = next(SceneWorldProbe(seed=1001, n=3, size=32).batches(3))
    scene = batch.labels[:, -1]
    truth = torch.from_numpy(render_batch(1001, range(3), 32)["scene"])
    assert torch.equal(scene, truth[:, None, None].expand(-1, 32, 32))
    assert batch.images.min() >= -1 and batch.images.max() <= 1


def test_broden_directory_probe(tmp_path):
    from gandissect.world import export_broden, render_batch

    export_broden(tmp_path / "broden", n=4, size=32, seed=1001)
    probe = BrodenProbe(tmp_path / "broden")
    batch = next(probe.batches(4))
    rendered = render_batch(1001, range(4), 32)
    scene = batch.labels[:, probe.categories.index("scene")]
    assert torch.equal(scene, torch.from_numpy(rendered["scene"])[:, None, None].expand(-1, 32,
                                                                                        32))
    objects = batch.labels[:, probe.categories.index("object")]
    assert torch.equal(objects, torch.from_numpy(rendered["object"]).long())
    result = netdissect(PlantedNet(), "units", probe, quantile=0.9)
    assert len(result.layer("units").units) == 3


def test_rotation_keeps_the_output_and_rotates_the_traced_units():
    model = load_classifier()
    images = SceneWorldProbe(seed=1001, n=4).images(range(4))
    q = random_rotation(96, seed=3)
    wrapped = RotatedBasis(model, "layer3", q)
    with torch.no_grad():
        expected, got = model(images), wrapped(images)
    assert torch.allclose(got, expected, atol=1e-5)
    plain = traced(model, "layer3", images)
    rotated = traced(wrapped, "rotated", images)
    assert torch.allclose(rotated, torch.einsum("uv,bvhw->buhw", q.float(), plain), atol=1e-4)
    assert (rotated - plain).abs().max() > 0.1
    assert not model.layer3._forward_hooks  # the hook lives only during a forward
    half = fractional_rotation(q, 0.5)
    assert torch.allclose(half @ half, q, atol=1e-8)
    assert torch.allclose(half @ half.t(), torch.eye(96, dtype=torch.float64), atol=1e-10)
    assert torch.equal(fractional_rotation(q, 0.0), torch.eye(96, dtype=torch.float64))


def test_rotation_experiment_and_plots(tmp_path):
    result = rotation_experiment(load_classifier(), "layer4", (0.0, 1.0), n=16, batch=16,
                                 rotations=2)
    plain, *rotated = result["runs"]
    assert [r["alpha"] for r in result["runs"]] == [0.0, 1.0, 1.0]  # identity run once
    assert all(r["top1"] == plain["top1"] and r["max_logit_change"] < 1e-4 for r in rotated)
    assert result["curve"][1]["rotations"] == 2
    assert plot_rotation(result, tmp_path / "r.png").stat().st_size > 1000
    summary = {"l1": {"units": 4, "detectors": 2, "unique_detectors": 1,
                      "detectors_per_category": {"object": 2}}}
    layers = {"layers": ["l1"], "summary": summary, "categories": ["object"], "seed": 1001,
              "n": 8, "quantile": 0.995, "min_iou": 0.04}
    assert plot_layers(layers, tmp_path / "l.png").is_file()
    runs = [{"images_seen": k, "top1": 0.5, "layers": summary} for k in (1000, 2000)]
    assert plot_checkpoints({**layers, "runs": runs}, tmp_path / "c.png").is_file()


def test_torchvision_classifier_with_imagenet_preprocessing():
    from gandissect.models.specs import resolve_classifier

    model = resolve_classifier("torchvision:resnet18")
    preprocess = preprocess_for(model, "torchvision:resnet18")
    white = preprocess(torch.ones(1, 3, 2, 2))
    assert torch.allclose(white[0, :, 0, 0], (1 - torch.tensor([0.485, 0.456, 0.406]))
                          / torch.tensor([0.229, 0.224, 0.225]))
    result = netdissect(model, "layer4", SceneWorldProbe(n=4), batch=4, preprocess=preprocess)
    assert len(result.layer("layer4").units) == 512


def test_cli_smoke_on_the_shipped_classifier(tmp_path, capsys):
    out = tmp_path / "nd"
    assert main(["netdissect", "--classifier", "sceneworld", "--layer", "layer4", "--n", "64",
                 "--out", str(out), "--quiet"]) == 0
    data = json.loads((out / "dissect.json").read_text())
    assert set(data) == {"settings", "layers"}
    assert data["settings"]["seed"] == 1001 and data["settings"]["quantile"] == 0.995
    assert set(data["settings"]["summary"]["layer4"]) >= {"detectors", "unique_detectors"}
    layer = data["layers"][0]
    assert layer["layer"] == "layer4" and len(layer["units"]) == 160
    assert set(layer["units"][0]) >= {"unit", "label", "category", "iou", "threshold",
                                      "concepts", "top_images"}
    html = (out / "report.html").read_text()
    assert 'class="strip"' in html and "layer4" in html
    assert "<h1>Network dissection</h1>" in html
    assert main(["netdissect", "--layer", "layer5", "--n", "8", "--out", str(tmp_path / "x"),
                 "--quiet"]) == 2
    assert "Valid layers" in capsys.readouterr().err
