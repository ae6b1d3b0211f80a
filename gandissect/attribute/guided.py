"""Guided backpropagation and deconvolution: gradients with a modified ReLU backward pass.

Both change only how gradients cross a ReLU (``g`` is the gradient arriving from above, ``x``
the ReLU's input):

- gradient:               ``g * (x > 0)``
- deconvolution:          ``max(g, 0)``                 (Zeiler & Fergus 2014)
- guided backpropagation: ``max(g, 0) * (x > 0)``       (Springenberg et al. 2015)

The change is made by forward hooks on ``nn.ReLU`` *modules*: each hook re-applies the ReLU to
the module's input through an autograd function with the modified backward. Known limitation:
functional ReLUs (``F.relu``, ``torch.relu``, ``x.clamp(min=0)`` in a ``forward``) are not
seen and keep the plain gradient; a model with no ``nn.ReLU`` module at all is refused. In-place
ReLUs are made out-of-place for the call (``attribution_mode``), so their input survives, and a
ReLU module used several times (torchvision's BasicBlock) is handled on every call.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from gandissect.errors import UserError

from .base import (
    Attribution,
    Target,
    _check_input,
    attribution_mode,
    input_gradient,
    prepare_target,
)

__all__ = ["Deconvolution", "GuidedBackprop", "modified_relu_backward"]


class _ReLUWithRule(torch.autograd.Function):
    """ReLU forward; backward ``max(g, 0)``, times ``(x > 0)`` when ``guided``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, guided: bool) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.guided = guided
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (x,) = ctx.saved_tensors
        grad = grad.clamp(min=0)
        if ctx.guided:
            grad = grad * (x > 0).to(grad.dtype)
        return grad, None


@contextmanager
def modified_relu_backward(model: nn.Module, guided: bool) -> Iterator[None]:
    """Within the block, every ``nn.ReLU`` module of ``model`` backpropagates by the guided
    (``guided=True``) or the deconvolution rule; the hooks are removed on exit, always."""
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    if not relus:
        raise UserError(f"{type(model).__name__} has no nn.ReLU module; guided backprop and "
                        "deconvolution only modify nn.ReLU modules, not functional relu")

    def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        return _ReLUWithRule.apply(inputs[0], guided)

    handles = []
    try:
        for relu in relus:
            handles.append(relu.register_forward_hook(hook))
        yield
    finally:
        for handle in handles:
            handle.remove()


class _ModifiedGradient(Attribution):
    guided = True

    def attribute(self, x: torch.Tensor, target: Target = None) -> torch.Tensor:
        """The modified gradient of the target score with respect to ``x`` (input-shaped)."""
        x = _check_input(x)
        target = prepare_target(target, x.shape[0], x.device)
        with attribution_mode(self.model), modified_relu_backward(self.model, self.guided):
            grad, _ = input_gradient(self.model, x, target)
        return grad


class GuidedBackprop(_ModifiedGradient):
    """Guided backpropagation: at each ``nn.ReLU``, pass only positive gradients, and only
    where the ReLU's input was positive. Known to fail the weight-randomisation sanity check
    (Adebayo et al. 2018): it mostly reconstructs the image."""

    guided = True


class Deconvolution(_ModifiedGradient):
    """Deconvolution (Zeiler & Fergus): at each ``nn.ReLU``, pass only positive gradients,
    whatever the ReLU's input was."""

    guided = False
