"""The segmenter's domain check and the small-probe warning: the check restated by hand on a
tiny BatchNorm segmenter; the shipped segmenter silent on SceneWorld samples and firing on
drawn faces, digits and a random-weight generator's samples; both warnings recorded in a
dissection's JSON, raised again when it is read, and printed once as one line."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from conftest import PlantedGenerator, PlantedSegmenter, TinyClassifier
from PIL import Image, ImageDraw, ImageFilter
from torch import nn
from torch.nn import functional as F

from gandissect.cli import main
from gandissect.dissect import dissect, latents, load_dissection, save_dissection
from gandissect.dissect.sample_size import sample_size_warning
from gandissect.domain import (
    GENERIC_SHIFT_BAR,
    SHIPPED_REFERENCES,
    UNCERTAINTY_FACTOR,
    check_domain,
    domain_reference,
)
from gandissect.errors import Caution
from gandissect.models import registry
from gandissect.models.proggan import ProGANGenerator
from gandissect.netdissect import FolderProbe, SceneWorldProbe, netdissect
from gandissect.world.dataset import image_to_tensor, tensor_to_image


# ------------------------------------------------------------- images out of SceneWorld
def faces(n: int, seed: int = 0, size: int = 64) -> torch.Tensor:
    """Drawn faces: hair, a skin-coloured oval, eyes, nose and mouth on a plain background."""
    rng = np.random.default_rng(seed)
    pictures = []
    for _ in range(n):
        image = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(0, 256, 3)))
        draw = ImageDraw.Draw(image)
        skin = (int(rng.integers(150, 255)), int(rng.integers(100, 200)),
                int(rng.integers(70, 160)))
        x, y = 32 + int(rng.integers(-4, 5)), 34 + int(rng.integers(-4, 5))
        w, h = int(rng.integers(16, 24)), int(rng.integers(20, 28))
        draw.ellipse([x - w - 2, y - h - 4, x + w + 2, y + h // 2],
                     fill=tuple(int(v) for v in rng.integers(0, 120, 3)))
        draw.ellipse([x - w, y - h, x + w, y + h], fill=skin)
        for side in (-1, 1):
            draw.ellipse([x + side * 8 - 3, y - 8, x + side * 8 + 3, y - 4], fill=(255, 255, 255))
            draw.ellipse([x + side * 8 - 1, y - 7, x + side * 8 + 1, y - 5], fill=(40, 30, 20))
        draw.line([x, y - 3, x - 2, y + 5], fill=(120, 80, 60), width=1)
        draw.arc([x - 8, y + 4, x + 8, y + 14], 20, 160, fill=(150, 40, 40), width=2)
        pictures.append(np.asarray(image.filter(ImageFilter.GaussianBlur(0.7))))
    return image_to_tensor(np.stack(pictures))


STROKES = {  # MNIST-like digits on a 28 px grid: polylines through their key points
    0: [(14, 4), (21, 9), (21, 19), (14, 24), (7, 19), (7, 9), (14, 4)],
    1: [(12, 6), (15, 4), (15, 24)],
    2: [(8, 8), (14, 4), (20, 8), (8, 24), (21, 24)],
    3: [(8, 5), (20, 6), (13, 13), (21, 19), (8, 24)],
    4: [(18, 24), (18, 4), (6, 17), (22, 17)],
    5: [(20, 4), (8, 4), (8, 13), (19, 14), (19, 22), (8, 24)],
    6: [(19, 4), (9, 12), (8, 21), (15, 24), (20, 19), (14, 14), (8, 18)],
    7: [(6, 5), (21, 5), (11, 24)],
    8: [(14, 4), (20, 8), (8, 18), (14, 24), (20, 18), (8, 8), (14, 4)],
    9: [(19, 12), (12, 14), (8, 8), (14, 4), (19, 8), (18, 24)],
}


def digits(n: int, seed: int = 0, size: int = 64) -> torch.Tensor:
    """White handwritten-like digits on black (MNIST's look), jittered, blurred, as RGB."""
    rng = np.random.default_rng(seed)
    pictures = []
    for _ in range(n):
        image = Image.new("L", (28, 28), 0)
        points = [(x + rng.normal(0, 1), y + rng.normal(0, 1))
                  for x, y in STROKES[int(rng.integers(0, 10))]]
        ImageDraw.Draw(image).line(points, fill=255, width=int(rng.integers(2, 4)),
                                   joint="curve")
        image = image.filter(ImageFilter.GaussianBlur(0.6)).resize(
            (size, size), Image.Resampling.BILINEAR)
        pictures.append(np.repeat(np.asarray(image)[..., None], 3, 2))
    return image_to_tensor(np.stack(pictures))


def random_proggan(n: int, seed: int = 2) -> torch.Tensor:
    """Samples of the shipped generator's architecture with random weights."""
    torch.manual_seed(seed)
    generator = ProGANGenerator(256, [256, 256, 128, 64, 32]).eval()
    with torch.no_grad():
        return generator(latents(seed, range(n), 256))


@pytest.fixture(scope="module")
def shipped():
    return registry.load_generator("sceneworld"), registry.load_segmenter("sceneworld")


# ---------------------------------------------------------------- the check, by hand
class TinyBNSegmenter(nn.Module):
    """conv -> BatchNorm -> ReLU -> 1x1 heads; BatchNorm statistics set by hand."""

    concepts = {"object": ["none", "a", "b"], "part": ["none", "p"]}
    categories = ["object", "part"]

    def __init__(self) -> None:
        super().__init__()
        with torch.random.fork_rng():
            torch.manual_seed(5)
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.bn = nn.BatchNorm2d(4)
            self.heads = nn.ModuleDict({"object": nn.Conv2d(4, 3, 1), "part": nn.Conv2d(4, 2, 1)})
        self.bn.running_mean.copy_(torch.tensor([0.1, -0.2, 0.0, 0.3]))
        self.bn.running_var.copy_(torch.tensor([0.5, 1.5, 0.2, 1.0]))
        self.eval()

    def probabilities(self, images):
        x = F.relu(self.bn(self.conv(images)))
        return {c: head(x).softmax(1) for c, head in self.heads.items()}

    def segment(self, images):
        return {c: p.argmax(1) for c, p in self.probabilities(images).items()}


def test_check_equals_its_definition_restated_by_hand():
    segmenter = TinyBNSegmenter()
    images = torch.rand(6, 3, 10, 12) * 2 - 1
    check = check_domain(segmenter, images, "tiny")
    with torch.no_grad():
        features = segmenter.conv(images)
        probabilities = segmenter.probabilities(images)
    per_category = []
    for p in probabilities.values():
        best = [max(p[i, :, y, x].tolist()) for i in range(6) for y in range(10)
                for x in range(12)]
        per_category.append(sum(best) / len(best))
    assert check.confidence == pytest.approx(min(per_category), abs=1e-4)
    kls = []
    bn = segmenter.bn
    for c in range(4):
        values = features[:, c].double().flatten()
        mean, var = values.mean(), values.var(unbiased=False) + bn.eps
        m, v = bn.running_mean[c].double(), bn.running_var[c].double() + bn.eps
        kls.append(0.5 * (math.log(v / var) + (var + (mean - m) ** 2) / v - 1).item())
    assert check.feature_shift == pytest.approx(sum(kls) / 4, abs=1e-4)
    assert check.reference is None and check.feature_shift_bar == GENERIC_SHIFT_BAR
    assert check.verdict == ("out of domain" if check.feature_shift > GENERIC_SHIFT_BAR
                             else "in domain")


def test_declared_reference_and_unknown_verdicts():
    segmenter = TinyBNSegmenter()
    images = torch.rand(4, 3, 8, 8) * 2 - 1
    baseline = check_domain(segmenter, images)
    segmenter.reference_confidence = 1 - (1 - baseline.confidence) / (UNCERTAINTY_FACTOR * 1.1)
    segmenter.feature_shift_bar = 1e9
    assert domain_reference(segmenter).measured == "declared by the segmenter"
    check = check_domain(segmenter, images, "tiny")
    assert check.verdict == "out of domain" and check.fired == ["confidence"]
    assert "the tiny segmenter is far outside its domain" in check.warning()
    segmenter.reference_confidence = 1 - (1 - baseline.confidence) / (UNCERTAINTY_FACTOR * 0.9)
    assert check_domain(segmenter, images).verdict == "in domain"
    # no probabilities, no BatchNorm: nothing to measure
    unknown = check_domain(PlantedSegmenter(), images)
    assert unknown.verdict == "unknown" and unknown.warning() is None
    # an untrained BatchNorm (running statistics 0 and 1) says nothing about a domain
    fresh = TinyBNSegmenter()
    fresh.bn.reset_running_stats()
    assert check_domain(fresh, images).feature_shift is None


# ------------------------------------------------------------- the shipped segmenter
def test_shipped_reference_belongs_to_the_shipped_weights(shipped):
    reference = domain_reference(shipped[1])
    assert reference is SHIPPED_REFERENCES[next(iter(SHIPPED_REFERENCES))]
    assert reference.confidence == pytest.approx(0.9929) and reference.feature_shift_bar == 0.1
    assert "seed 1000" in reference.measured


def test_silent_on_sceneworld_samples_and_fires_out_of_domain(shipped):
    """Measured figures (docs/results.md): SceneWorld generator samples confidence 0.98, shift
    0.004 to 0.013 nats; faces 0.24, digits 0.53 to 0.59, a random ProGAN's samples 1.9."""
    generator, segmenter = shipped
    with torch.no_grad():
        samples = generator(latents(1, range(32), generator.z_dim))
    inside = check_domain(segmenter, samples)
    assert inside.verdict == "in domain" and inside.warning() is None
    assert inside.segmenter == "sceneworld" and inside.feature_shift < 0.02
    assert inside.confidence > 0.97
    for name, images in [("faces", faces(32)), ("digits", digits(32)),
                         ("random ProGAN", random_proggan(32))]:
        check = check_domain(segmenter, images)
        assert check.verdict == "out of domain", name
        assert "feature shift" in check.fired and check.feature_shift > 2 * 0.1, name
        line = check.warning()
        assert "\n" not in line and line.startswith("the sceneworld segmenter is far outside")
        assert "on its own world" in line and "--segmenter" in line


class NoiseGenerator(nn.Module):
    """A random-weight conv generator (64 px, layer ``units`` 8x8): out of any domain."""

    z_dim = 16

    def __init__(self) -> None:
        super().__init__()
        with torch.random.fork_rng():
            torch.manual_seed(7)
            self.fc = nn.Linear(16, 8 * 8 * 8)
            self.units = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
            self.head = nn.Sequential(nn.Upsample(scale_factor=8),
                                      nn.Conv2d(8, 3, 3, padding=1), nn.Tanh())

    def forward(self, z):
        return self.head(self.units(self.fc(z).view(-1, 8, 8, 8)))


def noise_generator() -> NoiseGenerator:
    """Plug-in factory ``test_domain:noise_generator``."""
    return NoiseGenerator().eval()


def test_dissection_records_both_warnings_and_raises_them_again(shipped, tmp_path):
    with pytest.warns(Caution) as caught:
        result = dissect(noise_generator(), shipped[1], "units", n=20, batch=10,
                         progress=False, segmenter_name="sceneworld")
    domain = result.settings["domain"]
    assert domain["verdict"] == "out of domain" and domain["images"] == 20
    assert domain["segmenter"] == "sceneworld" and domain["reference"] == pytest.approx(0.9929)
    lines = result.settings["warnings"]
    assert len(lines) == 2 and lines[0].startswith("the sceneworld segmenter")
    assert lines[1].startswith("20 samples are too few")
    assert [str(w.message) for w in caught] == lines
    save_dissection(result, tmp_path)
    recorded = json.loads((tmp_path / "dissect.json").read_text())["settings"]
    assert recorded["domain"] == domain and recorded["warnings"] == lines
    with pytest.warns(Caution) as again:
        assert load_dissection(tmp_path).warnings == lines
    assert [str(w.message) for w in again] == lines


def test_command_line_prints_each_warning_once_as_one_line(tmp_path, capsys):
    status = main(["dissect", "--generator", "test_domain:noise_generator", "--layer", "units",
                   "--samples", "20", "--batch", "10", "--no-html", "--images", "0",
                   "--out", str(tmp_path / "out")])
    assert status == 0
    err = [line for line in capsys.readouterr().err.splitlines()
           if line.startswith("gandissect: warning:")]
    assert len(err) == 2
    assert err[0].startswith("gandissect: warning: the sceneworld segmenter is far outside")
    assert err[1].startswith("gandissect: warning: 20 samples are too few")


# ------------------------------------------------------------------ small probe sets
def test_small_probe_warning_fires_at_20_and_not_at_a_normal_size():
    with pytest.warns(Caution, match="20 samples are too few"):
        small = dissect(PlantedGenerator(), PlantedSegmenter(), "units", n=20, batch=10,
                        progress=False)
    assert small.settings["domain"]["verdict"] == "unknown"
    assert "use --samples 157 or more" in small.settings["warnings"][0]  # 100 / (0.01 * 64)
    normal = dissect(PlantedGenerator(), PlantedSegmenter(), "units", n=200, batch=50,
                     progress=False)
    assert normal.settings["warnings"] == []
    # the bounds themselves: sqrt(2 / images) and 1 / sqrt(values above the quantile)
    assert "about 32% of its value" in sample_size_warning(20, None, 64)
    assert "binomial spread about 28%" in sample_size_warning(20, 0.99, 64)
    assert sample_size_warning(50, 0.99, 64 * 64) is None


def test_netdissect_records_the_warnings(tmp_path, shipped):
    with pytest.warns(Caution, match="20 probe images are too few"):
        result = netdissect(TinyClassifier().eval(), "layer4", SceneWorldProbe(1001, 20))
    assert result.settings["domain"] is None  # exact labels: no segmenter to check
    assert result.settings["warnings"][0].startswith("20 probe images are too few")
    for i, picture in enumerate(tensor_to_image(faces(32))):
        Image.fromarray(picture).save(tmp_path / f"{i:02d}.png")
    probe = FolderProbe(tmp_path, shipped[1], size=64, segmenter_name="sceneworld")
    with pytest.warns(Caution, match="the sceneworld segmenter is far outside"):
        result = netdissect(TinyClassifier().eval(), "layer4", probe)
    probe.close()
    assert result.settings["domain"]["verdict"] == "out of domain"
