"""Class activation maps: CAM, Grad-CAM, Grad-CAM++, Score-CAM, Guided Grad-CAM, Eigen-CAM.

Every method here weighs the ``K`` feature maps ``A_k`` of one layer (dotted name, as in
``gandissect.hooks``) and returns a raw ``(N, h, w)`` map at that layer's resolution (not
upsampled, not normalised: ``overlay`` does both for display). The layer's output is read
as an ``(N, K, h, w)`` map by ``gandissect.spatial.spatial_view``: convolutional maps as they
are, a vision transformer's tokens reshaped to the patch grid with the class (and other
prefix) tokens left out, Swin's channels-last stages channels first. For the shipped
``SceneClassifier`` the natural layer is ``"layer4"`` (16 x 16 at 64 px); for a ViT whose head
reads the class token it is the first norm of the last block (timm ``"blocks.11.norm1"``,
``transformers`` ``"vit.layers.11.layernorm_before"``, as pytorch-grad-cam advises: the
patch tokens of the last block's output and of the final norm never reach the class score, so
their gradient is zero); for a Swin, its last stage or final norm (``default_map_layer``). CAM
proper needs pooled features feeding the logits linear layer, which a class-token head is
not: it refuses such models.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from gandissect.errors import UserError

from ..hooks import Trace, get_layer
from ..spatial import first_tensor, spatial_view, token_layout
from .base import (
    Attribution,
    Target,
    _check_input,
    attribution_mode,
    class_indices,
    prepare_target,
    resolve_target,
    row_chunks,
)

__all__ = ["CAM", "EigenCAM", "GradCAM", "GradCAMPlusPlus", "GuidedGradCAM", "ScoreCAM",
           "layer_activations_and_gradients", "logits_linear"]


def _feature_maps(model: nn.Module, trace: Trace, x: torch.Tensor) -> torch.Tensor:
    """The traced layer's output (a ``Trace`` with ``view=first_tensor``) as ``(N, K, h, w)``
    maps for the input ``x`` (``gandissect.spatial``)."""
    return spatial_view(model, trace.layer, trace.output, x.shape[-2:])


def layer_activations_and_gradients(model: nn.Module, layer: str, x: torch.Tensor,
                                    target: Target) -> tuple[torch.Tensor, torch.Tensor]:
    """``(A, d score / d A)`` of ``layer`` for the batch ``x``; call inside
    ``attribution_mode``. Both are ``(N, K, h, w)`` maps (``gandissect.spatial``): the gradient
    is taken with respect to the layer's own output and viewed as the map is."""
    x = x.detach().requires_grad_(True)  # parameters are frozen: the graph hangs on the input
    with Trace(model, layer, detach=False, clone=False, view=first_tensor) as trace:
        scores = resolve_target(model(x), target)
    maps = _feature_maps(model, trace, x)  # refuses a layer without a map before the backward
    (grad,) = torch.autograd.grad(scores.sum(), trace.output)
    return maps.detach(), spatial_view(model, layer, grad, x.shape[-2:])


def _weighted_sum(weights: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
    """``sum_k weights[n, k] * maps[n, k]`` -> (N, h, w)."""
    return torch.einsum("nk,nkhw->nhw", weights.to(maps.dtype), maps)


@contextmanager
def _linear_calls(model: nn.Module) -> Iterator[list[tuple[str, torch.Tensor]]]:
    """Within the block, ``(name, output)`` of every ``nn.Linear`` call of ``model``, in the
    order the forward runs them; the hooks are removed on exit, always."""
    calls: list[tuple[str, torch.Tensor]] = []

    def record(name: str):
        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            calls.append((name, output))
        return hook

    handles = []
    try:
        for name, module in model.named_modules():
            if isinstance(module, nn.Linear):
                handles.append(module.register_forward_hook(record(name)))
        yield calls
    finally:
        for handle in handles:
            handle.remove()


def _scores_layer(calls: list[tuple[str, torch.Tensor]], output: torch.Tensor,
                  model: nn.Module) -> str:
    """The last traced ``nn.Linear`` whose output has the shape of the model's class scores."""
    for name, out in reversed(calls):
        if isinstance(out, torch.Tensor) and out.shape == output.shape:
            return name
    raise UserError(f"no nn.Linear of {type(model).__name__} outputs its {tuple(output.shape)} "
                    "class scores: CAM needs GAP(layer) -> nn.Linear; name the linear layer "
                    "with CAM(model, layer, fc=NAME), or use GradCAM")


def logits_linear(model: nn.Module, x: torch.Tensor) -> str:
    """The dotted name of the last ``nn.Linear`` to run in ``model(x)`` whose output has the
    shape of the model's output ``(N, classes)``: the layer that computes the class scores,
    whatever it is called (``fc``, ``linear``, ``head.fc``, ``classifier.1``).

    Example::

        logits_linear(torchvision.models.resnet18(), images)   # "fc"
    """
    with attribution_mode(model), torch.no_grad(), _linear_calls(model) as calls:
        output = model(_check_input(x))
    return _scores_layer(calls, output, model)


class CAM(Attribution):
    """Class activation mapping (Zhou et al. 2016): ``sum_k w_ck A_k`` with ``w`` the weights
    of the linear layer that reads the globally average-pooled ``layer``.

    Args:
        model: a classifier whose class scores are ``fc(GAP(layer))``.
        layer: the convolutional layer whose maps ``A_k`` are weighed.
        fc: the dotted name of that ``nn.Linear``; None (default): found by tracing on every
            call, as the last ``nn.Linear`` to run whose output is the class scores
            (``logits_linear``), so ``fc``, ``linear`` (CIFAR-style ResNets) and nested heads
            such as ``head.fc`` all work.

    Applies only to that architecture (global average pooling, then one ``nn.Linear``; a
    vision transformer whose head reads the class token is refused when CAM is built);
    ``attribute`` checks it on every call: the mean of the map plus the linear layer's bias
    must give the class score, else it raises. Targets must be class indices (int or one per
    sample).

    Example::

        CAM(model, "layer4").attribute(images, target=3)    # (N, h, w) at layer4
    """

    def __init__(self, model: nn.Module, layer: str = "layer4", fc: str | None = None) -> None:
        super().__init__(model)
        self.layer, self.fc = layer, fc
        get_layer(model, layer)
        if fc is not None and not isinstance(get_layer(model, fc), nn.Linear):
            raise TypeError(f"CAM needs {fc!r} to be an nn.Linear, got "
                            f"{type(get_layer(model, fc)).__name__}")
        if fc is None and not any(isinstance(m, nn.Linear) for m in model.modules()):
            raise UserError(f"{type(model).__name__} has no nn.Linear: CAM needs "
                            f"GAP({layer}) -> nn.Linear; use GradCAM")
        layout = token_layout(model)
        if layout is not None and layout.pooling == "token":
            raise UserError(f"{type(model).__name__} computes its class scores from the class "
                            "token, not from average-pooled features: CAM needs "
                            f"GAP({layer}) -> nn.Linear; use GradCAM")

    def attribute(self, x: torch.Tensor, target: Target = None) -> torch.Tensor:
        """The ``(N, h, w)`` class activation map of each sample's target class."""
        x = _check_input(x)
        classes = class_indices(target, x.shape[0], x.device)
        with attribution_mode(self.model), torch.no_grad():
            with Trace(self.model, self.layer, view=first_tensor) as trace, \
                    _linear_calls(self.model) as calls:
                output = self.model(x)
            scores = resolve_target(output, classes)
            name = self.fc or _scores_layer(calls, output, self.model)
            fc = get_layer(self.model, name)
            maps = _feature_maps(self.model, trace, x)
            if fc.in_features != maps.shape[1]:
                raise UserError(f"{name!r} reads {fc.in_features} features but "
                                f"{self.layer!r} has {maps.shape[1]} channels: CAM needs "
                                f"GAP({self.layer}) -> {name}")
            cam = _weighted_sum(fc.weight[classes], maps)
            bias = fc.bias[classes] if fc.bias is not None else torch.zeros_like(scores)
        rebuilt = cam.mean((1, 2)) + bias.to(cam.dtype)
        if not torch.allclose(rebuilt, scores.to(cam.dtype), rtol=1e-3,
                              atol=1e-4 * (1 + float(scores.abs().max()))):
            raise UserError(f"the class score is not {name}(global average pool({self.layer})):"
                            " CAM does not apply to this model; use GradCAM")
        return cam


class GradCAM(Attribution):
    """Grad-CAM (Selvaraju et al. 2017): ``ReLU(sum_k alpha_k A_k)`` with ``alpha_k`` the
    spatial mean of ``d score / d A_k``. ``relu=False`` keeps the negative evidence."""

    def __init__(self, model: nn.Module, layer: str = "layer4") -> None:
        super().__init__(model)
        self.layer = layer
        get_layer(model, layer)

    def attribute(self, x: torch.Tensor, target: Target = None, relu: bool = True
                  ) -> torch.Tensor:
        """The ``(N, h, w)`` map of ``target`` (channel weights from ``channel_weights``)."""
        x = _check_input(x)
        target = prepare_target(target, x.shape[0], x.device)
        with attribution_mode(self.model):
            maps, grad = layer_activations_and_gradients(self.model, self.layer, x, target)
        cam = _weighted_sum(self.channel_weights(maps, grad), maps)
        return cam.clamp(min=0) if relu else cam

    @staticmethod
    def channel_weights(maps: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """``(N, K)`` weights of the feature maps: the spatial mean of the gradient."""
        return grad.mean((2, 3))


class GradCAMPlusPlus(GradCAM):
    """Grad-CAM++ (Chattopadhay et al. 2018), the closed form of the paper's eq. 19.

    With the exponential score ``S = exp(Y)`` of a piecewise-linear ``Y``, the second and third
    derivatives are powers of ``g = dY/dA``, and the pixel weights are
    ``alpha_kij = g^2 / (2 g^2 + sum_ab A_kab g^3)`` (0 where the denominator is 0). The channel
    weights are ``w_k = sum_ij alpha_kij ReLU(g_kij)``: the paper's ``dS/dA = exp(Y) g`` differs
    by the positive factor ``exp(Y)`` per sample, dropped because it only rescales each map (and
    overflows for large scores). Map: ``ReLU(sum_k w_k A_k)``.
    """

    @staticmethod
    def channel_weights(maps: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """``w_k = sum_ij alpha_kij ReLU(g_kij)`` with the closed-form ``alpha`` above."""
        g2, g3 = grad.pow(2), grad.pow(3)
        denominator = 2 * g2 + maps.sum((2, 3), keepdim=True) * g3
        safe = torch.where(denominator != 0, denominator, torch.ones_like(denominator))
        alpha = torch.where(denominator != 0, g2 / safe, torch.zeros_like(g2))
        return (alpha * grad.clamp(min=0)).sum((2, 3))


class ScoreCAM(GradCAM):
    """Score-CAM (Wang et al. 2020): each channel weighted by the score of the input masked
    with that channel's map.

    Channel k's map is upsampled (bilinear) to the input size and min-max normalised to
    [0, 1] per sample; the weight is the target's softmax probability for ``x * mask``
    (``softmax=False``: the raw score; a callable target receives the probabilities).
    Constant maps (all zero, as many post-ReLU channels are) carry no location: they get weight
    0 and cost no forward pass. Map: ``ReLU(sum_k weight_k A_k)``. One forward pass per
    (sample, channel): ``internal_batch_size`` bounds how many go through at once.
    """

    def attribute(self, x: torch.Tensor, target: Target = None, softmax: bool = True,
                  internal_batch_size: int | None = 64, relu: bool = True) -> torch.Tensor:
        """The ``(N, h, w)`` Score-CAM map of ``target``."""
        x = _check_input(x, images=True)
        target = prepare_target(target, x.shape[0], x.device)
        with attribution_mode(self.model), torch.no_grad():
            with Trace(self.model, self.layer, view=first_tensor) as trace:
                self.model(x)
            maps = _feature_maps(self.model, trace, x)
            flat = maps.flatten(2)
            informative = (flat.amax(2) - flat.amin(2)) > 0
            pairs = informative.nonzero()  # (P, 2): sample, channel
            weights = torch.zeros(maps.shape[:2], dtype=maps.dtype, device=maps.device)
            for rows in row_chunks(pairs.shape[0], internal_batch_size):
                sample, channel = pairs[rows.to(pairs.device)].unbind(1)
                mask = F.interpolate(maps[sample, channel][:, None], size=x.shape[-2:],
                                     mode="bilinear", align_corners=False)
                low = mask.amin((2, 3), keepdim=True)
                span = mask.amax((2, 3), keepdim=True) - low
                mask = torch.where(span > 0, (mask - low) / span.clamp(min=1e-30), 0)
                output = self.model(x[sample] * mask.to(x.dtype))
                if softmax:
                    output = output.softmax(1)
                weights[sample, channel] = resolve_target(output, target, sample).to(maps.dtype)
        cam = _weighted_sum(weights, maps)
        return cam.clamp(min=0) if relu else cam


class GuidedGradCAM(GradCAM):
    """Guided Grad-CAM (Selvaraju et al. 2017): guided backpropagation times the Grad-CAM map
    upsampled to the input size, an input-shaped ``(N, C, H, W)`` map (the one method here
    that is not at the layer's resolution; each channel of the guided gradient is multiplied
    by the same map).

    The Grad-CAM map (with its ReLU) is upsampled with ``interpolate_mode`` (``"bilinear"``,
    as in the paper, ``align_corners=False``; Captum's ``GuidedGradCam`` defaults to
    ``"nearest"``). Guided backpropagation applies to ReLU networks only (``guided``).

    Example::

        GuidedGradCAM(model, "layer4").attribute(images, target=3)   # (N, C, H, W)
    """

    def attribute(self, x: torch.Tensor, target: Target = None,
                  interpolate_mode: str = "bilinear") -> torch.Tensor:
        """Guided backpropagation of ``target`` times its upsampled Grad-CAM map."""
        from .guided import GuidedBackprop

        x = _check_input(x, images=True)
        if interpolate_mode not in ("bilinear", "nearest", "bicubic", "area"):
            raise UserError(f"interpolate_mode must be bilinear, nearest, bicubic or area; got "
                            f"{interpolate_mode!r}")
        target = prepare_target(target, x.shape[0], x.device)
        cam = super().attribute(x, target, relu=True)
        options = {} if interpolate_mode in ("nearest", "area") else {"align_corners": False}
        cam = F.interpolate(cam[:, None], size=x.shape[-2:], mode=interpolate_mode, **options)
        return GuidedBackprop(self.model).attribute(x, target) * cam.to(x.dtype)


class EigenCAM(Attribution):
    """Eigen-CAM (Muhammad & Yeasin 2020), as pytorch-grad-cam computes it: the projection of
    the layer's activations on their first principal component, per sample.

    The ``(h w, K)`` matrix of each sample's activations (one row per location) is centred
    over locations; the map is that matrix times its first right singular vector ``v``.
    Class-agnostic: ``target`` is accepted for a uniform call and unused. A singular vector's
    sign is arbitrary (pytorch-grad-cam keeps whatever LAPACK returns); here ``v`` is oriented
    so that ``sum_k v_k >= 0``, which makes the map correlate non-negatively with the
    channel-summed activations. ``relu=True`` (default, as pytorch-grad-cam) clamps it at 0.

    Example::

        EigenCAM(model, "layer4").attribute(images)    # (N, h, w) at layer4
    """

    def __init__(self, model: nn.Module, layer: str = "layer4") -> None:
        super().__init__(model)
        self.layer = layer
        get_layer(model, layer)

    def attribute(self, x: torch.Tensor, target: Target = None, relu: bool = True
                  ) -> torch.Tensor:
        """The ``(N, h, w)`` first-principal-component map of ``layer``."""
        x = _check_input(x)
        with attribution_mode(self.model), torch.no_grad():
            with Trace(self.model, self.layer, view=first_tensor) as trace:
                self.model(x)
            maps = _feature_maps(self.model, trace, x)
        n, k, h, w = maps.shape
        flat = torch.nan_to_num(maps, nan=0.0).flatten(2).transpose(1, 2)   # (N, hw, K)
        centred = flat - flat.mean(1, keepdim=True)
        _, _, vh = torch.linalg.svd(centred, full_matrices=False)
        first = vh[:, 0]                                                    # (N, K)
        first = torch.where(first.sum(1, keepdim=True) < 0, -first, first)
        cam = (centred @ first[:, :, None]).reshape(n, h, w)
        return cam.clamp(min=0) if relu else cam
