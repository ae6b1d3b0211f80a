"""One spelling for every model: shipped names, ``scheme:target``, ``package.module:factory``
and project ``.safetensors`` files, each resolved and checked before any long job."""

from __future__ import annotations

import sys
import textwrap
import warnings

import pytest
import torch

from gandissect.dissect import check_layers
from gandissect.hooks import Trace
from gandissect.models import registry, specs
from gandissect.models.proggan import ProGANGenerator
from gandissect.models.specs import resolve_classifier, resolve_generator, resolve_segmenter

TOYS = '''
import torch
from torch import nn


class ToyGenerator(nn.Module):
    def __init__(self, z_dim: int = 6, declare: bool = True, scale: float = 1.0,
                 shift: float = 0.0) -> None:
        super().__init__()
        if declare:
            self.z_dim = z_dim
        self.layer1 = nn.Linear(z_dim, 4 * 8 * 8)
        self.layer2 = nn.Conv2d(4, 3, 1)
        self.scale, self.shift = scale, shift

    def forward(self, z):
        x = self.layer1(z).view(-1, 4, 8, 8)
        return torch.tanh(self.layer2(x)) * self.scale + self.shift


class ToySegmenter:
    categories = ["object"]
    concepts = {"object": ["none", "tree"]}

    def segment(self, images):
        return {"object": torch.zeros(images.shape[0], *images.shape[2:], dtype=torch.long)}


def declared():
    return ToyGenerator()


def undeclared():
    return ToyGenerator(declare=False)


def unit_range():
    return ToyGenerator(scale=0.5, shift=0.5)


def lying():
    generator = ToyGenerator()
    generator.z_dim = 7
    return generator


def not_a_module():
    return "a generator"


def segmenter():
    return ToySegmenter()


def classifier():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 2))
'''
SPELLINGS = ("sceneworld, FILE.safetensors, dcgan:PATH, nvidia:PATH, proggan:PATH, "
             "stylegan2:PATH, torchscript:PATH, package.module:factory")


@pytest.fixture(scope="module")
def toys(tmp_path_factory):
    """An importable module of plug-in factories: ``byo_toys``."""
    folder = tmp_path_factory.mktemp("plugins")
    (folder / "byo_toys.py").write_text(textwrap.dedent(TOYS))
    sys.path.insert(0, str(folder))
    yield "byo_toys"
    sys.path.remove(str(folder))
    sys.modules.pop("byo_toys", None)


@pytest.fixture(scope="module")
def tiny_proggan():
    torch.manual_seed(0)
    return ProGANGenerator(8, [8, 8, 4]).eval()  # 16 px


# ------------------------------------------------------------------ spellings
def test_shipped_names_go_to_the_registry(monkeypatch):
    for kind in ("generator", "classifier", "segmenter"):
        monkeypatch.setattr(registry, f"load_{kind}", lambda name, device="cpu", k=kind: (
            k, name, device))
    assert resolve_generator("sceneworld", "meta") == ("generator", "sceneworld", "meta")
    assert resolve_classifier("sceneworld") == ("classifier", "sceneworld", "cpu")
    assert resolve_segmenter("sceneworld") == ("segmenter", "sceneworld", "cpu")


@pytest.mark.parametrize("spec", ["sceneworl", "stylegan3:/gans/ffhq.pt", "church.pth",
                                  r"C:\gans\church.pth", "proggan", "a.b:c:d"])
def test_unknown_spellings_list_the_valid_ones(spec):
    with pytest.raises(ValueError, match=f"unknown generator .*; valid spellings: {SPELLINGS}$"):
        resolve_generator(spec)


def test_classifier_and_segmenter_spellings():
    with pytest.raises(ValueError, match="valid spellings: sceneworld, FILE.safetensors, "
                                         "torchvision:ARCH, timm:NAME_OR_DIR, hf:NAME_OR_DIR, "
                                         "package.module:factory$"):
        resolve_classifier("resnet18")
    with pytest.raises(ValueError, match="valid spellings: sceneworld, FILE.safetensors, "
                                         "hf:NAME_OR_DIR, upp:DIR, semseg:DIR, "
                                         "torchvision:ARCH, package.module:factory$"):
        resolve_segmenter("upernet:/x.pth")


def test_the_scheme_is_the_text_before_the_first_colon_only(tmp_path, tiny_proggan):
    with pytest.raises(ValueError, match=r"weights file C:\\gans\\church.pth does not exist"):
        resolve_generator(r"proggan:C:\gans\church.pth")
    with pytest.raises(ValueError, match="names no PATH after the colon"):
        resolve_generator("proggan:")
    folder = tmp_path / "run:3"
    folder.mkdir()
    torch.save(tiny_proggan.state_dict(), folder / "g.pth")
    assert resolve_generator(f"proggan:{folder / 'g.pth'}").resolution == 16


def test_a_new_scheme_is_one_entry_in_the_table(monkeypatch, tiny_proggan):
    calls = []

    def load_biggan(target, device, z_dim):
        calls.append((target, device, z_dim))
        return tiny_proggan

    monkeypatch.setitem(specs.GENERATOR_SCHEMES, "biggan", load_biggan)
    assert resolve_generator("biggan:/gans/ffhq.pt", "cpu", z_dim=8) is tiny_proggan
    assert calls == [("/gans/ffhq.pt", "cpu", 8)]
    assert "biggan:PATH" in specs.spellings(specs.GENERATOR_SCHEMES)


def test_project_safetensors_files_rebuild_from_their_config(tmp_path, tiny_proggan):
    registry.save_weights(tiny_proggan, tmp_path / "snapshot.safetensors", tiny_proggan.config())
    generator = resolve_generator(str(tmp_path / "snapshot.safetensors"))
    z = torch.randn(2, 8)
    with torch.no_grad():
        assert torch.equal(generator(z), tiny_proggan(z))


# ------------------------------------------------------------------ plug-in factories
def test_a_plugin_generator_declaring_its_latent_size(toys):
    generator = resolve_generator(f"{toys}:declared")
    assert (generator.z_dim, generator.resolution) == (6, 8) and not generator.training


def test_an_undeclared_latent_size_is_inferred_and_checked(toys):
    generator = resolve_generator(f"{toys}:undeclared")
    assert generator.z_dim == 6
    assert resolve_generator(f"{toys}:undeclared", z_dim=6).z_dim == 6


@pytest.mark.parametrize("factory, z_dim, message", [
    ("undeclared", 5, "does not take a latent of size 5 .*mat1 and mat2"),
    ("lying", None, "does not take a latent of size 7"),
    ("declared", 5, "latent size 5 was given, but ToyGenerator declares z_dim = 6"),
    ("unit_range", None, r"pixels in \[0.*about \[-1, 1\]"),
    ("not_a_module", None, "returned a str, not a torch.nn.Module"),
    ("missing", None, "module byo_toys has no function 'missing'"),
])
def test_plugin_generators_that_do_not_fit_say_why(toys, factory, z_dim, message):
    with pytest.raises(ValueError, match=message):
        resolve_generator(f"{toys}:{factory}", z_dim=z_dim)


def test_a_module_that_does_not_import_says_so():
    with pytest.raises(ValueError, match="cannot import 'no_such_package.models'"):
        resolve_generator("no_such_package.models:church")


def test_plugin_classifiers_take_weights(toys, tmp_path):
    model = resolve_classifier(f"{toys}:classifier")
    state = {k: v + 1 for k, v in model.state_dict().items()}
    torch.save({"model": state}, tmp_path / "w.pth")
    loaded = resolve_classifier(f"{toys}:classifier", weights=tmp_path / "w.pth")
    assert all(torch.equal(loaded.state_dict()[k], state[k]) for k in state)


def test_plugin_segmenters_are_checked_for_the_interface(toys):
    assert resolve_segmenter(f"{toys}:segmenter").categories == ["object"]
    with pytest.raises(ValueError, match="is not a segmenter"):
        resolve_segmenter(f"{toys}:classifier")


# ------------------------------------------------------------------ TorchScript
def _jit_save(module, path, example=None) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        compiled = torch.jit.trace(module, example) if example is not None else torch.jit.script(
            module)
        torch.jit.save(compiled, str(path))


def test_a_traced_generator_keeps_its_layers_traceable(tmp_path, tiny_proggan):
    _jit_save(tiny_proggan, tmp_path / "g.pt", torch.randn(1, 8))
    generator = resolve_generator(f"torchscript:{tmp_path / 'g.pt'}")
    assert [name for name, _ in generator.named_children()] == [
        *(f"layer{i}" for i in range(1, 7)), "output_16x16"]
    assert (generator.z_dim, generator.resolution) == (8, 16)
    z = torch.randn(3, 8)
    with torch.no_grad(), Trace(generator, "layer4") as traced:
        images = generator(z)
    assert torch.allclose(images, tiny_proggan(z), atol=1e-6)
    assert traced.output.shape == (3, 8, 8, 8)


def test_an_opaque_script_is_one_layer_with_its_declared_latent(toys, tmp_path):
    import byo_toys

    _jit_save(byo_toys.ToyGenerator(z_dim=5), tmp_path / "g.pt")
    generator = resolve_generator(f"torchscript:{tmp_path / 'g.pt'}")
    assert [name for name, _ in generator.named_children()] == ["model"]
    assert generator.z_dim == 5 and generator(torch.zeros(2, 5)).shape == (2, 3, 8, 8)


def test_a_file_that_is_not_torchscript_says_so(tmp_path, tiny_proggan):
    torch.save(tiny_proggan.state_dict(), tmp_path / "g.pth")
    with pytest.raises(ValueError, match="is not a TorchScript file .*proggan:PATH"):
        resolve_generator(f"torchscript:{tmp_path / 'g.pth'}")


# ------------------------------------------------------------------ layer names
def test_a_layer_that_does_not_exist_lists_the_valid_ones(tmp_path, tiny_proggan):
    torch.save(tiny_proggan.state_dict(), tmp_path / "g.pth")
    generator = resolve_generator(f"proggan:{tmp_path / 'g.pth'}")
    with pytest.raises(ValueError, match="no layer named 'layer9'.*Valid layers: layer1, "
                                         "layer1.norm"):
        check_layers(generator, ["layer4", "layer9"])
