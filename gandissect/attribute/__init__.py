"""Attribution: which inputs (or feature-map locations) drive a classifier's score.

One verb for every method, as in Captum::

    GradCAM(model, "layer4").attribute(images, target=3)          # (N, h, w) at layer4
    IntegratedGradients(model).attribute(images, target=[3, 1], steps=64)   # input-shaped

``target`` is an int, one int per sample, or a callable ``output -> (N,) scores`` (see
``base``). Every method returns a raw, signed (unless its definition has a ReLU), unnormalised
tensor: input-shaped ``(N, C, H, W)`` for input methods (saliency, input x gradient,
SmoothGrad, integrated gradients, guided backprop, deconvolution, occlusion, LRP, DeepLift,
GradientShap; feature ablation, Kernel SHAP and LIME spread each feature's value over its
pixels) and ``(N, h, w)`` at the layer's resolution for the CAM family (token maps of vision
transformers too: ``gandissect.spatial``); ``gandissect.visualize.overlay`` normalises for
display.

While a method runs the model is in eval mode with frozen parameters and out-of-place
activations; hooks live in context managers; everything is restored afterwards, also when
the forward raises (the error propagates). Devices and dtypes follow the input.

One module per family: ``gradient`` (Saliency, InputXGradient, SmoothGrad,
IntegratedGradients), ``guided`` (GuidedBackprop, Deconvolution), ``occlusion``, ``cam``
(CAM, GradCAM, GradCAMPlusPlus, ScoreCAM, GuidedGradCAM, EigenCAM), ``noise``
(NoiseTunnel around any method), ``lrp`` (LRP, fold_batchnorm), ``deeplift`` (DeepLift),
``gradient_shap`` (GradientShap), ``perturbation`` (FeatureAblation, KernelShap, Lime on
superpixels), all with Captum's argument names. ``evaluate`` scores them all against
SceneWorld's exact labels (``evaluate_attribution``: pointing game, deletion / insertion,
relevance mass and rank accuracy, ROAD (``road``), the weight-randomisation sanity check and
its cascade layer by layer, per class, time per image); ``peers`` runs each beside its
counterpart in Captum, pytorch-grad-cam or zennit on any model (``crosscheck``);
``applicability`` says why a method cannot explain a model.
"""

from .base import Attribution, Target, attribution_mode, class_indices, resolve_target
from .cam import CAM, EigenCAM, GradCAM, GradCAMPlusPlus, GuidedGradCAM, ScoreCAM
from .deeplift import DeepLift
from .evaluate import DEFINING_CONCEPTS, evaluate_attribution
from .gradient import InputXGradient, IntegratedGradients, Saliency, SmoothGrad
from .gradient_shap import GradientShap
from .guided import Deconvolution, GuidedBackprop
from .lrp import LRP, UnsupportedModelError, fold_batchnorm, lrp_rule
from .noise import NoiseTunnel
from .occlusion import Occlusion
from .perturbation import FeatureAblation, KernelShap, Lime

__all__ = [
    "Attribution",
    "CAM",
    "DEFINING_CONCEPTS",
    "Deconvolution",
    "DeepLift",
    "EigenCAM",
    "FeatureAblation",
    "GradCAM",
    "GradCAMPlusPlus",
    "GradientShap",
    "GuidedBackprop",
    "GuidedGradCAM",
    "InputXGradient",
    "IntegratedGradients",
    "KernelShap",
    "LRP",
    "Lime",
    "NoiseTunnel",
    "Occlusion",
    "Saliency",
    "ScoreCAM",
    "SmoothGrad",
    "Target",
    "UnsupportedModelError",
    "attribution_mode",
    "class_indices",
    "evaluate_attribution",
    "fold_batchnorm",
    "lrp_rule",
    "resolve_target",
]
