"""Two small torch helpers every part of the library shares: where a model computes, and a
context that puts models in eval mode (optionally frozen) and restores every flag after.

    device = model_device(generator)          # its first parameter's, else buffer's, else CPU
    with eval_mode(generator, segmenter, freeze=True):
        ...                                   # the caller's modes and requires_grad come back
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

__all__ = ["eval_mode", "model_device"]


def model_device(model: Any) -> torch.device:
    """The device ``model`` computes on: that of its first parameter, else of its first buffer,
    else the CPU. Works for any object: a TorchScript module, a model without parameters, or
    a plug-in segmenter that is no ``nn.Module`` (then: the CPU)."""
    for tensors in (getattr(model, "parameters", None), getattr(model, "buffers", None)):
        if callable(tensors):
            tensor = next(iter(tensors()), None)
            if tensor is not None:
                return tensor.device
    return torch.device("cpu")


@contextmanager
def eval_mode(*models: Any, freeze: bool = False, out_of_place: bool = False) -> Iterator[None]:
    """Eval mode for every ``nn.Module`` among ``models`` (BatchNorm on its running statistics,
    dropout off); with ``freeze`` their parameters stop requiring gradients; with
    ``out_of_place`` in-place activations (``ReLU(inplace=True)``) compute out of place, so
    they cannot overwrite tensors that hooks and gradients need. On exit every module's mode,
    every parameter's ``requires_grad`` and every ``inplace`` flag are put back as they were,
    also when the body raises. Objects that are not modules are left alone.
    """
    modules = [m for model in models if isinstance(model, nn.Module) for m in model.modules()]
    modes = [(m, m.training) for m in modules]
    flags = [(p, p.requires_grad) for model in models if isinstance(model, nn.Module)
             for p in model.parameters()] if freeze else []
    inplace = [(m, m.inplace) for m in modules
               if isinstance(getattr(m, "inplace", None), bool)] if out_of_place else []
    try:
        for model in models:
            if isinstance(model, nn.Module):
                model.eval()
        for p, _ in flags:
            p.requires_grad_(False)
        for m, _ in inplace:
            m.inplace = False
        yield
    finally:
        for m, training in modes:
            m.training = training
        for p, flag in flags:
            p.requires_grad_(flag)
        for m, flag in inplace:
            m.inplace = flag
