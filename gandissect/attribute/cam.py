"""Class activation maps: CAM, Grad-CAM, Grad-CAM++ and Score-CAM.

Every method here weighs the ``K`` feature maps ``A_k`` of one layer (dotted name, as in
``gandissect.hooks``) and returns a raw ``(N, h, w)`` map at that layer's resolution (not
upsampled, not normalised: ``overlay`` does both for display). The layer must output
``(N, K, h, w)``. For the shipped ``SceneClassifier`` the natural layer is ``"layer4"``
(16 x 16 at 64 px).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gandissect.errors import UserError

from ..hooks import Trace, get_layer
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

__all__ = ["CAM", "GradCAM", "GradCAMPlusPlus", "ScoreCAM", "layer_activations_and_gradients"]


def _feature_maps(trace: Trace) -> torch.Tensor:
    maps = trace.output
    if maps.dim() != 4:
        raise UserError(f"layer {trace.layer!r} outputs {tuple(maps.shape)}; class activation "
                        "maps need a convolutional layer with (N, K, h, w) output")
    return maps


def layer_activations_and_gradients(model: nn.Module, layer: str, x: torch.Tensor,
                                    target: Target) -> tuple[torch.Tensor, torch.Tensor]:
    """``(A, d score / d A)`` of ``layer`` for the batch ``x``; call inside
    ``attribution_mode``."""
    x = x.detach().requires_grad_(True)  # parameters are frozen: the graph hangs on the input
    with Trace(model, layer, detach=False, clone=False) as trace:
        scores = resolve_target(model(x), target)
    maps = _feature_maps(trace)
    (grad,) = torch.autograd.grad(scores.sum(), maps)
    return maps.detach(), grad


def _weighted_sum(weights: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
    """``sum_k weights[n, k] * maps[n, k]`` -> (N, h, w)."""
    return torch.einsum("nk,nkhw->nhw", weights.to(maps.dtype), maps)


class CAM(Attribution):
    """Class activation mapping (Zhou et al. 2016): ``sum_k w_ck A_k`` with ``w`` the weights
    of the linear layer ``fc`` that reads the globally average-pooled ``layer``.

    Applies only to that architecture (global average pooling, then one ``nn.Linear``);
    ``attribute`` checks it on every call: the mean of the map plus ``fc``'s bias must give the
    class score, else it raises. Targets must be class indices (int or one per sample).
    """

    def __init__(self, model: nn.Module, layer: str = "layer4", fc: str = "fc") -> None:
        super().__init__(model)
        self.layer, self.fc = layer, fc
        get_layer(model, layer)
        if not isinstance(get_layer(model, fc), nn.Linear):
            raise TypeError(f"CAM needs {fc!r} to be an nn.Linear, got "
                            f"{type(get_layer(model, fc)).__name__}")

    def attribute(self, x: torch.Tensor, target: Target = None) -> torch.Tensor:
        """The ``(N, h, w)`` class activation map of each sample's target class."""
        x = _check_input(x)
        classes = class_indices(target, x.shape[0], x.device)
        fc = get_layer(self.model, self.fc)
        with attribution_mode(self.model), torch.no_grad():
            with Trace(self.model, self.layer) as trace:
                scores = self.model(x).gather(1, classes[:, None])[:, 0]
            maps = _feature_maps(trace)
            if fc.in_features != maps.shape[1]:
                raise UserError(f"{self.fc!r} reads {fc.in_features} features but "
                                f"{self.layer!r} has {maps.shape[1]} channels: CAM needs "
                                f"GAP({self.layer}) -> fc")
            cam = _weighted_sum(fc.weight[classes], maps)
            bias = fc.bias[classes] if fc.bias is not None else torch.zeros_like(scores)
        rebuilt = cam.mean((1, 2)) + bias.to(cam.dtype)
        if not torch.allclose(rebuilt, scores.to(cam.dtype), rtol=1e-3,
                              atol=1e-4 * (1 + float(scores.abs().max()))):
            raise UserError(f"the class score is not fc(global average pool({self.layer})): "
                            "CAM does not apply to this model; use GradCAM")
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
        x = _check_input(x)
        if x.dim() != 4:
            raise UserError(f"Score-CAM takes (N, C, H, W) images, got {tuple(x.shape)}")
        target = prepare_target(target, x.shape[0], x.device)
        with attribution_mode(self.model), torch.no_grad():
            with Trace(self.model, self.layer) as trace:
                self.model(x)
            maps = _feature_maps(trace)
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
