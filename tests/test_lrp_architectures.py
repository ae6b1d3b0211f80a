"""LRP on the classifiers people bring: torchvision's Bottleneck ResNets (ResNet-50), VGG and
VGG-BN, DenseNet, against zennit's ``EpsilonGammaBox`` with the matching canonizers (equal to
rounding where the definitions agree, each documented difference asserted), conservation on
Bottleneck blocks, the logits layer's rule whatever its name, and the one-line refusal of
transformers."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from gandissect.attribute import LRP, UnsupportedModelError, peers
from gandissect.attribute.peers import with_random_statistics

torchvision = pytest.importorskip("torchvision")

COMPOSITE = {"rule": "gamma", "first_rule": "zbox", "linear_rule": "epsilon"}
CLASSES = 5


def small_bottleneck_resnet(**options) -> nn.Module:
    from torchvision.models.resnet import Bottleneck, ResNet

    torch.manual_seed(0)
    return with_random_statistics(ResNet(Bottleneck, [1, 1, 1, 1], num_classes=CLASSES),
                                  **options)


def small_densenet(**options) -> nn.Module:
    torch.manual_seed(0)
    model = torchvision.models.DenseNet(growth_rate=8, block_config=(2, 2, 2, 2),
                                        num_init_features=16, bn_size=2, num_classes=CLASSES)
    return with_random_statistics(model, **options)


def small_vgg(**options) -> nn.Module:
    """torchvision's VGG class, BatchNorm after every convolution, narrow layers and head."""
    from torchvision.models.vgg import VGG, make_layers

    torch.manual_seed(0)
    model = VGG(make_layers([16, "M", 32, "M", 32, 32, "M"], batch_norm=True))
    model.classifier = nn.Sequential(nn.Linear(32 * 49, 32), nn.ReLU(True), nn.Dropout(),
                                     nn.Linear(32, 32), nn.ReLU(True), nn.Dropout(),
                                     nn.Linear(32, CLASSES))
    return with_random_statistics(model, **options)


def images(n: int, size: int, dtype=torch.float32, seed: int = 1) -> torch.Tensor:
    return (torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed),
                       dtype=torch.float64) * 2 - 1).to(dtype)


def pearson_per_image(a, b):
    return torch.stack([torch.corrcoef(torch.stack([p, q]))[0, 1]
                        for p, q in zip(a.flatten(1), b.flatten(1))])


def relative_difference(ours, peer):
    """max |ours - peer| over the map's scale (max |peer|), per image."""
    return ((ours - peer).flatten(1).abs().max(1).values
            / peer.flatten(1).abs().max(1).values)


# ------------------------------------------------------------------ zennit, the peer


ARCHITECTURES = {
    "resnet50": (lambda: with_random_statistics(
        torchvision.models.resnet50(num_classes=CLASSES)), "resnet"),
    "vgg11": (lambda: torchvision.models.vgg11(num_classes=CLASSES).eval(), "vgg"),
    "vgg11_bn": (lambda: with_random_statistics(
        torchvision.models.vgg11_bn(num_classes=CLASSES)), "vgg"),
    "densenet": (small_densenet, "densenet"),
}


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_composite_matches_zennit(name):
    """Pearson r >= 0.99 per image with zennit's EpsilonGammaBox, as the issue asks; in fact
    within 1e-2 of the map's scale (zennit's BatchNorm merge, below)."""
    pytest.importorskip("zennit")
    build, kind = ARCHITECTURES[name]
    torch.manual_seed(0)
    model = build()
    x, target = images(2, 64), torch.tensor([1, 3])
    ours = LRP(model, **COMPOSITE).attribute(x, target)
    peer, _ = peers.zennit_lrp(model, x, target)
    assert (pearson_per_image(ours, peer) >= 0.99).all()
    assert (relative_difference(ours, peer) < 1e-2).all()
    assert torch.allclose(ours.flatten(1).sum(1), peer.flatten(1).sum(1), rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("build, kind", [(small_bottleneck_resnet, "resnet"),
                                         (small_vgg, "vgg"), (small_densenet, "densenet")])
def test_composite_equals_zennit_to_rounding_where_the_definitions_agree(build, kind):
    """The documented difference: zennit's BatchNorm merge sets ``running_var`` to 1 but keeps
    ``eps``, so each merged BatchNorm computes ``x / sqrt(1 + eps)`` and zennit's canonized
    model no longer gives the model's output. With ``eps = 0`` the merge is exact, and the maps
    are equal to float64 rounding."""
    pytest.importorskip("zennit")
    x, target = images(1, 32, torch.float64), torch.tensor([2])
    model = build().double()
    with torch.no_grad():
        expected = model(x)
    _, output = peers.zennit_lrp(model, x, target)
    assert not torch.allclose(output, expected, rtol=1e-7, atol=0)
    assert torch.allclose(output, expected, rtol=1e-3, atol=0)

    exact = build(bn_eps=0.0).double()
    ours = LRP(exact, **COMPOSITE).attribute(x, target)
    peer, output = peers.zennit_lrp(exact, x, target)
    assert torch.allclose(output, exact(x), rtol=1e-12, atol=0)
    assert (relative_difference(ours, peer) < 1e-9).all()


def test_zennit_passes_the_gradient_through_densenets_functional_pooling():
    """The other documented difference: zennit hooks modules only, so through the ReLU and
    average pooling that ``DenseNet.forward`` calls as functions it passes the plain gradient
    (relevance spread evenly over the last feature map); we apply the pooling rule, as zennit
    does to pooling modules. Given that forward as modules, zennit agrees with us."""
    pytest.importorskip("zennit")
    model, x, target = small_densenet(bn_eps=0.0).double(), images(1, 64, torch.float64), [0]
    ours = LRP(model, **COMPOSITE).attribute(x, target)
    as_modules, _ = peers.zennit_lrp(model, x, target)
    plain, _ = peers.zennit_lrp(model, x, target, pooling_as_modules=False)
    assert (relative_difference(ours, as_modules) < 1e-9).all()
    assert (relative_difference(ours, plain) > 0.1).all()


# ------------------------------------------------------------------ conservation


def without_biases(model: nn.Module) -> nn.Module:
    """A copy with every BatchNorm shift and Linear bias 0 (the weights kept), so that nothing
    absorbs relevance."""
    unbiased = copy.deepcopy(model)
    with torch.no_grad():
        for m in unbiased.modules():
            if isinstance(m, nn.BatchNorm2d):  # shift = bias - mean * scale = 0
                m.bias.copy_(m.running_mean * m.weight * (m.running_var + m.eps).rsqrt())
            if isinstance(m, nn.Linear):
                m.bias.zero_()
    return unbiased


@pytest.mark.parametrize("build", [small_bottleneck_resnet, small_densenet])
def test_composite_conserves_relevance(build):
    """Bottleneck blocks (and DenseNet's concatenations and unfolded BatchNorms): with the
    biases moved out and a vanishing stabiliser, the input's relevance sums to the logit
    (float64) within 1e-6; as shipped, float32 agrees with float64 within 1e-3."""
    model = build().double()
    x, target = images(3, 32, torch.float64), torch.tensor([0, 2, 4])
    unbiased = without_biases(model)
    relevance = LRP(unbiased, **COMPOSITE, epsilon=1e-9).attribute(x, target).flatten(1)
    with torch.no_grad():
        logit = unbiased(x)[torch.arange(3), target]
    assert torch.allclose(relevance.sum(1), logit, rtol=1e-6, atol=0)
    double = LRP(model, **COMPOSITE).attribute(x, target)
    single = LRP(copy.deepcopy(model).float(), **COMPOSITE).attribute(x.float(), target)
    assert (relative_difference(single.double(), double) < 1e-3).all()


def test_dense_block_splits_relevance_by_slice():
    """A dense block restated by hand: layer 2 reads cat(x, f1); the block's output relevance
    R = (R_x, R_f1, R_f2) goes back as R_f1 + (layer 2's relevance of f1), and so on."""
    block = small_densenet().double().features.denseblock1
    x = torch.relu(torch.randn(1, 16, 8, 8, generator=torch.Generator().manual_seed(3),
                               dtype=torch.float64))
    relevance = torch.randn(1, 32, 8, 8, generator=torch.Generator().manual_seed(4),
                            dtype=torch.float64)

    def by_layer(layer, a, r):
        return _relevance(LRP(nn.Sequential(*_dense_layer(layer)), epsilon=0.01), a, r)

    first, second = block.values()
    with torch.no_grad():
        f1 = first([x])
    r_x, r_f1, r_f2 = relevance.split([16, 8, 8], 1)
    back = by_layer(second, torch.cat([x, f1], 1), r_f2)
    r_x, r_f1 = r_x + back[:, :16], r_f1 + back[:, 16:]
    r_x = r_x + by_layer(first, x, r_f1)
    whole = _relevance(LRP(nn.Sequential(block), epsilon=0.01), x, relevance)
    assert torch.allclose(whole, r_x, rtol=1e-9, atol=1e-12)


def _dense_layer(layer):
    return [layer.norm1, layer.relu1, layer.conv1, layer.norm2, layer.relu2, layer.conv2]


def _relevance(lrp: LRP, x: torch.Tensor, relevance: torch.Tensor) -> torch.Tensor:
    """LRP of ``x`` starting from the given output relevance (not from a class score)."""
    _, layers = lrp._layers(lrp.model, x)
    with torch.no_grad():
        return layers.relevance(x, relevance)


# ------------------------------------------------------------------ rules and refusals


def test_linear_rule_reaches_the_logits_layer_whatever_its_name():
    torch.manual_seed(0)
    model = nn.Sequential()
    model.add_module("conv", nn.Conv2d(3, 4, 3, padding=1))
    model.add_module("relu", nn.ReLU())
    model.add_module("pool", nn.AdaptiveAvgPool2d(2))
    model.add_module("flat", nn.Flatten())
    model.add_module("hidden", nn.Linear(16, 6))
    model.add_module("act", nn.ReLU())
    model.add_module("linear", nn.Linear(6, 3))
    x = images(2, 16)
    by_type = LRP(model, rule="gamma", linear_rule="epsilon").attribute(x, [0, 2])
    by_name = LRP(model, rule="gamma", layer_rules={"hidden": "epsilon", "linear": "epsilon"})
    assert torch.equal(by_type, by_name.attribute(x, [0, 2]))
    assert not torch.allclose(by_type, LRP(model, rule="gamma").attribute(x, [0, 2]))
    # a rule by name wins over the Linear layers' rule
    named = LRP(model, rule="gamma", linear_rule="epsilon", layer_rules={"linear": "gamma"})
    mixed = LRP(model, rule="gamma", layer_rules={"hidden": "epsilon"})
    assert torch.equal(named.attribute(x, [1, 1]), mixed.attribute(x, [1, 1]))


def test_densenet_chain_check_catches_another_forward():
    """The rebuilt chain is checked against the model: a DenseNet whose forward pools by max
    instead of by average is refused, not explained as if it were torchvision's."""
    class MaxPooled(torchvision.models.DenseNet):
        def forward(self, x):
            return self.classifier(torch.amax(torch.relu(self.features(x)), dim=(2, 3)))

    torch.manual_seed(0)
    model = with_random_statistics(MaxPooled(growth_rate=8, block_config=(2, 2),
                                             num_init_features=16, bn_size=2,
                                             num_classes=CLASSES))
    lrp = LRP(model, **COMPOSITE)
    with pytest.raises(UnsupportedModelError, match="does not reproduce MaxPooled's output"):
        lrp.attribute(images(1, 32), 0)


def transformers():
    """A timm ViT, Swin and ConvNeXt and a transformers ViT, random weights, tiny configs."""
    timm = pytest.importorskip("timm")
    models = [timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=3,
                                img_size=32, depth=1),
              timm.create_model("swin_tiny_patch4_window7_224", pretrained=False,
                                num_classes=3, img_size=28, depths=(1, 1, 1, 1)),
              timm.create_model("convnext_atto", pretrained=False, num_classes=3)]
    hf = pytest.importorskip("transformers")
    config = hf.ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                          intermediate_size=64, image_size=32, patch_size=8, num_labels=3)
    return models + [hf.ViTForImageClassification(config)]


def test_transformers_are_refused_in_one_line_before_any_work():
    for model in transformers():
        calls: list[int] = []
        model.register_forward_pre_hook(lambda *_, calls=calls: calls.append(1))
        with pytest.raises(UnsupportedModelError) as caught:
            LRP(model, **COMPOSITE)
        message = str(caught.value)
        name = type(model).__name__
        assert "\n" not in message, message
        assert f"{name} has LayerNorm" in message or f"{name} has attention" in message
        assert "AttnLRP" in message and "integrated_gradients" in message
        assert ("attention" in message) == ("ConvNeXt" not in name)
        assert calls == []


def test_timm_resnets_are_explained_as_their_torchvision_twins():
    """timm's ResNet-18 and ResNet-26 (basic and bottleneck blocks with ``act1``,
    ``drop_block``, ``aa``, ``global_pool``, and stochastic depth, the identity in eval mode)
    give the same LRP as torchvision's ResNet class with the same weights."""
    timm = pytest.importorskip("timm")
    from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

    x, target = images(1, 32), torch.tensor([3])
    for name, block in (("resnet18", BasicBlock), ("resnet26", Bottleneck)):
        theirs = with_random_statistics(timm.create_model(name, pretrained=False,
                                                          num_classes=CLASSES,
                                                          drop_path_rate=0.1))
        twin = ResNet(block, [2, 2, 2, 2], num_classes=CLASSES).eval()
        twin.load_state_dict(theirs.state_dict())
        assert torch.equal(LRP(theirs, **COMPOSITE).attribute(x, target),
                           LRP(twin, **COMPOSITE).attribute(x, target))
