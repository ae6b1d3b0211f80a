"""Captum's argument names, the noise tunnel, Guided Grad-CAM and Eigen-CAM, checked against
Captum (and pytorch-grad-cam where installed) or a slow restatement of the definition."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from gandissect.attribute import (
    EigenCAM,
    GuidedGradCAM,
    IntegratedGradients,
    NoiseTunnel,
    Saliency,
)
from gandissect.errors import UserError

captum_attr = pytest.importorskip("captum.attr")


def tiny_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1, stride=2),
        nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5)).double().eval()


@pytest.fixture(scope="module")
def resnet():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=10).double().eval()


def images(n: int = 2, size: int = 16) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(1),
                      dtype=torch.float64)


def test_integrated_gradients_takes_captums_names_and_matches_captum():
    model, x = tiny_cnn(), images()
    baselines = torch.full_like(x, 0.25)
    ours, delta = IntegratedGradients(model).attribute(
        x, target=[1, 3], baselines=baselines, n_steps=12, method="gausslegendre",
        return_convergence_delta=True, internal_batch_size=7)
    theirs, their_delta = captum_attr.IntegratedGradients(model).attribute(
        x, target=[1, 3], baselines=baselines, n_steps=12, method="gausslegendre",
        return_convergence_delta=True)
    torch.testing.assert_close(ours, theirs, rtol=1e-7, atol=1e-10)
    torch.testing.assert_close(delta, their_delta, rtol=1e-6, atol=1e-10)
    # our own spelling gives the same numbers
    same, error = IntegratedGradients(model).attribute(
        x, target=[1, 3], baseline=baselines, steps=12, method="gauss_legendre",
        return_error=True)
    torch.testing.assert_close(same, ours, rtol=1e-12, atol=0)
    torch.testing.assert_close(error, delta, rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("both", [{"baseline": 0.0, "baselines": 0.0},
                                  {"steps": 4, "n_steps": 4},
                                  {"return_error": True, "return_convergence_delta": True}])
def test_integrated_gradients_refuses_both_spellings(both):
    with pytest.raises(UserError, match="not both"):
        IntegratedGradients(tiny_cnn()).attribute(images(), target=0, **both)


@pytest.mark.parametrize("nt_type", ["smoothgrad", "smoothgrad_sq", "vargrad"])
def test_noise_tunnel_matches_captums_with_the_same_draws(nt_type):
    # float32: Captum draws its noise in float32 (torch.tensor(stdevs)) whatever the input
    model, x = tiny_cnn().float(), images(3).float()
    ours = NoiseTunnel(Saliency(model)).attribute(
        x, nt_type=nt_type, nt_samples=6, stdevs=0.2, target=[0, 2, 4], seed=5)
    torch.manual_seed(5)
    theirs = captum_attr.NoiseTunnel(captum_attr.Saliency(model)).attribute(
        x, nt_type=nt_type, nt_samples=6, stdevs=0.2, target=[0, 2, 4], abs=False)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-7)


def test_noise_tunnel_restated_slowly_and_chunked():
    model, x = tiny_cnn(), images(2)
    noise = NoiseTunnel.noise(x, nt_samples=5, stdevs=0.3, seed=2)
    grads = torch.stack([torch.stack([
        Saliency(model).attribute(x[i:i + 1] + noise[i, s][None], target=1)[0]
        for s in range(5)]) for i in range(2)])                      # (N, S, C, H, W)
    expected = {"smoothgrad": grads.mean(1), "smoothgrad_sq": grads.pow(2).mean(1),
                "vargrad": grads.var(1, unbiased=False)}
    for nt_type, want in expected.items():
        got = NoiseTunnel(Saliency(model)).attribute(
            x, target=1, nt_type=nt_type, nt_samples=5, stdevs=0.3, seed=2,
            nt_samples_batch_size=2)
        torch.testing.assert_close(got, want, rtol=1e-7, atol=1e-10)


def test_noise_tunnel_passes_options_and_returns_captums_deltas():
    model, x = tiny_cnn().float(), images(2).float()
    baselines = torch.rand(x.shape, generator=torch.Generator().manual_seed(3),
                           dtype=x.dtype)
    ours, delta = NoiseTunnel(IntegratedGradients(model)).attribute(
        x, target=[2, 4], nt_samples=3, stdevs=0.1, seed=4, baselines=baselines, n_steps=6,
        method="gausslegendre", return_convergence_delta=True)
    torch.manual_seed(4)
    theirs, their_delta = captum_attr.NoiseTunnel(captum_attr.IntegratedGradients(model)) \
        .attribute(x, target=[2, 4], nt_samples=3, stdevs=0.1, baselines=baselines,
                   n_steps=6, method="gausslegendre", return_convergence_delta=True)
    torch.testing.assert_close(ours, theirs, rtol=1e-7, atol=1e-10)
    torch.testing.assert_close(delta, their_delta, rtol=1e-6, atol=1e-10)


@pytest.mark.parametrize("bad", [{"nt_type": "smooth"}, {"nt_samples": 0}, {"stdevs": -1.0},
                                 {"nt_samples_batch_size": 0}])
def test_noise_tunnel_refuses_bad_options(bad):
    with pytest.raises(UserError):
        NoiseTunnel(Saliency(tiny_cnn())).attribute(images(), target=0, **bad)


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_guided_grad_cam_matches_captum(resnet, mode):
    x = images(2, 64)
    ours = GuidedGradCAM(resnet, "layer4").attribute(x, target=[3, 7], interpolate_mode=mode)
    theirs = captum_attr.GuidedGradCam(resnet, resnet.layer4).attribute(
        x, target=[3, 7], interpolate_mode=mode)
    assert ours.shape == x.shape
    assert ours.abs().sum() > 0
    torch.testing.assert_close(ours, theirs, rtol=1e-7, atol=1e-12)


def slow_eigen_cam(maps: np.ndarray) -> np.ndarray:
    """First principal component projection per sample, oriented so that sum(v) >= 0."""
    out = []
    for a in maps:
        flat = a.reshape(a.shape[0], -1).T
        flat = flat - flat.mean(0)
        v = np.linalg.svd(flat)[2][0]
        v = -v if v.sum() < 0 else v
        out.append((flat @ v).reshape(a.shape[1:]))
    return np.stack(out)


def test_eigen_cam_is_the_first_principal_component(resnet):
    from gandissect.hooks import Trace

    x = images(2, 64)
    with torch.no_grad(), Trace(resnet, "layer3") as trace:
        resnet(x)
    maps = trace.output.numpy()
    raw = EigenCAM(resnet, "layer3").attribute(x, relu=False)
    np.testing.assert_allclose(raw.numpy(), slow_eigen_cam(maps), rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(EigenCAM(resnet, "layer3").attribute(x), raw.clamp(min=0))
    # the documented sign: the map correlates non-negatively with the channel sum
    channel_sum = torch.as_tensor(maps).sum(1).flatten(1)
    centred = channel_sum - channel_sum.mean(1, keepdim=True)
    assert bool(((raw.flatten(1) * centred).sum(1) >= 0).all())
    grad_cam = pytest.importorskip("pytorch_grad_cam.utils.svd_on_activations")
    theirs = grad_cam.get_2d_projection(maps)       # float32, sign as LAPACK returns it
    for ours_i, theirs_i in zip(raw.numpy(), theirs, strict=True):
        sign = np.sign((ours_i * theirs_i).sum())
        np.testing.assert_allclose(ours_i, sign * theirs_i, rtol=1e-3,
                                   atol=1e-4 * np.abs(ours_i).max())
