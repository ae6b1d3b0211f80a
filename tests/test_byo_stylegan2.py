"""StyleGAN2 checkpoints in rosinality's stylegan2-pytorch layout, loaded as ``stylegan2:PATH``.

Files are written key by key in that layout from random tensors (32 px, small widths), and the
loaded generator is compared with a slow restatement of StyleGAN2's forward pass: per-sample
modulation and demodulation, upsampling as a transposed convolution then the FIR blur (zero
insertion, padding, a true convolution), fixed noise, bias + leaky ReLU x sqrt 2, and the
to-RGB skips upsampled the same way.
"""

from __future__ import annotations

import argparse
import json
import math
import re

import pytest
import torch
from conftest import CHANNELS, LR_MUL, N_MLP, STYLE_DIM, end_to_end, rosinality_state
from torch import nn
from torch.nn import functional as F

from gandissect.hooks import Edit, Trace, layer_names, partial_forward
from gandissect.models.loaders.files import UnsafeCheckpointError
from gandissect.models.loaders.stylegan2 import load_stylegan2
from gandissect.models.registry import shipped_path
from gandissect.models.specs import resolve_generator


# ----------------------------------------------------------------------- the slow definition
def upfirdn(x, kernel, up, pad):
    """Zero insertion by ``up``, zero padding ``pad = (before, after)``, then a true
    convolution with ``kernel``, channel by channel."""
    n, c, h, w = x.shape
    spread = torch.zeros(n, c, h * up, w * up, dtype=x.dtype)
    for i in range(h):
        for j in range(w):
            spread[:, :, i * up, j * up] = x[:, :, i, j]
    padded = F.pad(spread, (pad[0], pad[1], pad[0], pad[1]))
    flipped = torch.flip(kernel, [0, 1])[None, None].to(x.dtype)
    return torch.cat([F.conv2d(padded[:, k:k + 1], flipped) for k in range(c)], 1)


def modulated_conv(state, prefix, x, w, demodulate, upsample=False):
    weight = state[f"{prefix}.conv.weight"][0]  # (out, in, k, k)
    out_channels, in_channels, k, _ = weight.shape
    outputs = []
    for n in range(x.shape[0]):
        style = w[n] @ (state[f"{prefix}.conv.modulation.weight"] / math.sqrt(w.shape[1])).T \
            + state[f"{prefix}.conv.modulation.bias"]
        wn = weight * style[None, :, None, None] / math.sqrt(in_channels * k * k)
        if demodulate:
            wn = wn / torch.sqrt((wn ** 2).sum((1, 2, 3), keepdim=True) + 1e-8)
        if upsample:  # stride-2 transposed conv, then the blur back to 2h x 2w
            y = F.conv_transpose2d(x[n:n + 1], wn.transpose(0, 1), stride=2)
            y = upfirdn(y, state[f"{prefix}.conv.blur.kernel"], 1, (1, 1))
        else:
            y = F.conv2d(x[n:n + 1], wn, padding=k // 2)
        outputs.append(y)
    return torch.cat(outputs)


def reference_forward(state, z, latent_avg=None, psi=1.0):
    n_mlp = sum(1 for key in state if key.startswith("style.") and key.endswith(".weight"))
    x = z / torch.sqrt((z ** 2).mean(1, keepdim=True) + 1e-8)
    for i in range(1, n_mlp + 1):
        weight = state[f"style.{i}.weight"] * LR_MUL / math.sqrt(x.shape[1])
        x = F.leaky_relu(x @ weight.T + state[f"style.{i}.bias"] * LR_MUL, 0.2) * math.sqrt(2)
    w = x if psi == 1 else latent_avg + psi * (x - latent_avg)

    def styled(prefix, x, noise, upsample):
        x = modulated_conv(state, prefix, x, w, True, upsample)
        x = x + state[f"{prefix}.noise.weight"] * state[f"noises.noise_{noise}"]
        bias = state[f"{prefix}.activate.bias"][None, :, None, None]
        return F.leaky_relu(x + bias, 0.2) * math.sqrt(2)

    def to_rgb(prefix, x, skip):
        rgb = modulated_conv(state, prefix, x, w, False) + state[f"{prefix}.bias"]
        if skip is None:
            return rgb
        return rgb + upfirdn(skip, state[f"{prefix}.upsample.kernel"], 2, (2, 1))

    x = state["input.input"].repeat(z.shape[0], 1, 1, 1)
    x = styled("conv1", x, 0, False)
    skip = to_rgb("to_rgb1", x, None)
    n_res = sum(1 for key in state if re.fullmatch(r"to_rgbs\.\d+\.bias", key))
    for j in range(n_res):
        x = styled(f"convs.{2 * j}", x, 2 * j + 1, True)
        x = styled(f"convs.{2 * j + 1}", x, 2 * j + 2, False)
        skip = to_rgb(f"to_rgbs.{j}", x, skip)
    return skip


# ----------------------------------------------------------------------------------- tests
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    state = rosinality_state()
    latent_avg = torch.randn(STYLE_DIM, generator=torch.Generator().manual_seed(5))
    path = tmp_path_factory.mktemp("stylegan2") / "tiny_ffhq.pt"
    torch.save({"g_ema": state, "latent_avg": latent_avg}, path)
    return path, state, latent_avg


def latents(n=3, seed=1):
    return torch.randn(n, STYLE_DIM, generator=torch.Generator().manual_seed(seed))


def test_a_file_in_the_format_reproduces_the_definition(checkpoint):
    path, state, _ = checkpoint
    generator = resolve_generator(f"stylegan2:{path}")
    z = latents()
    with torch.no_grad():
        images = generator(z)
        expected = reference_forward(state, z)
    assert images.shape == (3, 3, 32, 32)
    assert (images - expected).abs().max() < 1e-5 * expected.abs().max()
    # in float64 the two computations agree to rounding: the same function
    with torch.no_grad():
        images64 = generator.double()(z.double())
        expected64 = reference_forward({k: v.double() for k, v in state.items()}, z.double())
    assert torch.allclose(images64, expected64, rtol=0, atol=1e-10)


def test_truncation_pulls_w_towards_the_stored_latent_avg(checkpoint):
    path, state, latent_avg = checkpoint
    generator = load_stylegan2(path, truncation=0.5).double()
    z = latents(2).double()
    double = {k: v.double() for k, v in state.items()}
    with torch.no_grad():
        expected = reference_forward(double, z, latent_avg.double(), psi=0.5)
        assert torch.allclose(generator(z), expected, rtol=0, atol=1e-10)
        generator.truncation = 0.0  # every latent becomes the average: one image
        images = generator(z)
    assert torch.equal(images[0], images[1])
    with pytest.raises(ValueError, match="truncation must lie in"):
        load_stylegan2(path, truncation=1.5)


def test_sizes_layers_and_units_are_read_from_the_weights(checkpoint):
    generator = resolve_generator(f"stylegan2:{checkpoint[0]}")
    assert (generator.z_dim, generator.resolution, generator.channels, generator.n_mlp) == (
        STYLE_DIM, 32, CHANNELS, N_MLP)
    top = [name for name, _ in generator.named_children()]
    assert top == ["mapping", "input", "layer1", "to_rgb_4x4", "layer2", "layer3", "to_rgb_8x8",
                   "layer4", "layer5", "to_rgb_16x16", "layer6", "layer7", "output_32x32"]
    assert "layer3.conv.modulation" in layer_names(generator)
    z = latents(2)
    shapes = {}
    with torch.no_grad():
        for k in range(1, 8):
            shapes[k] = tuple(partial_forward(generator, f"layer{k}", z).shape)
    assert shapes == {1: (2, 8, 4, 4), 2: (2, 8, 8, 8), 3: (2, 8, 8, 8), 4: (2, 6, 16, 16),
                      5: (2, 6, 16, 16), 6: (2, 4, 32, 32), 7: (2, 4, 32, 32)}


def test_hooks_leave_the_image_unchanged_and_edits_change_it(checkpoint):
    generator = resolve_generator(f"stylegan2:{checkpoint[0]}")
    z = latents(2)
    with torch.no_grad():
        before = generator(z)
        with Trace(generator, "layer3") as trace:
            traced = generator(z)
        assert torch.equal(traced, before) and trace.output.shape == (2, 8, 8, 8)
        with Edit(generator, "layer3", alpha=torch.ones(8, 1, 1), value=0.0):
            ablated = generator(z)
        after = generator(z)
    assert torch.equal(after, before)
    assert (ablated - before).abs().max() > 1e-3
    assert all(not m._forward_hooks for m in generator.modules())


def test_an_image_depends_on_its_latent_only(checkpoint):
    generator = resolve_generator(f"stylegan2:{checkpoint[0]}")
    z = latents(3)
    with torch.no_grad():
        batch = generator(z)
        assert torch.equal(generator(z), batch)  # fixed noise, no randomness
        alone = generator(z[1:2])
    assert torch.allclose(alone[0], batch[1], rtol=0, atol=1e-6 * batch.abs().max())


def test_a_training_checkpoint_without_latent_avg(tmp_path):
    """train.py's files: g, d, g_ema, optimiser states, args (a Namespace), ada_aug_p."""
    state = rosinality_state(seed=3)
    torch.save({"g": rosinality_state(seed=4), "d": {"convs.0.0.weight": torch.randn(4, 3, 1, 1)},
                "g_ema": state, "g_optim": {"state": {}, "param_groups": [{"lr": 0.002}]},
                "args": argparse.Namespace(size=32, latent=STYLE_DIM, n_mlp=N_MLP),
                "ada_aug_p": 0.0}, tmp_path / "010000.pt")
    generator = resolve_generator(f"stylegan2:{tmp_path / '010000.pt'}")
    z = latents(2)
    with torch.no_grad():
        assert torch.allclose(generator(z), reference_forward(state, z), atol=1e-5)
        mean = generator.mapping(torch.randn(4096, STYLE_DIM,
                                             generator=torch.Generator().manual_seed(0))).mean(0)
    assert torch.allclose(generator.w_avg, mean, atol=1e-4)  # the mean of 4096 mapped latents


def test_bare_and_safetensors_files_load_the_same_generator(checkpoint, tmp_path):
    from safetensors.torch import save_file

    path, state, latent_avg = checkpoint
    torch.save(state, tmp_path / "bare.pt")
    save_file({**{f"g_ema.{k}": v.contiguous() for k, v in state.items()},
               "latent_avg": latent_avg}, str(tmp_path / "g.safetensors"))
    z = latents(2)
    with torch.no_grad():
        expected = resolve_generator(f"stylegan2:{path}")(z)
        for name in ("bare.pt", "g.safetensors"):
            assert torch.equal(resolve_generator(f"stylegan2:{tmp_path / name}")(z), expected)


@pytest.mark.parametrize("damage, message", [
    (lambda s: {k: v for k, v in s.items() if k != "noises.noise_3"}, "missing keys: layer4"),
    (lambda s: {k: v for k, v in s.items() if not k.startswith("style.")}, "not a StyleGAN2"),
    (lambda s: {**s, "to_rgbs.0.bias": torch.zeros(1, 4, 1, 1)}, "wrong shapes: to_rgb_8x8.bias"),
])
def test_a_file_that_does_not_fit_says_why(tmp_path, damage, message):
    torch.save({"g_ema": damage(rosinality_state())}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match=message):
        resolve_generator(f"stylegan2:{tmp_path / 'bad.pt'}")


def test_other_files_are_refused_clearly(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("code ran",))

    torch.save({"g_ema": rosinality_state(), "args": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(UnsafeCheckpointError, match="would run Python code"):
        resolve_generator(f"stylegan2:{tmp_path / 'evil.pt'}")
    torch.save({"state_dict": {"layer1.conv.weight": torch.zeros(1)}}, tmp_path / "progan.pth")
    with pytest.raises(ValueError, match="no g_ema generator; top-level keys: state_dict"):
        resolve_generator(f"stylegan2:{tmp_path / 'progan.pth'}")
    torch.save({"g_ema": rosinality_state()}, tmp_path / "ok.pt")
    with pytest.raises(ValueError, match="declares z_dim = 16"):
        resolve_generator(f"stylegan2:{tmp_path / 'ok.pt'}", z_dim=8)


@pytest.mark.skipif(not shipped_path("segmenter").is_file(),
                    reason="the shipped segmenter is not in models/")
def test_dissect_a_stylegan2_file_in_one_command(checkpoint, tmp_path, capsys):
    from gandissect.cli import main

    spec = f"stylegan2:{checkpoint[0]}"
    out = tmp_path / "out"
    assert main(["dissect", "--generator", spec, "--layer", "layer3", "--samples", "16",
                 "--batch", "8", "--top-k", "2", "--images", "1", "--out", str(out),
                 "--device", "cpu"]) == 0
    data = json.loads((out / "dissect.json").read_text())
    assert data["settings"]["generator_name"] == spec and data["settings"]["z_dim"] == STYLE_DIM
    (layer,) = data["layers"]
    assert layer["layer"] == "layer3" and len(layer["units"]) == 8
    assert (out / "report.html").is_file() and "layer3: " in capsys.readouterr().out


def test_paint_a_stylegan2_file_in_one_command(checkpoint, tmp_path, capsys):
    from gandissect.cli import main

    out = tmp_path / "edit"
    assert main(["edit", "--generator", f"stylegan2:{checkpoint[0]}", "--layer", "layer3",
                 "--units", "0,3", "--box", "0,0,16,16", "--samples", "2",
                 "--out", str(out)]) == 0
    assert (out / "edit.png").is_file() and "units [0, 3]" in capsys.readouterr().out


def test_ace_selection_runs_through_a_non_sequential_generator(checkpoint):
    from gandissect.causal import select_by_ace
    from gandissect.hooks import forward_from, partial_forward
    from gandissect.models.registry import load_segmenter

    generator = resolve_generator(f"stylegan2:{checkpoint[0]}")
    z = latents(2)
    with torch.no_grad():
        features = partial_forward(generator, "layer3", z)
        assert torch.equal(forward_from(generator, "layer3", features, z), generator(z))
        changed = forward_from(generator, "layer3", torch.zeros_like(features), z)
    assert not torch.equal(changed, generator(z))
    if shipped_path("segmenter").is_file():
        from gandissect.causal import ConceptRef

        segmenter = load_segmenter()
        units = features.shape[1]
        weights = select_by_ace(generator, segmenter, "layer3", ConceptRef.find(segmenter, "tree"),
                                torch.full((units,), 0.5), torch.ones(units), n=4, epochs=1,
                                batch=2, progress=False)
        assert weights.shape == (units,) and ((weights >= 0) & (weights <= 1)).all()


def test_truncation_on_the_command_line(checkpoint, tmp_path, capsys):
    from gandissect.cli import main
    from gandissect.models.specs import set_truncation

    generator = set_truncation(resolve_generator(f"stylegan2:{checkpoint[0]}"), 0.7)
    assert generator.truncation == 0.7
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        set_truncation(generator, 1.5)
    with pytest.raises(ValueError, match="style-based"):
        set_truncation(nn.Sequential(nn.Linear(2, 2)), 0.5)
    out = tmp_path / "edit"
    assert main(["edit", "--generator", f"stylegan2:{checkpoint[0]}", "--truncation", "0.5",
                 "--layer", "layer3", "--units", "0", "--box", "0,0,16,16", "--samples", "1",
                 "--out", str(out)]) == 0
    assert main(["edit", "--generator", f"stylegan2:{checkpoint[0]}", "--truncation", "2",
                 "--layer", "layer3", "--units", "0", "--samples", "1",
                 "--out", str(tmp_path / "e")]) == 2
    assert "in [0, 1]" in capsys.readouterr().err


@pytest.mark.skipif(not shipped_path("segmenter").is_file(),
                    reason="the shipped segmenter is not in models/")
def test_end_to_end(checkpoint, tmp_path):
    """layers, dissect, edit, ace and the app's Paint tab on a file of the format."""
    end_to_end(f"stylegan2:{checkpoint[0]}", "sceneworld", "layer4", tmp_path, truncation=0.7)
