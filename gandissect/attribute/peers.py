"""Our attribution methods side by side with the libraries people trust, on your model.

``crosscheck(model, images, target, layer)`` runs each method of ours and its counterpart in
Captum, pytorch-grad-cam or zennit on the same inputs and settings, and returns one row per
pair: the largest difference between the two maps (relative to the largest value of ours),
the Pearson correlation per image (its minimum), both times and their ratio, and the
*documented difference* where the definitions are not the same:

- Captum's trapezoid integrated gradients weigh the n points with steps 1/n and halved ends:
  its weights sum to (n - 1) / n, ours to 1, so Captum's map is ours times (n - 1) / n;
- pytorch-grad-cam's Grad-CAM++ adds 1e-6 to the alpha denominator (ours: none); where the
  gradients are small, that changes the map, so the row compares ours with the peer's formula
  at eps = 0 and reports the eps = 1e-6 map's correlation separately;
- pytorch-grad-cam's Score-CAM weighs channels by a softmax *over channels* of the raw target
  score of each masked image (ours and the authors' code: the class probability of each masked
  image) and upsamples with aligned corners: another definition, so only the correlation is
  reported;
- Captum's DeepLift refuses a ReLU module that runs twice (every torchvision ResNet block), so
  it runs on a copy with one module per use; and it skips its max-pool rule when the pooling
  follows a ReLU module (ResNet stems), where it takes the plain gradient: maps differ there
  unless the reference's activations at the pooling are zero, and ours are complete (the sum
  equals f(x) - f(baseline)) where Captum's are not;
- Captum's KernelShap fits its weighted regression in float32 with a heavy weight for the
  "sums to f(x) - f(0)" constraint; ours solves it exactly: differences of about 1e-3;
- pytorch-grad-cam's Eigen-CAM has the sign LAPACK returns; ours points the principal
  component along the channel sum, so the peer's map is compared up to its sign.

The peers are imported when a row needs them; a row whose peer is not installed says so and is
skipped. Nothing is downloaded. ``benchmarks/bench_crosscheck.py`` prints the table on a
torchvision ResNet-18 and on the shipped classifier; the tests assert each row's tolerance.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import nn

from gandissect.hooks import get_layer

__all__ = ["PAIRS", "Pair", "Row", "compare", "crosscheck", "densenet_forward_of_modules",
           "format_rows", "torchvision_twin", "unshared_relus", "with_random_statistics",
           "zennit_canonizers", "zennit_lrp"]


@dataclass(frozen=True)
class Row:
    """One method compared with one peer on one batch."""

    method: str
    peer: str
    max_difference: float  # max |ours - peer| / max |ours|, after the documented conversion
    min_pearson: float  # the lowest per-image correlation of the two maps
    ours_seconds: float
    peer_seconds: float
    note: str = ""

    @property
    def speed_ratio(self) -> float:
        """Our time over the peer's (below 1: ours is faster)."""
        return self.ours_seconds / self.peer_seconds if self.peer_seconds > 0 else float("nan")

    def to_json(self) -> dict:
        return {**asdict(self), "speed_ratio": self.speed_ratio}


Maps = Callable[[nn.Module, torch.Tensor, torch.Tensor, str], torch.Tensor]


@dataclass(frozen=True)
class Pair:
    """How to run one of our methods and its peer, and what to compare.

    ``ours`` and ``peer`` map (model, images, class per image, layer) to comparable maps
    (``peer`` already converted by the documented difference); ``peer_timed`` is the peer's
    public call when the compared maps come from its internals (None: ``peer`` itself).
    """

    peer: str  # the peer's name, "package.Class"
    package: str  # the module that must be importable
    ours: Maps
    peer_maps: Maps
    note: str = ""
    peer_timed: Maps | None = None
    sign_free: bool = False  # compare up to a sign per image


# ------------------------------------------------------------------ our side


def _ours(name: str, **options) -> Maps:
    def run(model, x, target, layer):
        from gandissect.attribute import evaluate

        spec = evaluate.METHODS[name]
        return spec.build(model, layer).attribute(x, target=target, **options)
    return run


def _gradcam_plus_plus(model, x, target, layer):
    from gandissect.attribute import GradCAMPlusPlus

    return GradCAMPlusPlus(model, layer).attribute(x, target=target)


def _scorecam(model, x, target, layer):
    from gandissect.attribute import ScoreCAM

    return ScoreCAM(model, layer).attribute(x, target=target)


def _eigencam(model, x, target, layer):
    from gandissect.attribute import EigenCAM

    return EigenCAM(model, layer).attribute(x, relu=False)


def _guided_gradcam(model, x, target, layer):
    from gandissect.attribute import GuidedGradCAM

    return GuidedGradCAM(model, layer).attribute(x, target=target, interpolate_mode="bilinear")


def _integrated_gradients(method: str, steps: int) -> Maps:
    def run(model, x, target, layer):
        from gandissect.attribute import IntegratedGradients

        return IntegratedGradients(model).attribute(x, target=target, baselines=0.0,
                                                    n_steps=steps, method=method)
    return run


def _occlusion(model, x, target, layer):
    from gandissect.attribute import Occlusion

    window, stride = _occlusion_window(x)
    return Occlusion(model).attribute(x, target=target, sliding_window_shapes=(3, window, window),
                                      strides=(3, stride, stride))


def _occlusion_window(x: torch.Tensor) -> tuple[int, int]:
    """A window of 1/8 of the image every 1/16, landing on the last column (so that both
    libraries cover the same windows)."""
    size = x.shape[-1]
    return max(2, size // 8), max(1, size // 16)


def _lrp(model, x, target, layer):
    from gandissect.attribute import LRP, evaluate

    return LRP(model, **evaluate.METHODS["lrp"].init).attribute(x, target=target)


# ------------------------------------------------------------------ the peers' side


def _captum(cls: str, **options) -> Maps:
    def run(model, x, target, layer):
        import captum.attr

        return getattr(captum.attr, cls)(model).attribute(x, target=target, **options)
    return run


def _captum_integrated_gradients(method: str, steps: int) -> Maps:
    scale = (steps - 1) / steps if method == "riemann_trapezoid" else 1.0

    def run(model, x, target, layer):
        import captum.attr

        theirs = captum.attr.IntegratedGradients(model).attribute(
            x, target=target, baselines=0.0, n_steps=steps,
            method="gausslegendre" if method == "gauss_legendre" else method)
        return theirs / scale
    return run


def _captum_occlusion(model, x, target, layer):
    import captum.attr

    window, stride = _occlusion_window(x)
    return captum.attr.Occlusion(model).attribute(
        x, target=target, sliding_window_shapes=(3, window, window), strides=(3, stride, stride))


def _captum_layer(cls: str, **options) -> Maps:
    def run(model, x, target, layer):
        import captum.attr

        return getattr(captum.attr, cls)(model, get_layer(model, layer)).attribute(
            x, target=target, **options).squeeze(1)
    return run


def _captum_guided_gradcam(model, x, target, layer):
    import captum.attr

    return captum.attr.GuidedGradCam(model, get_layer(model, layer)).attribute(
        x, target=target, interpolate_mode="bilinear")


def _grad_cam_library(cls: str, model, x, target, layer) -> tuple[object, list, torch.Tensor,
                                                                     torch.Tensor]:
    """pytorch-grad-cam's own forward and backward: the method object, its targets, and the
    layer's activations and gradients as it records them."""
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    method = getattr(pytorch_grad_cam, cls)(model, target_layers=[get_layer(model, layer)])
    targets = [ClassifierOutputTarget(int(c)) for c in target]
    outputs = method.activations_and_grads(x)
    model.zero_grad()
    sum(t(o) for t, o in zip(targets, outputs, strict=True)).backward()
    activations = method.activations_and_grads.activations[0].cpu().numpy()
    grads = method.activations_and_grads.gradients[0].cpu().numpy()
    method.activations_and_grads.release()
    return method, targets, activations, grads


def _grad_cam_plus_plus_library(model, x, target, layer):
    """pytorch-grad-cam's Grad-CAM++ weights with its eps set to 0 (the one difference)."""
    import numpy as np

    _, _, activations, grads = _grad_cam_library("GradCAMPlusPlus", model, x, target, layer)
    g2 = grads ** 2
    total = activations.sum((2, 3), keepdims=True)
    denominator = 2 * g2 + total * g2 * grads
    with np.errstate(divide="ignore", invalid="ignore"):
        alpha = np.where(grads != 0, g2 / denominator, 0)
    weights = (np.maximum(grads, 0) * alpha).sum((2, 3))
    cam = np.einsum("nk,nkhw->nhw", weights, activations)
    return torch.as_tensor(np.maximum(cam, 0), dtype=x.dtype)


def _score_cam_library(model, x, target, layer):
    method, targets, activations, grads = _grad_cam_library("ScoreCAM", model, x, target, layer)
    weights = method.get_cam_weights(x, get_layer(model, layer), targets, activations, grads)
    import numpy as np

    cam = np.einsum("nk,nkhw->nhw", weights, activations)
    return torch.as_tensor(np.maximum(cam, 0), dtype=x.dtype)


def _eigen_cam_library(model, x, target, layer):
    from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection

    from gandissect.hooks import Trace

    with torch.no_grad(), Trace(model, layer) as trace:
        model(x)
    return torch.as_tensor(get_2d_projection(trace.output.cpu().numpy()), dtype=x.dtype)


def _grad_cam_call(cls: str) -> Maps:
    def run(model, x, target, layer):
        import pytorch_grad_cam
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        with getattr(pytorch_grad_cam, cls)(model, target_layers=[get_layer(model, layer)]) as m:
            m.batch_size = 64
            return torch.as_tensor(m(x, targets=[ClassifierOutputTarget(int(c))
                                                 for c in target]))
    return run


def torchvision_twin(model: nn.Module) -> nn.Module:
    """A ResNet of basic blocks (the shipped classifier) rebuilt from torchvision's
    ``BasicBlock``, with the same weights: zennit's ResNet canonizer recognises its blocks by
    their class. torchvision's own ResNets come back as they are."""
    import copy

    import torchvision
    from torchvision.models.resnet import BasicBlock, ResNet

    if isinstance(model, ResNet) or not hasattr(model, "layer1"):
        return model  # torchvision's own ResNets, VGGs, DenseNets
    twin = torchvision.models.resnet18(num_classes=model.fc.out_features)
    twin.conv1, twin.bn1 = copy.deepcopy(model.conv1), copy.deepcopy(model.bn1)
    twin.maxpool = copy.deepcopy(getattr(model, "maxpool", nn.Identity()))
    stages = [name for name, _ in model.named_children() if name.startswith("layer")]
    for name in stages:
        blocks = []
        for block in getattr(model, name):
            new = BasicBlock(block.conv1.in_channels, block.conv1.out_channels,
                             block.conv1.stride, copy.deepcopy(block.downsample))
            new.load_state_dict(block.state_dict())
            blocks.append(new)
        setattr(twin, name, nn.Sequential(*blocks))
    for name in {"layer1", "layer2", "layer3", "layer4"} - set(stages):
        setattr(twin, name, nn.Identity())
    twin.fc = copy.deepcopy(model.fc)
    return twin.to(next(model.parameters()).device).eval()


def with_random_statistics(model: nn.Module, seed: int = 0, bn_eps: float | None = None
                           ) -> nn.Module:
    """``model`` in eval mode with its BatchNorm statistics and affine parameters drawn at
    random (so that folded convolutions get biases and outputs have both signs): the random
    weights a cross-check needs to tell rules apart. ``bn_eps`` replaces BatchNorm's eps."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1, generator=generator)
                m.running_var.uniform_(0.5, 2, generator=generator)
                m.weight.uniform_(0.5, 1.5, generator=generator)
                m.bias.normal_(0, 0.1, generator=generator)
                if bn_eps is not None:
                    m.eps = bn_eps
    return model.eval()


def densenet_forward_of_modules(name: str, module: nn.Module) -> dict | None:
    """A zennit ``AttributeCanonizer`` map: a torchvision DenseNet's forward with its final
    ReLU, pooling and flatten as modules (zennit hooks modules only; ``DenseNet.forward``
    calls them as functions)."""
    import torchvision

    if not isinstance(module, torchvision.models.DenseNet):
        return None

    def forward(self, x):
        return self.classifier(self.head_flatten(self.head_pool(self.head_relu(self.features(x)))))

    return {"forward": forward.__get__(module), "head_relu": nn.ReLU(),
            "head_pool": nn.AdaptiveAvgPool2d(1), "head_flatten": nn.Flatten()}


def zennit_canonizers(model: nn.Module, pooling_as_modules: bool = True) -> list:
    """zennit's canonizers for torchvision's ResNets and VGGs; for a DenseNet (zennit has
    none) the merges of the BatchNorms that directly follow a convolution (``norm0`` after
    ``conv0``, each layer's ``norm2`` after its ``conv1``) and, with ``pooling_as_modules``,
    the forward of modules."""
    import torchvision
    from zennit.canonizers import AttributeCanonizer, NamedMergeBatchNorm
    from zennit.torchvision import ResNetCanonizer, VGGCanonizer

    if isinstance(model, torchvision.models.ResNet):
        return [ResNetCanonizer()]
    if isinstance(model, torchvision.models.VGG):
        return [VGGCanonizer()]
    pairs = [(("features.conv0",), "features.norm0")]
    pairs += [((f"{name}.conv1",), f"{name}.norm2") for name, m in model.named_modules()
              if hasattr(m, "norm2") and hasattr(m, "conv1")]
    return [NamedMergeBatchNorm(pairs)] + ([AttributeCanonizer(densenet_forward_of_modules)]
                                           if pooling_as_modules else [])


def zennit_lrp(model: nn.Module, x: torch.Tensor, target: torch.Tensor,
               pooling_as_modules: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """zennit's ``EpsilonGammaBox`` (z-box on [-1, 1], gamma, epsilon) with the canonizers of
    ``zennit_canonizers``, from the target's logit: the relevance and zennit's output."""
    from zennit.attribution import Gradient
    from zennit.composites import EpsilonGammaBox

    composite = EpsilonGammaBox(low=-1.0, high=1.0,
                                canonizers=zennit_canonizers(model, pooling_as_modules))
    with torch.no_grad():
        classes = model(x[:1]).shape[1]
    chosen = torch.eye(classes, dtype=x.dtype, device=x.device)[target]
    with Gradient(model=model, composite=composite) as attributor:
        output, relevance = attributor(x.clone(), lambda output: output * chosen)
    return relevance, output


def _zennit_lrp(model, x, target, layer):
    return zennit_lrp(torchvision_twin(model), x, target)[0]


def unshared_relus(model: nn.Module) -> nn.Module:
    """A copy of a torchvision ResNet of basic blocks whose blocks apply a second ReLU module
    at their end: Captum's DeepLift refuses a ReLU module that runs twice in one forward."""
    import copy

    from torchvision.models.resnet import BasicBlock

    model = copy.deepcopy(torchvision_twin(model))
    for block in model.modules():
        if isinstance(block, BasicBlock):
            block.relu_out = nn.ReLU()

            def forward(x, b=block):
                identity = x if b.downsample is None else b.downsample(x)
                out = b.bn2(b.conv2(b.relu(b.bn1(b.conv1(x)))))
                return b.relu_out(out + identity)

            block.forward = forward
    return model


def _deeplift(model, x, target, layer):
    from gandissect.attribute import DeepLift

    return DeepLift(model).attribute(x, target=target, baselines=0.0)


def _captum_deeplift(model, x, target, layer):
    import captum.attr

    return captum.attr.DeepLift(unshared_relus(model)).attribute(x, target=target,
                                                                baselines=0.0)


SEED = 5


def _references(x: torch.Tensor) -> torch.Tensor:
    """Four random baseline images for GradientShap, the same on both sides."""
    generator = torch.Generator().manual_seed(SEED)
    return (torch.rand(4, *x.shape[1:], generator=generator) * 2 - 1).to(x)


def _gradient_shap(model, x, target, layer):
    from gandissect.attribute import GradientShap

    return GradientShap(model).attribute(x, target=target, baselines=_references(x),
                                         n_samples=8, stdevs=0.1, seed=SEED)


def _captum_gradient_shap(model, x, target, layer):
    import captum.attr
    import numpy as np

    np.random.seed(SEED)
    torch.manual_seed(SEED)
    return captum.attr.GradientShap(model).attribute(x, target=target,
                                                     baselines=_references(x),
                                                     n_samples=8, stdevs=0.1)


def _grid(x: torch.Tensor) -> torch.Tensor:
    from gandissect.attribute.perturbation import patch_grid

    return patch_grid(x.shape[-2], x.shape[-1], 8, 8, device=x.device)[None, None]


def _perturbation(cls: str, **options) -> Maps:
    def run(model, x, target, layer):
        from gandissect import attribute

        return getattr(attribute, cls)(model).attribute(x, target=target, feature_mask=_grid(x),
                                                        **options)
    return run


def _captum_feature_ablation(model, x, target, layer):
    import captum.attr

    return captum.attr.FeatureAblation(model).attribute(x, target=target, feature_mask=_grid(x),
                                                        perturbations_per_eval=16)


def _captum_sampled(cls: str) -> Maps:
    """Captum's KernelShap or Lime image by image, seeded as ours draws image i's coalitions
    (seed + i); Lime with our surrogate (ridge, alpha 1)."""
    def run(model, x, target, layer):
        import captum.attr

        maps = []
        for i in range(x.shape[0]):
            torch.manual_seed(SEED + i)
            if cls == "Lime":
                from captum._utils.models.linear_model import SkLearnRidge

                method = captum.attr.Lime(model, interpretable_model=SkLearnRidge(alpha=1.0))
            else:
                method = captum.attr.KernelShap(model)
            maps.append(method.attribute(x[i:i + 1], target=int(target[i]),
                                         feature_mask=_grid(x), n_samples=200,
                                         perturbations_per_eval=50))
        return torch.cat(maps)
    return run


STEPS = 16
PAIRS: dict[str, Pair] = {
    "saliency": Pair("captum.Saliency", "captum", _ours("saliency", abs=True),
                     _captum("Saliency", abs=True)),
    "input_x_gradient": Pair("captum.InputXGradient", "captum", _ours("input_x_gradient"),
                             _captum("InputXGradient")),
    "integrated_gradients": Pair(
        "captum.IntegratedGradients", "captum",
        _integrated_gradients("gauss_legendre", STEPS),
        _captum_integrated_gradients("gauss_legendre", STEPS), "Gauss-Legendre, 16 points"),
    "integrated_gradients_trapezoid": Pair(
        "captum.IntegratedGradients", "captum",
        _integrated_gradients("riemann_trapezoid", STEPS),
        _captum_integrated_gradients("riemann_trapezoid", STEPS),
        "trapezoid: Captum's weights sum to (n-1)/n, its map divided by that"),
    "guided_backprop": Pair("captum.GuidedBackprop", "captum", _ours("guided_backprop"),
                            _captum("GuidedBackprop")),
    "deconvolution": Pair("captum.Deconvolution", "captum", _ours("deconvolution"),
                          _captum("Deconvolution")),
    "occlusion": Pair("captum.Occlusion", "captum", _occlusion, _captum_occlusion,
                      "window 1/8 of the image every 1/16, zero baseline"),
    "gradcam": Pair("captum.LayerGradCam", "captum", _ours("gradcam"),
                    _captum_layer("LayerGradCam", relu_attributions=True)),
    "gradcam_plus_plus": Pair(
        "pytorch_grad_cam.GradCAMPlusPlus", "pytorch_grad_cam", _gradcam_plus_plus,
        _grad_cam_plus_plus_library, "the peer's formula with its eps = 1e-6 set to 0",
        peer_timed=_grad_cam_call("GradCAMPlusPlus")),
    "scorecam": Pair(
        "pytorch_grad_cam.ScoreCAM", "pytorch_grad_cam", _scorecam, _score_cam_library,
        "another definition (softmax over channels, aligned corners): correlation only",
        peer_timed=_grad_cam_call("ScoreCAM")),
    "eigencam": Pair("pytorch_grad_cam.EigenCAM", "pytorch_grad_cam", _eigencam,
                     _eigen_cam_library, "up to the sign LAPACK returns",
                     peer_timed=_grad_cam_call("EigenCAM"), sign_free=True),
    "guided_gradcam": Pair("captum.GuidedGradCam", "captum", _guided_gradcam,
                           _captum_guided_gradcam,
                           "bilinear upsampling on both sides (Captum's default: nearest)"),
    "lrp": Pair("zennit.EpsilonGammaBox", "zennit", _lrp, _zennit_lrp,
                "z-box, generalised gamma, epsilon on the logits; ResNet canonizer"),
    "deeplift": Pair("captum.DeepLift", "captum", _deeplift, _captum_deeplift,
                     "zero baseline; Captum on a copy with one ReLU module per use, and "
                     "without its max-pool rule after a ReLU module (ResNet stems)"),
    "gradient_shap": Pair("captum.GradientShap", "captum", _gradient_shap,
                          _captum_gradient_shap, "4 random baselines, 8 draws, the same seeds"),
    "feature_ablation": Pair("captum.FeatureAblation", "captum",
                             _perturbation("FeatureAblation", perturbations_per_eval=16),
                             _captum_feature_ablation, "an 8x8 patch grid"),
    "kernel_shap": Pair("captum.KernelShap", "captum",
                        _perturbation("KernelShap", n_samples=200, seed=SEED,
                                      internal_batch_size=50),
                        _captum_sampled("KernelShap"),
                        "8x8 grid, 200 coalitions, Captum's draws; ours sums exactly"),
    "lime": Pair("captum.Lime", "captum",
                 _perturbation("Lime", n_samples=200, seed=SEED, internal_batch_size=50),
                 _captum_sampled("Lime"), "8x8 grid, 200 samples, ridge surrogate on both"),
}
# Rows whose definitions differ: only the correlation is meaningful.
CORRELATION_ONLY = ("scorecam",)


def _timed(run: Maps, model, x, target, layer) -> tuple[torch.Tensor, float]:
    start = time.perf_counter()
    maps = run(model, x, target, layer)
    return maps.detach(), time.perf_counter() - start


def _pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image correlation; two constant maps (a random network's Grad-CAM can be all zero)
    correlate 1 when they are equal, 0 otherwise."""
    a = a.flatten(1).double()
    b = b.flatten(1).double()
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    norms = a.norm(dim=1) * b.norm(dim=1)
    r = (a * b).sum(1) / norms.clamp(min=1e-300)
    both_constant = (a.norm(dim=1) == 0) & (b.norm(dim=1) == 0)
    return torch.where(both_constant, 1.0, r)


def compare(pair: Pair, name: str, model: nn.Module, x: torch.Tensor, target: torch.Tensor,
            layer: str) -> Row:
    """One row: both maps, their difference and correlation, and the two times."""
    ours, ours_seconds = _timed(pair.ours, model, x, target, layer)
    theirs, peer_seconds = _timed(pair.peer_maps, model, x, target, layer)
    if pair.peer_timed is not None:
        _, peer_seconds = _timed(pair.peer_timed, model, x, target, layer)
    theirs = theirs.to(ours.device, ours.dtype).reshape(ours.shape)
    if pair.sign_free:
        sign = torch.sign((ours * theirs).flatten(1).sum(1))
        theirs = theirs * sign.view(-1, *[1] * (theirs.dim() - 1))
    scale = float(ours.abs().max()) or 1.0
    return Row(name, pair.peer, float((ours - theirs).abs().max()) / scale,
               float(_pearson(ours, theirs).min()), ours_seconds, peer_seconds, pair.note)


def crosscheck(model: nn.Module, images: torch.Tensor, target: torch.Tensor,
               layer: str = "layer4", methods: list[str] | None = None,
               repeats: int = 1) -> tuple[list[Row], dict[str, str]]:
    """Rows for ``methods`` (``PAIRS`` names; None: all) on a batch, and the rows skipped with
    the reason (a peer that is not installed). Times are the minimum over ``repeats`` calls,
    after one untimed call of each side."""
    rows, skipped = [], {}
    for name in methods or list(PAIRS):
        pair = PAIRS[name]
        if importlib.util.find_spec(pair.package) is None:
            skipped[name] = f"{pair.package} is not installed"
            continue
        compare(pair, name, model, images[:1], target[:1], layer)  # warm-up
        best = min((compare(pair, name, model, images, target, layer) for _ in range(repeats)),
                   key=lambda row: row.ours_seconds + row.peer_seconds)
        rows.append(best)
    return rows, skipped


def format_rows(rows: list[Row]) -> str:
    """The table: method, peer, max relative difference, min Pearson r, speed ratio, note."""
    lines = [f"{'method':32s}{'peer':34s}{'max diff':>10s}{'min r':>10s}{'ours/peer':>11s}  note"]
    for row in rows:
        diff = "-" if row.method in CORRELATION_ONLY else f"{row.max_difference:.1e}"
        lines.append(f"{row.method:32s}{row.peer:34s}{diff:>10s}{row.min_pearson:10.6f}"
                     f"{row.speed_ratio:11.2f}  {row.note}")
    return "\n".join(lines)
