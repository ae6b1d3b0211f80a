"""Loading never executes code from a checkpoint: a pickle that would is refused, clearly."""

from __future__ import annotations

import pytest
import torch
from conftest import Payload

from gandissect.models.loaders.files import UnsafeCheckpointError, read_state_dict
from gandissect.models.specs import resolve_classifier, resolve_generator


@pytest.fixture
def booby_trapped(tmp_path):
    """A checkpoint whose only non-tensor entry would run code, and the marker it would write."""
    marker = tmp_path / "ran.txt"
    path = tmp_path / "model.pth"
    torch.save({"state_dict": {"fc.weight": torch.zeros(2, 2)}, "hook": Payload(marker)}, path)
    return path, marker


@pytest.mark.parametrize("load", [
    read_state_dict,
    lambda path: resolve_generator(f"proggan:{path}"),
    lambda path: resolve_classifier("torchvision:resnet18", weights=path),
])
def test_a_pickle_that_runs_code_is_refused_and_nothing_runs(booby_trapped, load):
    path, marker = booby_trapped
    with pytest.raises(UnsafeCheckpointError, match=r"refusing to load .*run Python code.*exec"):
        load(path)
    assert not marker.exists()


def test_the_payload_does_run_when_unpickled_without_the_guard(booby_trapped):
    path, marker = booby_trapped  # the refusal above is the guard's doing, not a dud payload
    torch.load(path, weights_only=False)
    assert marker.read_text() == "ran"


def test_plain_state_dicts_and_safetensors_read_the_same(tmp_path):
    from safetensors.torch import save_file

    state = {"a.weight": torch.randn(3, 2), "a.bias": torch.arange(3)}
    torch.save(state, tmp_path / "w.pt")
    save_file(state, str(tmp_path / "w.safetensors"))
    for name in ("w.pt", "w.safetensors"):
        read = read_state_dict(tmp_path / name)
        assert set(read) == set(state) and all(torch.equal(read[k], state[k]) for k in state)


@pytest.mark.parametrize("content, message", [
    (b"not a checkpoint", "cannot read"),
    ([torch.zeros(1)], "holds a list, not a state dict"),
    ({"w": torch.zeros(1), "epoch": 3}, "entries epoch are not tensors"),
])
def test_files_that_are_not_state_dicts_say_so(tmp_path, content, message):
    path = tmp_path / "w.pth"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    with pytest.raises(ValueError, match=message):
        read_state_dict(path)


def test_a_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="weights file .*nothing.pth does not exist"):
        read_state_dict(tmp_path / "nothing.pth")
