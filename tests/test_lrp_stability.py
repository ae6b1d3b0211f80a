"""LRP's composite (z-box, generalised gamma, epsilon) on residual networks: the gamma rule
restated with loops, conservation and float32 / float64 agreement on the shipped classifier,
agreement with zennit's ``EpsilonGammaBox``, the input mapping the app and the command line
put in front of a classifier, and the error messages."""

from __future__ import annotations

import copy
import importlib
import re

import pytest
import torch
from torch import nn

from gandissect.attribute import LRP, UnsupportedModelError, lrp_rule
from gandissect.attribute.peers import torchvision_twin, with_random_statistics, zennit_lrp
from gandissect.models.inputs import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    normalize,
    preprocess_inside,
    rescale,
)

COMPOSITE = {"rule": "gamma", "first_rule": "zbox", "linear_rule": "epsilon"}


@pytest.fixture(scope="module")
def shipped():
    """The shipped classifier and 16 held-out SceneWorld scenes with their true classes."""
    from gandissect.models.registry import load_classifier
    from gandissect.world import render_batch
    from gandissect.world.dataset import image_to_tensor

    rendered = render_batch(1001, range(16), 64)
    return (load_classifier("sceneworld").eval(), image_to_tensor(rendered["image"]),
            torch.from_numpy(rendered["scene"] - 1))


def scores(model, x, target):
    with torch.no_grad():
        return model(x)[torch.arange(x.shape[0]), target]


def random_resnet18(num_classes=5, seed=0):
    """torchvision's ResNet-18 with random weights and BatchNorm statistics (so that the folded
    convolutions have biases and the blocks' outputs have both signs)."""
    import torchvision

    torch.manual_seed(seed)
    return with_random_statistics(torchvision.models.resnet18(num_classes=num_classes), seed)


# ------------------------------------------------------------------ the rule


def generalised_gamma_by_loops(conv, a, relevance, gamma, eps):
    """R_j = sum_k a_j w'_jk / (z'_k + eps sign z'_k) R_k, one output k at a time: for z_k > 0,
    w' = w + gamma w+ on a_j > 0 and w + gamma w- on a_j < 0 (bias b + gamma b+); for z_k < 0,
    the other way round (bias b + gamma b-); z_k = 0 passes nothing."""
    w, b = conv.weight.detach(), conv.bias.detach()
    _, c_in, height, width = a.shape
    c_out, _, kh, kw = w.shape
    pad, stride = conv.padding[0], conv.stride[0]
    out_h, out_w = relevance.shape[-2:]
    result = torch.zeros_like(a)
    for k in range(c_out):
        for oy in range(out_h):
            for ox in range(out_w):
                window = [(c, oy * stride - pad + dy, ox * stride - pad + dx, w[k, c, dy, dx])
                          for c in range(c_in) for dy in range(kh) for dx in range(kw)
                          if 0 <= oy * stride - pad + dy < height
                          and 0 <= ox * stride - pad + dx < width]
                z = b[k] + sum(a[0, c, y, x] * wt for c, y, x, wt in window)
                if z == 0:
                    continue
                sign = 1.0 if z > 0 else -1.0

                def modified(weight, value, sign=sign):
                    same = max(float(weight), 0.0) if value * sign > 0 else min(float(weight), 0.0)
                    return float(weight) + gamma * same

                bias = float(b[k]) + gamma * (max(float(b[k]), 0.0) if sign > 0
                                              else min(float(b[k]), 0.0))
                terms = [(c, y, x, a[0, c, y, x] * modified(wt, a[0, c, y, x]))
                         for c, y, x, wt in window]
                denominator = bias + sum(t for *_, t in terms)
                denominator = denominator + (eps if denominator >= 0 else -eps)
                for c, y, x, t in terms:
                    result[0, c, y, x] += t / denominator * relevance[0, k, oy, ox]
    return result


def test_gamma_is_the_generalised_rule_by_loops():
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, 3, stride=2, padding=1).double()
    a = torch.randn(1, 2, 5, 5, dtype=torch.float64)  # both signs in, both signs out
    with torch.no_grad():
        z = conv(a)
    assert (z > 0).any() and (z < 0).any()
    relevance = torch.randn_like(z)
    fast = lrp_rule(conv, a, relevance, "gamma", epsilon=1e-3, gamma=0.3)
    slow = generalised_gamma_by_loops(conv, a, relevance, gamma=0.3, eps=1e-3)
    assert torch.allclose(fast, slow, rtol=1e-10, atol=1e-12)
    # after a ReLU (inputs >= 0) a positive output is spread as by the original gamma rule
    plain = a.clamp(min=0)
    with torch.no_grad():
        up = (conv(plain) > 0).double()
    lifted = copy.deepcopy(conv)
    with torch.no_grad():
        lifted.weight += 0.3 * lifted.weight.clamp(min=0)
        lifted.bias += 0.3 * lifted.bias.clamp(min=0)
    original = lrp_rule(lifted, plain, relevance * up, "epsilon", epsilon=1e-3)
    assert torch.allclose(lrp_rule(conv, plain, relevance * up, "gamma", 1e-3, 0.3), original,
                          rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------ the shipped classifier


def test_composite_conserves_relevance_on_the_shipped_classifier(shipped):
    """With the biases moved out (BatchNorm shifts and fc's bias set to 0, the weights as
    shipped), nothing absorbs relevance: the input's relevance sums to the logit within 1e-4,
    and it does not get there by cancelling large relevances of both signs (the sum of
    absolute relevances stays below twice the logit; the original gamma rule gave 300x)."""
    model, x, target = shipped
    unbiased = copy.deepcopy(model)
    with torch.no_grad():
        for m in unbiased.modules():
            if isinstance(m, nn.BatchNorm2d):  # shift = bias - mean * scale = 0
                m.bias.copy_(m.running_mean * m.weight * (m.running_var + m.eps).rsqrt())
        unbiased.fc.bias.zero_()
    relevance = LRP(unbiased, **COMPOSITE).attribute(x, target).flatten(1)
    logit = scores(unbiased, x, target)
    assert torch.allclose(relevance.sum(1), logit, rtol=1e-4, atol=0)
    assert (relevance.abs().sum(1) < 2 * logit.abs()).all()


def test_float32_and_float64_agree_on_the_shipped_classifier(shipped):
    model, x, target = shipped
    single = LRP(model, **COMPOSITE).attribute(x, target).double().flatten(1)
    double = LRP(copy.deepcopy(model).double(), **COMPOSITE).attribute(x.double(), target)
    double = double.flatten(1)
    assert ((single - double).norm(dim=1) / double.norm(dim=1)).max() < 1e-3
    # the biases absorb part of the logit (as in zennit), but never more than all of it here
    ratio = double.sum(1) / scores(model, x, target).double()
    assert (ratio.abs() < 1).all()


# ------------------------------------------------------------------ zennit, the peer


def zennit_composite(model, x, target):
    """zennit's EpsilonGammaBox (z-box first, gamma in convolutions, epsilon in linear
    layers) with its ResNet canonizer, starting from the target's logit."""
    return zennit_lrp(model, x, target)[0]


def pearson_per_image(a, b):
    return torch.stack([torch.corrcoef(torch.stack([p, q]))[0, 1]
                        for p, q in zip(a.flatten(1), b.flatten(1))])


def in_torchvision_blocks(model):
    """The shipped classifier rebuilt from torchvision's BasicBlock (zennit's ResNet
    canonizer recognises those), with the same weights."""
    return torchvision_twin(model)


def test_composite_matches_zennit_on_resnet18():
    pytest.importorskip("zennit")
    model = random_resnet18()
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1)) * 2 - 1
    target = torch.tensor([1, 3])
    ours = LRP(model, **COMPOSITE).attribute(x, target)
    peer = zennit_composite(model, x, target)
    assert (pearson_per_image(ours, peer) >= 0.99).all()
    assert torch.allclose(ours.flatten(1).sum(1), peer.flatten(1).sum(1), rtol=1e-3, atol=1e-4)


def test_composite_matches_zennit_on_the_shipped_classifier(shipped):
    pytest.importorskip("zennit")
    model, x, target = shipped
    x, target = x[:8], target[:8]
    rebuilt = in_torchvision_blocks(model)
    with torch.no_grad():
        assert torch.allclose(rebuilt(x), model(x), atol=1e-5)
    ours = LRP(model, **COMPOSITE).attribute(x, target)
    peer = zennit_composite(rebuilt, x, target)
    assert (pearson_per_image(ours, peer) >= 0.99).all()
    assert torch.allclose(ours.flatten(1).sum(1), peer.flatten(1).sum(1), rtol=1e-3, atol=1e-4)


# ------------------------------------------------------------------ declared preprocessing


def test_lrp_honours_the_declared_normalisation_as_the_app_loads_it(tmp_path):
    """A torchvision classifier in the app (ImageNet normalisation as a forward pre-hook):
    LRP of [-1, 1] images equals LRP of the bare model on the normalised images with the
    normalised z-box bounds."""
    from gandissect.app.explain import ClassifierModels

    saved = random_resnet18(num_classes=3)
    path = tmp_path / "r18.pth"
    torch.save(saved.state_dict(), path)
    spec = "torchvision:resnet18"
    models = ClassifierModels([spec], weights={spec: str(path)})
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(2)) * 2 - 1
    mapping = normalize(IMAGENET_MEAN, IMAGENET_STD)
    low, high = mapping(-torch.ones(1, 3, 1, 1)), mapping(torch.ones(1, 3, 1, 1))
    expected = LRP(saved, **COMPOSITE, low=low, high=high).attribute(mapping(x), [2, 0])
    in_app = LRP(models.get(spec).model, **COMPOSITE).attribute(x, [2, 0])
    assert torch.allclose(in_app, expected, rtol=1e-4, atol=1e-6 * expected.abs().max())
    explained = models.explain(spec, x[1], "lrp", "layer4", 0)
    assert torch.allclose(explained.pixel_map, expected[1].sum(0), rtol=1e-4,
                          atol=1e-6 * expected.abs().max())


def test_lrp_maps_the_z_box_bounds_through_a_declared_input_range(shipped):
    model, x, target = shipped
    x, target = x[:2], target[:2]
    mapped = preprocess_inside(copy.deepcopy(model), rescale(0.0, 1.0))
    expected = LRP(model, **COMPOSITE, low=0.0, high=1.0).attribute(rescale(0.0, 1.0)(x), target)
    assert torch.allclose(LRP(mapped, **COMPOSITE).attribute(x, target), expected,
                          rtol=1e-4, atol=1e-6 * expected.abs().max())


# ------------------------------------------------------------------ error messages


def named_modules_exist(message):
    for path in re.findall(r"gandissect(?:\.\w+)+", message):
        importlib.import_module(path)
    return True


def test_lrp_errors_name_real_layers_and_modules():
    class FunctionalReLU(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(4, 5), nn.Linear(5, 3)

        def forward(self, x):
            return self.fc2(torch.relu(self.fc1(x)))

    with pytest.raises(UnsupportedModelError) as caught:
        LRP(FunctionalReLU())
    message = str(caught.value)
    assert "''" not in message and "FunctionalReLU" in message and named_modules_exist(message)
    with pytest.raises(UnsupportedModelError) as caught:
        LRP(nn.Sequential(nn.Linear(4, 5), nn.Sequential(nn.GELU(), nn.Linear(5, 2))))
    message = str(caught.value)
    assert "'1.0' (GELU)" in message and named_modules_exist(message)
    # a pre-hook that is no element-wise mapping is refused, saying so
    pooled = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    pooled.register_forward_pre_hook(lambda _, inputs: inputs[0][:, :4])
    with pytest.raises(UnsupportedModelError, match="pre-hook .* changes the input's shape"):
        LRP(pooled).attribute(torch.randn(2, 8), 0)
