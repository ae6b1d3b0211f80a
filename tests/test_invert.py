"""Inverting an image into a generator (``gandissect.invert``) on a tiny random ProGAN: the
returned generator draws the reconstruction, edits on its layer act on the inverted features,
blending leaves unpainted pixels alone, and the measures restate their definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from gandissect.errors import UserError
from gandissect.hooks import Trace, forward_from, partial_forward
from gandissect.intervene import Stroke, render_edited
from gandissect.invert import FEATURE_LR, adapted_modules, blend, invert, label_agreement, psnr
from gandissect.models.proggan import ProGANGenerator

FEW = {"starts": 4, "search": 3, "latent": 5, "features": 10, "adapt": 10}
LAYER = "layer4"  # 8x8 cells of a 32 px image


def quiet(*_):
    """A progress function that shows nothing."""


@pytest.fixture(scope="module")
def generator() -> ProGANGenerator:
    torch.manual_seed(0)
    return ProGANGenerator(16, [8, 8, 8, 4], class_offsets=[0.0, 0.3]).eval()


@pytest.fixture(scope="module")
def target(generator) -> torch.Tensor:
    """A picture the generator cannot draw exactly: one of its samples plus a stripe pattern."""
    with torch.no_grad():
        image = generator(torch.randn(1, 16, generator=torch.Generator().manual_seed(5)))
    stripes = torch.arange(32).float().remainder(4).lt(2).float()[None, None, None, :]
    return (image.clamp(-0.8, 0.8) * 0.7 + 0.3 * stripes).clamp(-1, 1)


@pytest.fixture(scope="module")
def inversion(generator, target):
    return invert(generator, target, LAYER, progress=quiet, steps=FEW)


def tail(generator: nn.Sequential, features: torch.Tensor) -> torch.Tensor:
    """The children after ``LAYER`` run by hand on ``features``."""
    names = [name for name, _ in generator.named_children()]
    x = features
    for name in names[names.index(LAYER) + 1:]:
        x = getattr(generator, name)(x)
    return x


def test_generator_draws_the_reconstruction(generator, inversion):
    before = {k: v.clone() for k, v in generator.state_dict().items()}
    with torch.no_grad():
        again = inversion.generator(inversion.z)
        with Trace(inversion.generator, LAYER) as trace:
            inversion.generator(torch.randn(1, 16))  # the layer outputs the features anyway
    assert torch.equal(again, inversion.reconstruction)
    assert torch.equal(trace.output, inversion.features)
    assert inversion.psnr == psnr(inversion.reconstruction, inversion.target)
    assert list(inversion.stages) == ["start", "latent", "features", "adapt"]
    assert math.isclose(inversion.stages["adapt"], inversion.psnr, abs_tol=1e-6)
    names = [name for name, _ in inversion.generator.named_children()]
    assert names == [name for name, _ in generator.named_children()]
    # the caller's generator is untouched: same weights, no hooks left on it
    assert all(torch.equal(before[k], v) for k, v in generator.state_dict().items())
    assert not any(m._forward_hooks for m in generator.modules())
    assert inversion.seconds > 0


def test_only_layers_after_the_painting_layer_are_adapted(generator, inversion):
    adapted = inversion.generator.state_dict()
    original = generator.state_dict()
    changed = {k.split(".")[0] for k, v in original.items() if not torch.equal(adapted[k], v)}
    assert changed and changed <= {"layer5", "layer6", "layer7", "layer8", "output_32x32"}
    assert {name.split(".")[0] for name in inversion.adapted} == {
        "layer5", "layer6", "layer7", "layer8", "output_32x32"}


def test_edits_act_on_the_inverted_features(inversion):
    with torch.no_grad():
        unchanged = render_edited(inversion.generator, inversion.z, LAYER, [])
    assert torch.equal(unchanged, inversion.reconstruction)
    cells = torch.zeros(8, 8)
    cells[0:2, 0:2] = 1
    units = [1, 3, 6]
    edited = render_edited(inversion.generator, inversion.z, LAYER,
                           [Stroke(units, "ablate", cells)])
    # the slow way: zero those units under the cells, run the tail by hand
    features = inversion.features.clone()
    for unit in units:
        for y in range(8):
            for x in range(8):
                if cells[y, x]:
                    features[0, unit, y, x] = 0
    with torch.no_grad():
        expected = tail(inversion.generator, features)
    assert torch.allclose(edited, expected, atol=1e-5)
    assert not torch.allclose(edited, inversion.reconstruction)
    # a corner cell's edit cannot reach the far quadrant of the picture
    assert torch.equal(edited[..., 16:, 16:], inversion.reconstruction[..., 16:, 16:])


def test_adaptation_raises_psnr(generator, target, inversion):
    plain = invert(generator, target, LAYER, adapt=False, progress=quiet, steps=FEW)
    assert "adapt" not in plain.stages and not plain.adapted
    assert plain.stages == {k: v for k, v in inversion.stages.items() if k != "adapt"}
    assert inversion.psnr > plain.psnr + 0.1
    with torch.no_grad():
        assert torch.equal(plain.generator(plain.z), plain.reconstruction)


def test_features_step_along_the_whole_gradient(generator, target):
    """One features step, restated: the pixel loss's gradient at the latent's features divided
    by its root mean square (one pace for every unit, not Adam's per-unit pace), times
    FEATURE_LR."""
    inv = invert(generator, target, LAYER, adapt=False, progress=quiet,
                 steps={**FEW, "features": 1})
    start = partial_forward(generator, LAYER, inv.z).detach().requires_grad_(True)
    (forward_from(generator, LAYER, start, inv.z) - inv.target).pow(2).mean().backward()
    gradient = start.grad
    expected = start.detach() - FEATURE_LR * gradient / gradient.pow(2).mean().sqrt()
    assert torch.allclose(inv.features, expected, atol=1e-5)
    assert not torch.allclose(inv.features, start.detach(), atol=1e-3)


def test_encoder_gives_the_start(generator, target):
    z0 = torch.randn(1, 16, generator=torch.Generator().manual_seed(3))

    class Constant(nn.Module):
        def forward(self, images):
            return z0.expand(len(images), -1)

    calls = []
    inv = invert(generator, target, LAYER, encoder=Constant(), adapt=False,
                 progress=lambda done, total, stage: calls.append((done, total, stage)),
                 steps={"latent": 2, "features": 3})
    with torch.no_grad():
        assert inv.stages["start"] == psnr(generator(z0), target)
    assert calls == [(i + 1, 5, "latent" if i < 2 else "features") for i in range(5)]


def test_uint8_image_and_no_grad(generator, target):
    pixels = ((target[0].permute(1, 2, 0) + 1) * 127.5).round().byte().numpy()
    with torch.no_grad():
        inv = invert(generator, pixels, LAYER, adapt=False, progress=quiet,
                     steps={"starts": 2, "search": 1, "latent": 1, "features": 1})
    assert torch.allclose(inv.target, torch.from_numpy(pixels).permute(2, 0, 1)[None] / 127.5 - 1)


@pytest.mark.parametrize("image", [torch.zeros(1, 3, 64, 64), np.zeros((16, 16, 3), np.uint8),
                                   np.zeros((32, 32), np.uint8)])
def test_wrong_image_is_refused_in_one_line(generator, image):
    with pytest.raises(UserError) as error:
        invert(generator, image, LAYER, progress=quiet, steps=FEW)
    assert "\n" not in str(error.value)


def test_adaptation_rule_for_other_generators():
    class Wrapped(nn.Module):
        """Not a Sequential: a head that runs before the body, a tail after it."""

        def __init__(self) -> None:
            super().__init__()
            self.z_dim, self.resolution = 4, 4
            self.head = nn.Linear(4, 16)
            self.body = nn.Sequential(nn.Conv2d(1, 2, 1), nn.Conv2d(2, 3, 1))
            self.tail = nn.Conv2d(3, 3, 1)

        def forward(self, z):
            return self.tail(self.body(self.head(z).view(-1, 1, 4, 4)))

    model = Wrapped()
    assert adapted_modules(model, "body.0", torch.zeros(1, 4)) == ["body.1", "tail"]
    with pytest.raises(UserError, match="--no-adapt"):
        adapted_modules(model, "tail", torch.zeros(1, 4))
    inv = invert(model, torch.zeros(1, 3, 4, 4), "body.0", progress=quiet,
                 steps={"starts": 2, "search": 1, "latent": 2, "features": 2, "adapt": 2})
    with torch.no_grad():
        assert torch.equal(inv.generator(inv.z), inv.reconstruction)


def test_psnr_restated():
    a = torch.rand(1, 3, 4, 4) * 2 - 1
    b = (a + 0.1 * torch.randn_like(a)).clamp(-1, 1)
    squared = [((float(x) + 1) / 2 - (float(y) + 1) / 2) ** 2
               for x, y in zip(a.flatten(), b.flatten())]
    assert math.isclose(psnr(a, b), 10 * math.log10(1 / (sum(squared) / len(squared))),
                        rel_tol=1e-5)
    assert psnr(a, a) == float("inf")
    assert psnr(a * 3, a.clamp(-1, 1) * 3) == psnr(a.clamp(-1, 1), a.clamp(-1, 1))  # clamped


class Brightness:
    """A segmenter: object label 1 where a pixel's mean is above 0, else 0."""

    def segment(self, images):
        return {"object": (images.mean(1) > 0).long()}


def test_label_agreement_restated():
    a, b = torch.rand(2, 3, 6, 6) * 2 - 1, torch.rand(2, 3, 6, 6) * 2 - 1
    same = sum(int((float(a[n, :, y, x].mean()) > 0) == (float(b[n, :, y, x].mean()) > 0))
               for n in range(2) for y in range(6) for x in range(6))
    assert math.isclose(label_agreement(Brightness(), a, b), same / 72, rel_tol=1e-6)
    assert label_agreement(Brightness(), a, a) == 1
    with pytest.raises(UserError, match="object"):
        label_agreement(Brightness(), a, b, category="part")


def test_blend_keeps_unpainted_pixels():
    image, edited = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16)
    cells = torch.zeros(4, 4)
    cells[1, 2] = 1
    cells[3, 0] = 0.5
    for dilate in (0, 1):
        out = blend(image, edited, cells, dilate=dilate)
        for y in range(16):
            for x in range(16):
                cy, cx = y // 4, x // 4
                weight = max(float(cells[j, i])
                             for j in range(max(0, cy - dilate), min(4, cy + dilate + 1))
                             for i in range(max(0, cx - dilate), min(4, cx + dilate + 1)))
                pixel = out[0, :, y, x]
                if weight == 0:
                    assert torch.equal(pixel, image[0, :, y, x])
                else:
                    mixed = image[0, :, y, x] * (1 - weight) + edited[0, :, y, x] * weight
                    assert torch.allclose(pixel, mixed)
    with pytest.raises(UserError):
        blend(image, edited, torch.zeros(5, 5))


def test_edit_takes_back_the_inversion_where_it_removes(generator, inversion):
    from gandissect.invert import edit

    # the generator's own features for the latent: what inversion started from
    with torch.no_grad():
        own = partial_forward(generator, LAYER, inversion.z)
    assert torch.allclose(inversion.own, own, atol=1e-6)
    removed, drawn = torch.zeros(8, 8), torch.zeros(8, 8)
    removed[1:3, 2:5] = 1
    drawn[5:7, 0:2] = 1
    values = torch.linspace(0.5, 2.0, 8)
    strokes = [Stroke([0, 2], "ablate", removed, strength=0.5),
               Stroke([4, 5], "insert", drawn, strength=1.0)]
    out = edit(inversion, strokes, values)
    # the slow way, cell by cell: a remove stroke first moves the features towards the
    # generator's own by its weight, then ablates its units; a draw stroke writes its values
    features = inversion.features.clone()
    for y in range(8):
        for x in range(8):
            if removed[y, x]:
                features[0, :, y, x] = features[0, :, y, x] * 0.5 + own[0, :, y, x] * 0.5
                for unit in (0, 2):
                    features[0, unit, y, x] *= 0.5
            if drawn[y, x]:
                for unit in (4, 5):
                    features[0, unit, y, x] = values[unit]
    with torch.no_grad():
        edited = tail(inversion.generator, features)
    weight = torch.zeros(32, 32)
    for y in range(32):
        for x in range(32):
            weight[y, x] = 0.5 if removed[y // 4, x // 4] else 1.0 if drawn[y // 4, x // 4] else 0
    expected = inversion.target * (1 - weight) + edited * weight
    assert torch.allclose(out, expected, atol=1e-5)
    assert torch.equal(out[..., weight == 0], inversion.target[..., weight == 0])
    assert torch.equal(edit(inversion, []), inversion.target)
