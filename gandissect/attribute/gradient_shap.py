"""GradientSHAP (Lundberg & Lee 2017), as Captum's ``GradientShap`` defines it.

SHAP values approximated by expected gradients: for each of ``n_samples`` draws per sample, a
baseline ``b`` picked at random from a *distribution* of baselines (a batch of them), a noisy
copy ``x' = x + noise`` (Gaussian, standard deviation ``stdevs`` in the input's units) and a
point ``p = a x' + (1 - a) b`` with ``a`` uniform in [0, 1]; the attribution is the mean over
the draws of ``(x' - b) * grad f(p)``. In expectation its sum is ``E[f(x') - f(b)]``;
``return_convergence_delta`` gives, per draw, how far that draw's sum is from
``f(x') - f(b)``.

The draws are Captum's, in its order and shapes, rows sample-major (row ``i * n_samples + s``
is draw s of sample i): the baseline indices and the ``a`` come from
``numpy.random.RandomState(seed)`` (``choice`` then ``uniform``, Captum's ``np.random`` calls),
the noise from a torch generator seeded with ``seed`` on the input's device, in the input's
dtype (``NoiseTunnel.noise``). So for float32 inputs on the CPU,
``np.random.seed(seed); torch.manual_seed(seed)`` before Captum's ``GradientShap`` gives it the
same draws. ``GradientShap.draws`` returns them.
"""

from __future__ import annotations

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
from .noise import NoiseTunnel

__all__ = ["GradientShap"]


class GradientShap(Attribution):
    """Expected gradients with random baselines, noise and path points (see the module
    docstring). Captum requires ``baselines``; here they default to one baseline of zeros.

    Example::

        references = torch.stack([torch.zeros(3, 64, 64), blurred_image])
        GradientShap(model).attribute(images, target=3, baselines=references, n_samples=50,
                                      stdevs=0.1)
    """

    @staticmethod
    def draws(x: torch.Tensor, baselines: float | torch.Tensor | None = None,
              n_samples: int = 5, stdevs: float = 0.0, seed: int = 0
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(noisy inputs, baselines, a)`` of the ``N * n_samples`` draws, rows sample-major:
        ``(N * S, ...)``, ``(N * S, ...)`` and ``(N * S,)``."""
        x = _check_input(x)
        if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
            raise UserError(f"n_samples must be a positive int, got {n_samples!r}")
        if isinstance(stdevs, bool) or not isinstance(stdevs, int | float) or stdevs < 0:
            raise UserError(f"stdevs must be a number >= 0 (one noise level), got {stdevs!r}")
        reference = torch.as_tensor(0.0 if baselines is None else baselines, dtype=x.dtype,
                                    device=x.device)
        if reference.dim() == 0:
            reference = reference.expand(1, *x.shape[1:])
        if reference.dim() != x.dim() or tuple(reference.shape[1:]) != tuple(x.shape[1:]) \
                or reference.shape[0] < 1:
            raise UserError(f"baselines must be a number or a batch (B, ...) of baselines shaped "
                            f"like one input {tuple(x.shape[1:])}, got {tuple(reference.shape)}")
        rows = x.shape[0] * n_samples
        state = np.random.RandomState(seed)
        picks = torch.as_tensor(state.choice(reference.shape[0], rows), device=x.device)
        noisy = (x[:, None] + NoiseTunnel.noise(x, n_samples, float(stdevs), seed)).flatten(0, 1)
        alphas = torch.as_tensor(state.uniform(0.0, 1.0, rows), dtype=x.dtype, device=x.device)
        return noisy, reference[picks], alphas

    def attribute(self, x: torch.Tensor, target: Target = None,
                  baselines: float | torch.Tensor | None = None, n_samples: int = 5,
                  stdevs: float = 0.0, return_error: bool | None = None, seed: int = 0,
                  internal_batch_size: int | None = None, *,
                  return_convergence_delta: bool | None = None
                  ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """GradientSHAP of ``target`` for ``x``; ``baselines``: a number or a ``(B, ...)``
        batch to draw from (default 0); ``stdevs``: the noise's standard deviation (default 0,
        Captum's). With ``return_error`` / ``return_convergence_delta`` returns
        ``(attributions, delta)``, the ``(N * n_samples,)`` deltas of the draws.
        ``internal_batch_size`` bounds the draws per forward pass."""
        return_error = bool(either(return_error, return_convergence_delta,
                                   "return_error and return_convergence_delta"))
        x = _check_input(x)
        n = x.shape[0]
        target = prepare_target(target, n, x.device)
        noisy, reference, alphas = self.draws(x, baselines, n_samples, stdevs, seed)
        shape = (-1, *([1] * (x.dim() - 1)))
        attributions = torch.empty_like(noisy)
        owners_all = torch.arange(n, device=x.device).repeat_interleave(n_samples)
        with attribution_mode(self.model):
            for rows in row_chunks(len(noisy), internal_batch_size):
                rows = rows.to(x.device)
                a = alphas[rows].reshape(shape)
                point = a * noisy[rows] + (1.0 - a) * reference[rows]
                grad, _ = input_gradient(self.model, point, target, owners_all[rows])
                attributions[rows] = (noisy[rows] - reference[rows]) * grad
            mean = attributions.reshape(n, n_samples, *x.shape[1:]).sum(1) / n_samples
            if not return_error:
                return mean
            delta = torch.empty(len(noisy), dtype=x.dtype, device=x.device)
            with torch.no_grad():
                for rows in row_chunks(len(noisy), internal_batch_size):
                    rows = rows.to(x.device)
                    ends = self.model(torch.cat([noisy[rows], reference[rows]]))
                    scores = resolve_target(ends, target, owners_all[rows].repeat(2))
                    gap = scores[:len(rows)] - scores[len(rows):]
                    delta[rows] = attributions[rows].reshape(len(rows), -1).sum(1) - gap
        return mean, delta
