"""Gradient methods: saliency, input x gradient, SmoothGrad and integrated gradients.

All return input-shaped, raw signed tensors (``Saliency(abs=True)`` is the one opt-in
magnitude).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from gandissect.errors import UserError

from .base import (
    Attribution,
    Target,
    _check_input,
    attribution_mode,
    either,
    input_gradient,
    prepare_target,
    resolve_target,
    row_chunks,
)

__all__ = ["IntegratedGradients", "InputXGradient", "Saliency", "SmoothGrad"]


class Saliency(Attribution):
    """The gradient of the target score with respect to the input (Simonyan et al. 2014)."""

    def attribute(self, x: torch.Tensor, target: Target = None, abs: bool = False
                  ) -> torch.Tensor:
        """``d score / d x``, or its magnitude with ``abs=True`` (the paper's saliency map)."""
        x = _check_input(x)
        target = prepare_target(target, x.shape[0], x.device)
        with attribution_mode(self.model):
            grad, _ = input_gradient(self.model, x, target)
        return grad.abs() if abs else grad


class InputXGradient(Attribution):
    """The input times the gradient of the target score (Shrikumar et al. 2016)."""

    def attribute(self, x: torch.Tensor, target: Target = None) -> torch.Tensor:
        """``x * d score / d x``."""
        x = _check_input(x)
        target = prepare_target(target, x.shape[0], x.device)
        with attribution_mode(self.model):
            grad, _ = input_gradient(self.model, x, target)
        return x * grad


class SmoothGrad(Attribution):
    """The gradient averaged over noisy copies of the input (Smilkov et al. 2017).

    Noise is Gaussian with standard deviation ``noise_level * (max(x) - min(x))`` per sample
    (the paper's "noise level as a fraction of the input range"), drawn from a generator seeded
    with ``seed`` on the input's device, so a call is reproducible; ``SmoothGrad.noise`` returns
    the exact draws ``attribute`` uses.
    """

    @staticmethod
    def _draws(x: torch.Tensor, n_samples: int, noise_level: float, seed: int
               ) -> Iterator[torch.Tensor]:
        generator = torch.Generator(device=x.device).manual_seed(seed)
        flat = x.reshape(x.shape[0], -1)
        std = (noise_level * (flat.max(1).values - flat.min(1).values))
        std = std.reshape(-1, *([1] * (x.dim() - 1)))
        for _ in range(n_samples):  # one draw per sample: the stream is the same in any chunking
            yield torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype) * std

    @classmethod
    def noise(cls, x: torch.Tensor, n_samples: int = 50, noise_level: float = 0.15,
              seed: int = 0) -> torch.Tensor:
        """The ``(n_samples, *x.shape)`` noise that ``attribute`` adds to ``x``."""
        return torch.stack(list(cls._draws(x.detach(), n_samples, noise_level, seed)))

    def attribute(self, x: torch.Tensor, target: Target = None, n_samples: int = 50,
                  noise_level: float = 0.15, seed: int = 0,
                  internal_batch_size: int | None = None) -> torch.Tensor:
        """Mean over ``n_samples`` noisy copies of ``d score / d x`` (signed).

        ``internal_batch_size`` bounds the rows (noisy copies x batch) per forward pass.
        """
        x = _check_input(x)
        if n_samples < 1:
            raise UserError(f"n_samples must be >= 1, got {n_samples}")
        n = x.shape[0]
        target = prepare_target(target, n, x.device)
        per_pass = n_samples if internal_batch_size is None else max(1, internal_batch_size // n)
        draws = self._draws(x, n_samples, noise_level, seed)
        total = torch.zeros_like(x)
        owners_all = torch.arange(n, device=x.device)
        with attribution_mode(self.model):
            for start in range(0, n_samples, per_pass):
                count = min(per_pass, n_samples - start)
                noisy = torch.cat([x + next(draws) for _ in range(count)])
                grad, _ = input_gradient(self.model, noisy, target, owners_all.repeat(count))
                total += grad.reshape(count, *x.shape).sum(0)
        return total / n_samples


def _quadrature(method: str, steps: int, dtype: torch.dtype, device: torch.device
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Points ``alpha`` in [0, 1] and weights summing to 1 for the path integral."""
    if steps < 2:
        raise UserError(f"integrated gradients needs steps >= 2, got {steps}")
    if method == "riemann_trapezoid":
        alphas = np.linspace(0.0, 1.0, steps)
        weights = np.full(steps, 1.0 / (steps - 1))
        weights[[0, -1]] *= 0.5
    elif method == "gauss_legendre":
        nodes, weights = np.polynomial.legendre.leggauss(steps)
        alphas, weights = (nodes + 1) / 2, weights / 2
    else:
        raise UserError(f"method must be 'riemann_trapezoid' or 'gauss_legendre' (Captum's "
                        f"'gausslegendre'), got {method!r}")
    return (torch.as_tensor(alphas, dtype=dtype, device=device),
            torch.as_tensor(weights, dtype=dtype, device=device))


class IntegratedGradients(Attribution):
    """``(x - baseline) * integral_0^1 grad f(baseline + a (x - baseline)) da``.

    (Sundararajan et al. 2017.) The integral is a trapezoid Riemann sum over ``steps`` evenly
    spaced points or a ``steps``-point Gauss-Legendre rule. By completeness the attributions of
    a sample sum to ``f(x) - f(baseline)``; ``return_error=True`` also returns how far from that
    the quadrature landed.

    Captum's argument names are accepted for the same arguments: ``baselines``, ``n_steps``,
    ``return_convergence_delta`` (its delta is our error) and ``method="gausslegendre"``.
    Captum's ``"riemann_trapezoid"`` weights sum to (n-1)/n; ours sum to 1, so only
    Gauss-Legendre agrees with Captum exactly.

    Example::

        attributions, delta = IntegratedGradients(model).attribute(
            images, target=3, baselines=0.0, n_steps=32, method="gausslegendre",
            return_convergence_delta=True)
    """

    def attribute(self, x: torch.Tensor, target: Target = None,
                  baseline: float | torch.Tensor | None = None, steps: int | None = None,
                  method: str = "riemann_trapezoid", internal_batch_size: int | None = None,
                  return_error: bool | None = None, *,
                  baselines: float | torch.Tensor | None = None, n_steps: int | None = None,
                  return_convergence_delta: bool | None = None
                  ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Integrated gradients of ``target``; ``baseline`` broadcasts against ``x`` (default 0),
        ``steps`` path points (default 50).

        With ``return_error`` returns ``(attributions, error)``, where the ``(N,)`` error is
        ``sum(attributions) - (f(x) - f(baseline))`` per sample.
        ``internal_batch_size`` bounds the rows (path points x batch) per forward pass.
        ``baselines``, ``n_steps`` and ``return_convergence_delta`` are Captum's names for
        ``baseline``, ``steps`` and ``return_error``: pass one spelling of each.
        """
        baseline = either(baseline, baselines, "baseline and baselines")
        baseline = 0.0 if baseline is None else baseline
        steps = either(steps, n_steps, "steps and n_steps")
        steps = 50 if steps is None else steps
        return_error = bool(either(return_error, return_convergence_delta,
                                   "return_error and return_convergence_delta"))
        method = "gauss_legendre" if method == "gausslegendre" else method
        x = _check_input(x)
        n = x.shape[0]
        target = prepare_target(target, n, x.device)
        baseline = torch.as_tensor(baseline, dtype=x.dtype, device=x.device).expand_as(x)
        alphas, weights = _quadrature(method, steps, x.dtype, x.device)
        delta = x - baseline
        total = torch.zeros_like(x)
        with attribution_mode(self.model):
            for rows in row_chunks(steps * n, internal_batch_size):
                rows = rows.to(x.device)
                step, owners = rows // n, rows % n
                shape = (-1, *([1] * (x.dim() - 1)))
                path = baseline[owners] + alphas[step].reshape(shape) * delta[owners]
                grad, _ = input_gradient(self.model, path, target, owners)
                total.index_add_(0, owners, grad * weights[step].reshape(shape))
            attributions = delta * total
            if not return_error:
                return attributions
            with torch.no_grad():
                ends = self.model(torch.cat([x, baseline]))
                scores = resolve_target(ends, target, torch.arange(n, device=x.device).repeat(2))
        error = attributions.reshape(n, -1).sum(1) - (scores[:n] - scores[n:])
        return attributions, error
