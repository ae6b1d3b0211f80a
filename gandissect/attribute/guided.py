"""Guided backpropagation and deconvolution: gradients with a modified ReLU backward pass.

Both change only how gradients cross a ReLU (``g`` is the gradient arriving from above, ``x``
the ReLU's input):

- gradient:               ``g * (x > 0)``
- deconvolution:          ``max(g, 0)``                 (Zeiler & Fergus 2014)
- guided backpropagation: ``max(g, 0) * (x > 0)``       (Springenberg et al. 2015)

The change is made at the level of the function call, not of the module: for the duration of
the forward pass a ``torch.overrides.TorchFunctionMode`` replaces every ReLU the model computes
by an autograd function with the modified backward. So ``nn.ReLU`` modules (in-place or not,
used once or several times, as torchvision's BasicBlock does), ``F.relu`` (also with
``inplace=True``), ``F.relu_``, ``torch.relu`` / ``torch.relu_`` and ``x.relu()`` /
``x.relu_()`` are all seen, and give bit-for-bit the same maps; the forward values are those of
the ReLU itself.

Both methods are defined for ReLU networks. A model that computes one of the other activations
(GELU, SiLU / Swish, Mish, ELU, SELU, CELU, leaky ReLU, PReLU, RReLU, softplus, hardswish,
ReLU6 / hardtanh) is refused with a ``UserError`` naming it: no rule for them is published, and
a plain gradient through them would be a silent mix of two methods. Sigmoid, tanh and softmax,
which serve as gates and attention weights rather than as hidden activations, keep their plain
gradient, and so do ReLUs written some other way (``x.clamp(min=0)``, ``x * (x > 0)``) or inside
TorchScript code, which the mode does not see. A model that computes no ReLU at all is refused.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

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

_RELU = {F.relu, torch.relu, torch.Tensor.relu}
_RELU_INPLACE = {torch.relu_, torch.Tensor.relu_}  # F.relu_ is torch.relu_
# Activations without a guided rule, by function name (an in-place variant ends in "_").
_OTHER_ACTIVATIONS = {
    "gelu": "GELU", "silu": "SiLU", "mish": "Mish", "elu": "ELU", "selu": "SELU",
    "celu": "CELU", "leaky_relu": "leaky ReLU", "prelu": "PReLU", "rrelu": "RReLU",
    "softplus": "softplus", "hardswish": "hardswish", "relu6": "ReLU6", "hardtanh": "hardtanh",
}


class _ReLUWithRule(torch.autograd.Function):
    """ReLU forward (in place when asked); backward ``max(g, 0)``, times ``(x > 0)`` when
    ``guided``. The output is saved, not the input: ``out > 0`` exactly where ``x > 0``, and an
    in-place ReLU overwrites its input."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, guided: bool, inplace: bool) -> torch.Tensor:
        if inplace:
            out = x.relu_()
            ctx.mark_dirty(x)
        else:
            out = x.relu()
        ctx.save_for_backward(out)
        ctx.guided = guided
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (out,) = ctx.saved_tensors
        grad = grad.clamp(min=0)
        if ctx.guided:
            grad = grad * (out > 0).to(grad.dtype)
        return grad, None, None


def _kind(func) -> str | None:
    """``"relu"``, ``"relu_"`` (in place), the display name of another activation, or None."""
    if func in _RELU:
        return "relu"
    if func in _RELU_INPLACE:
        return "relu_"
    name = getattr(func, "__name__", "")
    return _OTHER_ACTIVATIONS.get(name[:-1] if name.endswith("_") else name)


class _ModifiedReLU(TorchFunctionMode):
    """Every ReLU call becomes ``_ReLUWithRule``; another activation raises ``UserError``."""

    def __init__(self, guided: bool, method: str) -> None:
        super().__init__()
        self.guided, self.method = guided, method
        self.relus = 0  # ReLU calls seen
        self._kinds: dict = {}  # func -> _kind(func): every torch call of the forward comes here

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        try:
            kind = self._kinds[func]
        except (KeyError, TypeError):  # TypeError: an unhashable callable
            kind = _kind(func)
            with suppress(TypeError):
                self._kinds[func] = kind
        if kind is None:
            return func(*args, **kwargs)
        if kind in ("relu", "relu_"):
            self.relus += 1
            x = args[0] if args else kwargs["input"]
            inplace = kind == "relu_" or bool(kwargs.get("inplace", False))
            return _ReLUWithRule.apply(x, self.guided, inplace)
        raise UserError(f"{self.method} is defined for ReLU networks, and this model computes "
                        f"{kind} ({func.__name__}), which has no such rule; use Saliency, "
                        "IntegratedGradients or GradCAM")


@contextmanager
def modified_relu_backward(model: nn.Module, guided: bool,
                           method: str | None = None) -> Iterator[None]:
    """Within the block, every ReLU computed (module or functional) backpropagates by the
    guided (``guided=True``) or the deconvolution rule.

    Raises ``UserError`` as soon as another activation (GELU, SiLU, ...) is computed, and on
    leaving the block if no ReLU was computed in it. ``method`` names the method in those
    messages. The mode is popped on exit, always.
    """
    method = method or ("guided backpropagation" if guided else "deconvolution")
    mode = _ModifiedReLU(guided, method)
    with mode:
        yield
    if mode.relus == 0:
        raise UserError(f"{type(model).__name__} computes no ReLU (nn.ReLU, F.relu, torch.relu, "
                        f"x.relu()): {method} modifies ReLUs only, so it would be the plain "
                        "gradient; use Saliency")


class _ModifiedGradient(Attribution):
    guided = True

    def attribute(self, x: torch.Tensor, target: Target = None) -> torch.Tensor:
        """The modified gradient of the target score with respect to ``x`` (input-shaped)."""
        x = _check_input(x)
        target = prepare_target(target, x.shape[0], x.device)
        with attribution_mode(self.model), \
                modified_relu_backward(self.model, self.guided, type(self).__name__):
            grad, _ = input_gradient(self.model, x, target)
        return grad


class GuidedBackprop(_ModifiedGradient):
    """Guided backpropagation: at each ReLU (module or functional), pass only positive
    gradients, and only where the ReLU's input was positive. Refuses models with other
    activations (GELU, SiLU, ...; see the module docstring). Known to fail the
    weight-randomisation sanity check (Adebayo et al. 2018): it mostly reconstructs the image.

    Example::

        GuidedBackprop(model).attribute(images, target=3)   # (N, C, H, W)
    """

    guided = True


class Deconvolution(_ModifiedGradient):
    """Deconvolution (Zeiler & Fergus): at each ReLU (module or functional), pass only positive
    gradients, whatever the ReLU's input was. Refuses models with other activations.

    Example::

        Deconvolution(model).attribute(images, target=3)    # (N, C, H, W)
    """

    guided = False
