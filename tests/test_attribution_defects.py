"""Three attribution defects of issue 28, each against its definition restated the slow way:

- CAM finds the linear layer that computes the class scores, whatever its name (``linear`` in
  CIFAR-style ResNets, a nested ``head.fc``), in the library, the evaluation / CLI table and
  the app;
- one ``(C, H, W)`` image is refused by every attribution method with the ``x[None]`` hint;
- guided backpropagation and deconvolution modify functional ReLUs (``F.relu``,
  ``torch.relu``, ``x.relu()``, in-place spellings) exactly as ``nn.ReLU`` modules, and refuse
  models with other activations (GELU, SiLU).
"""

import inspect
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import gandissect.attribute as attribute
from gandissect.attribute import (
    CAM,
    Attribution,
    Deconvolution,
    GuidedBackprop,
    Saliency,
)
from gandissect.attribute.cam import logits_linear
from gandissect.attribute.evaluate import METHODS, pixel_maps
from gandissect.errors import UserError


def seeded(build, seed: int = 0):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return build()


def randn(*shape: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# ----------------------------------------------------- a CIFAR ResNet, kuangliu/pytorch-cifar


class CifarBasicBlock(nn.Module):
    """``models/resnet.py``'s BasicBlock of kuangliu/pytorch-cifar (functional ReLUs, an
    in-place residual addition, a ``shortcut`` Sequential)."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False),
                                          nn.BatchNorm2d(planes))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += self.shortcut(x)
        return F.relu(out)


class CifarResNet(nn.Module):
    """kuangliu/pytorch-cifar's ResNet (conv1, bn1, layer1..4, ``linear``) at 1/16 width: 32 px
    images, layer4 at 4 x 4, ``F.avg_pool2d(out, 4)`` as the global average pool."""

    input_size = 32  # read by the app

    def __init__(self, num_blocks=(1, 1, 1, 1), num_classes: int = 10, width: int = 4):
        super().__init__()
        self.in_planes = width
        self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.layer1 = self._make_layer(width, num_blocks[0], 1)
        self.layer2 = self._make_layer(2 * width, num_blocks[1], 2)
        self.layer3 = self._make_layer(4 * width, num_blocks[2], 2)
        self.layer4 = self._make_layer(8 * width, num_blocks[3], 2)
        self.linear = nn.Linear(8 * width * CifarBasicBlock.expansion, num_classes)

    def _make_layer(self, planes: int, num_blocks: int, stride: int) -> nn.Sequential:
        layers = []
        for s in [stride] + [1] * (num_blocks - 1):
            layers.append(CifarBasicBlock(self.in_planes, planes, s))
            self.in_planes = planes * CifarBasicBlock.expansion
        return nn.Sequential(*layers)

    def features(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return self.layer4(self.layer3(self.layer2(self.layer1(out))))

    def forward(self, x):
        out = F.avg_pool2d(self.features(x), 4)
        out = out.view(out.size(0), -1)
        return self.linear(out)


def cifar_resnet() -> CifarResNet:
    """The plug-in factory the app test loads (``test_attribution_defects:cifar_resnet``)."""
    model = seeded(CifarResNet)
    with torch.no_grad():  # running statistics away from (0, 1), so eval BatchNorm matters
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2, generator=torch.Generator().manual_seed(3))
                m.running_var.uniform_(0.5, 2.0, generator=torch.Generator().manual_seed(4))
    return model.eval()


class NestedHead(nn.Module):
    """The head registered before the body, its linear layer nested as ``head.fc``."""

    def __init__(self):
        super().__init__()
        self.head = nn.Sequential(OrderedDict(pool=nn.AdaptiveAvgPool2d(1),
                                              flatten=nn.Flatten(), fc=nn.Linear(6, 4)))
        self.body = nn.Sequential(OrderedDict(conv1=nn.Conv2d(3, 5, 3, padding=1),
                                              relu1=nn.ReLU(),
                                              conv2=nn.Conv2d(5, 6, 3, padding=1),
                                              relu2=nn.ReLU()))

    def forward(self, x):
        return self.head(self.body(x))


def cam_by_hand(maps: torch.Tensor, weight: torch.Tensor, target: list[int]) -> torch.Tensor:
    """``sum_k w_ck A_k`` by a loop over samples and channels."""
    out = torch.zeros(maps.shape[0], *maps.shape[2:], dtype=maps.dtype)
    for n, c in enumerate(target):
        for k in range(maps.shape[1]):
            out[n] += weight[c, k] * maps[n, k]
    return out


def test_cam_finds_a_cifar_resnets_linear_head():
    model, x, target = cifar_resnet().double(), randn(2, 3, 32, 32), [3, 7]
    with torch.no_grad():
        slow = cam_by_hand(model.features(x), model.linear.weight, target)
    assert logits_linear(model, x) == "linear"
    for cam in (CAM(model, "layer4"), CAM(model, "layer4", fc="linear"),
                METHODS["cam"].build(model, "layer4")):  # the evaluation / CLI table's CAM
        assert torch.allclose(cam.attribute(x, target), slow, rtol=1e-10, atol=1e-12)


def test_cam_finds_a_nested_head():
    model, x, target = seeded(NestedHead).double().eval(), randn(3, 3, 8, 8), [0, 3, 1]
    with torch.no_grad():
        slow = cam_by_hand(model.body(x), model.head.fc.weight, target)
    assert logits_linear(model, x) == "head.fc"
    assert torch.allclose(CAM(model, "body.relu2").attribute(x, target), slow, rtol=1e-10,
                          atol=1e-12)
    with pytest.raises(UserError, match="CAM does not apply"):  # GAP(relu1) is not what fc reads
        CAM(model, "body.conv2").attribute(x, 0)


def test_cam_refuses_models_without_a_linear_scores_layer():
    no_linear = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with pytest.raises(UserError, match="no nn.Linear"):
        CAM(no_linear, "0")
    hidden_only = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                nn.Linear(4, 6), nn.Unflatten(1, (3, 2)), nn.AdaptiveAvgPool1d(1),
                                nn.Flatten())  # scores (N, 3): pooled pairs of (N, 6)
    with pytest.raises(UserError, match="no nn.Linear of Sequential outputs"):
        CAM(hidden_only, "0").attribute(torch.randn(2, 3, 6, 6), 0)


def test_the_app_explains_cam_on_a_linear_head():
    from gandissect.app.explain import ClassifierModels

    spec = "test_attribution_defects:cifar_resnet"
    app = ClassifierModels([spec])
    assert app.get(spec).logits == "linear"
    image = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(5)) * 2 - 1
    explained = app.explain(spec, image, "cam", "layer4", target=2)
    expected = CAM(cifar_resnet(), "layer4").attribute(image[None], 2)
    assert torch.allclose(explained.pixel_map, pixel_maps(expected, (32, 32))[0], atol=1e-5)


# ----------------------------------------------------- one (C, H, W) image, every method


def tiny_cnn() -> nn.Sequential:
    return seeded(lambda: nn.Sequential(OrderedDict(
        conv1=nn.Conv2d(3, 4, 3, padding=1), relu1=nn.ReLU(),
        conv2=nn.Conv2d(4, 5, 3, padding=1), relu2=nn.ReLU(),
        pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(), fc=nn.Linear(5, 3),
    )).double().eval())


def method_classes() -> list[type]:
    return [obj for name in attribute.__all__
            if inspect.isclass(obj := getattr(attribute, name))
            and issubclass(obj, Attribution) and not inspect.isabstract(obj)]


def build(cls: type, model: nn.Module) -> Attribution:
    """``cls`` on ``model``: CAM-family methods at ``relu2``; a method wrapping another method
    (first argument not ``model``) around Saliency."""
    params = list(inspect.signature(cls).parameters)
    if params and params[0] != "model":
        return cls(Saliency(model))
    return cls(model, "relu2") if "layer" in params else cls(model)


@pytest.mark.parametrize("cls", method_classes(), ids=lambda cls: cls.__name__)
def test_every_method_refuses_one_unbatched_image(cls):
    model = tiny_cnn()
    image = randn(3, 8, 8)
    method = build(cls, model)
    with pytest.raises(UserError, match=r"takes a batch \(N, C, H, W\).*for one image "
                                        r"\(C, H, W\) pass x\[None\]") as error:
        method.attribute(image, target=0)
    assert "\n" not in str(error.value)
    assert method.attribute(image[None], target=0).shape[0] == 1  # as the hint says


def test_an_unbatched_image_no_longer_passes_silently():
    class MeanHead(nn.Module):  # torch runs Conv2d on (C, H, W); the mean keeps it going
        def __init__(self):
            super().__init__()
            self.conv, self.fc = nn.Conv2d(3, 4, 3, padding=1), nn.Linear(4, 1)

        def forward(self, x):
            return self.fc(F.relu(self.conv(x)).mean((-2, -1)))

    model = seeded(MeanHead).double()
    with pytest.raises(UserError, match=r"pass x\[None\]"):
        Saliency(model).attribute(randn(3, 8, 8))  # was: 3 "images" of 8 x 8 pixels
    assert Saliency(model).attribute(randn(2, 3, 8, 8)).shape == (2, 3, 8, 8)


# ----------------------------------------------------- guided backprop on functional ReLUs


class ModuleReLUs(nn.Module):
    """Convolutions and linear layers with six ``nn.ReLU`` modules."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 5, 3, padding=1)
        self.conv3 = nn.Conv2d(5, 6, 3, padding=1)
        self.pool, self.flatten = nn.AdaptiveAvgPool2d(2), nn.Flatten()
        self.fc1, self.fc2 = nn.Linear(24, 7), nn.Linear(7, 6)
        self.fc3, self.fc4 = nn.Linear(6, 5), nn.Linear(5, 3)
        self.relus = nn.ModuleList(nn.ReLU() for _ in range(6))

    def layers(self) -> list[nn.Module]:
        r = self.relus
        return [self.conv1, r[0], self.conv2, r[1], self.conv3, r[2], self.pool, self.flatten,
                self.fc1, r[3], self.fc2, r[4], self.fc3, r[5], self.fc4]

    def forward(self, x):
        for layer in self.layers():
            x = layer(x)
        return x


class FunctionalReLUs(ModuleReLUs):
    """The same parameters, each ReLU spelled another functional way."""

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        x = self.conv3(x).relu()
        x = F.relu(self.fc1(self.flatten(self.pool(x))), inplace=True)
        x = self.fc2(x)
        x.relu_()
        return self.fc4(F.relu_(self.fc3(x)))


def modified_gradient_by_hand(model: ModuleReLUs, x: torch.Tensor, target: list[int],
                              guided: bool) -> torch.Tensor:
    """Backward layer by layer: the plain vector-Jacobian product of every layer but the ReLUs,
    where only positive gradients pass (guided: only where the ReLU's input was positive)."""
    inputs = []
    with torch.no_grad():
        for layer in model.layers():
            inputs.append(x)
            x = layer(x)
    grad = F.one_hot(torch.as_tensor(target), x.shape[1]).to(x.dtype)
    for layer, a in zip(reversed(model.layers()), reversed(inputs)):
        if isinstance(layer, nn.ReLU):
            grad = grad.clamp(min=0) * ((a > 0).to(grad.dtype) if guided else 1)
        else:
            grad = torch.autograd.functional.vjp(layer, a, grad)[1]
    return grad


@pytest.mark.parametrize("cls, guided", [(GuidedBackprop, True), (Deconvolution, False)])
def test_functional_relus_get_the_rule_of_relu_modules(cls, guided):
    modules = seeded(ModuleReLUs).double().eval()
    functional = FunctionalReLUs().double().eval()
    functional.load_state_dict(modules.state_dict())
    x, target = randn(3, 3, 6, 6), [0, 2, 1]
    slow = modified_gradient_by_hand(modules, x, target, guided)
    by_modules = cls(modules).attribute(x, target)
    by_functions = cls(functional).attribute(x, target)
    assert torch.equal(by_functions, by_modules)
    assert torch.allclose(by_modules, slow, rtol=1e-10, atol=1e-12 * float(slow.abs().max()))
    plain = Saliency(functional).attribute(x, target)
    assert not torch.allclose(by_functions, plain, atol=1e-6)  # the rule changed something
    assert not torch._C._is_torch_function_mode_enabled()  # nothing left behind


def test_guided_backprop_runs_on_a_functional_relu_resnet():
    model, x = cifar_resnet().double(), randn(2, 3, 32, 32)
    guided = GuidedBackprop(model).attribute(x, [1, 4])
    assert guided.shape == x.shape and bool(torch.isfinite(guided).all())
    assert not torch.allclose(guided, Saliency(model).attribute(x, [1, 4]), atol=1e-6)


@pytest.mark.parametrize("cls", [GuidedBackprop, Deconvolution])
@pytest.mark.parametrize("activation, name", [(nn.GELU(), "GELU"), (nn.SiLU(), "SiLU"),
                                              (F.silu, "SiLU"), (F.leaky_relu, "leaky ReLU")],
                         ids=["nn.GELU", "nn.SiLU", "F.silu", "F.leaky_relu"])
def test_other_activations_are_refused_by_name(cls, activation, name):
    model = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 5), nn.Identity(),
                          nn.Linear(5, 3)).double()

    class Activation(nn.Module):
        def forward(self, x):
            return activation(x)

    model[3] = Activation()
    with pytest.raises(UserError, match=f"defined for ReLU networks, and this model computes "
                                        f"{name}") as error:
        cls(model).attribute(randn(2, 4), 0)
    assert "\n" not in str(error.value)
    model[3] = nn.Identity()
    assert cls(model).attribute(randn(2, 4), 0).shape == (2, 4)
