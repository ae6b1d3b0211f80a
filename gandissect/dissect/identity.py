"""Identities for caching: a model's fingerprint and a short key for a dict of settings.

A cache entry is keyed by every argument that changes its numbers, so a second layer, another
seed or other weights can never reuse a result computed for something else.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import torch

__all__ = ["fingerprint", "settings_key"]


def _hash_tensor(digest, name: str, tensor: torch.Tensor) -> None:
    tensor = tensor.detach().cpu().contiguous()
    digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
    if tensor.numel():
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())


def fingerprint(model: Any) -> str:
    """A hash of what a model computes with: its class, its tensors and its concept names.

    Uses ``state_dict()`` when the model has one (weights and buffers); a generator's latent law
    other than the standard normal is mixed in, and so is a ``fingerprint`` attribute or method,
    when present (for plug-ins whose state lives elsewhere).
    """
    digest = hashlib.blake2b(digest_size=16)
    kind = type(model)
    digest.update(f"{kind.__module__}.{kind.__qualname__}".encode())
    state_dict = getattr(model, "state_dict", None)
    if callable(state_dict):
        for name, value in state_dict().items():
            if isinstance(value, torch.Tensor):
                _hash_tensor(digest, name, value)
            else:
                digest.update(f"{name}={value!r}".encode())
    for attribute in ("concepts", "categories", "z_dim", "resolution"):
        value = getattr(model, attribute, None)
        if value is not None and not callable(value):
            digest.update(f"{attribute}={json.dumps(value, sort_keys=True, default=str)}".encode())
    law = getattr(model, "sample_latent", None)
    law = getattr(law, "__qualname__", "sample_latent") if callable(law) else getattr(
        model, "latent", None)
    if law not in (None, "normal"):  # the images of a sample depend on its latent's law
        digest.update(f"latent={law}".encode())
    extra = getattr(model, "fingerprint", None)
    if extra is not None:
        digest.update(str(extra() if callable(extra) else extra).encode())
    return digest.hexdigest()


def settings_key(settings: dict[str, Any]) -> str:
    """A short, stable hash of a JSON-able settings dict (key order does not matter)."""
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:20]
