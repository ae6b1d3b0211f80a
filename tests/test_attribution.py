"""Attribution methods against their definitions, restated the slow way on tiny models.

Tiny models run in float64 so that the fast paths and the loops can be compared tightly. One
test at the end runs every method on the shipped scene classifier.
"""

import copy
from collections import OrderedDict

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import Tripwire, hook_count
from torch import nn

from gandissect.attribute import (
    CAM,
    LRP,
    Deconvolution,
    GradCAM,
    GradCAMPlusPlus,
    GuidedBackprop,
    InputXGradient,
    IntegratedGradients,
    Occlusion,
    Saliency,
    ScoreCAM,
    SmoothGrad,
    UnsupportedModelError,
    fold_batchnorm,
    lrp_rule,
    resolve_target,
)
from gandissect.attribute.occlusion import window_starts
from gandissect.models.classifier import BasicBlock
from gandissect.visualize import overlay

TARGET = [1, 2]


def seeded(build, seed: int = 0):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return build()


def tiny_cnn(seed: int = 0) -> nn.Sequential:
    """2 convs (in-place ReLUs) + global average pooling + linear: 3 classes on 8 x 8 images."""
    return seeded(lambda: nn.Sequential(OrderedDict(
        conv1=Tripwire(3, 4, 3, padding=1), relu1=nn.ReLU(inplace=True),
        conv2=nn.Conv2d(4, 5, 3, padding=1), relu2=nn.ReLU(inplace=True),
        pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(), fc=nn.Linear(5, 3),
    )).double().eval(), seed)


class MLP(nn.Module):
    """Linear-ReLU-Linear-ReLU-Linear reusing one in-place ReLU module (as BasicBlock does)."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(4, 6), nn.Linear(6, 5), nn.Linear(5, 3)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.fc3(self.relu(self.fc2(self.relu(self.fc1(x)))))


def images(seed: int = 1, n: int = 2) -> torch.Tensor:
    return torch.randn(n, 3, 8, 8, generator=torch.Generator().manual_seed(seed),
                       dtype=torch.float64)


def vectors(seed: int = 1, n: int = 2, d: int = 4) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def grad_of(model, x, target):
    """Plain autograd gradient of the chosen class score, per sample."""
    x = x.detach().requires_grad_(True)
    scores = model(x)[torch.arange(x.shape[0]), torch.as_tensor(target)]
    return torch.autograd.grad(scores.sum(), x)[0]


def model_state(model: nn.Module):
    return ([m.training for m in model.modules()], [p.requires_grad for p in model.parameters()],
            [m.inplace for m in model.modules() if isinstance(m, nn.ReLU)], hook_count(model))


def close(a, b, tol=1e-9):
    """Equal up to ``tol`` relative to the largest magnitude of ``b``."""
    return torch.allclose(a, b, rtol=tol, atol=tol * float(b.abs().max()))


# ------------------------------------------------------------------ gradient methods


def test_saliency_matches_finite_differences():
    model, x = tiny_cnn(), images()
    fast = Saliency(model).attribute(x, target=TARGET)
    h, slow = 1e-6, torch.zeros_like(x)
    with torch.no_grad():
        for index in np.ndindex(*x.shape[1:]):
            up, down = x.clone(), x.clone()
            up[(slice(None), *index)] += h
            down[(slice(None), *index)] -= h
            diff = model(up) - model(down)
            slow[(slice(None), *index)] = diff[torch.arange(2), torch.tensor(TARGET)] / (2 * h)
    assert close(fast, slow, 1e-5)
    assert torch.equal(Saliency(model).attribute(x, TARGET, abs=True), fast.abs())
    assert (fast < 0).any()  # raw signed by default


def test_input_x_gradient_is_input_times_gradient():
    model, x = tiny_cnn(), images()
    assert close(InputXGradient(model).attribute(x, target=TARGET), x * grad_of(model, x, TARGET))


def test_smoothgrad_is_mean_gradient_at_the_same_noise_draws():
    model, x = tiny_cnn(), images()
    noise = SmoothGrad.noise(x, n_samples=7, noise_level=0.2, seed=5)
    ranges = (x.flatten(1).max(1).values - x.flatten(1).min(1).values)
    assert abs(float(noise.std() / (0.2 * ranges.mean())) - 1) < 0.2  # std relative to range
    slow = torch.stack([grad_of(model, x + noise[i], TARGET) for i in range(7)]).mean(0)
    method = SmoothGrad(model)
    for chunk in (None, 3, 5):
        fast = method.attribute(x, TARGET, n_samples=7, noise_level=0.2, seed=5,
                                internal_batch_size=chunk)
        assert close(fast, slow)
    other_seed = method.attribute(x, TARGET, n_samples=7, noise_level=0.2, seed=6)
    assert not close(other_seed, slow, 1e-3)


@pytest.mark.parametrize("method", ["riemann_trapezoid", "gauss_legendre"])
def test_integrated_gradients_completeness(method):
    model, x = tiny_cnn(), images()
    baseline = 0.1 * images(seed=2)
    attributions, error = IntegratedGradients(model).attribute(
        x, TARGET, baseline=baseline, steps=200, method=method, internal_batch_size=64,
        return_error=True)
    with torch.no_grad():
        rows = torch.arange(2), torch.tensor(TARGET)
        gap = model(x)[rows] - model(baseline)[rows]
    assert torch.allclose(attributions.flatten(1).sum(1) - gap, error)
    assert (error.abs() < 1e-2 * gap.abs()).all()
    unbatched = IntegratedGradients(model).attribute(x, TARGET, baseline=baseline, steps=200,
                                                     method=method)
    assert close(attributions, unbatched)


def test_integrated_gradients_of_a_linear_model_is_delta_times_weight():
    model = seeded(lambda: nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 3)).double())
    x, baseline = images(), images(seed=3)
    weights = model[1].weight[TARGET].reshape(2, 3, 8, 8).detach()
    for method in ("riemann_trapezoid", "gauss_legendre"):
        ig = IntegratedGradients(model).attribute(x, TARGET, baseline=baseline, steps=5,
                                                  method=method)
        assert close(ig, (x - baseline) * weights, 1e-12)
    zero_baseline = IntegratedGradients(model).attribute(x, TARGET, steps=2)
    assert close(zero_baseline, x * weights, 1e-12)


# ------------------------------------------------------------------ modified ReLU backward


def manual_modified_gradient(model: MLP, x: torch.Tensor, target, guided: bool):
    """Backward through the MLP by hand: at a ReLU with input z, the upstream gradient g becomes
    g * (g > 0) * (z > 0) (guided) or g * (g > 0) (deconvolution)."""
    out = torch.zeros_like(x)
    weights = [m.weight.detach() for m in (model.fc1, model.fc2, model.fc3)]
    biases = [m.bias.detach() for m in (model.fc1, model.fc2, model.fc3)]
    for n in range(x.shape[0]):
        z1 = weights[0] @ x[n] + biases[0]
        z2 = weights[1] @ z1.clamp(min=0) + biases[1]
        g = weights[2][target[n]].clone()
        for z, w in ((z2, weights[1]), (z1, weights[0])):
            g = torch.tensor([g[j] if g[j] > 0 and (z[j] > 0 or not guided) else 0.0
                              for j in range(len(g))], dtype=x.dtype)
            g = w.T @ g
        out[n] = g
    return out


@pytest.mark.parametrize("cls, guided", [(GuidedBackprop, True), (Deconvolution, False)])
def test_guided_backprop_and_deconvolution_follow_their_relu_rule(cls, guided):
    model = seeded(lambda: MLP().double())
    x = vectors(n=4)
    target = [0, 1, 2, 1]
    fast = cls(model).attribute(x, target=target)
    assert close(fast, manual_modified_gradient(model, x, target, guided))
    assert not close(fast, grad_of(model, x, target), 1e-6)  # the rule changed something
    assert model.relu.inplace and hook_count(model) == 0


def test_guided_backprop_refuses_models_without_relu_modules():
    model = nn.Sequential(nn.Linear(4, 3)).double()
    with pytest.raises(ValueError, match="nn.ReLU"):
        GuidedBackprop(model).attribute(vectors(), target=0)


# ------------------------------------------------------------------ occlusion


def test_occlusion_by_explicit_loop_over_windows():
    model, x = tiny_cnn(), images()
    patch, stride, value = 3, 2, 0.5
    starts = list(range(0, 8 - patch + 1, stride))
    starts.append(8 - patch)  # one window flush with the far edge: 0, 2, 4, 5
    assert window_starts(8, patch, stride) == starts
    drops, counts = torch.zeros(2, 8, 8, dtype=x.dtype), torch.zeros(8, 8, dtype=x.dtype)
    with torch.no_grad():
        for n in range(2):
            base = model(x[n:n + 1])[0, TARGET[n]]
            for top in starts:
                for left in starts:
                    occluded = x[n:n + 1].clone()
                    occluded[..., top:top + patch, left:left + patch] = value
                    drops[n, top:top + patch, left:left + patch] += \
                        base - model(occluded)[0, TARGET[n]]
                    if n == 0:
                        counts[top:top + patch, left:left + patch] += 1
    slow = (drops / counts)[:, None].expand(2, 3, 8, 8)
    for chunk in (None, 7):
        fast = Occlusion(model).attribute(x, TARGET, patch=patch, stride=stride, baseline=value,
                                          internal_batch_size=chunk)
        assert fast.shape == x.shape and close(fast, slow)


# ------------------------------------------------------------------ class activation maps


def feature_maps(model, x):
    with torch.no_grad():
        return model[:4](x.clone())


def layer_gradient(model, x, target):
    maps = feature_maps(model, x).requires_grad_(True)
    scores = model[4:](maps)[torch.arange(x.shape[0]), torch.as_tensor(target)]
    return maps.detach(), torch.autograd.grad(scores.sum(), maps)[0]


def test_cam_is_sum_of_maps_weighted_by_fc():
    model, x = tiny_cnn(), images()
    maps, weight = feature_maps(model, x), model.fc.weight.detach()
    slow = torch.zeros(2, 8, 8, dtype=x.dtype)
    for n in range(2):
        for k in range(maps.shape[1]):
            slow[n] += weight[TARGET[n], k] * maps[n, k]
    assert close(CAM(model, "relu2", "fc").attribute(x, TARGET), slow)


def test_cam_refuses_models_it_does_not_apply_to():
    model = tiny_cnn()
    with pytest.raises(ValueError, match="CAM needs"):
        CAM(model, "relu1", "fc").attribute(images(), 0)  # 4 channels, fc reads 5
    shifted = copy.deepcopy(model)
    shifted.pool = nn.AdaptiveMaxPool2d(1)
    with pytest.raises(ValueError, match="CAM does not apply"):
        CAM(shifted, "relu2", "fc").attribute(images(), 0)
    with pytest.raises(TypeError):
        CAM(model, "relu2", "fc").attribute(images(), lambda out: out[:, 0])


def test_grad_cam_by_loop_and_equal_to_cam_for_gap_linear():
    model, x = tiny_cnn(), images()
    maps, grad = layer_gradient(model, x, TARGET)
    channels, h, w = maps.shape[1:]
    alpha = torch.tensor([[sum(float(grad[n, k, i, j]) for i in range(h) for j in range(w))
                           / (h * w) for k in range(channels)] for n in range(2)],
                         dtype=x.dtype)
    slow = torch.zeros(2, h, w, dtype=x.dtype)
    for n in range(2):
        for k in range(channels):
            slow[n] += alpha[n, k] * maps[n, k]
    fast = GradCAM(model, "relu2").attribute(x, TARGET)
    assert close(fast, slow.clamp(min=0))
    assert close(GradCAM(model, "relu2").attribute(x, TARGET, relu=False), slow)
    cam = CAM(model, "relu2", "fc").attribute(x, TARGET)
    assert close(fast, cam.clamp(min=0) / (h * w))  # the positive factor is 1 / (h w)


def test_grad_cam_plus_plus_by_loop():
    model, x = tiny_cnn(), images()
    maps, g = layer_gradient(model, x, TARGET)
    channels, h, w = maps.shape[1:]
    slow = torch.zeros(2, h, w, dtype=x.dtype)
    for n in range(2):
        for k in range(channels):
            total = float(maps[n, k].sum())
            weight = 0.0
            for i in range(h):
                for j in range(w):
                    gij = float(g[n, k, i, j])
                    denominator = 2 * gij ** 2 + total * gij ** 3
                    alpha = gij ** 2 / denominator if denominator != 0 else 0.0
                    weight += alpha * max(gij, 0.0)
            slow[n] += weight * maps[n, k]
    assert close(GradCAMPlusPlus(model, "relu2").attribute(x, TARGET), slow.clamp(min=0))


def test_score_cam_by_loop_with_dead_channels():
    model, x = tiny_cnn(), images()
    with torch.no_grad():  # channel 0 of relu2 is all zero: must cost nothing and not crash
        model.conv2.weight[0] = 0
        model.conv2.bias[0] = -1
    maps = feature_maps(model, x)
    assert (maps[:, 0] == 0).all()
    slow = torch.zeros(2, 8, 8, dtype=x.dtype)
    with torch.no_grad():
        for n in range(2):
            for k in range(maps.shape[1]):
                up = F.interpolate(maps[n, k][None, None], size=(8, 8), mode="bilinear",
                                   align_corners=False)
                if up.max() == up.min():
                    continue
                mask = (up - up.min()) / (up.max() - up.min())
                score = model(x[n:n + 1] * mask).softmax(1)[0, TARGET[n]]
                slow[n] += score * maps[n, k]
    for chunk in (None, 3):
        fast = ScoreCAM(model, "relu2").attribute(x, TARGET, internal_batch_size=chunk)
        assert close(fast, slow.clamp(min=0))
    dead = copy.deepcopy(model)
    with torch.no_grad():
        dead.conv2.weight.zero_()
        dead.conv2.bias.fill_(-1)
    empty = ScoreCAM(dead, "relu2").attribute(x, TARGET)
    assert torch.equal(empty, torch.zeros_like(empty))
    picture = overlay(x[0], empty, mode="signed")
    assert picture.dtype == np.uint8 and np.isfinite(picture).all()


# ------------------------------------------------------------------ LRP


def mlp2(seed=0, zero_bias=False) -> nn.Sequential:
    model = seeded(lambda: nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3)), seed)
    if zero_bias:
        with torch.no_grad():
            model[0].bias.zero_()
            model[2].bias.zero_()
    return model.double().eval()


def lrp_by_formula(model, x, target, eps, first="epsilon", gamma=0.0, low=None, high=None):
    """R_j = sum_k a_j w'_jk / (z'_k + eps sign z'_k) R_k, layer by layer, in loops (w' = w +
    gamma w+); the first layer optionally by the z^B rule."""
    (w1, b1), (w2, b2) = [(m.weight.detach(), m.bias.detach()) for m in (model[0], model[2])]
    out = torch.zeros_like(x)
    for n in range(x.shape[0]):
        a0 = x[n]
        a1 = (w1 @ a0 + b1).clamp(min=0)
        z2 = w2 @ a1 + b2
        r2 = torch.zeros(3, dtype=x.dtype)
        r2[target[n]] = z2[target[n]]
        w2g, b2g = w2 + gamma * w2.clamp(min=0), b2 + gamma * b2.clamp(min=0)
        z2g = w2g @ a1 + b2g
        r1 = torch.zeros(5, dtype=x.dtype)
        for j in range(5):
            for k in range(3):
                s = eps if z2g[k] >= 0 else -eps
                r1[j] += a1[j] * w2g[k, j] / (z2g[k] + s) * r2[k]
        for i in range(4):
            for j in range(5):
                if first == "zbox":
                    wp, wm = max(float(w1[j, i]), 0.0), min(float(w1[j, i]), 0.0)
                    zb = sum(a0[m] * w1[j, m] - low * max(float(w1[j, m]), 0.0)
                             - high * min(float(w1[j, m]), 0.0) for m in range(4))
                    s = eps if zb >= 0 else -eps
                    out[n, i] += (a0[i] * w1[j, i] - low * wp - high * wm) / (zb + s) * r1[j]
                else:
                    w1g = w1 + gamma * w1.clamp(min=0)
                    z1g = w1g @ a0 + b1 + gamma * b1.clamp(min=0)
                    s = eps if z1g[j] >= 0 else -eps
                    out[n, i] += a0[i] * w1g[j, i] / (z1g[j] + s) * r1[j]
    return out


def test_lrp_epsilon_by_explicit_formula():
    model, x = mlp2(), vectors(n=3)
    target = [0, 2, 1]
    fast = LRP(model, rule="epsilon", epsilon=0.1).attribute(x, target)
    assert close(fast, lrp_by_formula(model, x, target, eps=0.1))


def test_lrp_epsilon_conserves_relevance_without_biases():
    model, x = mlp2(zero_bias=True), vectors(n=3)
    target = [0, 2, 1]
    relevance = LRP(model, epsilon=1e-12).attribute(x, target)
    with torch.no_grad():
        scores = model(x)[torch.arange(3), torch.tensor(target)]
    assert close(relevance.sum(1), scores, 1e-8)


def test_lrp_gamma_rule_by_formula():
    model, x = mlp2(seed=3), vectors(n=3).abs()
    target = [1, 0, 2]
    fast = LRP(model, rule="gamma", gamma=0.5, epsilon=1e-9).attribute(x, target)
    assert close(fast, lrp_by_formula(model, x, target, eps=1e-9, gamma=0.5), 1e-7)


def test_lrp_zbox_first_layer_by_formula():
    model, x = mlp2(seed=4), vectors(n=3).clamp(-1, 2)
    target = [2, 2, 0]
    method = LRP(model, rule="epsilon", first_rule="zbox", epsilon=0.01, low=-1.0, high=2.0)
    slow = lrp_by_formula(model, x, target, eps=0.01, first="zbox", low=-1.0, high=2.0)
    assert close(method.attribute(x, target), slow, 1e-7)


def test_batchnorm_folding_keeps_outputs_and_the_original():
    def build():
        model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                              BasicBlock(4, 6, stride=2), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                              nn.Linear(6, 2))
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2)
                m.weight.data.normal_()
                m.bias.data.normal_()
        return model.double().eval()

    model, x = seeded(build), images()
    state = copy.deepcopy(model.state_dict())
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    with torch.no_grad():
        assert close(folded(x), model(x), 1e-10)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())


def basic_block_net() -> nn.Sequential:
    def build():
        model = nn.Sequential(BasicBlock(3, 3), BasicBlock(3, 5, stride=2))
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):  # zero mean and shift: folds to zero biases
                m.weight.data.uniform_(0.5, 1.5)
        return model.double().eval()
    return seeded(build, 2)


def test_lrp_residual_blocks_conserve_and_split_by_contribution():
    model, x = basic_block_net(), images()
    every_output = lambda out: out.flatten(1).sum(1)  # noqa: E731 -- R_out = the output itself
    relevance = LRP(model, epsilon=1e-12).attribute(x, every_output)
    with torch.no_grad():
        total = model(x).flatten(1).sum(1)
    assert close(relevance.flatten(1).sum(1), total, 1e-7)
    # the identity block alone, by hand: split R_s into z / s and x / s shares
    block = fold_batchnorm(model[0])
    with torch.no_grad():
        y1 = block.relu(block.conv1(x))
        z = block.conv2(y1)
        s = z + x
        r_s = s.clamp(min=0)  # R_out = output, through the final ReLU unchanged
        r_z, r_x = z / s * r_s, x / s * r_s
    by_hand = lrp_rule(block.conv1, x, lrp_rule(block.conv2, y1, r_z, "epsilon", 1e-12),
                       "epsilon", 1e-12) + r_x
    fast = LRP(model[0], epsilon=1e-12).attribute(x, every_output)
    assert close(fast, by_hand, 1e-8)


def test_lrp_refuses_unsupported_architectures():
    class FunctionalReLU(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(4, 5), nn.Linear(5, 3)

        def forward(self, x):
            return self.fc2(F.relu(self.fc1(x)))

    with pytest.raises(UnsupportedModelError, match="does not support"):
        LRP(FunctionalReLU())

    class Shifted(nn.Sequential):
        def forward(self, x):
            return super().forward(x) + 1  # an operation the layer sequence cannot see

    with pytest.raises(UnsupportedModelError, match="does not reproduce"):
        LRP(Shifted(nn.Linear(4, 3))).attribute(vectors().float(), 0)
    with pytest.raises(ValueError, match="unknown LRP rule"):
        LRP(mlp2(), rule="alpha-beta")


# ------------------------------------------------------------------ shared behaviour


def all_methods(model):
    """Every method on the tiny CNN, with cheap options, as (name, method, options)."""
    return [
        ("saliency", Saliency(model), {}),
        ("input_x_gradient", InputXGradient(model), {}),
        ("smoothgrad", SmoothGrad(model), {"n_samples": 3, "internal_batch_size": 2}),
        ("integrated_gradients", IntegratedGradients(model), {"steps": 8}),
        ("guided", GuidedBackprop(model), {}),
        ("deconvolution", Deconvolution(model), {}),
        ("occlusion", Occlusion(model), {"patch": 4, "stride": 4}),
        ("cam", CAM(model, "relu2", "fc"), {}),
        ("grad_cam", GradCAM(model, "relu2"), {}),
        ("grad_cam_pp", GradCAMPlusPlus(model, "relu2"), {}),
        ("score_cam", ScoreCAM(model, "relu2"), {"internal_batch_size": 4}),
        ("lrp", LRP(model, first_rule="zbox", low=-4, high=4), {}),
    ]


def test_hooks_and_model_state_restored_after_an_exception_in_the_forward():
    model, x = tiny_cnn(), images()
    model.train()
    model.fc.weight.requires_grad_(False)
    before = model_state(model)
    for name, method, options in all_methods(model):
        model.conv1.armed = True
        try:
            with pytest.raises(RuntimeError, match="tripwire"):
                method.attribute(x, target=TARGET, **options)
        finally:
            model.conv1.armed = False
        assert model_state(model) == before, name
    assert model.training and not model.fc.weight.requires_grad and model.relu1.inplace


@pytest.mark.parametrize("name", [m[0] for m in all_methods(tiny_cnn())])
def test_targets_as_int_list_and_callable_agree(name):
    model, x = tiny_cnn(), images()
    _, method, options = next(m for m in all_methods(model) if m[0] == name)
    by_int = method.attribute(x, target=1, **options)
    assert close(method.attribute(x, target=[1, 1], **options), by_int)
    assert close(method.attribute(x, target=torch.tensor([1, 1]), **options), by_int)
    if name != "cam":  # CAM reads fc's weights: it needs class indices
        assert close(method.attribute(x, target=lambda out: out[:, 1], **options), by_int)
    per_sample = method.attribute(x, target=TARGET, **options)
    assert close(per_sample[0], by_int[0])  # sample 0 asks for class 1 in both


def test_target_helper_checks_its_input():
    output = torch.arange(6.0).reshape(2, 3)
    assert resolve_target(output, [2, 0]).tolist() == [2.0, 3.0]
    assert resolve_target(output, 1, owners=torch.tensor([1, 1])).tolist() == [1.0, 4.0]
    rows = torch.arange(9.0).reshape(3, 3)  # copies of samples 1, 0, 1
    assert resolve_target(rows, torch.tensor([2, 0]), owners=torch.tensor([1, 0, 1])
                          ).tolist() == [0.0, 5.0, 6.0]
    with pytest.raises(ValueError, match="3 targets for a batch of 2"):
        resolve_target(output, [0, 1, 2])
    with pytest.raises(ValueError, match="one score per row"):
        resolve_target(output, lambda out: out)
    with pytest.raises(ValueError, match="must lie in"):
        resolve_target(output, 3)
    with pytest.raises(ValueError, match="pass a target"):
        resolve_target(output, None)


def test_model_outputs_unchanged_by_attribution():
    model, x = tiny_cnn(), images()
    with torch.no_grad():
        expected = model(x)
    state = copy.deepcopy(model.state_dict())
    before = model_state(model)
    for _, method, options in all_methods(model):
        method.attribute(x, target=TARGET, **options)
    with torch.no_grad():
        assert torch.equal(model(x), expected)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    assert model_state(model) == before


def test_overlay_shapes_modes_and_zero_maps():
    image = images()[0].clamp(-1, 1)
    for attribution in (torch.randn(3, 8, 8), torch.randn(4, 4), torch.zeros(8, 8)):
        for mode in ("signed", "absolute"):
            picture = overlay(image, attribution, mode=mode, bar_height=3)
            assert picture.shape == (8 + 1 + 3, 8, 3) and picture.dtype == np.uint8
    blank = overlay(image, torch.zeros(8, 8), alpha=0.0, bar_height=0)
    assert np.array_equal(blank, ((image.permute(1, 2, 0).numpy() + 1) / 2 * 255 + 0.5)
                          .astype(np.uint8))
    ramp = overlay(np.zeros((8, 8, 3), np.uint8), torch.zeros(8, 8), colormap="gray", alpha=1.0)
    assert ramp[-1, 0].tolist() == [0, 0, 0] and ramp[-1, -1].tolist() == [255, 255, 255]
    with pytest.raises(ValueError, match="mode"):
        overlay(image, torch.zeros(8, 8), mode="relative")


# ------------------------------------------------------------------ the shipped classifier


@pytest.fixture(scope="module")
def scene_batch():
    from gandissect.models.registry import load_classifier
    from gandissect.world import render_batch
    from gandissect.world.dataset import image_to_tensor

    model = load_classifier("sceneworld")
    x = image_to_tensor(render_batch(1000, range(2), 64)["image"])
    return model, x


def test_every_method_runs_on_the_shipped_classifier(scene_batch):
    model, x = scene_batch
    with torch.no_grad():
        expected = model(x)
    target = expected.argmax(1)
    methods = [
        (Saliency(model), {}), (InputXGradient(model), {}),
        (SmoothGrad(model), {"n_samples": 4}), (IntegratedGradients(model), {"steps": 8}),
        (GuidedBackprop(model), {}), (Deconvolution(model), {}),
        (Occlusion(model), {"patch": 16, "stride": 16}),
        (LRP(model, rule="gamma", first_rule="zbox", layer_rules={"fc": "epsilon"}), {}),
    ]
    for method, options in methods:
        result = method.attribute(x, target=target, **options)
        assert result.shape == x.shape and torch.isfinite(result).all(), method
    for cls in (CAM, GradCAM, GradCAMPlusPlus, ScoreCAM):
        result = cls(model, "layer4").attribute(x, target=target)
        assert result.shape == (2, 16, 16) and torch.isfinite(result).all(), cls
        assert overlay(x[0], result[0]).shape[:2] == (64 + 1 + 8, 64)
    with torch.no_grad():
        assert torch.equal(model(x), expected)
    assert hook_count(model) == 0


def test_lrp_zero_equals_input_times_gradient_on_the_shipped_classifier(scene_batch):
    """For ReLU nets LRP-0 is input x gradient, through BasicBlocks and folded BatchNorm too."""
    model, x = scene_batch
    model, x = copy.deepcopy(model).double(), x.double()
    relevance = LRP(model, epsilon=1e-12).attribute(x, target=[3, 0])
    assert close(relevance, InputXGradient(model).attribute(x, target=[3, 0]), 1e-6)


def test_grad_cam_passes_the_weight_randomisation_sanity_check(scene_batch):
    model, x = scene_batch
    target = [3, 3]
    original = GradCAM(model, "layer4").attribute(x, target=target, relu=False)
    randomised = copy.deepcopy(model)
    with torch.no_grad():
        randomised.fc.weight.copy_(torch.randn(randomised.fc.weight.shape,
                                               generator=torch.Generator().manual_seed(0)))
    changed = GradCAM(randomised, "layer4").attribute(x, target=target, relu=False)
    difference = (changed - original).flatten(1).norm(dim=1) / original.flatten(1).norm(dim=1)
    assert (difference > 0.3).all()
    correlation = torch.corrcoef(torch.stack([original.flatten(), changed.flatten()]))[0, 1]
    assert correlation < 0.9
