"""Fuzzing the model loaders with damaged checkpoints, one table row per (file, spelling).

Every spelling that reads weights (``proggan:PATH``, ``stylegan2:PATH``, ``torchvision:ARCH``
with ``weights=PATH``, a plug-in classifier with ``weights=PATH``, ``FILE.safetensors`` as a
generator, segmenter or classifier, ``read_state_dict``) is given its own intact file damaged
one way at a time: truncated, emptied, overwritten, a pickle that would run code, tensors of
the wrong shape or value. Each must fail with a ``ValueError`` whose message says what is wrong
and what to do; a pickle with code must be refused before any of it runs (its marker file never
appears). ``test_every_intact_file_loads_its_tensors`` shows that the damage, not the file,
causes each error. The command-line spellings of the same files are in ``test_fuzz_cli``.
"""

from __future__ import annotations

import argparse
import json
import pickle
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from conftest import (
    ARCH,
    DAMAGES,
    PROJECT_MODELS,
    Payload,
    TinyClassifier,
    legacy_pickle,
    proggan_state,
    rosinality_state,
    save_state,
    seeded,
    torchvision_state,
    write_project_file,
    zip_pickle,
)
from safetensors.torch import save_file
from torch import nn

from gandissect.models.loaders.files import UnsafeCheckpointError, read_state_dict
from gandissect.models.specs import resolve_classifier, resolve_generator, resolve_segmenter

LOADERS: dict[str, tuple[str, Callable[[Path], object]]] = {
    # name: (file name, load)
    "proggan:PATH .pth": ("g.pth", lambda p: resolve_generator(f"proggan:{p}")),
    "proggan:PATH .safetensors": ("g.safetensors", lambda p: resolve_generator(f"proggan:{p}")),
    "stylegan2:PATH": ("sg2.pt", lambda p: resolve_generator(f"stylegan2:{p}")),
    "torchvision:ARCH --weights .pth": (
        "tv.pth", lambda p: resolve_classifier(f"torchvision:{ARCH}", weights=p)),
    "torchvision:ARCH --weights .safetensors": (
        "tv.safetensors", lambda p: resolve_classifier(f"torchvision:{ARCH}", weights=p)),
    "plug-in classifier --weights": (
        "plugin.pth", lambda p: resolve_classifier("conftest:tiny_classifier", weights=p)),
    "FILE.safetensors generator": ("generator.safetensors", lambda p: resolve_generator(str(p))),
    "FILE.safetensors segmenter": ("segmenter.safetensors", lambda p: resolve_segmenter(str(p))),
    "FILE.safetensors classifier": ("classifier.safetensors",
                                    lambda p: resolve_classifier(str(p))),
    "read_state_dict": ("plain.pth", read_state_dict),
}


def intact_state(name: str) -> dict[str, torch.Tensor]:
    """The tensors of the intact file the loader ``name`` reads."""
    if name.startswith("FILE.safetensors"):
        return seeded(PROJECT_MODELS[name.split()[-1]][0]).state_dict()
    if name.startswith("proggan"):
        return proggan_state()
    if name.startswith("stylegan2"):
        return rosinality_state()
    if name.startswith("torchvision"):
        return torchvision_state()
    return seeded(TinyClassifier).state_dict()


def write_intact(name: str, folder: Path) -> Path:
    """The intact file the loader ``name`` reads, written into ``folder``."""
    file = folder / LOADERS[name][0]
    if name.startswith("FILE.safetensors"):
        return write_project_file(name.split()[-1], file)
    if name.startswith("stylegan2"):
        torch.save({"g_ema": intact_state(name), "latent_avg": torch.zeros(16)}, file)
        return file
    return save_state(intact_state(name), file)


@pytest.fixture(scope="module")
def intact(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("intact")
    return {name: write_intact(name, folder) for name in LOADERS}


@pytest.mark.parametrize("name", LOADERS)
def test_every_intact_file_loads_its_tensors(intact, name):
    """Every tensor written is what the loaded model holds, under the same name; StyleGAN2's
    layout is renamed on loading, so there each tensor must be found, with its values, among
    the loaded ones."""
    loaded = LOADERS[name][1](intact[name])
    held = loaded.state_dict() if isinstance(loaded, nn.Module) else loaded
    written = intact_state(name)
    if name.startswith("stylegan2"):
        values = [t.flatten() for t in held.values()]
        for key, tensor in written.items():
            assert any(v.shape == tensor.flatten().shape and torch.equal(v, tensor.flatten())
                       for v in values), key
        return
    assert set(written) <= set(held)
    for key, tensor in written.items():
        assert torch.equal(held[key], tensor), key


# ------------------------------------------------------------------------- damaged bytes
DAMAGED = re.compile(r"cannot read .*(damaged|truncated).*again")


@pytest.mark.parametrize("damage", DAMAGES)
@pytest.mark.parametrize("name", LOADERS)
def test_damaged_files_are_refused_with_what_to_do(intact, tmp_path, name, damage):
    path = tmp_path / intact[name].name
    path.write_bytes(DAMAGES[damage](intact[name].read_bytes()))
    with pytest.raises(ValueError) as caught:
        LOADERS[name][1](path)
    message = str(caught.value)
    assert str(path) in message and DAMAGED.search(message), message


# ------------------------------------------------------------------- pickles that run code
def _in_training_args(path: Path, marker: Path) -> None:
    # stylegan2 files may hold argparse.Namespace; a payload inside it must still be refused
    args = argparse.Namespace(size=32, hook=Payload(marker))
    torch.save({"g_ema": rosinality_state(), "args": args}, path)


def _whole_file(path: Path, marker: Path) -> None:
    torch.save(Payload(marker), path)


def _raw_pickle(path: Path, marker: Path) -> None:
    path.write_bytes(pickle.dumps(Payload(marker)))


PAYLOADS = {  # name: (write, how the refusal reads)
    "exec in a zip checkpoint": (zip_pickle, r"refusing to load .*run Python code.*exec"),
    "Path.touch in a legacy checkpoint": (legacy_pickle, r"refusing to load .*run Python code"),
    "exec inside stylegan2's args": (_in_training_args, r"refusing to load .*run Python code"),
    "the whole file is the payload": (_whole_file, r"refusing to load .*run Python code"),
    "a bare pickle, not torch.save": (_raw_pickle, r"cannot read .*not a PyTorch checkpoint"),
}
PICKLE_SPELLINGS = {
    "read_state_dict": read_state_dict,
    "proggan:PATH": lambda p: resolve_generator(f"proggan:{p}"),
    "stylegan2:PATH": lambda p: resolve_generator(f"stylegan2:{p}"),
    "torchvision:ARCH --weights": lambda p: resolve_classifier(f"torchvision:{ARCH}", weights=p),
    "plug-in classifier --weights": lambda p: resolve_classifier("conftest:tiny_classifier",
                                                                 weights=p),
}


@pytest.mark.parametrize("payload", PAYLOADS)
def test_each_payload_does_run_when_unpickled_without_the_guard(tmp_path, payload):
    write, _ = PAYLOADS[payload]
    marker = tmp_path / "ran.txt"
    write(tmp_path / "evil.pth", marker)
    if payload.startswith("a bare pickle"):
        pickle.loads((tmp_path / "evil.pth").read_bytes())
    else:
        torch.load(tmp_path / "evil.pth", weights_only=False)
    assert marker.exists()  # so the refusals below are the guard's doing, not a dud payload


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # the bare pickle's
@pytest.mark.parametrize("spelling", PICKLE_SPELLINGS)
@pytest.mark.parametrize("payload", PAYLOADS)
def test_a_pickle_with_code_is_refused_and_never_runs(tmp_path, payload, spelling):
    write, refusal = PAYLOADS[payload]
    marker = tmp_path / "ran.txt"
    write(tmp_path / "evil.pth", marker)
    with pytest.raises(ValueError, match=refusal) as caught:
        PICKLE_SPELLINGS[spelling](tmp_path / "evil.pth")
    if "refusing" in refusal:
        assert isinstance(caught.value, UnsafeCheckpointError)
        assert "re-save it" in str(caught.value)  # what to do
    assert not marker.exists()


def test_a_pickle_with_code_is_not_a_torchscript_file(tmp_path):
    marker = tmp_path / "ran.txt"
    zip_pickle(tmp_path / "evil.pt", marker)
    with pytest.raises(ValueError, match="is not a TorchScript file.*use a loader scheme"):
        resolve_generator(f"torchscript:{tmp_path / 'evil.pt'}")
    assert not marker.exists()


# ------------------------------------------------------------ tensors of the wrong shape
def _key(state: dict, dims: int = 1, last: bool = False) -> str:
    """The first (or last) floating-point tensor of at least ``dims`` dimensions."""
    keys = [k for k, v in state.items() if v.dim() >= dims and v.is_floating_point()]
    return keys[-1] if last else keys[0]


MUTATIONS: dict[str, tuple[Callable[[dict], dict], str]] = {
    # name: (mutate the state dict, what the error must say)
    "a key missing": (lambda s: {k: v for k, v in s.items() if k != _key(s, last=True)},
                      r"missing keys"),
    "an unexpected key": (lambda s: {**s, "bogus.weight": torch.zeros(3)}, r"unexpected keys"),
    "the first weight flattened": (
        lambda s: {k: v.flatten() if k == _key(s, dims=2) else v for k, v in s.items()},
        r"wrong shape|should be 4-D"),
    "the first weight a scalar": (
        lambda s: {k: v.sum() if k == _key(s) else v for k, v in s.items()},
        r"wrong shape|should be 4-D"),
    "the last weight one wider": (
        lambda s: {k: torch.zeros([d + 1 for d in v.shape]) if k == _key(s, last=True) else v
                   for k, v in s.items()}, r"wrong shapes"),
    "no tensors at all": (lambda s: {}, r"not a (ProGAN|StyleGAN2)|missing keys"),
    "NaN weights": (lambda s: {k: torch.full_like(v, float("nan")) if v.is_floating_point()
                               else v for k, v in s.items()},
                    r"NaN or infinite weights.*use an earlier checkpoint"),
}
SHAPED = [name for name in LOADERS if name != "read_state_dict"]  # it checks no shapes


def _mutated_file(name: str, intact: Path, mutate, folder: Path) -> Path:
    path = folder / intact.name
    if name.startswith("FILE.safetensors"):
        from gandissect.models.registry import read_weights

        state, config, _ = read_weights(intact)
        save_file({k: v.contiguous() for k, v in mutate(state).items()}, str(path),
                  metadata={"config": json.dumps(config)})
    elif name.startswith("stylegan2"):
        torch.save({"g_ema": mutate(rosinality_state())}, path)
    else:
        save_state(mutate(read_state_dict(intact)), path)
    return path


@pytest.mark.parametrize("mutation", MUTATIONS)
@pytest.mark.parametrize("name", SHAPED)
def test_tensors_of_the_wrong_shape_or_value_say_which(intact, tmp_path, name, mutation):
    mutate, message = MUTATIONS[mutation]
    path = _mutated_file(name, intact[name], mutate, tmp_path)
    with pytest.raises(ValueError, match=message):
        LOADERS[name][1](path)


# ----------------------------------------------- project files with a damaged description
@pytest.mark.parametrize("metadata, message", [
    ({}, r"name no architecture: not a file written by gandissect .*proggan:PATH"),
    ({"config": "{not json"}, r"damaged model config in its metadata; export it again"),
    ({"config": "[1, 2]"}, r"damaged model config in its metadata"),
    ({"config": '{"architecture": "transformer"}'}, r"unknown architecture 'transformer'"),
    ({"config": '{"architecture": "proggan", "z_dim": 16, "depth": 9}'},
     r"proggan config .* does not fit: .*depth"),
], ids=["no config", "config not JSON", "config not a dict", "unknown architecture",
        "config with a setting the architecture lacks"])
def test_project_files_with_a_damaged_config_say_so(intact, tmp_path, metadata, message):
    state = read_state_dict(intact["FILE.safetensors generator"])
    path = tmp_path / "g.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path), metadata=metadata)
    with pytest.raises(ValueError, match=message):
        resolve_generator(str(path))


@pytest.mark.parametrize("kind, resolve", [
    ("segmenter", resolve_generator), ("classifier", resolve_segmenter),
    ("generator", resolve_classifier)])
def test_a_project_file_of_another_kind_is_named_as_such(intact, kind, resolve):
    path = intact[f"FILE.safetensors {kind}"]
    with pytest.raises(ValueError, match=f"{re.escape(str(path))} holds a {kind}, not a"):
        resolve(str(path))
