"""DeepLift, GradientShap, FeatureAblation, KernelShap and Lime against Captum on a torchvision
ResNet-18 and on the shipped classifier's architecture (random weights), against slow
restatements of their definitions, and each documented difference asserted."""

from __future__ import annotations

import copy
import itertools
import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gandissect.attribute import DeepLift, FeatureAblation, GradientShap, KernelShap, Lime
from gandissect.attribute.perturbation import patch_grid, superpixels
from gandissect.errors import UserError
from gandissect.models.classifier import SceneClassifier

captum_attr = pytest.importorskip("captum.attr")
torchvision = pytest.importorskip("torchvision")


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():  # Captum warns about hooks and per-example surrogates
        warnings.simplefilter("ignore")
        yield


def resnet18(dtype=torch.float64) -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=10).to(dtype).eval()


def scene_classifier(dtype=torch.float64) -> nn.Module:
    torch.manual_seed(1)
    model = SceneClassifier()
    for module in model.modules():  # BatchNorm statistics away from the identity
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 2.0)
    return model.to(dtype).eval()


MODELS = {"resnet18": resnet18, "scene_classifier": scene_classifier}


def images(n: int = 2, size: int = 32, dtype=torch.float64, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=generator, dtype=dtype) * 2 - 1


def unshared(model: nn.Module) -> nn.Module:
    """A copy whose residual blocks use a second ReLU module for their second ReLU: Captum's
    DeepLift needs each module used once (torchvision's BasicBlock and ours use one twice)."""
    model = copy.deepcopy(model)
    for block in model.modules():
        if hasattr(block, "conv2") and hasattr(block, "relu"):
            block.relu_out = nn.ReLU()
            block.forward = _block_forward(block)
    return model


def _block_forward(block: nn.Module):
    def forward(x: torch.Tensor) -> torch.Tensor:
        shortcut = getattr(block, "downsample", None) or getattr(block, "shortcut", None)
        identity = x if shortcut is None else shortcut(x)
        out = block.bn2(block.conv2(block.relu(block.bn1(block.conv1(x)))))
        return block.relu_out(out + identity)
    return forward


def scores(model: nn.Module, x: torch.Tensor, target) -> torch.Tensor:
    with torch.no_grad():
        out = model(x)
    return out[torch.arange(len(x)), torch.as_tensor(target).expand(len(x))]


# ---------------------------------------------------------------- DeepLift


@pytest.mark.parametrize("name", MODELS)
def test_deeplift_equals_captums_with_a_zero_baseline(name):
    model, x = MODELS[name](), images()
    twin = unshared(model)
    torch.testing.assert_close(twin(x), model(x), rtol=0, atol=0)
    ours, delta = DeepLift(model).attribute(x, target=[1, 3], baselines=0.0,
                                            return_convergence_delta=True)
    theirs, their_delta = captum_attr.DeepLift(twin).attribute(
        x, target=[1, 3], baselines=0.0, return_convergence_delta=True)
    torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-14)
    torch.testing.assert_close(delta, their_delta, rtol=0, atol=1e-12)
    # documented difference: Captum refuses a ReLU module used twice, ours follows the calls
    with pytest.raises(RuntimeError, match="more than once"):
        captum_attr.DeepLift(model).attribute(x, target=[1, 3])


@pytest.mark.parametrize("name", MODELS)
def test_deeplift_is_complete_from_any_baseline(name):
    model, x = MODELS[name](), images()
    baseline = images(seed=7) * 0.5
    maps, delta = DeepLift(model).attribute(x, target=[2, 5], baselines=baseline,
                                            return_convergence_delta=True)
    gap = scores(model, x, [2, 5]) - torch.stack([scores(model, baseline[i:i + 1], [2, 5][i])[0]
                                                  for i in range(2)])
    torch.testing.assert_close(maps.flatten(1).sum(1), gap, rtol=1e-9, atol=1e-12)
    assert delta.abs().max() < 1e-10 * gap.abs().max()


class _PlainMaxPool(nn.Module):
    """ResNet's max pooling, called with ``return_indices=True``: DeepLift gives it no rule."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(x, 3, 2, 1, return_indices=True)[0]


def test_deeplift_max_pool_after_a_relu_module_where_captums_rule_is_skipped():
    """Documented difference: on ResNet-18 (max pooling of a ReLU module's output) Captum's
    attributions are those of the plain max-pool gradient, not complete for a random baseline;
    ours are complete."""
    model, x, baseline = resnet18(), images(), images(seed=9)
    plain = copy.deepcopy(model)
    plain.maxpool = _PlainMaxPool()
    theirs, their_delta = captum_attr.DeepLift(unshared(model)).attribute(
        x, target=[1, 3], baselines=baseline, return_convergence_delta=True)
    restated = DeepLift(plain).attribute(x, target=[1, 3], baselines=baseline)
    torch.testing.assert_close(restated, theirs, rtol=1e-9, atol=1e-14)
    ours, delta = DeepLift(model).attribute(x, target=[1, 3], baselines=baseline,
                                            return_convergence_delta=True)
    gap = (ours.flatten(1).sum(1) - delta).abs()
    assert (delta.abs() < 1e-10 * gap).all()
    assert (their_delta.abs() > 1e-3 * gap).all()


@pytest.mark.parametrize("window", [(2, 2, 0), (3, 2, 1)])
def test_deeplift_max_pool_rule_equals_captums_where_captum_applies_it(window):
    """A pooling between convolutions: the same rule as Captum's for disjoint windows; for
    overlapping ones (documented difference) Captum's max_unpool keeps one part of two windows
    sharing a maximum and misses completeness, ours add them."""
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.MaxPool2d(*window),
                          nn.Conv2d(6, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 5)).double().eval()
    x, baseline = images(2, 12), images(2, 12, seed=5)
    ours, delta = DeepLift(model).attribute(x, target=4, baselines=baseline,
                                            return_convergence_delta=True)
    theirs, their_delta = captum_attr.DeepLift(model).attribute(
        x, target=4, baselines=baseline, return_convergence_delta=True)
    assert delta.abs().max() < 1e-14
    if window[0] == window[1]:
        torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-14)
    else:
        assert their_delta.abs().max() > 1e-4


class _FunctionalNet(nn.Module):
    """``_module_net``'s layers with the activations written as functions (in place too)."""

    def __init__(self, act: str = "relu") -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 6, 3, padding=1), nn.Conv2d(6, 8, 3, stride=2)
        self.fc = nn.Linear(8, 5)
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.act == "relu":
            x = self.conv1(x)
            x.relu_()
            x = F.relu(self.conv2(x), inplace=True)
        else:
            x = F.max_pool2d(F.gelu(self.conv2(F.silu(self.conv1(x)))), 2)
        return self.fc(x.mean((2, 3)).tanh())


def _module_net(net: _FunctionalNet) -> nn.Module:
    return nn.Sequential(net.conv1, nn.ReLU(), net.conv2, nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Tanh(), net.fc).double().eval()


def test_deeplift_functional_activations_equal_module_ones_and_stay_complete():
    torch.manual_seed(3)
    functional = _FunctionalNet().double().eval()
    x, baseline = images(2, 12), images(2, 12, seed=4)
    ours = DeepLift(functional).attribute(x, target=4, baselines=baseline)
    modules = _module_net(functional)
    torch.testing.assert_close(ours, DeepLift(modules).attribute(x, target=4, baselines=baseline),
                               rtol=1e-10, atol=1e-14)
    theirs = captum_attr.DeepLift(modules).attribute(x, target=4, baselines=baseline)
    torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-14)
    # GELU and SiLU get the rescale rule as well: complete, where a plain gradient is not
    smooth = _FunctionalNet("smooth").double().eval()
    _, delta = DeepLift(smooth).attribute(x, target=1, baselines=baseline,
                                          return_convergence_delta=True)
    assert delta.abs().max() < 1e-12


def test_deeplift_refuses_a_model_that_mixes_the_batch():
    class Mixer(nn.Module):
        def forward(self, x):
            return torch.relu(x.reshape(1, -1)).sum(1, keepdim=True).expand(len(x), 1)

    with pytest.raises(UserError, match="one batch of 4 rows"):
        DeepLift(Mixer()).attribute(images(2, 4), target=0)


# ---------------------------------------------------------------- GradientShap


@pytest.mark.parametrize("name", MODELS)
def test_gradient_shap_equals_captums_with_the_same_draws(name):
    # float32: Captum draws its noise in float32
    model, x = MODELS[name](torch.float32), images(2, dtype=torch.float32)
    references = images(3, dtype=torch.float32, seed=5) * 0.3
    ours, delta = GradientShap(model).attribute(x, target=[0, 4], baselines=references,
                                                n_samples=4, stdevs=0.1, seed=11,
                                                return_convergence_delta=True,
                                                internal_batch_size=3)
    np.random.seed(11)
    torch.manual_seed(11)
    theirs, their_delta = captum_attr.GradientShap(model).attribute(
        x, target=[0, 4], baselines=references, n_samples=4, stdevs=0.1,
        return_convergence_delta=True)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-9)
    torch.testing.assert_close(delta, their_delta, rtol=1e-4, atol=1e-7)


def test_gradient_shap_restated():
    """The mean of (x' - b) * grad f(a x' + (1 - a) b) over the drawn rows, one row at a time."""
    model, x = scene_classifier(), images(2, 16)
    references = images(2, 16, seed=3)
    ours = GradientShap(model).attribute(x, target=2, baselines=references, n_samples=3,
                                         stdevs=0.05, seed=2)
    noisy, picked, alphas = GradientShap.draws(x, references, 3, 0.05, 2)
    rows = []
    for r in range(6):
        point = (alphas[r] * noisy[r] + (1 - alphas[r]) * picked[r])[None].requires_grad_()
        (grad,) = torch.autograd.grad(model(point)[0, 2], point)
        rows.append((noisy[r] - picked[r]) * grad[0])
    torch.testing.assert_close(ours, torch.stack(rows).reshape(2, 3, *x.shape[1:]).mean(1),
                               rtol=1e-10, atol=1e-14)


# ---------------------------------------------------------------- perturbation methods


@pytest.mark.parametrize("name", MODELS)
def test_feature_ablation_equals_captums_with_the_same_mask(name):
    model, x = MODELS[name](torch.float32), images(2, dtype=torch.float32)
    mask = patch_grid(32, 32, 4, 4)[None, None]
    baseline = images(1, dtype=torch.float32, seed=3) * 0.2
    ours = FeatureAblation(model).attribute(x, target=[1, 5], feature_mask=mask,
                                            baselines=baseline, perturbations_per_eval=5)
    theirs = captum_attr.FeatureAblation(model).attribute(
        x, target=[1, 5], feature_mask=mask, baselines=baseline, perturbations_per_eval=8)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-7)


def scenes(n: int = 2, size: int = 32) -> torch.Tensor:
    from gandissect.world import render_batch
    from gandissect.world.dataset import image_to_tensor

    return image_to_tensor(render_batch(1001, range(n), size)["image"])


def test_feature_ablation_default_features_are_superpixels():
    model, x = scene_classifier(torch.float32), scenes()
    mask = superpixels(x)
    assert mask.shape == (2, 1, 32, 32)
    assert all(15 <= len(mask[i].unique()) <= 60 for i in range(2))
    # SLIC leaves noise in one piece: such an image gets a 7 x 7 grid
    torch.testing.assert_close(superpixels(images(1, 32))[0, 0], patch_grid(32, 32, 7, 7))
    ours = FeatureAblation(model).attribute(x, target=3)
    for i in range(2):  # Captum takes one mask per call when images differ in features
        theirs = captum_attr.FeatureAblation(model).attribute(x[i:i + 1], target=3,
                                                              feature_mask=mask[i:i + 1])
        torch.testing.assert_close(ours[i:i + 1], theirs, rtol=1e-5, atol=1e-7)


def _value(model, x, mask, keep, baseline, target):
    kept = keep[mask[0, 0]]
    return float(scores(model, torch.where(kept, x, baseline)[None], target)[0])


def test_kernel_shap_with_every_coalition_is_the_shapley_values():
    model, x = resnet18(), images(1)
    mask = patch_grid(32, 32, 2, 2)[None, None]
    ours = KernelShap(model).attribute(x, target=5, feature_mask=mask, n_samples=16,
                                       baselines=0.25)
    features, exact = 4, []
    for j in range(features):
        total = 0.0
        others = [k for k in range(features) if k != j]
        for size in range(features):
            for subset in itertools.combinations(others, size):
                keep = torch.zeros(features, dtype=torch.bool)
                keep[list(subset)] = True
                without = _value(model, x[0], mask, keep, 0.25, 5)
                keep[j] = True
                weight = math.factorial(size) * math.factorial(features - size - 1) / \
                    math.factorial(features)
                total += weight * (_value(model, x[0], mask, keep, 0.25, 5) - without)
        exact.append(total)
    expected = torch.tensor(exact, dtype=torch.float64)[mask[0, 0]].expand(3, 32, 32)
    torch.testing.assert_close(ours[0], expected, rtol=1e-9, atol=1e-13)


@pytest.mark.parametrize("name", MODELS)
def test_kernel_shap_matches_captums_with_the_same_coalitions(name):
    model, x = MODELS[name](torch.float32), images(2, dtype=torch.float32)
    mask = patch_grid(32, 32, 4, 4)[None, None]
    ours = KernelShap(model).attribute(x, target=[2, 3], feature_mask=mask, n_samples=48,
                                       seed=5, internal_batch_size=20)
    gap = scores(model, x, [2, 3]) - scores(model, torch.zeros_like(x), [2, 3])
    for i, target in enumerate([2, 3]):
        torch.manual_seed(5 + i)  # image i's coalitions come from seed + i
        theirs = captum_attr.KernelShap(model).attribute(
            x[i:i + 1], target=target, feature_mask=mask, n_samples=48,
            perturbations_per_eval=16)
        # Captum fits in float32 with the constraints weighted 1e6 (measured: 3e-6 of the
        # largest value)
        scale = float(ours[i].abs().max())
        torch.testing.assert_close(ours[i:i + 1], theirs, rtol=0, atol=2e-5 * scale)
        # documented difference: ours sum to f(x) - f(0) exactly (each value counted once)
        per_feature = ours[i, 0][::8, ::8].flatten()  # one pixel of each 8 x 8 patch
        torch.testing.assert_close(per_feature.sum().double(), gap[i].double(), rtol=1e-5,
                                   atol=1e-8)


@pytest.mark.parametrize("name", MODELS)
def test_lime_matches_captums_with_a_ridge_surrogate(name):
    model, x = MODELS[name](torch.float32), images(2, dtype=torch.float32)
    mask = patch_grid(32, 32, 4, 4)[None, None]
    ours = Lime(model).attribute(x, target=[4, 5], feature_mask=mask, n_samples=40, seed=9)
    surrogate = pytest.importorskip("captum._utils.models.linear_model")
    for i, target in enumerate([4, 5]):
        torch.manual_seed(9 + i)
        theirs = captum_attr.Lime(model, interpretable_model=surrogate.SkLearnRidge(alpha=1.0)
                                  ).attribute(x[i:i + 1], target=target, feature_mask=mask,
                                              n_samples=40, perturbations_per_eval=20)
        scale = float(ours[i].abs().max())  # Captum fits in float32 (measured: 3e-7)
        torch.testing.assert_close(ours[i:i + 1], theirs, rtol=0, atol=5e-6 * scale)
    # documented difference: Captum's default surrogate, a Lasso of alpha 0.01, is another fit
    torch.manual_seed(9)
    lasso = captum_attr.Lime(model).attribute(x[:1], target=4, feature_mask=mask, n_samples=40)
    assert not torch.allclose(lasso, ours[:1], rtol=0.1, atol=0.1 * float(ours[0].abs().max()))


def test_lime_restated():
    """Weighted ridge on the binary coalitions, kernel exp(-(1 - cos)^2 / 2), in numpy."""
    model, x = scene_classifier(), images(1, 16)
    mask = patch_grid(16, 16, 3, 3)[None, None]
    ours = Lime(model).attribute(x, target=1, feature_mask=mask, n_samples=30, seed=4,
                                 kernel_width=0.7, alpha=0.5)
    coalitions = Lime.coalitions(9, 30, torch.Generator().manual_seed(4)).numpy()
    y, w = [], []
    for keep in coalitions:
        perturbed = torch.where(torch.from_numpy(keep)[mask[0, 0]], x[0], 0.0)
        y.append(_value(model, x[0], mask, torch.from_numpy(keep), 0.0, 1))
        cosine = float(F.cosine_similarity(x[0].flatten(), perturbed.flatten(), dim=0))
        w.append(math.exp(-(1 - cosine) ** 2 / (2 * 0.7 ** 2)))
    z, y, w = coalitions.astype(float), np.array(y), np.array(w)
    design = np.hstack([np.ones((30, 1)), z])
    penalty = np.diag([0.0] + [0.5] * 9)
    solution = np.linalg.solve(design.T @ (w[:, None] * design) + penalty, design.T @ (w * y))
    expected = torch.from_numpy(solution[1:])[mask[0, 0]].expand(3, 16, 16)
    torch.testing.assert_close(ours[0], expected, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("method", [FeatureAblation, KernelShap, Lime])
def test_perturbation_targets_chunks_and_per_image_masks(method):
    model, x = scene_classifier(), images(3, 16)
    mask = patch_grid(16, 16, 3, 3)
    options = {} if method is FeatureAblation else {"n_samples": 24}
    ours = method(model).attribute(x, target=[0, 2, 5], feature_mask=mask, **options)
    chunked = method(model).attribute(x, target=[0, 2, 5], feature_mask=mask[None, None],
                                      internal_batch_size=7, **options)
    torch.testing.assert_close(ours, chunked, rtol=1e-10, atol=1e-14)
    picked = method(model).attribute(
        x, target=lambda out: out[:, 2], feature_mask=mask, **options)
    torch.testing.assert_close(picked, method(model).attribute(x, target=2, feature_mask=mask,
                                                               **options), rtol=0, atol=0)
    # per-image masks: image 1's own features (ids renumbered) give its own map; the sampled
    # methods draw image i's coalitions with seed + i
    masks = torch.stack([mask, mask.T.contiguous() * 3 + 1, mask])[:, None]
    alone = {} if method is FeatureAblation else {"seed": 1}
    torch.testing.assert_close(
        method(model).attribute(x, target=2, feature_mask=masks, **options)[1:2],
        method(model).attribute(x[1:2], target=2, feature_mask=masks[1:2], **options, **alone),
        rtol=1e-10, atol=1e-14)


# ---------------------------------------------------------------- validation and registration


@pytest.mark.parametrize("method", [DeepLift, GradientShap, FeatureAblation, KernelShap, Lime])
def test_unbatched_images_are_refused_with_the_hint(method):
    with pytest.raises(UserError, match=r"x\[None\]"):
        method(scene_classifier()).attribute(images(1, 16)[0], target=0)


@pytest.mark.parametrize("options", [{"feature_mask": torch.zeros(5, 5, dtype=torch.long)},
                                     {"feature_mask": torch.zeros(16, 16)},
                                     {"n_samples": 1}, {"baselines": torch.zeros(2, 16)},
                                     {"perturbations_per_eval": 0},
                                     {"internal_batch_size": 2, "perturbations_per_eval": 2}])
def test_perturbation_options_are_checked_in_one_line(options):
    with pytest.raises(UserError) as error:
        KernelShap(scene_classifier()).attribute(images(1, 16), target=0, **options)
    assert "\n" not in str(error.value)


def test_gradient_shap_and_deeplift_refuse_bad_baselines():
    model, x = scene_classifier(), images(2, 16)
    with pytest.raises(UserError, match="baselines"):
        GradientShap(model).attribute(x, target=0, baselines=torch.zeros(3, 8, 8))
    with pytest.raises(UserError, match="baselines"):
        DeepLift(model).attribute(x, target=0, baselines=torch.zeros(3, 5, 8, 8))
    with pytest.raises(UserError, match="not both"):
        DeepLift(model).attribute(x, target=0, baseline=0.0, baselines=0.0)


def test_new_methods_are_registered_everywhere():
    from gandissect.app.explain import METHOD_NAMES, SLOW_METHODS
    from gandissect.attribute.evaluate import METHODS, evaluate_attribution
    from gandissect.cli import attribution

    new = ("deeplift", "gradient_shap", "feature_ablation", "kernel_shap", "lime")
    assert set(new) <= set(METHODS) and set(new) <= set(attribution.METHOD_NAMES)
    assert set(METHOD_NAMES) == set(METHODS)
    assert {"feature_ablation", "kernel_shap", "lime"} <= set(SLOW_METHODS)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                          nn.Flatten(), nn.Linear(16, 6)).eval()
    result = evaluate_attribution(model, list(new), n=2, batch=2, size=16, progress=False,
                                  cascade_n=0)
    for name in new:
        assert 0.0 <= result[name]["pointing_game"] <= 1.0
        assert math.isfinite(result[name]["deletion_auc"])
