"""DeepLIFT with the rescale rule (Shrikumar et al. 2017), as Captum's ``DeepLift`` computes it.

The inputs ``x`` and the baselines ``b`` go through the model as one batch of 2N rows (row i and
row N + i are a pair). Gradients then flow as usual through the linear parts (convolutions,
linear layers, BatchNorm in eval mode, additions, average pooling), and through each
nonlinearity by the rescale rule: the multiplier of an element-wise activation ``y = f(z)`` is
``(f(z) - f(z_b)) / (z - z_b)``, the same for both rows of a pair, or its plain derivative where
``|z - z_b| < eps``. The attribution is ``(x - b)`` times the input multiplier; its sum over a
sample is ``f(x) - f(b)`` (completeness), which ``return_convergence_delta`` checks.

Max pooling (``F.max_pool1d/2d/3d``) follows Captum's rule: of a window's change
``y - y_b = (max(y, y_b) - y_b) + (y - max(y, y_b))`` the first part goes to the element that is
the maximum for ``x``, the second to the one for ``b``, each divided by that element's own
change, so the attributions stay complete. Two differences with Captum 0.9, measured:

- overlapping windows (ResNets' 3x3 / stride 2 pooling) that share a maximum: Captum writes
  their parts back with ``max_unpool``, which keeps one of them, so its attributions miss
  completeness; ours add them up, as the pooling's gradient does;
- a pooling next to a ReLU module (every torchvision CNN pools a ReLU's output): Captum's
  hooks on the tensor the two share run in the order registered, so one rule reads the
  gradient before the other has rewritten it. On ResNet-18 its attributions are those of the
  plain max-pool gradient, complete only when the baseline's pooled activations are constant
  (zeros through ResNet-18 at its initial BatchNorm statistics).

A pooling called with ``return_indices=True`` keeps its plain gradient here.

The rules are attached to the function calls, not to modules (a ``TorchFunctionMode`` during the
forward pass, as in ``guided``): ``nn.ReLU`` modules used several times (torchvision's
BasicBlock), ``F.relu``, ``torch.relu`` and ``x.relu()``, in place or not, all get the rule.
Captum attaches it to modules and fails on a module used twice; it also has a rule for
``nn.Softmax`` modules, which here keeps its plain gradient. The rescale rule is applied to
ReLU, leaky ReLU, PReLU, ELU, SELU, CELU, GELU, SiLU, Mish, softplus, sigmoid, tanh, ReLU6,
hardtanh, hardswish and hardsigmoid (Captum: ReLU, ELU, leaky ReLU, sigmoid, tanh, softplus; the
others keep their plain gradient there). Other operations keep their gradient (products of two
branches, softmax, adaptive max pooling, ``x.clamp(min=0)``): for models built of them the
completeness error says how far the result is from DeepLIFT's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from gandissect.errors import UserError

from .base import (
    Attribution,
    Target,
    _check_input,
    attribution_mode,
    baseline_for,
    either,
    prepare_target,
    resolve_target,
    row_chunks,
)

__all__ = ["DeepLift", "rescale_rule"]

_ELEMENTWISE = {"relu", "leaky_relu", "prelu", "elu", "selu", "celu", "gelu", "silu", "mish",
                "softplus", "sigmoid", "tanh", "relu6", "hardtanh", "hardswish", "hardsigmoid"}
_POOLS = {"max_pool1d", "max_pool2d", "max_pool3d"}


def _halves(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    n = t.shape[0] // 2
    return t[:n], t[n:]


def _twice(t: torch.Tensor) -> torch.Tensor:
    return torch.cat([t, t])


class _Rescale(torch.autograd.Function):
    """``call(z)`` forward; backward by the rescale rule (element-wise activations) or the
    max-pooling rule, for a batch of 2N rows made of N pairs."""

    @staticmethod
    def forward(ctx, z: torch.Tensor, call: Callable, kind: str, eps: float) -> torch.Tensor:
        out = call(z)
        ctx.z, ctx.out = z.detach(), out.detach()
        ctx.call, ctx.pool, ctx.relu, ctx.eps = call, kind == "pool", kind == "relu", eps
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, None, None, None]:
        z, out, call = ctx.z, ctx.out, ctx.call
        change = _twice(_halves(z)[0] - _halves(z)[1])
        if ctx.relu:  # its derivative needs no second forward
            plain = grad * (z > 0).to(grad.dtype)
        else:
            with torch.enable_grad():
                leaf = z.detach().requires_grad_(True)
                y = call(leaf)
                (plain,) = torch.autograd.grad(y, leaf, grad, retain_graph=ctx.pool)
        if ctx.pool:
            top, reference = _halves(out)
            cross = torch.maximum(top, reference)
            grad_top, grad_reference = _halves(grad)
            parts = torch.cat([grad_top * (cross - reference), grad_reference * (top - cross)])
            (spread,) = torch.autograd.grad(y, leaf, parts)  # each part to its window's maximum
            rescaled = _twice(_halves(spread)[0] + _halves(spread)[1]) / change
        else:
            rescaled = grad * _twice(_halves(out)[0] - _halves(out)[1]) / change
        return torch.where(change.abs() < ctx.eps, plain, rescaled), None, None, None


class _RescaleMode(TorchFunctionMode):
    """Every element-wise activation and max pooling of the forward pass gets its DeepLIFT
    rule; each must see the 2N rows of the paired batch."""

    def __init__(self, rows: int, eps: float) -> None:
        super().__init__()
        self.rows, self.eps = rows, eps

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        base = name[:-1] if name.endswith("_") else name
        pool = base in _POOLS and not kwargs.get("return_indices", False) and \
            not (len(args) > 6 and args[6])
        if base not in _ELEMENTWISE and not pool:
            return func(*args, **kwargs)
        z = args[0] if args else kwargs.get("input")
        if not isinstance(z, torch.Tensor) or not z.requires_grad:  # not from the input
            return func(*args, **kwargs)
        if z.dim() == 0 or z.shape[0] != self.rows:
            raise UserError(f"DeepLift runs inputs and baselines as one batch of {self.rows} rows,"
                            f" but {name} received {tuple(z.shape)}: the model must keep the "
                            "batch dimension first and its rows apart")
        inplace = not pool and (name.endswith("_") or bool(kwargs.get("inplace"))
                                or any(a is True for a in args[1:]))
        rest = args[1:] if args else ()
        options = {k: v for k, v in kwargs.items() if k != "input"}

        def call(t: torch.Tensor) -> torch.Tensor:
            return func(t.clone() if inplace else t, *rest, **options)

        kind = "pool" if pool else "relu" if base == "relu" else "other"
        if not inplace:
            return _Rescale.apply(z, call, kind, self.eps)
        # the rule needs z as it was: it works on a copy, and z then takes the result
        return z.copy_(_Rescale.apply(z.clone(), call, kind, self.eps))


@contextmanager
def rescale_rule(rows: int, eps: float = 1e-10) -> Iterator[None]:
    """Within the block, activations and max pooling backpropagate by DeepLIFT's rules for a
    batch of ``rows`` = 2N rows, inputs first, their baselines after (see the module
    docstring). Call the backward pass after leaving the block."""
    with _RescaleMode(rows, eps):
        yield


class DeepLift(Attribution):
    """DeepLIFT, rescale rule (see the module docstring): ``(x - b) * m`` with ``m`` the
    multipliers from ``f(x) - f(b)`` back to the input. Equals Captum's ``DeepLift`` (whose
    modules must each be used once) on networks without max pooling, and on those with it
    where Captum applies its pooling rule as written (see the module docstring).

    Example::

        maps, delta = DeepLift(model).attribute(images, target=3, baselines=0.0,
                                                return_convergence_delta=True)
    """

    def __init__(self, model: nn.Module, eps: float = 1e-10) -> None:
        super().__init__(model)
        self.eps = eps

    def attribute(self, x: torch.Tensor, target: Target = None,
                  baseline: float | torch.Tensor | None = None,
                  return_error: bool | None = None, internal_batch_size: int | None = None, *,
                  baselines: float | torch.Tensor | None = None,
                  return_convergence_delta: bool | None = None
                  ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """DeepLIFT attributions of ``target``; ``baseline`` / ``baselines``: a number or a
        tensor broadcastable to ``x`` (default 0). With ``return_error`` /
        ``return_convergence_delta`` returns ``(attributions, delta)``, the ``(N,)`` delta
        being ``sum(attributions) - (f(x) - f(b))`` per sample. ``internal_batch_size`` bounds
        the samples per forward pass (each brings its baseline: twice as many rows)."""
        baseline = either(baseline, baselines, "baseline and baselines")
        return_error = bool(either(return_error, return_convergence_delta,
                                   "return_error and return_convergence_delta"))
        x = _check_input(x)
        n = x.shape[0]
        target = prepare_target(target, n, x.device)
        reference = baseline_for(baseline, x).expand_as(x)
        multipliers = torch.empty_like(x)
        gaps = torch.empty(n, dtype=x.dtype, device=x.device)
        with attribution_mode(self.model):
            for rows in row_chunks(n, internal_batch_size):
                rows = rows.to(x.device)
                pair = torch.cat([x[rows], reference[rows]]).requires_grad_(True)
                with rescale_rule(len(pair), self.eps):
                    output = self.model(pair)
                scores = resolve_target(output, target, rows.repeat(2))
                (grad,) = torch.autograd.grad(scores.sum(), pair)
                multipliers[rows] = grad[:len(rows)]
                gaps[rows] = (scores[:len(rows)] - scores[len(rows):]).detach()
        attributions = (x - reference) * multipliers
        if not return_error:
            return attributions
        return attributions, attributions.reshape(n, -1).sum(1) - gaps
