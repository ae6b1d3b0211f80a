"""Whether an attribution method applies to a model, found before any long work.

Some methods are defined for some architectures only, and refuse the others with a one-line
``UserError``: CAM needs average-pooled features feeding the logits' linear layer (a ViT's
class-token head is not), guided backpropagation, deconvolution and Guided Grad-CAM need ReLU
networks (not GELU ones), LRP knows its rules for some layer types only, and the CAM family
needs a layer with a map (``gandissect.spatial``). ``refusal`` runs such a method once on one
small input and returns its reason, so a caller that runs many methods (``gandissect attribute
--methods all``) can run the ones that apply and report the others::

    reason = refusal(GuidedBackprop(vit), torch.zeros(1, 3, 224, 224))
    # "the model computes GELU ..." (or None: it applies)

Methods defined for every differentiable model (saliency, input x gradient, SmoothGrad,
integrated gradients, occlusion, ...) are not run: they apply. A method class may define its
own ``refusal(x, target) -> str | None``, which is used instead. Score-CAM is checked through
Grad-CAM on the same layer (one pass instead of one per channel: both need the same map).
"""

from __future__ import annotations

import torch

from gandissect.errors import UserError

from .base import Attribution, Target
from .cam import CAM, EigenCAM, GradCAM, ScoreCAM
from .guided import Deconvolution, GuidedBackprop
from .lrp import LRP

__all__ = ["refusal"]

# the methods whose definition holds for some architectures only (GuidedGradCAM is a GradCAM)
_RESTRICTED = (CAM, GradCAM, EigenCAM, GuidedBackprop, Deconvolution, LRP)


def refusal(method: Attribution, x: torch.Tensor, target: Target = 0) -> str | None:
    """Why ``method`` cannot explain its model, as one line, or None when it can.

    Args:
        method: a bound method, e.g. ``GradCAM(model, "blocks.11.norm1")``.
        x: an input the model takes; only its first element is used.
        target: the class to explain in the trial (default 0).
    """
    own = getattr(method, "refusal", None)
    if callable(own):
        return own(x, target)
    if not isinstance(method, _RESTRICTED):
        return None
    trial = GradCAM(method.model, method.layer) if isinstance(method, ScoreCAM) else method
    try:
        trial.attribute(x[:1], target=target)
    except UserError as error:
        return str(error)
    return None
