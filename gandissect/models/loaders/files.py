"""Weight files read without running code from them.

``.safetensors`` files go through safetensors; anything else through
``torch.load(weights_only=True)``, which refuses a pickle that would import and call anything
beyond tensors and plain containers. Checkpoint wrappers (``{'state_dict': ...}``,
``{'model': ...}``) and DataParallel ``module.`` prefixes are removed.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from gandissect.errors import UserError

__all__ = ["WRAPPER_KEYS", "UnsafeCheckpointError", "existing_file", "fit_state_dict",
           "read_state_dict"]

WRAPPER_KEYS = ("state_dict", "model", "model_state_dict")
_SHOWN = 5  # keys named in an error message
_AGAIN = "download it again, or re-save it with torch.save(model.state_dict(), PATH)"


class UnsafeCheckpointError(UserError):
    """A checkpoint that would import or call Python code when unpickled."""


def existing_file(path: str | Path, what: str = "weights file") -> Path:
    """``path`` as a ``Path``; a ``UserError`` when no such file exists."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"{what} {path} does not exist")
    return path


def _few(keys) -> str:
    keys = list(keys)
    return ", ".join(keys[:_SHOWN]) + (f" (and {len(keys) - _SHOWN} more)"
                                       if len(keys) > _SHOWN else "")


def _torch_load(path: Path) -> object:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        text = str(error)
        if "weights only" not in text.lower() or "Unsupported operand" in text:
            raise UserError(f"cannot read {path}: not a PyTorch checkpoint, or a damaged "
                            f"one; {_AGAIN}") from None
        found = re.search(r"GLOBAL ([\w.]+)", text)
        culprit = f" (it would import {found.group(1)})" if found else ""
        raise UnsafeCheckpointError(
            f"refusing to load {path}: it is a pickle that would run Python code{culprit}. "
            "Checkpoints must hold only tensors: on a machine where you trust the file, "
            "re-save it with torch.save(model.state_dict(), PATH) or as .safetensors"
        ) from None
    except (RuntimeError, EOFError, OSError) as error:
        detail = (str(error).strip().splitlines() or ["the file ends early"])[0]
        raise UserError(f"cannot read {path} as a PyTorch checkpoint ({detail}): it is "
                        f"damaged or truncated; {_AGAIN}") from None


def _unwrap(checkpoint: object, path: Path,
            wrappers: tuple[str, ...] = WRAPPER_KEYS) -> dict[str, torch.Tensor]:
    while isinstance(checkpoint, Mapping):
        inner = next((checkpoint[key] for key in wrappers
                      if isinstance(checkpoint.get(key), Mapping)), None)
        if inner is None:
            break
        checkpoint = inner
    if not isinstance(checkpoint, Mapping):
        raise UserError(f"{path} holds a {type(checkpoint).__name__}, not a state dict")
    other = [str(key) for key, value in checkpoint.items() if not isinstance(value, torch.Tensor)]
    if other:
        raise UserError(f"{path} is not a state dict of tensors: entries {_few(other)} are not "
                        f"tensors (wrappers understood: {', '.join(wrappers)})")
    state = {str(key): value for key, value in checkpoint.items()}
    if state and all(key.startswith("module.") for key in state):  # DataParallel
        state = {key.removeprefix("module."): value for key, value in state.items()}
    return state


def read_state_dict(path: str | Path,
                    wrappers: tuple[str, ...] = WRAPPER_KEYS) -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` file or a plain PyTorch checkpoint, on the CPU; a dict
    holding the state dict under one of ``wrappers`` is unwrapped.

    Never executes code: a pickle holding anything but tensors and containers raises
    ``UnsafeCheckpointError``.
    """
    path = existing_file(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as error:  # safetensors raises its own error types
            raise UserError(f"cannot read {path} as safetensors ({error}): it is damaged or "
                            "truncated; download or export it again") from None
    return _unwrap(_torch_load(path), path, wrappers)


def fit_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Load ``state`` into ``model``; a ``UserError`` naming missing, unexpected or misshapen
    keys when it does not fit exactly, or the weights that are NaN or infinite.

    BatchNorm's ``num_batches_tracked`` counters may be missing: files saved before PyTorch 0.4.1
    (the Places365 models, for one) have none, and they change nothing in eval mode (the model's
    own zero is kept)."""
    expected = model.state_dict()
    state = dict(state)
    for key, value in expected.items():
        if key.endswith("num_batches_tracked"):
            state.setdefault(key, value)
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    misshapen = [f"{key} {tuple(state[key].shape)} (model: {tuple(value.shape)})"
                 for key, value in expected.items()
                 if key in state and state[key].shape != value.shape]
    if missing or unexpected or misshapen:
        problems = [f"{label}: {_few(keys)}" for label, keys in
                    (("missing keys", missing), ("unexpected keys", unexpected),
                     ("wrong shapes", misshapen)) if keys]
        raise UserError(f"{source} does not fit {type(model).__name__}; "
                        + "; ".join(problems))
    broken = [key for key, value in state.items()
              if value.is_floating_point() and not bool(torch.isfinite(value).all())]
    if broken:
        raise UserError(f"{source} holds NaN or infinite weights ({_few(broken)}): a damaged "
                        "file or a diverged training run; use an earlier checkpoint")
    model.load_state_dict(state)
