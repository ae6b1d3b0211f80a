"""Is one image inside a classifier's training domain? A warning before its prediction is read.

A classifier answers for any picture: the shipped SceneWorld classifier calls a photo of an
astronaut "church" with probability 1.00, so its confidence says nothing about whether the
image is like those it learned from. Its BatchNorm layers do: each holds the mean and variance
its input channels had over the training images (``running_mean``, ``running_var``). For one
image, each channel's mean and variance over the image's *positions* give a Gaussian, and the
KL divergence of the training Gaussian from it, averaged over channels, is that layer's
*per-image shift* (nats), the per-image form of ``gandissect.domain``'s batch feature shift.

On its own domain an image's shift is not zero (one image varies less than the whole training
set, and deeper layers see fewer positions), and how far from zero depends on the layer, so:

- with a **reference** (the per-layer mean and standard deviation of the shift over images of
  the classifier's own domain: ``classifier_domain_reference``; the shipped classifier's is in
  ``SHIPPED_CLASSIFIER_REFERENCES``; a classifier may declare ``domain_reference``), the
  feature shift is the root mean square over layers of each layer's standardised excess
  ``max(0, (shift - mean) / std)``, in in-domain standard deviations, against the reference's
  bar (shipped: 3.5, which 0.17% of held-out scenes cross, the astronaut photo 4.6; other
  photos such as skimage's coffee, 3.0, stay under it: ``benchmarks/bench_classifier_domain.py``,
  docs/results.md);
- without one, the feature shift is the mean over layers of the per-image shift in nats,
  against ``GENERIC_IMAGE_SHIFT_BAR`` (1.0), which only gross shifts cross (uniform noise 1.1,
  the shipped classifier's scenes at most 0.43).

Layers count when their BatchNorm is trained (eval mode, statistics not the fresh 0 / 1) and
their input has at least ``MIN_POSITIONS`` positions. A classifier with none gets the verdict
``"unknown"`` and no warning.

    check = check_classifier_domain(classifier, images)   # (N, 3, H, W), as the model takes
    check.verdicts        # per image: "in domain" / "out of domain" / "unknown"
    check.warning(0)      # one line for image 0 when it is out of domain, else None
    check.to_json()
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from gandissect.domain import _trained_batchnorms
from gandissect.errors import UserError
from gandissect.torchutil import model_device

__all__ = ["GENERIC_IMAGE_SHIFT_BAR", "MIN_POSITIONS", "SHIPPED_BAR",
           "SHIPPED_CLASSIFIER_REFERENCES", "ClassifierDomainCheck", "ClassifierDomainReference",
           "check_classifier_domain", "classifier_domain_reference", "per_image_shifts"]

# The bar in nats for a classifier without a reference: far above the shipped classifier's own
# scenes (at most 0.43 over 1,024), crossed by noise (1.1) and by images unlike any photo.
GENERIC_IMAGE_SHIFT_BAR = 1.0
# A layer's per-image statistics need positions to average over: 2 x 2 at least.
MIN_POSITIONS = 4
# The shipped classifier's bar, in in-domain standard deviations (see the module docstring).
SHIPPED_BAR = 3.5


@dataclass(frozen=True)
class ClassifierDomainReference:
    """Per-image shift on the classifier's own domain, per BatchNorm layer (module name ->
    ``(mean, std)`` in nats), and the bar on the standardised feature shift."""

    layers: dict[str, tuple[float, float]]
    bar: float = SHIPPED_BAR
    measured: str = ""


# The shipped SceneWorld classifier, by its weights' fingerprint (retrained weights need new
# figures: tests/test_classifier_domain.py checks that the shipped file still has them).
SHIPPED_CLASSIFIER_REFERENCES: dict[str, ClassifierDomainReference] = {
    "75eb482e3753f04f75b2f307eefbaa5b": ClassifierDomainReference(
        {"bn1": (0.124955, 0.083898), "layer1.0.bn1": (0.0928, 0.056324),
         "layer1.0.bn2": (0.085122, 0.059879), "layer2.0.bn1": (0.094763, 0.061787),
         "layer2.0.bn2": (0.119921, 0.082227), "layer2.0.downsample.1": (0.084202, 0.056798),
         "layer3.0.bn1": (0.144003, 0.088667), "layer3.0.bn2": (0.171307, 0.09717),
         "layer3.0.downsample.1": (0.120674, 0.078693), "layer4.0.bn1": (0.238541, 0.107433),
         "layer4.0.bn2": (0.493544, 0.161998), "layer4.0.downsample.1": (0.271054, 0.113274)},
        SHIPPED_BAR,
        "per-image shifts of held-out SceneWorld scenes 0 .. 511 of world 1001 at 64 px; with "
        "bar 3.5, one image at a time: 7 of scenes 512 .. 4607 of world 1001 (0.17%, largest "
        "4.96) and 0 of scenes 0 .. 1023 of world 1000 (largest 3.28) flagged; skimage's astronaut "
        "4.58, rocket 6.8, brick 7.6, text 4.1 flagged, its coffee 3.0, camera 2.5 and chelsea "
        "1.2 photos not; noise, digits and most textures flagged "
        "(benchmarks/bench_classifier_domain.py)"),
}


@contextmanager
def _recording(modules: dict[str, nn.Module]) -> Iterator[dict[str, torch.Tensor]]:
    """Record each named BatchNorm's per-image shift ``(N,)`` of the next forward."""
    shifts: dict[str, torch.Tensor] = {}

    def hook(name: str, module: nn.Module):
        def record(_, inputs: tuple) -> None:
            x = inputs[0].detach().double()
            if x.dim() < 3 or x[0, 0].numel() < MIN_POSITIONS:
                return
            x = x.flatten(2)  # (N, C, positions)
            mean = x.mean(2)
            var = x.var(2, unbiased=False) + module.eps
            running_mean = module.running_mean.double()
            running_var = module.running_var.double() + module.eps
            kl = 0.5 * (torch.log(running_var / var)
                        + (var + (mean - running_mean) ** 2) / running_var - 1)
            shifts[name] = kl.mean(1)
        return record

    handles = [m.register_forward_pre_hook(hook(name, m)) for name, m in modules.items()]
    try:
        yield shifts
    finally:
        for handle in handles:
            handle.remove()


def _named_batchnorms(classifier: nn.Module) -> dict[str, nn.Module]:
    trained = set(map(id, _trained_batchnorms(classifier)))
    return {name: m for name, m in classifier.named_modules() if id(m) in trained}


def per_image_shifts(classifier: nn.Module, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each trained BatchNorm layer's per-image shift ``(N,)`` in nats (module docstring) for
    ``images`` as the classifier takes them; one forward pass without gradients. Layers whose
    input has fewer than ``MIN_POSITIONS`` positions are left out."""
    if images.dim() != 4:
        raise UserError(f"expected images (N, C, H, W), got {tuple(images.shape)}; for one "
                        "image pass x[None]")
    modules = _named_batchnorms(classifier)
    if not modules:
        return {}
    images = images.detach().float().to(model_device(classifier))
    with torch.no_grad(), _recording(modules) as shifts:
        classifier(images)
    return {name: shifts[name].cpu() for name in modules if name in shifts}


def classifier_domain_reference(classifier: nn.Module, images: torch.Tensor,
                                bar: float = SHIPPED_BAR, measured: str = ""
                                ) -> ClassifierDomainReference:
    """The reference of a classifier from ``images`` of its own domain (a few hundred): each
    layer's per-image shift mean and standard deviation, with ``bar``."""
    shifts = per_image_shifts(classifier, images)
    if not shifts:
        raise UserError(f"{type(classifier).__name__} has no trained BatchNorm layer with "
                        "spatial inputs: nothing to build a domain reference from")
    if images.shape[0] < 2:
        raise UserError("a domain reference needs at least 2 images of the classifier's domain")
    return ClassifierDomainReference(
        {name: (round(float(v.mean()), 6), round(float(v.std()), 6)) for name, v in
         shifts.items()}, bar, measured)


def _reference(classifier: Any) -> ClassifierDomainReference | None:
    declared = getattr(classifier, "domain_reference", None)
    if isinstance(declared, ClassifierDomainReference):
        return declared
    from gandissect.dissect.identity import fingerprint

    return SHIPPED_CLASSIFIER_REFERENCES.get(fingerprint(classifier))


@dataclass
class ClassifierDomainCheck:
    """The feature shift of each image and its verdict (see the module docstring)."""

    classifier: str
    feature_shift: list[float | None]  # per image; None without usable BatchNorm layers
    bar: float
    unit: str  # "in-domain standard deviations" (with a reference) or "nats"
    verdicts: list[str]  # per image: "in domain", "out of domain" or "unknown"
    layers: list[str] = field(default_factory=list)  # the BatchNorm layers measured
    reference: str = ""  # how the reference was measured ("" without one)

    def to_json(self, index: int | None = None) -> dict[str, Any]:
        """A JSON-ready record: of every image, or (``index``) of one."""
        record = asdict(self)
        if index is not None:
            record["feature_shift"] = self.feature_shift[index]
            record["verdict"] = record.pop("verdicts")[index]
        return record

    def warning(self, index: int = 0) -> str | None:
        """One line saying the prediction of image ``index`` may mean little, or None when it
        is not out of domain."""
        if self.verdicts[index] != "out of domain":
            return None
        return (f"this image looks unlike the {self.classifier} classifier's training images "
                f"(feature shift {self.feature_shift[index]:.2f}, bar {self.bar:g} "
                f"{'nats' if self.unit == 'nats' else 'in-domain standard deviations'}): "
                "its prediction may mean little")


def _name(classifier: Any, reference: ClassifierDomainReference | None) -> str:
    if reference is not None and reference in SHIPPED_CLASSIFIER_REFERENCES.values():
        return "sceneworld"
    return str(getattr(classifier, "name", None) or type(classifier).__name__)


def check_classifier_domain(classifier: nn.Module, images: torch.Tensor,
                            name: str | None = None) -> ClassifierDomainCheck:
    """Check each of ``images`` ((N, 3, H, W), as the classifier takes them: in [-1, 1] for
    the tools here, whose classifiers carry their declared normalisation inside) against the
    classifier's BatchNorm statistics; ``name`` is how the user spelled the classifier. One
    forward pass without gradients."""
    shifts = per_image_shifts(classifier, images)
    count = int(images.shape[0])
    if not shifts:
        return ClassifierDomainCheck(name or _name(classifier, None), [None] * count,
                                     GENERIC_IMAGE_SHIFT_BAR, "nats", ["unknown"] * count)
    reference = _reference(classifier)
    layers = list(shifts)
    if reference is not None and set(reference.layers) == set(layers):
        excess = torch.stack([((shifts[k] - reference.layers[k][0])
                               / max(reference.layers[k][1], 1e-12)).clamp(min=0)
                              for k in layers], 1)
        score, bar, unit = excess.square().mean(1).sqrt(), reference.bar, \
            "in-domain standard deviations"
    else:
        reference = None
        score = torch.stack([shifts[k] for k in layers], 1).mean(1)
        bar, unit = GENERIC_IMAGE_SHIFT_BAR, "nats"
    values = [round(float(v), 4) if math.isfinite(float(v)) else None for v in score]
    verdicts = ["unknown" if v is None else "out of domain" if v > bar else "in domain"
                for v in values]
    return ClassifierDomainCheck(name or _name(classifier, reference), values, bar, unit,
                                 verdicts, layers, reference.measured if reference else "")
