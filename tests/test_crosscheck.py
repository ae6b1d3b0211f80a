"""Every attribution method against its peer (Captum, pytorch-grad-cam, zennit) on a
torchvision ResNet-18 with random weights and on the shipped classifier, through
``gandissect.attribute.peers``: equal within float tolerance where the definitions agree, each
documented difference asserted as such."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from gandissect.attribute import GradCAMPlusPlus, IntegratedGradients, ScoreCAM
from gandissect.attribute.peers import PAIRS, compare, torchvision_twin, with_random_statistics

pytest.importorskip("captum")
pytest.importorskip("pytorch_grad_cam")
pytest.importorskip("zennit")

# max |ours - peer| / max |ours| allowed (float32), and the lowest per-image correlation
EXACT = (5e-4, 0.9999)  # float32 sums in another order
TOLERANCE = {name: EXACT for name in PAIRS}
TOLERANCE["lrp"] = (0.05, 0.99)  # zennit's stabiliser and summation order
TOLERANCE["scorecam"] = (None, 0.9)  # another definition: correlation only
TOLERANCE["kernel_shap"] = (5e-3, 0.9999)  # Captum's constrained fit in float32
TOLERANCE["gradient_shap"] = (2e-3, 0.9999)  # float32 draws, summed in another order
# Captum's DeepLift skips its max-pool rule after a ReLU module (ResNet-18's stem; the
# shipped classifier has no max-pool), where the reference's activations are not zero
ON_RESNET18 = {**TOLERANCE, "deeplift": (None, 0.99)}


def random_resnet18() -> nn.Module:
    import torchvision

    torch.manual_seed(0)
    return with_random_statistics(torchvision.models.resnet18(num_classes=10))


@pytest.fixture(scope="module")
def resnet():
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1)) * 2 - 1
    return random_resnet18(), x, torch.tensor([1, 7])


@pytest.fixture(scope="module")
def shipped():
    from gandissect.models.registry import load_classifier
    from gandissect.world import render_batch
    from gandissect.world.dataset import image_to_tensor

    rendered = render_batch(1001, range(2), 64)
    return (load_classifier("sceneworld").eval(), image_to_tensor(rendered["image"]),
            torch.from_numpy(rendered["scene"] - 1))


def check(row, name, tolerance=TOLERANCE):
    largest, lowest_r = tolerance[name]
    assert row.min_pearson >= lowest_r, row
    if largest is not None:
        assert row.max_difference <= largest, row


@pytest.mark.parametrize("name", list(PAIRS))
def test_resnet18_agrees_with_the_peer(resnet, name):
    model, x, target = resnet
    check(compare(PAIRS[name], name, model, x, target, "layer3"), name, ON_RESNET18)


@pytest.mark.parametrize("name", list(PAIRS))
def test_shipped_classifier_agrees_with_the_peer(shipped, name):
    model, x, target = shipped
    check(compare(PAIRS[name], name, model, x, target, "layer3"), name)


def test_captum_trapezoid_weights_sum_to_n_minus_one_over_n(resnet):
    """The documented difference, asserted: Captum's trapezoid map is ours times (n-1)/n."""
    import captum.attr

    model, x, target = resnet
    n = 8
    ours = IntegratedGradients(model).attribute(x, target=target, baselines=0.0, n_steps=n,
                                                method="riemann_trapezoid")
    theirs = captum.attr.IntegratedGradients(model).attribute(
        x, target=target, baselines=0.0, n_steps=n, method="riemann_trapezoid")
    torch.testing.assert_close(theirs, ours * (n - 1) / n, rtol=1e-4, atol=1e-6)
    assert not torch.allclose(theirs, ours, rtol=1e-3)


def test_grad_cam_plus_plus_differs_from_the_peer_only_by_its_eps(resnet):
    """pytorch-grad-cam's eps = 1e-6 in the alpha denominator is the whole difference: with it
    restored in our weights, the peer's own weights come back."""
    from gandissect.attribute.peers import _grad_cam_library

    model, x, target = resnet
    _, _, activations, grads = _grad_cam_library("GradCAMPlusPlus", model, x, target, "layer3")
    from pytorch_grad_cam import GradCAMPlusPlus as Peer

    theirs = Peer.get_cam_weights(None, x, None, None, activations, grads)
    ours = GradCAMPlusPlus.channel_weights(torch.as_tensor(activations), torch.as_tensor(grads))
    g2 = grads ** 2

    def restated(eps):
        alpha = g2 / (2 * g2 + activations.sum((2, 3), keepdims=True) * g2 * grads + eps)
        return (np.maximum(grads, 0) * np.where(grads != 0, alpha, 0)).sum((2, 3))

    with np.errstate(divide="ignore", invalid="ignore"):
        np.testing.assert_allclose(theirs, restated(1e-6), rtol=1e-5, atol=1e-12)
        np.testing.assert_allclose(ours.numpy(), restated(0.0), rtol=1e-4, atol=1e-10)
        assert not np.allclose(restated(0.0), restated(1e-6), rtol=1e-2)


def test_score_cam_softmax_conventions(resnet):
    """pytorch-grad-cam's Score-CAM weights are the softmax over channels of the raw masked
    scores; ours are each masked image's class probability: the two orderings of the channels
    agree better than by chance, but the maps are not equal."""
    from gandissect.attribute.peers import _score_cam_library

    model, x, target = resnet
    ours = ScoreCAM(model, "layer3").attribute(x, target=target)
    theirs = _score_cam_library(model, x, target, "layer3")
    assert not torch.allclose(ours, theirs, rtol=1e-2)


def test_the_twin_of_the_shipped_classifier_computes_the_same(shipped):
    model, x, _ = shipped
    with torch.no_grad():
        torch.testing.assert_close(torchvision_twin(model)(x), model(x), rtol=1e-5, atol=1e-5)
