"""Layer-wise relevance propagation (Bach et al. 2015; rules as in Montavon et al. 2019).

The relevance of the output, ``R = output * d score / d output`` (for a class target: the
class score, everything else 0), is passed back layer by layer so that each layer's input
relevance sums to its output relevance (exactly so with zero biases and a vanishing
stabiliser). For a ``Conv2d`` / ``Linear`` layer with input ``a``, output ``z``, the rules are:

- ``"epsilon"``: ``R_j = sum_k a_j w_jk / (z_k + eps sign(z_k)) R_k`` (bias included in z);
- ``"gamma"``:   the generalised gamma rule (Andeol et al. 2021, as zennit's ``Gamma``), which
  favours contributions of the output's own sign. An output ``z_k > 0`` spreads its relevance
  with ``w' = w + gamma w+`` on positive inputs and ``w + gamma w-`` on negative ones (bias
  ``b + gamma b+``); an output ``z_k < 0`` the other way round (``w + gamma w-`` on positive
  inputs, ``w + gamma w+`` on negative ones, bias ``b + gamma b-``); ``R_j = sum_k a_j w'_jk /
  (z'_k + eps sign(z'_k)) R_k`` with ``z'_k`` the sum over j of ``a_j w'_jk`` plus the bias;
  an output of exactly 0 passes nothing;
- ``"zbox"``:    ``R_j = sum_k (a_j w_jk - l_j w+_jk - h_j w-_jk) / z^B_k R_k`` with ``z^B`` the
  sum over j of the numerator: the z^B rule for an input known to lie in ``[low, high]`` (pixels);
  meant for the first layer (``first_rule="zbox"``). No bias.

Why the generalised gamma rule: the original one (Montavon et al. 2019, ``w + gamma w+`` for
every output) assumes that the layer's output goes through a ReLU, so that only positive
outputs carry relevance. In a residual network the convolutions that feed an addition
(``conv2`` / ``bn2`` of a block, the ``downsample`` shortcut) have negative outputs that carry
relevance, and there the original denominator ``z + gamma (sum a w+ + b+)`` crosses zero:
relevance sums of -135 to 588 times the logit on the shipped classifier. The generalised
denominator has the output's own sign and is at least as large as ``|z|``, so it never crosses
zero; on an output that is positive, with non-negative inputs (everything after a ReLU), it
equals the original rule. It is the rule of the standard composite (z-box, gamma, epsilon) as
zennit's ``EpsilonGammaBox`` runs it on ResNets; keeping the original gamma and switching the
layers without a ReLU after them to epsilon would be a composite nobody else computes.

ReLU, dropout and identity pass relevance through; average pooling spreads it in proportion to
the contributions (``a * d pool / d a / pool``, stabilised); max pooling gives it whole to the
input it copies (winner takes all); flatten reshapes it. A residual addition ``s = z + d``
splits ``R_s`` into ``z / s R_s`` and ``d / s R_s`` (each input's share of the sum,
stabilised), and each part goes down its branch. A concatenation (DenseNet) gives each input
the relevance of its own channels.

BatchNorm is folded into the convolution right before it (``fold_batchnorm``, on a copy; the
model is never changed), so its shift becomes a bias. DenseNet's ``norm1``, its transitions'
``norm`` and ``norm5`` read a concatenation and feed a ReLU, so no convolution can absorb them:
relevance passes through them (and any other BatchNorm left unfolded) unchanged, as zennit's
composites pass it through every BatchNorm their canonizers have not merged (``Pass``). In
DenseNet that leaves ``norm0`` folded into ``conv0`` and each layer's ``norm2`` into its
``conv1``. (zennit has no DenseNet canonizer; its ``SequentialMergeBatchNorm`` would pair each
``norm1`` with the previous layer's ``conv2``.)

The standard composite (``rule="gamma", first_rule="zbox", linear_rule="epsilon"``, the
``"lrp"`` of ``gandissect.attribute.evaluate.METHODS``) is zennit's ``EpsilonGammaBox``: z-box
in the first convolution, gamma in the others, epsilon in every ``nn.Linear`` (the logits layer
whatever its name, and all three of VGG's classifier layers). With the canonizers that match
(``ResNetCanonizer``, ``VGGCanonizer``; for DenseNet ``NamedMergeBatchNorm`` with the pairs
above and a forward whose final ReLU and pooling are modules) the maps equal zennit's to
rounding when the BatchNorms have ``eps = 0``. Two documented differences otherwise:

- zennit's merge leaves each merged BatchNorm computing ``x / sqrt(1 + eps)`` rather than
  ``x``, so its model's output moves by about 1e-5 and its maps by 1e-4 to 3e-3 of their
  scale on ResNets and VGG-BNs (Pearson r > 0.99999). A DenseNet-121's maps are far more
  sensitive to that shift (it reaches the BatchNorms left unmerged, whose offsets it does not
  scale): at 64 px they agree with zennit's to Pearson r 0.9995, at 224 px to only 0.56-0.96
  per image, and with ``eps = 0`` to 1e-10 of their scale in float64 at either size;
- zennit hooks modules only, so through the ReLU and average pooling that ``DenseNet.forward``
  calls as functions it passes the plain gradient, spreading relevance evenly over the last
  feature map; we apply the rule it applies to pooling modules.

Supported architectures (anything else raises ``UnsupportedModelError``):

- ``nn.Sequential`` (nested too) of Conv2d, Linear, ReLU, BatchNorm2d, MaxPool2d, AvgPool2d,
  AdaptiveAvgPool2d, AdaptiveMaxPool2d, Flatten, Dropout, Identity and the blocks below;
- residual blocks as torchvision and timm name them: basic (``relu(bn2(conv2(relu(bn1(conv1
  x)))) + shortcut(x))``) and bottleneck (``conv3, bn3`` after a second ``relu``, as in
  ResNet-50), the shortcut an optional ``downsample`` (``Sequential(conv, bn)``) or the
  identity; timm's ``act1`` .. ``act3``, ``drop_block``, ``aa`` (the identity) and stochastic
  depth (the identity in eval mode) included, squeeze-and-excitation (``se``) not;
- ResNet-style models: ``conv1, bn1, relu, [maxpool], layer1 .. layerK`` (Sequentials of
  blocks), ``avgpool``, flatten, ``fc`` (timm: ``act1`` and ``global_pool``):
  ``gandissect``'s ``SceneClassifier``, torchvision's resnet18 .. resnet152, wide_resnet and
  resnext (grouped convolutions), timm's resnet18 .. resnet152;
- VGG-style models: ``features``, ``avgpool``, flatten, ``classifier`` (torchvision's vgg*,
  vgg*_bn, alexnet);
- DenseNets: ``features`` with torchvision's dense blocks (ModuleDicts of layers ``norm1,
  relu1, conv1, norm2, relu2, conv2`` that each read the concatenation of the block's input
  and every earlier layer's output) and transitions, then ReLU, global average pooling, flatten
  and ``classifier`` as in ``DenseNet.forward`` (torchvision's densenet121 .. densenet201).

Transformers and ConvNeXts (layer norm, attention, GELU / SiLU) are refused when ``LRP`` is
made, with one line saying so: their conservation-preserving rules (AttnLRP, CP-LRP) are not
implemented.

Because a model's ``forward`` cannot be read, ``LRP`` rebuilds the layer sequence from the
modules and checks on every call that it reproduces the model's output; a forward with other
operations (functional activations, other concatenations, ...) fails that check with a clear
error.

A forward pre-hook on the model itself is an *input mapping* and runs first: the
normalisation that ``gandissect.models.inputs.preprocess_inside`` puts in front of every
classifier in the app and the command line. It must map each input element on its own (a
per-channel rescaling or normalisation); relevance passes through it unchanged, and the z-box
bounds ``low`` / ``high`` (given for the images passed to ``attribute``) go through it too, so
that the first layer's rule sees the bounds of the input it actually reads.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from gandissect.errors import UserError

from .base import (
    Attribution,
    Target,
    _check_input,
    attribution_mode,
    prepare_target,
    resolve_target,
)

__all__ = ["LRP", "UnsupportedModelError", "fold_batchnorm", "lrp_rule"]

RULES = ("epsilon", "gamma", "zbox")
_PASS_THROUGH = (nn.ReLU, nn.Dropout, nn.Identity)
_IDENTITY_IN_EVAL = ("DropPath", "DropBlock2d")  # timm's stochastic depth and DropBlock
_POOLS = (nn.AvgPool2d, nn.AdaptiveAvgPool2d)
_MAX_POOLS = (nn.MaxPool2d, nn.AdaptiveMaxPool2d)


class UnsupportedModelError(UserError, TypeError):
    """The model holds layers or a forward that ``LRP`` does not know how to propagate (a
    ``UserError``: the app and the command line show it as one line)."""


_SUPPORTED = ("LRP supports nn.Sequential models and torchvision-style ResNets (basic and "
              "bottleneck blocks), VGGs and DenseNets (see gandissect.attribute.lrp); choose "
              "another attribution method")
_INSTEAD = "use integrated_gradients, gradcam, occlusion or another attribution method instead"


# ---------------------------------------------------------------- BatchNorm folding


def _fold_pair(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """Fold ``bn`` (eval statistics) into ``conv`` in place."""
    if bn.running_mean is None or bn.running_var is None:
        raise UnsupportedModelError("cannot fold a BatchNorm without running statistics")
    scale = (bn.running_var + bn.eps).rsqrt()
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -bn.running_mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    with torch.no_grad():  # new tensors: the copy shares the original's other parameters
        bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        new_bias = bias * scale + shift
        weight = conv.weight * scale.reshape(-1, 1, 1, 1).to(conv.weight.dtype)
        trained = conv.weight.requires_grad
        conv.weight = nn.Parameter(weight, requires_grad=trained)
        conv.bias = nn.Parameter(new_bias.to(weight.dtype), requires_grad=trained)


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (eval mode) with every BatchNorm2d folded into the Conv2d before it.

    Pairs are found by position (a Conv2d directly followed by a BatchNorm2d in a
    ``Sequential``), by ResNet naming (``convI`` and ``bnI`` in the same module) and in
    DenseNet's layers (``conv1`` and the ``norm2`` right after it). Folded
    BatchNorms become ``nn.Identity``, so the copy's own ``forward`` still runs and gives the
    same outputs (up to rounding) as the original in eval mode. The original is untouched; the
    copy shares its parameters and buffers but those of the folded convolutions.
    """
    shared = {id(t): t for t in [*model.parameters(), *model.buffers()]}
    folded = copy.deepcopy(model, memo=shared).eval()
    for parent in list(folded.modules()):
        pairs: list[tuple[str, str]] = []
        if isinstance(parent, nn.Sequential):
            names = list(parent._modules)
            pairs += [(a, b) for a, b in zip(names, names[1:])
                      if isinstance(parent._modules[a], nn.Conv2d)
                      and isinstance(parent._modules[b], nn.BatchNorm2d)]
        for name, child in parent.named_children():
            if name.startswith("bn") and isinstance(child, nn.BatchNorm2d):
                conv = f"conv{name[2:]}"
                if isinstance(getattr(parent, conv, None), nn.Conv2d):
                    pairs.append((conv, name))
        if _children(parent, *_DENSE_LAYER) is not None:
            pairs.append(("conv1", "norm2"))
        for conv, bn in pairs:
            if isinstance(parent._modules[bn], nn.BatchNorm2d) and \
                    isinstance(parent._modules[conv], nn.Conv2d):
                _fold_pair(parent._modules[conv], parent._modules[bn])
                parent._modules[bn] = nn.Identity()
    return folded


# ---------------------------------------------------------------- rules


def _stabilise(z: torch.Tensor, eps: float) -> torch.Tensor:
    """``z + eps sign(z)``, with sign(0) = +1 so that the result is never 0 for eps > 0."""
    return z + eps * torch.where(z >= 0, 1.0, -1.0).to(z.dtype)


def _layer_fn(module: nn.Module, weight: torch.Tensor, bias: torch.Tensor | None
              ) -> Callable[[torch.Tensor], torch.Tensor]:
    if isinstance(module, nn.Linear):
        return lambda a: F.linear(a, weight, bias)
    if getattr(module, "padding_mode", "zeros") != "zeros":
        raise UnsupportedModelError(f"LRP supports zero-padded convolutions only, got "
                                    f"padding_mode={module.padding_mode!r}")
    return lambda a: F.conv2d(a, weight, bias, module.stride, module.padding, module.dilation,
                              module.groups)


def _contributions(fns: list[Callable], inputs: list[torch.Tensor], relevance: torch.Tensor,
                   eps: float) -> torch.Tensor:
    """``sum_i inputs_i * d/d inputs_i <z, s>`` with ``z = sum_i fns_i(inputs_i)`` and
    ``s = R / stabilise(z)``: the generic LRP step, computed with one backward pass."""
    leaves = [a.detach().requires_grad_(True) for a in inputs]
    with torch.enable_grad():
        z = sum(fn(a) for fn, a in zip(fns, leaves))
        s = (relevance / _stabilise(z, eps)).detach()
        grads = torch.autograd.grad(z, leaves, s)
    return sum(a.detach() * g for a, g in zip(leaves, grads))


def _gamma(module: nn.Module, a: torch.Tensor, relevance: torch.Tensor, gamma: float,
           epsilon: float) -> torch.Tensor:
    """The generalised gamma rule (see the module doc): each output's relevance goes to the
    contributions of its own sign, those of weights of that sign amplified by ``gamma``."""
    weight, bias = module.weight, module.bias

    def amplified(param: torch.Tensor | None, sign: int) -> torch.Tensor | None:
        if param is None:
            return None
        return param + gamma * (param.clamp(min=0) if sign > 0 else param.clamp(max=0))

    # z' of positive outputs: positive inputs through w + gamma w+, negative ones through
    # w + gamma w-; of negative outputs the other way round. Every term then has the output's
    # sign, and the two z' add up to (2 + gamma) z.
    leaves = [a.clamp(min=0).detach().requires_grad_(True)]
    if bool((a < 0).any()):  # after a ReLU there are no negative inputs to propagate to
        leaves.append(a.clamp(max=0).detach().requires_grad_(True))
    with torch.enable_grad():
        outputs = []
        for sign in (1, -1):
            z = _layer_fn(module, amplified(weight, sign), amplified(bias, sign))(leaves[0])
            if len(leaves) > 1:
                z = z + _layer_fn(module, amplified(weight, -sign), None)(leaves[1])
            outputs.append(z)
        up, down = outputs
        z = (up + down).detach() / (2 + gamma)
        shares = [(relevance * (z > 0) / _stabilise(up, epsilon)).detach(),
                  (relevance * (z < 0) / _stabilise(down, epsilon)).detach()]
        grads = torch.autograd.grad(outputs, leaves, shares)
    return sum(leaf.detach() * grad for leaf, grad in zip(leaves, grads))


def lrp_rule(module: nn.Module, a: torch.Tensor, relevance: torch.Tensor, rule: str,
             epsilon: float = 1e-6, gamma: float = 0.25, low: float | torch.Tensor = -1.0,
             high: float | torch.Tensor = 1.0) -> torch.Tensor:
    """The relevance of the input ``a`` of one Conv2d / Linear ``module`` given its output's
    ``relevance``, by ``rule`` (``"epsilon"``, ``"gamma"`` (generalised) or ``"zbox"``; see the
    module doc). ``epsilon`` is also the gamma and z-box rules' stabiliser; ``low`` / ``high``
    are the zbox bounds of ``a``."""
    weight, bias = module.weight, module.bias
    if rule == "epsilon":
        return _contributions([_layer_fn(module, weight, bias)], [a], relevance, epsilon)
    if rule == "gamma":
        return _gamma(module, a, relevance, gamma, epsilon)
    if rule == "zbox":
        lows = torch.as_tensor(low, dtype=a.dtype, device=a.device).expand_as(a)
        highs = torch.as_tensor(high, dtype=a.dtype, device=a.device).expand_as(a)
        fns = [_layer_fn(module, weight, None),
               _layer_fn(module, -weight.clamp(min=0), None),
               _layer_fn(module, -weight.clamp(max=0), None)]
        return _contributions(fns, [a, lows, highs], relevance, epsilon)
    raise UserError(f"unknown LRP rule {rule!r}; choose from {RULES}")


# ---------------------------------------------------------------- the layer sequence


class _Step(ABC):
    """One node of the rebuilt forward: ``forward(a)`` and ``relevance(a, R_out) -> R_in``.

    Steps made of steps keep what their last ``forward`` computed inside them, so that
    ``relevance`` of the same input (the very tensor) reuses it rather than running every
    nested layer once more per level of nesting."""

    @abstractmethod
    def forward(self, a: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def relevance(self, a: torch.Tensor, relevance: torch.Tensor) -> torch.Tensor: ...


class _Weighted(_Step):
    def __init__(self, module: nn.Module, name: str, rule: str, options: dict) -> None:
        self.module, self.name, self.rule, self.options = module, name, rule, options

    def forward(self, a):
        return self.module(a)

    def relevance(self, a, relevance):
        return lrp_rule(self.module, a, relevance, self.rule, **self.options)


class _PassThrough(_Step):
    def __init__(self, module: nn.Module) -> None:
        self.module = module

    def forward(self, a):
        return self.module(a)

    def relevance(self, a, relevance):
        return relevance


class _Pool(_PassThrough):
    def __init__(self, module: nn.Module, epsilon: float) -> None:
        super().__init__(module)
        self.epsilon = epsilon

    def relevance(self, a, relevance):
        return _contributions([self.module], [a], relevance, self.epsilon)


class _MaxPool(_PassThrough):
    """Winner takes all: each output's relevance goes whole to the input it copies (the
    gradient, which ``a * d pool / d a / pool`` equals but for the stabiliser)."""

    def relevance(self, a, relevance):
        leaf = a.detach().requires_grad_(True)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(self.module(leaf), leaf, relevance)
        return grad


class _Normalisation(_PassThrough):
    """A BatchNorm that no convolution absorbs; relevance passes through it unchanged."""


class _Flatten(_PassThrough):
    def relevance(self, a, relevance):
        return relevance.reshape(a.shape)


class _InputMapping(_Step):
    """The model's own forward pre-hooks, run in order (the input mapping of the module doc);
    relevance passes through them element by element."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.hooks = list(model._forward_pre_hooks.items())
        self.with_kwargs = set(model._forward_pre_hooks_with_kwargs)

    def forward(self, a):
        for key, hook in self.hooks:
            if key in self.with_kwargs:
                result = hook(self.model, (a,), {})
                args = None if result is None else result[0]
            else:
                result = hook(self.model, (a,))
                args = result if result is None or isinstance(result, tuple) else (result,)
            mapped = a if args is None else args[0]
            if not isinstance(mapped, torch.Tensor) or mapped.shape != a.shape:
                raise UnsupportedModelError(
                    f"a forward pre-hook on {type(self.model).__name__} changes the input's "
                    f"shape {tuple(a.shape)}; LRP supports input mappings that map each "
                    "element on its own (a rescaling or normalisation)")
            a = mapped
        return a

    def relevance(self, a, relevance):
        return relevance

    def bounds(self, low: float | torch.Tensor, high: float | torch.Tensor, like: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """The z-box bounds of the mapped input, given those of the input ``like``."""
        mapped = [self.forward(torch.as_tensor(bound, dtype=like.dtype, device=like.device)
                               .expand_as(like).contiguous()) for bound in (low, high)]
        return torch.minimum(*mapped), torch.maximum(*mapped)


class _Sequence(_Step):
    def __init__(self, steps: list[_Step]) -> None:
        self.steps = steps

    def forward(self, a):
        self.inputs = []
        for step in self.steps:
            self.inputs.append(a)
            a = step.forward(a)
        return a

    def relevance(self, a, relevance):
        if not getattr(self, "inputs", None) or self.inputs[0] is not a:
            self.forward(a)
        for step, a_in in zip(reversed(self.steps), reversed(self.inputs)):
            relevance = step.relevance(a_in, relevance)
        return relevance


class _Residual(_Step):
    """``post(main(x) + shortcut(x))``; the sum's relevance is split by each input's share."""

    def __init__(self, main: _Sequence, shortcut: _Sequence | None, post: _Step,
                 epsilon: float) -> None:
        self.main, self.shortcut, self.post, self.epsilon = main, shortcut, post, epsilon

    def forward(self, x):
        d = x if self.shortcut is None else self.shortcut.forward(x)
        self.branches = x, self.main.forward(x), d
        return self.post.forward(self.branches[1] + d)

    def relevance(self, x, relevance):
        if getattr(self, "branches", (None,))[0] is not x:
            self.forward(x)
        _, z, d = self.branches
        relevance = self.post.relevance(z + d, relevance)
        share = relevance / _stabilise(z + d, self.epsilon)
        through_main = self.main.relevance(x, z * share)
        if self.shortcut is None:
            return through_main + d * share
        return through_main + self.shortcut.relevance(x, d * share)


class _DenseBlock(_Step):
    """``cat(x, f_1, .., f_n)`` with ``f_i = layer_i(cat(x, f_1, .., f_{i-1}))`` (DenseNet): each
    concatenation passes relevance back to its inputs by channel slices."""

    def __init__(self, layers: list[_Step]) -> None:
        self.layers = layers

    def forward(self, x):
        self.features, self.inputs = [x], []
        for layer in self.layers:
            self.inputs.append(torch.cat(self.features, 1))
            self.features.append(layer.forward(self.inputs[-1]))
        return torch.cat(self.features, 1)

    def relevance(self, x, relevance):
        if getattr(self, "features", (None,))[0] is not x:
            self.forward(x)
        widths = [f.shape[1] for f in self.features]
        parts = list(relevance.split(widths, 1))
        for i in range(len(self.layers), 0, -1):
            back = self.layers[i - 1].relevance(self.inputs[i - 1], parts[i])
            parts[:i] = [p + r for p, r in zip(parts[:i], back.split(widths[:i], 1))]
        return parts[0]


# ---------------------------------------------------------------- architectures
# Each entry recognises one kind of module by its children and rebuilds its forward from them
# (None: not this kind). A new architecture is a new entry here.


def _children(module: nn.Module, *names: str) -> list[nn.Module] | None:
    """The named children of ``module``, or None unless all of them are modules."""
    found = [getattr(module, name, None) for name in names]
    return found if all(isinstance(m, nn.Module) for m in found) else None


def _resnet(builder: _Builder, module: nn.Module, reads_input: bool) -> _Step | None:
    """ResNet: ``conv1, bn1, relu, [maxpool], layer1 .. layerK``, then ``avgpool``, flatten,
    ``fc`` (torchvision) or ``global_pool`` (its pooling and flatten), ``fc`` (timm, whose
    stem activation is ``act1``; its head dropout only acts in training)."""
    stem = _children(module, "conv1", "bn1", "relu") or _children(module, "conv1", "bn1", "act1")
    if stem is None or _children(module, "layer1", "fc") is None:
        return None
    head = _children(module, "avgpool") or _children(module, "global_pool")
    if head is None:
        return None
    parts = stem + ([module.maxpool] if isinstance(getattr(module, "maxpool", None), nn.Module)
                    else [])
    i = 1
    while isinstance(getattr(module, f"layer{i}", None), nn.Module):
        parts.append(getattr(module, f"layer{i}"))
        i += 1
    pool = head[0]
    if _children(pool, "pool", "flatten") is not None:  # timm's SelectAdaptivePool2d
        head = [pool.pool, pool.flatten]
    else:
        head = [pool, nn.Flatten()]
    return builder.sequence(parts + head + [module.fc], reads_input)


# The main branch of a residual block in forward order, by the names of torchvision's and timm's
# BasicBlock and Bottleneck, and the activation after the addition. Missing names (and
# children set to None, as timm's ``se`` and ``drop_path`` often are) are skipped.
_BLOCKS = (
    (("conv1", "bn1", "relu", "conv2", "bn2"), "relu"),
    (("conv1", "bn1", "relu", "conv2", "bn2", "relu", "conv3", "bn3"), "relu"),
    (("conv1", "bn1", "act1", "conv2", "bn2", "drop_block", "act2", "aa", "conv3", "bn3", "se",
      "drop_path"), "act3"),
    (("conv1", "bn1", "drop_block", "act1", "aa", "conv2", "bn2", "se", "drop_path"), "act2"),
)


def _residual_block(builder: _Builder, module: nn.Module, reads_input: bool) -> _Step | None:
    """Residual blocks as torchvision and timm build them: BasicBlock ``act(bn2(conv2(act(bn1(
    conv1 x)))) + shortcut(x))`` and Bottleneck (a second activation, then ``conv3, bn3``), the
    shortcut ``downsample`` (a ``Sequential(conv, bn)``) or the identity."""
    if _children(module, "conv1", "bn1", "conv2", "bn2") is None or hasattr(module, "layer1"):
        return None
    bottleneck = hasattr(module, "conv3")
    for names, post in _BLOCKS:
        if not isinstance(getattr(module, post, None), nn.Module) or \
                bottleneck != ("conv3" in names):
            continue
        main = [getattr(module, n) for n in names if isinstance(getattr(module, n, None),
                                                                   nn.Module)]
        shortcut = getattr(module, "downsample", None)
        shortcut = None if shortcut is None else builder.sequence([shortcut], reads_input)
        return _Residual(builder.sequence(main, reads_input), shortcut,
                         _PassThrough(getattr(module, post)), builder.options["epsilon"])
    return None


_DENSE_LAYER = ("norm1", "relu1", "conv1", "norm2", "relu2", "conv2")


def _is_dense_block(module: nn.Module) -> bool:
    return isinstance(module, nn.ModuleDict) and len(module) > 0 and \
        all(_children(layer, *_DENSE_LAYER) is not None for layer in module.values())


def _dense_block(builder: _Builder, module: nn.Module, reads_input: bool) -> _Step | None:
    """torchvision's _DenseBlock: a ModuleDict of _DenseLayers (``conv2(relu2(norm2(conv1(
    relu1(norm1(cat(inputs)))))))``; dropout only in training), each reading every earlier
    output of the block."""
    if not _is_dense_block(module):
        return None
    return _DenseBlock([builder.sequence(_children(layer, *_DENSE_LAYER), False)
                        for layer in module.values()])


def _densenet(builder: _Builder, module: nn.Module, reads_input: bool) -> _Step | None:
    """torchvision's DenseNet: ``features`` (ending in ``norm5``), then a functional ReLU and
    global average pooling, flatten, ``classifier``."""
    parts = _children(module, "features", "classifier")
    if parts is None or not any(_is_dense_block(m) for m in module.features.children()):
        return None
    head = [nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), module.classifier]
    return builder.sequence([module.features, *head], reads_input)


def _vgg(builder: _Builder, module: nn.Module, reads_input: bool) -> _Step | None:
    """torchvision's VGG (and AlexNet): ``features``, ``avgpool``, flatten, ``classifier``."""
    parts = _children(module, "features", "avgpool", "classifier")
    if parts is None:
        return None
    return builder.sequence([module.features, module.avgpool, nn.Flatten(), module.classifier],
                            reads_input)


_ARCHITECTURES = (_resnet, _residual_block, _dense_block, _densenet, _vgg)


class _Builder:
    """Turns a (BatchNorm-folded) model into ``_Step``s, giving each weighted layer its rule."""

    def __init__(self, model: nn.Module, rule: str, first_rule: str | None,
                 linear_rule: str | None, layer_rules: dict[str, str], options: dict) -> None:
        self.names = {id(m): name for name, m in model.named_modules()}
        self.rule, self.first_rule, self.linear_rule = rule, first_rule, linear_rule
        self.layer_rules, self.options = layer_rules, options

    def rule_of(self, module: nn.Module, name: str, reads_input: bool) -> str:
        """The rule of one Conv2d / Linear: by name, else the first layer's, else the Linear
        layers', else the default."""
        if name in self.layer_rules:
            return self.layer_rules[name]
        if reads_input and self.first_rule is not None:
            return self.first_rule
        if isinstance(module, nn.Linear) and self.linear_rule is not None:
            return self.linear_rule
        return self.rule

    def build(self, module: nn.Module, reads_input: bool) -> _Step:
        name = self.names.get(id(module), "")
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            return _Weighted(module, name, self.rule_of(module, name, reads_input),
                             self.options)
        if isinstance(module, _PASS_THROUGH) or type(module).__name__ in _IDENTITY_IN_EVAL:
            return _PassThrough(module)
        if isinstance(module, _POOLS):
            return _Pool(module, self.options["epsilon"])
        if isinstance(module, _MAX_POOLS):
            return _MaxPool(module)
        if isinstance(module, nn.Flatten):
            return _Flatten(module)
        if isinstance(module, _BatchNorm):
            # not after a convolution (DenseNet's come before their ReLU and convolution), so
            # not folded: relevance passes through unchanged, as zennit's Pass rule for BatchNorm
            return _Normalisation(module)
        if isinstance(module, nn.Sequential):
            return self.sequence(list(module), reads_input)
        for architecture in _ARCHITECTURES:
            step = architecture(self, module, reads_input)
            if step is not None:
                return step
        if not name:  # the model itself
            raise UnsupportedModelError(f"LRP does not support {type(module).__name__}: its "
                                        f"forward cannot be rebuilt from its layers; {_SUPPORTED}")
        raise UnsupportedModelError(f"LRP does not support layer {name!r} "
                                    f"({type(module).__name__}); {_SUPPORTED}")

    def sequence(self, modules: list[nn.Module], reads_input: bool) -> _Sequence:
        steps = []
        for module in modules:
            steps.append(self.build(module, reads_input))
            # relevance reaches the input only through layers that neither mix nor rescale it
            reads_input = reads_input and type(steps[-1]) in (_PassThrough, _Flatten)
        return _Sequence(steps)


# The parts of transformers (and of ConvNeXts) that need rules of their own (AttnLRP, Achtibat et
# al. 2024; CP-LRP, Ali et al. 2022), by class name as timm, transformers and torch spell them;
# the first three mark a model as one, the activations are named with them.
_TRANSFORMER_PARTS = (("LayerNorm", "LayerNorm"), ("GroupNorm", "GroupNorm"),
                      ("Attention", "attention"), ("GELU", "GELU"), ("SiLU", "SiLU"),
                      ("Swish", "SiLU"))


def _refuse_transformers(model: nn.Module) -> None:
    """Raise ``UnsupportedModelError`` naming what a transformer-style ``model`` (one with layer
    norm or attention) holds that LRP has no rule for, before any work is done."""
    found: list[str] = []
    for module in model.modules():
        kinds = [c.__name__ for c in type(module).__mro__[:-1]]
        for part, label in _TRANSFORMER_PARTS:
            if any(part in kind for kind in kinds) and label not in found:
                found.append(label)
    if {"LayerNorm", "GroupNorm", "attention"} & set(found):
        parts = ", ".join(found[:-1]) + f" and {found[-1]}" if len(found) > 1 else found[0]
        raise UnsupportedModelError(
            f"LRP supports convolutional networks with ReLU and BatchNorm (Sequential, ResNet, "
            f"VGG, DenseNet); {type(model).__name__} has {parts}, which need the rules of "
            f"AttnLRP / CP-LRP (not implemented); {_INSTEAD}")


class LRP(Attribution):
    """Layer-wise relevance propagation; input-shaped relevance (see the module docstring for
    the rules and the supported architectures).

    Args:
        model: a supported model (left unchanged: LRP works on a BatchNorm-folded copy made at
            every call, so later weight changes are seen).
        rule: rule of every Conv2d / Linear layer: ``"epsilon"``, ``"gamma"`` (the generalised
            gamma rule) or ``"zbox"``.
        first_rule: rule of the layer(s) reading the input (None: ``rule``); ``"zbox"`` with
            ``low`` / ``high`` the bounds of the images passed to ``attribute`` (-1, 1 for the
            shipped models and for every classifier as the app and the command line load it,
            their input mapping in front; the bounds go through that mapping).
        linear_rule: rule of every ``nn.Linear`` (None: ``rule``); ``"epsilon"`` puts the
            epsilon rule on the logits layer whatever its name, and on every layer of a
            classifier head of several (VGG's three), as zennit's ``EpsilonGammaBox`` does.
        layer_rules: per-layer overrides by dotted module name, e.g. ``{"fc": "epsilon"}``;
            they take precedence over ``first_rule`` and ``linear_rule``.
        epsilon: the stabiliser of every rule, of pooling and of residual splits.
        gamma: the gamma rule's weight on the parameters of the output's sign.
    """

    def __init__(self, model: nn.Module, rule: str = "epsilon", first_rule: str | None = None,
                 layer_rules: dict[str, str] | None = None, epsilon: float = 1e-6,
                 gamma: float = 0.25, low: float | torch.Tensor = -1.0,
                 high: float | torch.Tensor = 1.0, linear_rule: str | None = None) -> None:
        super().__init__(model)
        self.layer_rules = dict(layer_rules or {})
        for r in [rule, first_rule, linear_rule, *self.layer_rules.values()]:
            if r is not None and r not in RULES:
                raise UserError(f"unknown LRP rule {r!r}; choose from {RULES}")
        _refuse_transformers(model)
        self.rule, self.first_rule, self.linear_rule = rule, first_rule, linear_rule
        self.options = {"epsilon": epsilon, "gamma": gamma, "low": low, "high": high}
        self._layers(model)  # fail early on an unsupported architecture

    def _layers(self, model: nn.Module, x: torch.Tensor | None = None
                ) -> tuple[nn.Module, _Step]:
        """The BatchNorm-folded copy and its layer sequence, the input mapping (if any) first,
        with the z-box bounds of the mapped input ``x`` (None: as given)."""
        folded = fold_batchnorm(model)
        mapping = _InputMapping(model) if model._forward_pre_hooks else None
        options = dict(self.options)
        if mapping is not None and x is not None:
            options["low"], options["high"] = mapping.bounds(options["low"], options["high"], x)
        builder = _Builder(folded, self.rule, self.first_rule, self.linear_rule,
                           self.layer_rules, options)
        layers = builder.build(folded, reads_input=True)
        return folded, layers if mapping is None else _Sequence([mapping, layers])

    def attribute(self, x: torch.Tensor, target: Target = None) -> torch.Tensor:
        """Relevance of each input element for ``target``; sums to about the target score
        (exactly with zero biases and epsilon -> 0)."""
        x = _check_input(x)
        target = prepare_target(target, x.shape[0], x.device)
        folded, layers = self._layers(self.model, x)
        name = type(self.model).__name__
        with attribution_mode(self.model), attribution_mode(folded), torch.no_grad():
            expected = self.model(x)
            try:
                output = layers.forward(x)
            except RuntimeError as error:
                raise UnsupportedModelError(
                    f"LRP's layer sequence for {name} does not run ({error}): its forward does "
                    f"more than call its layers in order; {_SUPPORTED}") from error
            scale = 1e-4 * (1 + float(expected.abs().max()))
            if output.shape != expected.shape or not torch.allclose(output, expected, rtol=1e-3,
                                                                     atol=scale):
                raise UnsupportedModelError(
                    f"LRP's layer sequence does not reproduce {name}'s output: its forward (or a "
                    f"forward hook) does more than call its layers in order; {_SUPPORTED}")
            with torch.enable_grad():
                leaf = output.detach().requires_grad_(True)
                (grad,) = torch.autograd.grad(resolve_target(leaf, target).sum(), leaf)
            return layers.relevance(x, output * grad)
