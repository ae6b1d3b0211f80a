"""Style channels (StyleSpace) of StyleGAN2 generators: the layers ``layerK.style``.

A StyleGAN2 file in rosinality's layout (random weights, 32 px) is compared with a slow
restatement of the generator in which every sample's weights are modulated by its styles and
demodulated one by one; a style edit there is an edit of the style vector ``s`` itself (a
channel set to 0, or moved by ``alpha * sigma_c``) before the weights are modulated. The style
layers then go through ``dissect``, ``edit`` (``--shift``), ``ace`` and the app's Paint tab.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import STYLE_DIM, rosinality_state
from torch import nn
from torch.nn import functional as F

from gandissect.errors import UserError
from gandissect.hooks import (
    Edit,
    TraceDict,
    edit_alpha,
    forward_from,
    layer_names,
    layer_shapes,
    partial_forward,
)
from gandissect.models.registry import shipped_path
from gandissect.models.specs import resolve_generator
from gandissect.models.stylegan2 import StyledConv, ToRGB
from gandissect.models.stylespace import carried_styles
from gandissect.styles import (
    StyleShift,
    style_layers,
    style_shift,
    style_statistics,
    style_vectors,
)

STYLE_LAYERS = ["layer1.style", "to_rgb_4x4.style", "layer2.style", "layer3.style",
                "to_rgb_8x8.style", "layer4.style", "layer5.style", "to_rgb_16x16.style",
                "layer6.style", "layer7.style", "output_32x32.style"]
needs_segmenter = pytest.mark.skipif(not shipped_path("segmenter").is_file(),
                                     reason="the shipped segmenter is not in models/")


# ----------------------------------------------------------------------- the slow definition
def fir(x, kernel, up, pad):
    """Zero insertion by ``up``, zero padding ``pad = (before, after)``, then a true
    convolution with ``kernel``, channel by channel."""
    n, c, h, w = x.shape
    spread = torch.zeros(n, c, h * up, w * up, dtype=x.dtype)
    spread[:, :, ::up, ::up] = x
    padded = F.pad(spread, (pad[0], pad[1], pad[0], pad[1]))
    flipped = torch.flip(kernel, [0, 1])[None, None].to(x.dtype)
    return torch.cat([F.conv2d(padded[:, k:k + 1], flipped) for k in range(c)], 1)


def slow_forward(generator, z, edit=None):
    """The image, sample by sample, with weights ``W * s / sqrt(fan_in)`` demodulated per
    output unit; ``edit(style_layer, sample, s) -> s`` changes a sample's style vector."""
    w = generator.map(z)
    images = []
    for n in range(z.shape[0]):
        x, rgb = generator.input.input, None
        for name, block in generator.named_children():
            if not isinstance(block, (StyledConv, ToRGB)):
                continue
            conv = block.conv
            s = conv.modulation(w[n:n + 1])[0]
            if edit is not None:
                s = edit(f"{name}.style", n, s.clone())
            weight = conv.weight[0] * s[None, :, None, None] / math.sqrt(
                conv.weight[0, 0].numel())
            if isinstance(block, ToRGB):
                out = F.conv2d(x, weight) + block.bias
                rgb = out if rgb is None else out + fir(rgb, block.upsample.kernel, 2, (2, 1))
                continue
            weight = weight / torch.sqrt(weight.pow(2).sum((1, 2, 3), keepdim=True) + 1e-8)
            if conv.upsample:
                y = fir(F.conv_transpose2d(x, weight.transpose(0, 1), stride=2),
                        conv.blur.kernel, 1, (1, 1))
            else:
                y = F.conv2d(x, weight, padding=1)
            y = y + block.noise.weight * block.noise.fixed
            x = F.leaky_relu(y + block.activate.bias[None, :, None, None], 0.2) * math.sqrt(2)
        images.append(rgb)
    return torch.cat(images)


# ----------------------------------------------------------------------------------- tests
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("stylespace") / "tiny.pt"
    torch.save({"g_ema": rosinality_state(seed=7)}, path)
    return path


@pytest.fixture
def generator(checkpoint):
    return resolve_generator(f"stylegan2:{checkpoint}").eval()


def latents(n=3, seed=1):
    return torch.randn(n, STYLE_DIM, generator=torch.Generator().manual_seed(seed))


def close(a, b, tolerance=1e-5):
    return bool((a - b).abs().max() <= tolerance * b.abs().max())


def test_the_forward_equals_per_sample_weight_modulation(generator):
    z = latents()
    with torch.no_grad():
        assert close(generator(z), slow_forward(generator, z))
        assert torch.allclose(generator.double()(z.double()),
                              slow_forward(generator, z.double()), rtol=0, atol=1e-10)


def test_style_layers_are_layers_with_the_inputs_units_and_size(generator):
    assert style_layers(generator) == STYLE_LAYERS
    assert set(STYLE_LAYERS) <= set(layer_names(generator))
    shapes = layer_shapes(generator, latents(1))
    assert shapes["layer2.style"] == (1, 8, 4, 4)  # the upsampling layer's 4x4 input
    assert shapes["layer3.style"] == (1, 8, 8, 8)
    assert shapes["layer6.style"] == (1, 6, 16, 16) and shapes["output_32x32.style"] == (
        1, 4, 32, 32)
    # the unit's map is x * s: the layer's input scaled by the sample's style
    z = latents(2)
    with torch.no_grad():
        x = partial_forward(generator, "layer2", z)
        s = generator.layer3.conv.modulation(generator.map(z))
        assert torch.allclose(partial_forward(generator, "layer3.style", z),
                              x * s[:, :, None, None], rtol=0, atol=1e-6)


def test_hooks_on_style_layers_leave_the_image_unchanged(generator):
    z = latents()
    with torch.no_grad():
        before = generator(z)
        with TraceDict(generator, STYLE_LAYERS) as traces:
            traced = generator(z)
        with Edit(generator, "layer4.style", alpha=torch.zeros(8, 1, 1)):
            unedited = generator(z)
    assert torch.equal(traced, before) and torch.equal(unedited, before)
    assert traces["layer4.style"].output.shape == (3, 8, 8, 8)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in generator.modules())


@pytest.mark.parametrize("layer, channel", [("layer3.style", 2), ("layer4.style", 5),
                                            ("to_rgb_16x16.style", 1)])
def test_zeroing_a_style_channel_by_edit_sets_its_style_to_zero(generator, layer, channel):
    generator = generator.double()
    z = latents().double()

    def off(name, n, s):
        if name == layer:
            s[channel] = 0
        return s

    channels = partial_forward(generator, layer, z).shape[1]
    with torch.no_grad(), Edit(generator, layer, alpha=edit_alpha([channel], channels)):
        edited = generator(z)
        expected = slow_forward(generator, z, off)
        assert (expected - slow_forward(generator, z)).abs().max() > 1e-3
    assert torch.allclose(edited, expected, rtol=0, atol=1e-10)


def test_style_vectors_and_their_spread(generator, checkpoint):
    z = latents(5)
    with torch.no_grad():
        s = generator.layer4.conv.modulation(generator.map(z))
    assert torch.allclose(style_vectors(generator, "layer4.style", z), s)

    class Wrapped(nn.Module):  # no `styles` method: styles read as the layer is entered
        def __init__(self):
            super().__init__()
            self.inner, self.z_dim = generator, generator.z_dim

        def forward(self, z):
            return self.inner(z)

    assert torch.allclose(style_vectors(Wrapped(), "inner.layer4.style", z), s)
    # StyleSpace's sigma_c: the spread over the generator's latents, untruncated
    mean, sigma = style_statistics(generator, "to_rgb_8x8.style", n=300, seed=3, batch=128)
    from gandissect.dissect.latents import latents as dissection_latents

    with torch.no_grad():
        all_styles = generator.to_rgb_8x8.conv.modulation(
            generator.map(dissection_latents(3, range(300), STYLE_DIM)))
    assert torch.allclose(mean, all_styles.mean(0), atol=1e-5)
    assert torch.allclose(sigma, all_styles.std(0), rtol=1e-4)
    generator.truncation = 0.5
    assert torch.allclose(style_statistics(generator, "to_rgb_8x8.style", n=300, seed=3)[1],
                          sigma, rtol=1e-4)
    with pytest.raises(UserError, match="not a style layer.*layer1.style, to_rgb_4x4.style"):
        style_statistics(generator, "layer4")


@pytest.mark.parametrize("layer, units, alpha", [("layer4.style", [1, 6], 2.5),
                                                 ("layer3.style", [0], -4.0),
                                                 ("output_32x32.style", [2], 3.0)])
def test_a_style_shift_moves_the_style_by_alpha_sigmas(generator, layer, units, alpha):
    sigma = style_statistics(generator, layer, n=64)[1].double()
    generator = generator.double()
    z = latents().double()
    shift = style_shift(units, sigma, alpha).double()
    others = [c for c in range(sigma.numel()) if c not in units]
    assert torch.allclose(shift[units], alpha * sigma[units]) and not shift[others].any()

    def moved(name, n, s):
        return s + shift if name == layer else s

    with torch.no_grad():
        plain = generator(z)
        with StyleShift(generator, layer, shift):
            shifted = generator(z)
        expected = slow_forward(generator, z, moved)
        assert (expected - plain).abs().max() > 1e-3
        assert torch.allclose(shifted, expected, rtol=0, atol=1e-10)
        # a mask of ones shifts everywhere; an empty one nowhere
        with StyleShift(generator, layer, shift, mask=torch.ones(32, 32)):
            assert torch.allclose(generator(z), expected, rtol=0, atol=1e-10)
        with StyleShift(generator, layer, shift, mask=torch.zeros(32, 32)):
            assert torch.equal(generator(z), plain)
    assert all(not m._forward_hooks for m in generator.modules())
    with pytest.raises(UserError, match="not a style layer"):
        StyleShift(generator, "layer4", shift)


def test_a_painted_style_shift_acts_mostly_where_painted(generator):
    z = latents(2)
    shift = style_shift([0, 1, 2], style_statistics(generator, "layer6.style", n=64)[1], 8.0)
    mask = torch.zeros(32, 32)
    mask[:8, :8] = 1
    with torch.no_grad():
        before = generator(z)
        with StyleShift(generator, "layer6.style", shift, mask=mask):
            after = generator(z)
    change = (after - before).abs().mean((0, 1))
    # outside, only the demodulation's share of the moved styles (see the next test)
    assert change[:8, :8].mean() > 10 * change[16:, 16:].mean()


def test_the_demodulation_uses_the_style_the_product_carries():
    """Least squares per sample and channel: the edited style for a whole-map style edit, the
    energy-weighted share of it for a painted one, the style itself for a zero input."""
    g = torch.Generator().manual_seed(0)
    x, s, delta = (torch.randn(2, 5, 6, 6, generator=g, dtype=torch.float64),
                   torch.randn(2, 5, generator=g, dtype=torch.float64),
                   torch.randn(5, generator=g, dtype=torch.float64))
    mask = (torch.rand(6, 6, generator=g) > 0.5).double()
    x[1, 4] = 0
    product = x * (s[:, :, None, None] + delta[:, None, None] * mask)
    energy = (x * x).sum((2, 3))
    expected = s + delta * (x * x * mask).sum((2, 3)) / energy.clamp_min(1e-300)
    expected[1, 4] = s[1, 4]
    assert torch.allclose(carried_styles(x, product, s), expected, rtol=0, atol=1e-12)
    whole = x * (s + delta)[:, :, None, None]
    assert torch.allclose(carried_styles(x, whole, s)[0], (s + delta)[0], rtol=0, atol=1e-12)


def test_the_causal_path_runs_from_a_style_layer(generator):
    z = latents(2)
    with torch.no_grad():
        x = partial_forward(generator, "layer5.style", z)
        assert torch.equal(forward_from(generator, "layer5.style", x, z), generator(z))
        assert not torch.equal(forward_from(generator, "layer5.style", x * 0, z), generator(z))
    # gradients reach an edit of the style layer (causal learning)
    a = torch.full((x.shape[1], 1, 1), 0.5, requires_grad=True)
    forward_from(generator, "layer5.style", x * (1 - a), z).square().sum().backward()
    assert a.grad is not None and bool(a.grad.abs().sum() > 0)


@needs_segmenter
def test_dissect_and_edit_a_style_layer_from_the_command_line(checkpoint, tmp_path, capsys):
    from gandissect.cli import main

    spec = f"stylegan2:{checkpoint}"
    out = tmp_path / "dissection"
    assert main(["dissect", "--generator", spec, "--layer", "layer3.style", "--samples", "16",
                 "--batch", "8", "--top-k", "2", "--images", "1", "--out", str(out),
                 "--device", "cpu"]) == 0
    (layer,) = json.loads((out / "dissect.json").read_text())["layers"]
    assert layer["layer"] == "layer3.style" and len(layer["units"]) == 8
    assert "layer3.style: " in capsys.readouterr().out
    # causal effect (ACE) of the style channels on the object the images show most
    from gandissect.models.registry import load_segmenter

    segmenter = load_segmenter()
    with torch.no_grad():
        objects = segmenter.segment(resolve_generator(spec)(latents(8)))["object"]
    code = int(torch.bincount(objects.flatten())[1:].argmax()) + 1
    assert main(["ace", "--generator", spec, "--layer", "layer3.style", "--concept",
                 segmenter.concepts["object"][code], "--category", "object",
                 "--dissection", str(out),
                 "--units", "2", "--samples", "4", "--selection-samples", "4", "--epochs", "1",
                 "--no-refine", "--cache", str(tmp_path / "cache"), "--quiet", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert len(report["unit_ids"]["ace"]) == 2
    for extra in (["--units", "0,3", "--box", "0,0,16,16"],
                  ["--units", "1", "--mode", "insert", "--dissection", str(out)],
                  ["--units", "1,2", "--shift", "5"],
                  ["--units", "1", "--shift", "-3", "--box", "0,0,16,16"]):
        edit = tmp_path / "edit"
        assert main(["edit", "--generator", spec, "--layer", "layer3.style", "--samples", "2",
                     *extra, "--out", str(edit)]) == 0, extra
        assert (edit / "edit.png").is_file()
        (edit / "edit.png").unlink()
    printed = capsys.readouterr().out
    assert "units [1, 2] shifted by 5 standard deviations of their styles" in printed
    assert main(["edit", "--generator", spec, "--layer", "layer3", "--units", "1",
                 "--shift", "2", "--out", str(tmp_path / "e")]) == 2
    assert "not a style layer" in capsys.readouterr().err
    assert main(["edit", "--generator", spec, "--layer", "layer3.style", "--units", "1",
                 "--shift", "2", "--mode", "insert", "--out", str(tmp_path / "e")]) == 2
    assert "--shift" in capsys.readouterr().err
    assert main(["edit", "--generator", spec, "--layer", "layer3.style", "--units", "1",
                 "--shift", "nan", "--out", str(tmp_path / "e")]) == 2
    assert "finite" in capsys.readouterr().err


@needs_segmenter
def test_paint_on_a_style_layer_in_the_app(checkpoint, tmp_path):
    import numpy as np

    from gandissect.app import paint
    from gandissect.app.canvas import paint_value
    from gandissect.app.session import Session
    from gandissect.app.workspace import AppConfig, Workspace

    ws = Workspace.open(AppConfig(generator=f"stylegan2:{checkpoint}", layer="layer5.style",
                                  samples=16, cache=tmp_path, canvas=64, progress=False))
    try:
        assert ws.problem is None, ws.problem
        assert ws.scenes.n_units == 6 and ws.scenes.cells == (16, 16)
        assert ws.scenes.brushes, "no concept to paint with"
        session = Session()
        paint.choose_scene(ws, session, 3)
        mask = np.zeros((32, 32), bool)
        mask[4:20, 4:20] = True
        out = paint.apply_brush(ws, session, paint_value(mask, ws.scale, (1,)),
                                ws.scenes.brushes[0].key, "remove", 1.0, 6)
        assert session.strokes and out.used["unit"].tolist() == session.strokes[0].units
        before, after = (np.asarray(p, dtype=float) for p in paint.scene_pictures(ws, session))
        assert np.abs(after - before).max() > 0
    finally:
        ws.close()
