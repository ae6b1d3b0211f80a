"""A noise tunnel around any attribution method, with Captum's definitions.

``NoiseTunnel(method).attribute(x, nt_type=..., nt_samples=S, stdevs=sigma, target=...)`` runs
``method.attribute`` on ``S`` copies of each sample with Gaussian noise of standard deviation
``sigma`` (in the input's units, as Captum's ``stdevs``) added, and combines the ``S``
attributions ``a_s`` of each sample:

- ``"smoothgrad"``:    ``mean_s a_s``                       (Smilkov et al. 2017)
- ``"smoothgrad_sq"``: ``mean_s a_s^2``
- ``"vargrad"``:       ``mean_s a_s^2 - (mean_s a_s)^2``    (Adebayo et al. 2018; the
  population variance)

The noise is drawn at once, as Captum draws it with one batch of samples: ``randn`` of shape
``(N * S, ...)`` times ``sigma``, row ``i * S + s`` holding draw ``s`` of sample ``i``, from a
generator seeded with ``seed`` on the input's device, in the input's dtype. For float32 inputs
on CPU, ``torch.manual_seed(seed)`` before Captum's ``NoiseTunnel`` gives it the same draws
(Captum draws float32 noise whatever the input's dtype). ``NoiseTunnel.noise`` returns them.
"""

from __future__ import annotations

import torch

from gandissect.errors import UserError

from .base import Attribution, Target, _check_input, prepare_target

__all__ = ["NT_TYPES", "NoiseTunnel"]

NT_TYPES = ("smoothgrad", "smoothgrad_sq", "vargrad")
_DELTA_FLAGS = ("return_convergence_delta", "return_error")


class NoiseTunnel(Attribution):
    """Smooths any attribution method over noisy copies of the input (see the module
    docstring for the three ``nt_type`` definitions).

    Example::

        NoiseTunnel(Saliency(model)).attribute(images, nt_type="vargrad", nt_samples=16,
                                               stdevs=0.1, target=3)
    """

    def __init__(self, method: Attribution) -> None:
        if not isinstance(method, Attribution):
            raise UserError(f"NoiseTunnel wraps an attribution method such as Saliency(model), "
                            f"got {type(method).__name__}")
        super().__init__(method.model)
        self.method = method

    @staticmethod
    def noise(x: torch.Tensor, nt_samples: int = 5, stdevs: float = 1.0, seed: int = 0
              ) -> torch.Tensor:
        """The ``(N, nt_samples, ...)`` noise that ``attribute`` adds to ``x``."""
        generator = torch.Generator(device=x.device).manual_seed(seed)
        shape = (x.shape[0] * nt_samples, *x.shape[1:])
        draws = torch.randn(shape, generator=generator, device=x.device, dtype=x.dtype)
        return (draws * stdevs).reshape(x.shape[0], nt_samples, *x.shape[1:])

    def attribute(self, x: torch.Tensor, target: Target = None, nt_type: str = "smoothgrad",
                  nt_samples: int = 5, stdevs: float = 1.0,
                  nt_samples_batch_size: int | None = None, seed: int = 0, **options
                  ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """The ``nt_type`` combination of ``method.attribute(x + noise, target, **options)``.

        ``nt_samples_batch_size`` bounds the draws per sample in one call of the method (all
        samples go together). A per-sample tensor option of ``x``'s shape (a baseline) follows
        its sample. With ``return_convergence_delta`` / ``return_error`` in ``options`` (a
        method that supports it) returns ``(attributions, delta)`` with the ``(N * nt_samples,)``
        deltas of the noisy rows, row ``i * nt_samples + s``.
        """
        x = _check_input(x)
        if nt_type not in NT_TYPES:
            raise UserError(f"nt_type must be one of {', '.join(NT_TYPES)}; got {nt_type!r}")
        if isinstance(nt_samples, bool) or not isinstance(nt_samples, int) or nt_samples < 1:
            raise UserError(f"nt_samples must be a positive int, got {nt_samples!r}")
        if isinstance(stdevs, bool) or not isinstance(stdevs, int | float) or stdevs < 0:
            raise UserError(f"stdevs must be a number >= 0 (one noise level), got {stdevs!r}")
        per_call = nt_samples if nt_samples_batch_size is None else nt_samples_batch_size
        if isinstance(per_call, bool) or not isinstance(per_call, int) or per_call < 1:
            raise UserError(f"nt_samples_batch_size must be a positive int or None, got "
                            f"{nt_samples_batch_size!r}")
        n = x.shape[0]
        target = prepare_target(target, n, x.device)
        with_delta = any(bool(options.get(flag)) for flag in _DELTA_FLAGS)
        noisy = x[:, None] + self.noise(x, nt_samples, stdevs, seed)
        total = total_sq = None
        deltas = []
        for start in range(0, nt_samples, per_call):
            count = min(per_call, nt_samples - start)
            rows = noisy[:, start:start + count].reshape(n * count, *x.shape[1:])
            result = self.method.attribute(rows, target=self._repeat(target, count),
                                           **{k: self._repeat_option(v, x, count)
                                              for k, v in options.items()})
            if with_delta:
                result, delta = result
                deltas.append(delta.reshape(n, count))
            result = result.reshape(n, count, *result.shape[1:])
            part, part_sq = result.sum(1), result.pow(2).sum(1)
            total = part if total is None else total + part
            total_sq = part_sq if total_sq is None else total_sq + part_sq
        mean, mean_sq = total / nt_samples, total_sq / nt_samples
        smoothed = {"smoothgrad": mean, "smoothgrad_sq": mean_sq,
                    "vargrad": mean_sq - mean * mean}[nt_type]
        if with_delta:
            return smoothed, torch.cat(deltas, 1).reshape(-1)
        return smoothed

    @staticmethod
    def _repeat(target: Target, count: int) -> Target:
        """A per-sample target for the ``N * count`` noisy rows (sample-major)."""
        if isinstance(target, torch.Tensor):
            return target.repeat_interleave(count)
        return target

    @staticmethod
    def _repeat_option(value: object, x: torch.Tensor, count: int) -> object:
        if isinstance(value, torch.Tensor) and value.dim() == x.dim() and value.shape[0] == \
                x.shape[0] and x.shape[0] > 1:
            return value.repeat_interleave(count, 0)
        return value
