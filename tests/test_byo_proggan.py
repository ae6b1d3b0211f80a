"""ProGAN checkpoints in the GAN Dissection layout (reference.md 1.4), loaded as ``proggan:PATH``.

Files are written key by key in that layout from random tensors, and the loaded generator is
compared bit for bit with a plain restatement of the architecture's definition.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from gandissect.hooks import Trace
from gandissect.models.loaders.proggan import rename_legacy_keys
from gandissect.models.specs import resolve_generator

CHANNELS_256 = [512, 512, 512, 512, 256, 128, 64]  # 4x4 ... 256x256, the LSUN models


def gan_dissection_state(z_dim: int, channels: list[int], seed: int = 0) -> dict:
    """Random weights under the exact key names and shapes of the released checkpoints."""
    generator = torch.Generator().manual_seed(seed)
    shapes = {"layer1": (channels[0], z_dim, 4, 4), "layer2": (channels[0], channels[0], 3, 3)}
    for k, (previous, current) in enumerate(zip(channels[:-1], channels[1:])):
        shapes[f"layer{2 * k + 3}"] = (current, previous, 3, 3)
        shapes[f"layer{2 * k + 4}"] = (current, current, 3, 3)
    size = 4 * 2 ** (len(channels) - 1)
    shapes[f"output_{size}x{size}"] = (3, channels[-1], 1, 1)
    state = {}
    for name, shape in shapes.items():
        state[f"{name}.conv.weight"] = torch.randn(shape, generator=generator)
        state[f"{name}.wscale.b"] = 0.1 * torch.randn(shape[0], generator=generator)
    return state


def reference_forward(state: dict, z: torch.Tensor) -> torch.Tensor:
    """The definition, step by step: pixel norm, (odd layers from 3 on) nearest 2x upsampling,
    conv, ``x * gain / sqrt(fan_in) + b``, LeakyReLU(0.2); output: gain 1, no activation."""
    def pixel_norm(x):
        return x * torch.rsqrt(x.pow(2).mean(1, keepdim=True) + 1e-8)

    x = z[:, :, None, None]
    n_layers = sum(1 for key in state if key.startswith("layer") and key.endswith("weight"))
    for i in range(1, n_layers + 1):
        x = pixel_norm(x)
        if i >= 3 and i % 2 == 1:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        weight = state[f"layer{i}.conv.weight"]
        x = F.conv2d(x, weight, padding=3 if i == 1 else 1)
        x = x * (math.sqrt(2) / math.sqrt(weight[0].numel())) + state[f"layer{i}.wscale.b"].view(
            1, -1, 1, 1)
        x = F.leaky_relu(x, 0.2)
    (output,) = {key.split(".")[0] for key in state if key.startswith("output_")}
    weight = state[f"{output}.conv.weight"]
    x = F.conv2d(pixel_norm(x), weight)
    return x * (1.0 / math.sqrt(weight[0].numel())) + state[f"{output}.wscale.b"].view(1, -1, 1, 1)


def legacy(state: dict) -> dict:
    """The old names: ``features.{i-1}.*`` for ``layer{i}.*``, ``output.*`` for the output."""
    renamed = {}
    for key, value in state.items():
        name, rest = key.split(".", 1)
        if name.startswith("layer"):
            renamed[f"features.{int(name[5:]) - 1}.{rest}"] = value
        else:
            renamed[f"output.{rest}"] = value
    return renamed


@pytest.fixture(scope="module")
def church(tmp_path_factory):
    """A 256 px file in the released layout, its latent and the definition's output."""
    state = gan_dissection_state(512, CHANNELS_256)
    path = tmp_path_factory.mktemp("proggan") / "proggan_random-256.pth"
    torch.save(state, path)
    z = torch.randn(1, 512, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = reference_forward(state, z)
    return path, state, z, expected


def test_a_256px_file_reproduces_the_definition_bit_for_bit(church):
    path, state, z, expected = church
    generator = resolve_generator(f"proggan:{path}")
    with torch.no_grad():
        images = generator(z)
    assert images.shape == (1, 3, 256, 256)
    assert torch.equal(images, expected)
    loaded = generator.state_dict()
    assert set(loaded) == set(state) and all(torch.equal(loaded[k], state[k]) for k in state)


def _save_as(state: dict, layout: str, path) -> None:
    if "legacy" in layout:
        state = legacy(state)
    if "wrapped" in layout:
        state = {"state_dict": state, "epoch": 7}
    torch.save(state, path)


@pytest.mark.parametrize("layout", ["wrapped", "legacy"])
def test_wrapped_and_legacy_256px_files_load_the_same_generator(church, tmp_path, layout):
    path, state, z, expected = church
    _save_as(state, layout, tmp_path / "model.pth")
    with torch.no_grad():
        images = resolve_generator(f"proggan:{tmp_path / 'model.pth'}")(z)
    assert torch.equal(images, expected)


@pytest.mark.parametrize("layout", ["bare", "wrapped legacy"])
def test_a_64px_file_in_either_layout(tmp_path, layout):
    state = gan_dissection_state(128, [64, 64, 32, 32, 16], seed=2)
    _save_as(state, layout, tmp_path / "model.pth")
    generator = resolve_generator(f"proggan:{tmp_path / 'model.pth'}")
    assert (generator.z_dim, generator.resolution) == (128, 64)
    assert list(generator.named_children())[-1][0] == "output_64x64"
    z = torch.randn(2, 128)
    with torch.no_grad():
        assert torch.equal(generator(z), reference_forward(state, z))


def test_sizes_are_inferred_from_the_weights(church):
    path, _, z, _ = church
    generator = resolve_generator(f"proggan:{path}")
    assert generator.z_dim == 512 and generator.resolution == 256
    layers = [name for name, _ in generator.named_children()]
    assert layers == [f"layer{i}" for i in range(1, 15)] + ["output_256x256"]
    with torch.no_grad(), Trace(generator, "layer4") as traced:
        generator(z)
    assert traced.output.shape == (1, 512, 8, 8)


@pytest.mark.parametrize("z_dim, channels", [(16, [8]), (32, [16, 16, 8, 8, 4]), (8, [8, 4])])
def test_any_resolution_and_latent_size(tmp_path, z_dim, channels):
    state = gan_dissection_state(z_dim, channels, seed=3)
    torch.save(state, tmp_path / "g.pt")
    generator = resolve_generator(f"proggan:{tmp_path / 'g.pt'}")
    size = 4 * 2 ** (len(channels) - 1)
    assert (generator.z_dim, generator.resolution, generator.channels) == (z_dim, size, channels)
    z = torch.randn(3, z_dim)
    with torch.no_grad():
        assert torch.equal(generator(z), reference_forward(state, z))


def test_safetensors_files_load_too(tmp_path):
    from safetensors.torch import save_file

    state = gan_dissection_state(16, [16, 8, 8])  # 16 px
    save_file(state, str(tmp_path / "g.safetensors"))
    z = torch.randn(2, 16)
    with torch.no_grad():
        images = resolve_generator(f"proggan:{tmp_path / 'g.safetensors'}")(z)
    assert torch.equal(images, reference_forward(state, z))


def test_legacy_names_map_to_layers_from_one():
    old = legacy(gan_dissection_state(8, [8, 8]))
    assert "features.0.conv.weight" in old and "output.wscale.b" in old
    renamed = rename_legacy_keys(old)
    assert sorted(renamed) == sorted(gan_dissection_state(8, [8, 8]))
    assert "layer1.conv.weight" in renamed and "output_8x8.wscale.b" in renamed


@pytest.mark.parametrize("damage, message", [
    (lambda s: s.pop("layer3.wscale.b"), "missing keys: layer3.wscale.b"),
    (lambda s: s.update(extra=torch.zeros(1)), "unexpected keys: extra"),
    (lambda s: s.update({"layer4.wscale.b": torch.zeros(5)}),
     r"wrong shapes: layer4.wscale.b \(5,\) \(model: \(8,\)\)"),
    (lambda s: s.pop("layer4.conv.weight"), "not a ProGAN checkpoint"),
    (lambda s: s.clear() or s.update({"fc.weight": torch.zeros(2, 2)}), "not a ProGAN"),
])
def test_a_file_that_does_not_fit_says_which_keys(tmp_path, damage, message):
    state = gan_dissection_state(8, [8, 8])
    damage(state)
    torch.save(state, tmp_path / "g.pth")
    with pytest.raises(ValueError, match=message):
        resolve_generator(f"proggan:{tmp_path / 'g.pth'}")


def test_a_latent_of_the_wrong_size_is_refused_at_once(tmp_path):
    torch.save(gan_dissection_state(8, [8, 8]), tmp_path / "g.pth")
    with pytest.raises(ValueError, match="latent size 9 was given, but ProGANGenerator declares "
                                         "z_dim = 8"):
        resolve_generator(f"proggan:{tmp_path / 'g.pth'}", z_dim=9)
    generator = resolve_generator(f"proggan:{tmp_path / 'g.pth'}")
    with pytest.raises(ValueError, match=r"latent must be \(N, 8\)"):
        generator(torch.zeros(1, 9))
