"""DCGANs as users have them: PyTorch's DCGAN code (``dcgan:PATH``) and plug-ins in the old
conventions (a ``(N, z, 1, 1)`` latent, grey images, uniform latents), end to end.

The reference generator below restates ``pytorch/examples``' DCGAN generator: transposed 4x4
convolutions, the first from 1x1 to 4x4 (stride 1, no padding), the others doubling the size
(stride 2, padding 1), BatchNorm + ReLU between them and Tanh at the end, inside ``main``.
"""

from __future__ import annotations

import json

import pytest
import torch
from conftest import end_to_end
from torch import nn

from gandissect.cli import main
from gandissect.dissect.latents import _chunk_seed, latents, sample_latents
from gandissect.models.loaders.dcgan import load_dcgan
from gandissect.models.registry import shipped_path
from gandissect.models.specs import configure_generator, resolve_generator

needs_segmenter = pytest.mark.skipif(not shipped_path("segmenter").is_file(),
                                     reason="the shipped segmenter is not in models/")

NZ, NGF = 16, 4


class ReferenceDCGAN(nn.Module):
    """pytorch/examples' ``Generator(ngpu)``: ``main`` and a ``(N, nz, 1, 1)`` input."""

    def __init__(self, nz: int = NZ, ngf: int = NGF, nc: int = 3, blocks: int = 4) -> None:
        super().__init__()
        widths = [ngf * 2 ** k for k in reversed(range(blocks))]  # ngf*8 ... ngf
        layers: list[nn.Module] = [nn.ConvTranspose2d(nz, widths[0], 4, 1, 0, bias=False),
                                   nn.BatchNorm2d(widths[0]), nn.ReLU(True)]
        for before, after in zip(widths[:-1], widths[1:]):
            layers += [nn.ConvTranspose2d(before, after, 4, 2, 1, bias=False),
                       nn.BatchNorm2d(after), nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(widths[-1], nc, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def forward(self, z):
        return self.main(z)


def trained_like(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights (DCGAN's N(0, 0.02) initialisation, drawn from ``seed``) and BatchNorm
    statistics that are not the initial ones."""
    torch.manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.ConvTranspose2d):
            module.weight.data.normal_(0, 0.02)
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.normal_(0, 0.1)
            module.running_var.uniform_(0.5, 2)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.normal_(0, 0.1)
    return model.eval()


def old_file(state: dict) -> dict:
    """A state dict as PyTorch before 0.4.1 saved it: no ``num_batches_tracked`` buffers."""
    return {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dcgan")
    colour, grey = trained_like(ReferenceDCGAN()), trained_like(ReferenceDCGAN(nc=1), 1)
    torch.save(old_file(colour.state_dict()), folder / "netG_epoch_24.pth")
    torch.save({"netG": {f"module.{k}": v for k, v in colour.state_dict().items()},
                "netD": {"main.0.weight": torch.zeros(1)}, "epoch": 5},
               folder / "checkpoint.pth")
    torch.save(grey.state_dict(), folder / "mnist_netG.pth")
    return folder, colour, grey


@pytest.mark.parametrize("name", ["netG_epoch_24.pth", "checkpoint.pth"])
def test_a_pytorch_examples_dcgan_loads_and_draws_what_the_original_draws(files, name):
    folder, colour, _ = files
    generator = resolve_generator(f"dcgan:{folder / name}")
    assert (generator.z_dim, generator.resolution, generator.image_channels) == (NZ, 64, 3)
    assert [n for n, m in generator.main.named_children() if isinstance(
        m, nn.ConvTranspose2d)] == ["0", "3", "6", "9", "12"]
    z = torch.randn(3, NZ)
    with torch.no_grad():
        assert torch.allclose(generator(z), colour(z[:, :, None, None]), atol=1e-6)


def test_a_grey_dcgan_is_shown_as_grey_rgb(files):
    folder, _, grey = files
    generator = load_dcgan(folder / "mnist_netG.pth")
    z = torch.randn(2, NZ)
    with torch.no_grad():
        images, expected = generator(z), grey(z[:, :, None, None])
    assert images.shape == (2, 3, 64, 64)
    assert all(torch.equal(images[:, c], expected[:, 0]) for c in range(3))


def test_a_file_of_another_layout_is_refused_in_one_line(tmp_path):
    torch.save({"net.0.weight": torch.zeros(4, 4, 4, 4)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="not a DCGAN generator of PyTorch's DCGAN code.*"
                                         "plug-in factory"):
        load_dcgan(tmp_path / "other.pth")


# ------------------------------------------------------------------ plug-ins in old conventions
class PlugIn(ReferenceDCGAN):
    """A user's own DCGAN class as a plug-in: it takes (N, nz, 1, 1) latents only."""

    def forward(self, z):
        assert z.dim() == 4, "this code takes (N, nz, 1, 1) latents"
        return self.main(z)


def grey_plugin() -> nn.Module:
    """Plug-in factory ``test_byo_dcgan:grey_plugin``: no z_dim, a 4-D latent, grey images."""
    return trained_like(PlugIn(nc=1), 2)


class OwnLaw(ReferenceDCGAN):
    """A plug-in that samples its own latents (uniform on [0, 1])."""

    z_dim = NZ

    def forward(self, z):
        return self.main(z[:, :, None, None])

    def sample_latent(self, n, generator):
        return torch.rand(n, NZ, generator=generator)


def test_a_plugin_with_a_4d_latent_and_grey_images_needs_nothing_more():
    generator = resolve_generator("test_byo_dcgan:grey_plugin")
    assert generator.z_dim == NZ and generator.image_channels == 1
    z = torch.randn(2, NZ)
    reference = grey_plugin()
    with torch.no_grad():
        images = generator(z)
        assert images.shape == (2, 3, 64, 64)
        assert torch.equal(images[:, 2], reference(z[:, :, None, None])[:, 0])


def test_the_latent_law_is_the_generator_s():
    generator = configure_generator(ReferenceDCGAN(), latent="uniform")
    generator.z_dim = NZ
    z = sample_latents(generator, 7, range(300))
    assert torch.equal(z, latents(7, range(300), NZ, "uniform"))
    assert float(z.min()) >= -1 and float(z.max()) <= 1 and float(z.min()) < -0.99
    # the same (seed, i) gives the same z alone and in a batch, in every law
    assert torch.equal(sample_latents(generator, 7, [257]), z[257:258])
    own = OwnLaw()
    drawn = sample_latents(own, 7, range(3))
    assert float(drawn.min()) >= 0
    chunk = torch.Generator().manual_seed(_chunk_seed(7, 0))  # samples 0..255 of seed 7
    assert torch.equal(drawn, torch.rand(256, NZ, generator=chunk)[:3])
    with pytest.raises(ValueError, match="samples its own latents"):
        configure_generator(own, latent="uniform")


def test_a_latent_law_changes_the_fingerprint_and_is_recorded(files, tmp_path):
    from gandissect.dissect.identity import fingerprint

    folder = files[0]
    normal = resolve_generator(f"dcgan:{folder / 'netG_epoch_24.pth'}")
    key = fingerprint(normal)
    uniform = configure_generator(resolve_generator(f"dcgan:{folder / 'netG_epoch_24.pth'}"),
                                  latent="uniform")
    assert fingerprint(uniform) != key and fingerprint(normal) == key


@needs_segmenter
def test_dcgan_end_to_end_with_a_uniform_latent(files, tmp_path):
    folder = files[0]
    data = end_to_end(f"dcgan:{folder / 'netG_epoch_24.pth'}", "sceneworld", "main.5",
                      tmp_path, latent="uniform")
    assert data["settings"]["latent"] == "uniform"
    assert len(data["layers"][0]["units"]) == NGF * 4


@needs_segmenter
def test_a_grey_plugin_end_to_end(tmp_path):
    end_to_end("test_byo_dcgan:grey_plugin", "sceneworld", "main.2", tmp_path)


# ------------------------------------------------------------------ defects of the first trial
def test_layers_lists_a_generator_from_a_latent(files, capsys):
    folder = files[0]
    assert main(["layers", f"dcgan:{folder / 'netG_epoch_24.pth'}"]) == 0
    out = capsys.readouterr().out
    assert "a generator, traced with one latent (16 values)" in out
    assert "main.0 " in out and "(1, 32, 4, 4)" in out and "(1, 3, 64, 64)" in out


def test_layers_traces_a_classifier_at_its_declared_input_size(tmp_path, capsys):
    import torchvision

    torch.save(torchvision.models.resnet18(num_classes=3).state_dict(), tmp_path / "r18.pth")
    assert main(["layers", "torchvision:resnet18", "--weights", str(tmp_path / "r18.pth")]) == 0
    out = capsys.readouterr().out
    assert "traced with a 224 px image" in out and "(1, 512, 7, 7)" in out
    assert main(["layers", "torchvision:resnet18", "--weights", str(tmp_path / "r18.pth"),
                 "--size", "32"]) == 0
    assert "(1, 512, 1, 1)" in capsys.readouterr().out


def test_weights_from_before_pytorch_0_4_1_load(tmp_path):
    """torchvision's ResNets of Places365 were saved without num_batches_tracked."""
    import torchvision

    from gandissect.models.specs import resolve_classifier

    model = trained_like(torchvision.models.resnet18(num_classes=365))
    old = old_file(model.state_dict())
    assert len(old) < len(model.state_dict())
    torch.save({"epoch": 90, "arch": "resnet18",
                "state_dict": {f"module.{k}": v for k, v in old.items()}},
               tmp_path / "resnet18_places365.pth.tar")
    loaded = resolve_classifier("torchvision:resnet18", tmp_path / "resnet18_places365.pth.tar")
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(loaded(images), model(images), atol=1e-5)
    broken = dict(old)
    broken.pop("layer1.0.bn1.running_mean")  # any other missing key is still an error
    torch.save(broken, tmp_path / "broken.pth")
    with pytest.raises(ValueError, match="missing keys: layer1.0.bn1.running_mean"):
        resolve_classifier("torchvision:resnet18", tmp_path / "broken.pth")


@needs_segmenter
def test_the_shipped_segmenter_takes_any_image_size():
    from gandissect.models.registry import load_segmenter

    segmenter = load_segmenter()
    images = torch.rand(2, 3, 64, 64) * 2 - 1
    odd = images[:, :, :60, :44]
    labels = segmenter.segment(odd)
    assert all(v.shape == (2, 60, 44) for v in labels.values())
    probabilities = segmenter.probabilities(odd)
    assert torch.equal(probabilities["object"].argmax(1), labels["object"])
    # a size the pooling divides is not padded: the same logits as before
    with torch.no_grad():
        assert torch.equal(segmenter(images)["object"].argmax(1),
                           segmenter.segment(images)["object"])


@needs_segmenter
def test_dissect_a_generator_of_an_odd_size(tmp_path):
    assert main(["dissect", "--generator", "test_byo_dcgan:odd_generator", "--layer", "main.2",
                 "--samples", "8", "--batch", "8", "--top-k", "1", "--images", "1",
                 "--no-html", "--out", str(tmp_path / "odd"), "--device", "cpu"]) == 0
    data = json.loads((tmp_path / "odd" / "dissect.json").read_text())
    assert data["settings"]["label_shape"][-2:] == [36, 36]


def odd_generator() -> nn.Module:
    """Plug-in factory: 36 px images (no multiple of 8)."""
    model = trained_like(ReferenceDCGAN(blocks=3))
    model.main.add_module("crop", nn.Upsample(size=(36, 36), mode="bilinear"))
    return model


class Conditional(OwnLaw):
    """A plug-in class-conditional generator: ``n_classes`` and a settable ``class_index``."""

    n_classes = 4
    class_index = None

    def sample_latent(self, n, generator):  # (the default law for this one)
        return torch.randn(n, NZ, generator=generator)

    def forward(self, z):
        shift = torch.zeros(1, NZ)
        shift[0, self.class_index] = 3.0
        return self.main((z + shift)[:, :, None, None])


def conditional_plugin() -> nn.Module:
    """Plug-in factory ``test_byo_dcgan:conditional_plugin``."""
    return trained_like(Conditional(), 3)


def test_a_plugin_s_classes_are_chosen_with_class(tmp_path, capsys):
    assert main(["edit", "--generator", "test_byo_dcgan:conditional_plugin", "--layer", "main.2",
                 "--units", "0", "--samples", "1", "--out", str(tmp_path / "none")]) == 2
    assert "class-conditional (4 classes): pass --class K with K in 0..3" in \
        capsys.readouterr().err
    assert main(["edit", "--generator", "test_byo_dcgan:conditional_plugin", "--class", "4",
                 "--layer", "main.2", "--units", "0", "--samples", "1",
                 "--out", str(tmp_path / "four")]) == 2
    assert "--class must lie in 0..3, got 4" in capsys.readouterr().err
    generator = configure_generator(resolve_generator("test_byo_dcgan:conditional_plugin"),
                                    class_index=2)
    z = sample_latents(generator, 0, range(2))
    with torch.no_grad():
        drawn = generator(z)
        generator.class_index = 1
        assert not torch.equal(generator(z), drawn)  # the class changes the images
    with pytest.raises(ValueError, match="no classes"):
        configure_generator(resolve_generator(f"dcgan:{_any_dcgan(tmp_path)}"), class_index=0)


def _any_dcgan(folder):
    torch.save(trained_like(ReferenceDCGAN()).state_dict(), folder / "g.pth")
    return folder / "g.pth"


def test_the_app_says_what_a_segmenter_without_probabilities_lacks(tmp_path):
    """Learning a brush's causal effect with a labelling-only plug-in segmenter: one line on
    the page, before any work, naming the method to add."""
    import gradio as gr

    from gandissect.app import units
    from gandissect.app.workspace import AppConfig, Workspace

    workspace = Workspace.open(AppConfig(
        generator="conftest:toy_generator", segmenter="conftest:labels_only_segmenter",
        samples=64, cache=tmp_path, progress=False))
    try:
        assert workspace.problem is None, workspace.problem
        with pytest.raises(gr.Error, match=r"cannot learn causal effects: it needs "
                                           r"probabilities\(images\)"):
            units.learn_effect(workspace, "object/tree", progress=False)
        assert not list((tmp_path).rglob("ace*.pt"))  # nothing learned, nothing half-written
    finally:
        workspace.close()
