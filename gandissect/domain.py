"""Is a segmenter inside its own domain on these images? A cheap check before long work.

A segmenter's labels mean something only on images like those it learned from: the shipped
SceneWorld segmenter labels a face as sky and tree, and a dissection built on those labels
finds "concepts" that are not there. ``check_domain(segmenter, images)`` looks at a first
batch of the images (``DOMAIN_IMAGES``) with two signals:

- **confidence**: the mean over pixels of the largest per-pixel probability, from the
  segmenter's ``probabilities(images)``, for its least confident category. Compared with the
  segmenter's confidence on its own domain (``reference_confidence``, which a segmenter may
  declare): out of domain when its uncertainty, 1 - confidence, is more than
  ``UNCERTAINTY_FACTOR`` times that of its own domain. Networks stay confident far outside
  their domain (the shipped segmenter: 0.98 on generated scenes, still 0.75 to 0.95 on faces,
  digits, textures and noise), so this signal has a thin margin (digits: 0.95 against a bar of
  0.965) and needs a reference.
- **feature shift**, for segmenters with trained BatchNorm layers: how far the images'
  feature statistics lie from the running statistics the segmenter learned on its domain,
  the KL divergence of N(batch mean, batch variance) from N(running mean, running variance)
  of each channel at each BatchNorm input, averaged over channels and layers (nats). This
  separates well: 0.001 to 0.013 on batches of SceneWorld scenes, 0.24 to 2.6 out of domain
  (docs/results.md, ``benchmarks/bench_domain.py``). Out of domain above the segmenter's
  ``feature_shift_bar`` (declared), else ``GENERIC_SHIFT_BAR``.

The verdict is ``"out of domain"`` when either signal crosses its bar, ``"in domain"`` when
at least one signal was measured and neither does, ``"unknown"`` when neither could be
measured (no ``probabilities`` and no reference, no trained BatchNorm). The shipped SceneWorld
segmenter's reference figures are in ``SHIPPED_REFERENCES`` with how they were measured.

    check = check_domain(segmenter, images, "sceneworld")
    check.verdict        # "in domain" / "out of domain" / "unknown"
    check.warning()      # one line when out of domain, else None
    check.to_json()      # the "domain" entry of a dissection's settings
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from gandissect.torchutil import model_device

__all__ = ["DOMAIN_IMAGES", "GENERIC_SHIFT_BAR", "UNCERTAINTY_FACTOR", "SHIPPED_REFERENCES",
           "DomainCheck", "DomainReference", "check_domain", "domain_reference"]

# Images the check looks at: the feature shift of in-domain batches of 32 scenes stays below
# 0.02 nats (batches of 8: up to 0.045), well under the bars.
DOMAIN_IMAGES = 32
# Out of domain when the uncertainty (1 - confidence) exceeds this many times its own domain's.
UNCERTAINTY_FACTOR = 5.0
# Feature shift (nats) beyond which a BatchNorm network's images are out of domain when it
# declares no bar of its own: moving every channel's mean by one of its training standard
# deviations gives KL = 0.5, a shift no batch of the network's own images comes near (the
# shipped segmenter's in-domain batches: 0.001 to 0.013).
GENERIC_SHIFT_BAR = 0.5


@dataclass(frozen=True)
class DomainReference:
    """What a segmenter does on its own domain: the confidence ``check_domain`` measures
    there (None: unknown) and the feature shift beyond which images are out of it."""

    confidence: float | None = None
    feature_shift_bar: float = GENERIC_SHIFT_BAR
    measured: str = ""  # how the figures were measured


# The shipped SceneWorld segmenter, by its weights' fingerprint (retrained weights need new
# figures: tests/test_domain.py checks the shipped file still has them).
SHIPPED_REFERENCES = {
    "270153cb99c34218aee27cb9ea5d735e": DomainReference(
        confidence=0.9929, feature_shift_bar=0.1,
        measured="check_domain on 1,024 rendered SceneWorld scenes of world seed 1000 (the "
                 "segmenter's evaluation world, not a training seed), 64 px, in 32 batches of "
                 "32: confidence 0.9929 (batches 0.9916 to 0.9941), feature shift 0.0007 to "
                 "0.0062 nats; SceneWorld generator samples: confidence 0.979 to 0.984, shift "
                 "0.004 to 0.013; out-of-domain images: shift 0.24 to 2.6 "
                 "(benchmarks/bench_domain.py). The bar, 0.1 nats, lies between them"),
}


def domain_reference(segmenter: Any) -> DomainReference:
    """The segmenter's reference: its own ``reference_confidence`` and ``feature_shift_bar``
    attributes when it declares them, else the shipped figures for the shipped weights, else
    an unknown confidence and the generic bar."""
    from gandissect.dissect.identity import fingerprint
    from gandissect.models.segmenter import Segmenter

    shipped = SHIPPED_REFERENCES.get(fingerprint(segmenter)) if isinstance(
        segmenter, Segmenter) else None
    base = shipped or DomainReference()
    confidence = getattr(segmenter, "reference_confidence", None)
    bar = getattr(segmenter, "feature_shift_bar", None)
    if confidence is None and bar is None:
        return base
    return DomainReference(base.confidence if confidence is None else float(confidence),
                           base.feature_shift_bar if bar is None else float(bar),
                           "declared by the segmenter")


@dataclass
class DomainCheck:
    """The figures of one check and its verdict (see the module docstring)."""

    segmenter: str
    images: int
    confidence: float | None  # least confident category's mean max-probability
    reference: float | None  # the same on the segmenter's own domain
    feature_shift: float | None  # nats; None without trained BatchNorm layers
    feature_shift_bar: float
    verdict: str  # "in domain", "out of domain" or "unknown"
    fired: list[str] = field(default_factory=list)  # the signals past their bars

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready record (the ``domain`` entry of a dissection's settings)."""
        return asdict(self)

    def warning(self) -> str | None:
        """One line saying the labels are likely meaningless, or None when not out of domain."""
        if self.verdict != "out of domain":
            return None
        figures = []
        if self.confidence is not None:
            own = "" if self.reference is None else f", {self.reference:.2f} on its own world"
            figures.append(f"mean confidence {self.confidence:.2f}{own}")
        if self.feature_shift is not None:
            figures.append(f"feature statistics {self.feature_shift:.2g} nats from its "
                           f"training's, bar {self.feature_shift_bar:g}")
        return (f"the {self.segmenter} segmenter is far outside its domain on these images "
                f"({'; '.join(figures)}): its labels, and the concepts found with them, are "
                "likely meaningless; use a segmenter made for these images (--segmenter ...)")


def _trained_batchnorms(segmenter: Any) -> list[nn.Module]:
    """BatchNorm layers that normalise with running statistics learned on data (eval mode,
    statistics other than the fresh 0 / 1 of an untrained layer)."""
    if not isinstance(segmenter, nn.Module):
        return []
    found = []
    for module in segmenter.modules():
        if not isinstance(module, nn.modules.batchnorm._BatchNorm) or module.training:
            continue
        mean, var = module.running_mean, module.running_var
        if mean is None or var is None:
            continue
        if bool((mean == 0).all()) and bool((var == 1).all()):
            continue  # never trained: nothing to compare with
        found.append(module)
    return found


class _FeatureStatistics:
    """Per-channel sums of every BatchNorm input seen, in float64."""

    def __init__(self) -> None:
        self.sums: dict[nn.Module, list[torch.Tensor | int]] = {}

    def hook(self, module: nn.Module, inputs: tuple) -> None:
        x = inputs[0].detach().double().transpose(0, 1).reshape(module.num_features, -1)
        entry = self.sums.setdefault(module, [0, 0, 0])
        entry[0] = entry[0] + x.sum(1)
        entry[1] = entry[1] + (x * x).sum(1)
        entry[2] += x.shape[1]

    def shift(self) -> float | None:
        """Mean over layers of the mean over channels of KL(batch || running), in nats."""
        if not self.sums:
            return None
        per_layer = []
        for module, (total, squares, count) in self.sums.items():
            mean = total / count
            var = (squares / count - mean * mean).clamp(min=0) + module.eps
            running_mean = module.running_mean.double()
            running_var = module.running_var.double() + module.eps
            kl = 0.5 * (torch.log(running_var / var)
                        + (var + (mean - running_mean) ** 2) / running_var - 1)
            per_layer.append(float(kl.mean()))
        return sum(per_layer) / len(per_layer)


@contextmanager
def _recording(modules: list[nn.Module]) -> Iterator[_FeatureStatistics]:
    stats = _FeatureStatistics()
    handles = [m.register_forward_pre_hook(stats.hook) for m in modules]
    try:
        yield stats
    finally:
        for handle in handles:
            handle.remove()


def _confidence(probabilities: dict[str, torch.Tensor]) -> float | None:
    """The least confident category's mean over pixels of the max per-pixel probability."""
    means = [float(p.detach().float().amax(1).mean()) for p in probabilities.values()
             if isinstance(p, torch.Tensor) and p.dim() == 4 and p.numel()]
    return min(means) if means else None


def _name(segmenter: Any) -> str:
    from gandissect.dissect.identity import fingerprint
    from gandissect.models.segmenter import Segmenter

    if isinstance(segmenter, Segmenter) and fingerprint(segmenter) in SHIPPED_REFERENCES:
        return "sceneworld"
    return str(getattr(segmenter, "name", None) or type(segmenter).__name__)


def check_domain(segmenter: Any, images: torch.Tensor, name: str | None = None) -> DomainCheck:
    """Check ``segmenter`` on ``images`` ((N, 3, H, W) in [-1, 1]; ``DOMAIN_IMAGES`` of them
    are enough); ``name`` is how the user spelled the segmenter (default: its shipped name or
    class). One forward pass of the segmenter, without gradients."""
    reference = domain_reference(segmenter)
    batchnorms = _trained_batchnorms(segmenter)
    images = images.detach().float().to(model_device(segmenter))
    own = getattr(segmenter, "probabilities", None)
    with torch.no_grad(), _recording(batchnorms) as stats:
        confidence = _confidence(own(images)) if callable(own) else None
        if not callable(own) and batchnorms:
            segmenter.segment(images)
    shift = stats.shift()
    fired = []
    if confidence is not None and reference.confidence is not None and (
            1 - confidence > UNCERTAINTY_FACTOR * (1 - reference.confidence)):
        fired.append("confidence")
    if shift is not None and shift > reference.feature_shift_bar:
        fired.append("feature shift")
    measured = shift is not None or (confidence is not None and reference.confidence is not None)
    verdict = "out of domain" if fired else ("in domain" if measured else "unknown")
    return DomainCheck(name or _name(segmenter), int(images.shape[0]),
                       None if confidence is None else round(confidence, 4),
                       reference.confidence,
                       None if shift is None or not math.isfinite(shift) else round(shift, 4),
                       reference.feature_shift_bar, verdict, fired)
