"""Units behind a prediction: a class score decomposed over the units of one layer, units ranked
by their contribution to a class, and what ablating them does to every class's accuracy.

    found = unit_contributions(classifier, images, "layer4")          # the predicted class
    found.contributions            # (N, units): each unit's share of the class score
    found.top(10)                  # image 0's ten units that raise the score most
    ranking = class_unit_ranking(classifier, probe_images, labels, "layer4")
    ablation = ablation_accuracy(classifier, images, labels, "layer4", ranking.top_units(10), 10)
    ablation.classes[2].accuracy_ablated                 # class 2 with its top 10 units zeroed

The decomposition (``unit_contributions``):

- a head that is exactly global average pooling of the layer followed by one ``nn.Linear``
  (the CAM architecture, found and checked as ``gandissect.attribute.cam.CAM`` does: the
  linear layer's input must be the layer's pooled map and its output the class scores): unit
  ``k``'s contribution to class ``c`` is ``w_ck * mean(A_k)``, and the contributions plus the
  linear layer's bias are the class score, exactly (``method == "pooled_linear"``);
- any other head: gradient times activation summed over positions,
  ``sum_ij A_kij * d score / d A_kij``, a first-order (Taylor) approximation of the score's
  dependence on each unit, exact only where the score is linear in the layer (on a pooled
  linear head it equals the exact decomposition) (``method == "gradient_x_activation"``).

The layer's output is read as ``(N, units, h, w)`` maps by ``gandissect.spatial`` (token
sequences on the patch grid, class tokens left out). Ranking per class (Bau et al. 2020,
"Understanding the role of individual units in a deep neural network", PNAS): the mean
contribution of each unit to class ``c`` over the probe images labelled ``c``. Ablation zeroes
units in the layer's channel dimension with a forward hook that is always removed afterwards
(for token sequences every token, class tokens included).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gandissect.attribute.base import attribution_mode
from gandissect.attribute.cam import layer_activations_and_gradients, logits_linear
from gandissect.errors import UserError
from gandissect.hooks import Trace, get_layer
from gandissect.spatial import first_tensor, spatial_view, token_layout
from gandissect.torchutil import eval_mode, model_device

__all__ = ["AblationAccuracy", "ClassAblation", "UnitContributions", "UnitRanking",
           "ablated_units", "ablation_accuracy", "accuracy_drop_figure", "class_unit_ranking",
           "class_names", "layer_units", "predictions", "sceneworld_scenes", "unit_contributions",
           "unit_labels"]

EXACT, APPROXIMATE = "pooled_linear", "gradient_x_activation"


@dataclass
class UnitContributions:
    """Class scores decomposed over a layer's units, one row per image.

    Attributes:
        layer: the layer's dotted name.
        method: ``"pooled_linear"`` (exact) or ``"gradient_x_activation"`` (first order).
        target: ``(N,)`` the class explained in each image.
        logit: ``(N,)`` that class's score.
        contributions: ``(N, units)`` each unit's share of the score.
        bias: ``(N,)`` the linear layer's bias for the target (exact method; the contributions
            plus it are the score), else None.
        maps: ``(N, units, h, w)`` the layer's activations (for heatmaps).
    """

    layer: str
    method: str
    target: torch.Tensor
    logit: torch.Tensor
    contributions: torch.Tensor
    bias: torch.Tensor | None
    maps: torch.Tensor

    @property
    def exact(self) -> bool:
        """Whether the contributions (plus the bias) are the score exactly."""
        return self.method == EXACT

    def top(self, k: int, image: int = 0) -> list[int]:
        """The ``k`` units of ``image`` with the largest contributions, largest first."""
        order = torch.argsort(self.contributions[image], descending=True, stable=True)
        return order[:k].tolist()

    def heatmaps(self, units: Sequence[int], size: Sequence[int], image: int = 0
                 ) -> torch.Tensor:
        """``(len(units), H, W)``: the units' activation maps in ``image``, upsampled
        (bilinear) to ``size``."""
        maps = self.maps[image, list(units)][None].float()
        return F.interpolate(maps, size=tuple(size), mode="bilinear", align_corners=False)[0]


def _targets(target: int | Sequence[int] | torch.Tensor | None, output: torch.Tensor
             ) -> torch.Tensor:
    """One class index per image; None: the predicted class."""
    n, classes = output.shape[0], output.shape[-1]
    if target is None:
        return output.argmax(-1)
    index = torch.as_tensor(target, dtype=torch.int64, device=output.device).reshape(-1)
    if index.numel() == 1:
        index = index.expand(n)
    if index.numel() != n:
        raise UserError(f"give one target class or one per image ({n}), got {index.numel()}")
    if int(index.min()) < 0 or int(index.max()) >= classes:
        raise UserError(f"target classes must lie in [0, {classes - 1}], got "
                        f"{sorted(set(index.tolist()))}")
    return index


def _pooled_linear(model: nn.Module, layer: str, x: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor, nn.Linear] | None:
    """``(maps, scores, fc)`` when ``model``'s scores are ``fc(GAP(layer))`` on ``x``: the
    linear layer that gives the scores (``logits_linear``) reads the layer's pooled map and
    its output is the scores; None otherwise."""
    try:
        name = logits_linear(model, x)
    except UserError:
        return None
    fc = get_layer(model, name)
    with attribution_mode(model), torch.no_grad(), \
            Trace(model, layer, view=first_tensor) as traced, \
            Trace(model, name, retain_input=True) as head:
        output = model(x)
    maps = spatial_view(model, layer, traced.output, x.shape[-2:])
    if head.input is None or head.input.dim() != 2 or head.input.shape[1] != maps.shape[1]:
        return None
    scale = 1e-4 * (1 + float(head.input.abs().max()))
    if not torch.allclose(head.input, maps.mean((2, 3)), rtol=1e-4, atol=scale) \
            or not torch.equal(head.output, output):
        return None
    return maps, output, fc


def unit_contributions(model: nn.Module, images: torch.Tensor, layer: str,
                       target: int | Sequence[int] | torch.Tensor | None = None
                       ) -> UnitContributions:
    """Each image's ``target`` score decomposed over the units of ``layer``.

    Args:
        model: a classifier taking ``images`` and returning ``(N, classes)`` scores.
        images: ``(N, 3, H, W)`` as the model takes them.
        layer: a layer with ``(N, units, h, w)`` maps (``gandissect.spatial``).
        target: the class per image (an int, or one per image); None: the predicted class.

    Returns:
        ``UnitContributions``: exact for a ``GAP(layer) -> nn.Linear`` head (the pooled
        activation times the class weight; contributions + bias == score), else gradient x
        activation summed over positions (a first-order approximation).

    Example::

        found = unit_contributions(classifier, images, "layer4")
        found.contributions.sum(1) + found.bias     # == the predicted classes' scores
    """
    get_layer(model, layer)
    x = images.to(model_device(model))
    exact = _pooled_linear(model, layer, x)
    if exact is not None:
        maps, output, fc = exact
        classes = _targets(target, output)
        pooled = maps.mean((2, 3)).double()
        weight = fc.weight.detach()[classes].double()
        bias = (fc.bias.detach()[classes].double() if fc.bias is not None
                else torch.zeros(len(classes), dtype=torch.float64, device=x.device))
        logit = output.gather(1, classes[:, None])[:, 0]
        return UnitContributions(layer, EXACT, classes, logit.detach(), pooled * weight, bias,
                                 maps.detach())
    with attribution_mode(model), torch.no_grad():
        output = model(x)
    classes = _targets(target, output)
    with attribution_mode(model):
        maps, grad = layer_activations_and_gradients(model, layer, x, classes)
    logit = output.gather(1, classes[:, None])[:, 0]
    contributions = (maps.double() * grad.double()).sum((2, 3))
    return UnitContributions(layer, APPROXIMATE, classes, logit.detach(), contributions, None,
                             maps)


# ---------------------------------------------------------------------- ranking per class


@dataclass
class UnitRanking:
    """Units ranked per class by their mean contribution to it over the class's probe images.

    Attributes:
        layer: the layer's dotted name.
        method: how contributions were computed (``UnitContributions.method``).
        classes: the class indices ranked (rows of ``mean``).
        mean: ``(len(classes), units)`` mean contribution of each unit to each class.
        counts: probe images of each class.
    """

    layer: str
    method: str
    classes: list[int]
    mean: torch.Tensor
    counts: list[int]

    def top(self, cls: int, k: int) -> list[int]:
        """Class ``cls``'s ``k`` units with the largest mean contribution, largest first."""
        if cls not in self.classes:
            raise UserError(f"class {cls} has no probe images in this ranking")
        row = self.mean[self.classes.index(cls)]
        return torch.argsort(row, descending=True, stable=True)[:k].tolist()

    def top_units(self, k: int) -> dict[int, list[int]]:
        """``{class: its top k units}`` for every ranked class."""
        return {cls: self.top(cls, k) for cls in self.classes}


def _batches(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def class_unit_ranking(model: nn.Module, probe_images: torch.Tensor, labels: torch.Tensor,
                       layer: str, classes: Sequence[int] | None = None, batch: int = 64
                       ) -> UnitRanking:
    """Units of ``layer`` ranked per class by their mean contribution to the class over the
    probe images labelled with it (``unit_contributions`` with the label as target).

    Args:
        probe_images: ``(N, 3, H, W)`` as the model takes them.
        labels: ``(N,)`` class index of each image.
        classes: the classes to rank (default: every class with probe images).
        batch: images per forward pass.

    Example::

        ranking = class_unit_ranking(classifier, images, labels, "layer4")
        ranking.top(2, 10)       # class 2's ten most contributing units
    """
    labels = torch.as_tensor(labels, dtype=torch.int64).reshape(-1)
    if labels.numel() != probe_images.shape[0]:
        raise UserError(f"{probe_images.shape[0]} probe images but {labels.numel()} labels")
    wanted = sorted(set(labels.tolist())) if classes is None else [int(c) for c in classes]
    missing = [c for c in wanted if not bool((labels == c).any())]
    if missing:
        raise UserError(f"no probe images of class{'es' if len(missing) > 1 else ''} "
                        f"{', '.join(map(str, missing))}; use more probe images")
    keep = torch.isin(labels, torch.tensor(wanted))
    images, labels = probe_images[keep], labels[keep]
    sums: torch.Tensor | None = None
    method = EXACT
    for rows in _batches(len(labels), batch):
        found = unit_contributions(model, images[rows], layer, labels[rows])
        method = found.method if found.method == APPROXIMATE else method
        per_class = torch.zeros(len(wanted), found.contributions.shape[1], dtype=torch.float64)
        index = torch.tensor([wanted.index(c) for c in labels[rows].tolist()])
        per_class.index_add_(0, index, found.contributions.cpu())
        sums = per_class if sums is None else sums + per_class
    counts = [int((labels == c).sum()) for c in wanted]
    return UnitRanking(layer, method, wanted, sums / torch.tensor(counts)[:, None], counts)


# ---------------------------------------------------------------------- ablation


def _channel_dim(model: nn.Module, layer: str, tensor: torch.Tensor) -> int:
    """The dimension of ``layer``'s output that indexes its units (``gandissect.spatial``'s
    rule: channels first for maps, last for token sequences and channels-last outputs)."""
    if tensor.dim() == 4:
        layout = token_layout(model)
        module = get_layer(model, layer)
        if layout is not None and layout.channels_last \
                and not isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            return 3
        return 1
    if tensor.dim() in (2, 3):
        return tensor.dim() - 1
    raise UserError(f"layer {layer!r} gives {tuple(tensor.shape)}: no units to ablate")


@contextmanager
def ablated_units(model: nn.Module, layer: str, units: Sequence[int]) -> Iterator[None]:
    """Within the block, ``layer``'s ``units`` output zero (a forward hook, removed on exit
    also when the body raises).

    Example::

        with ablated_units(classifier, "layer4", [3, 17]):
            scores = classifier(images)
    """
    module = get_layer(model, layer)
    index = torch.as_tensor(list(units), dtype=torch.int64)

    def hook(_: nn.Module, inputs: tuple, output: Any) -> Any:
        tensor = first_tensor(output)
        dim = _channel_dim(model, layer, tensor)
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= tensor.shape[dim]):
            raise UserError(f"unit ids must lie in [0, {tensor.shape[dim] - 1}] for layer "
                            f"{layer!r}, got {index.tolist()}")
        shape = [1] * tensor.dim()
        shape[dim] = tensor.shape[dim]
        keep = torch.ones(shape, dtype=tensor.dtype, device=tensor.device)
        keep.view(-1)[index.to(tensor.device)] = 0
        edited = tensor * keep
        if isinstance(output, torch.Tensor):
            return edited
        if isinstance(output, tuple):
            return (edited, *output[1:])
        raise UserError(f"layer {layer!r} returns {type(output).__name__}; ablation needs a "
                        "tensor or a tuple output")

    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def predictions(model: nn.Module, images: torch.Tensor, batch: int = 64) -> torch.Tensor:
    """``(N,)`` the model's predicted class of each image (eval mode, restored afterwards)."""
    device = model_device(model)
    found = []
    with eval_mode(model), torch.no_grad():
        for rows in _batches(images.shape[0], batch):
            found.append(model(images[rows].to(device)).argmax(-1).cpu())
    return torch.cat(found)


@dataclass
class ClassAblation:
    """One class's top units ablated: its accuracy and the other classes' (pooled over their
    images), before and after, and both when only those units are kept (every other unit of
    the layer zeroed)."""

    cls: int
    units: list[int]
    accuracy: float
    accuracy_ablated: float
    others_accuracy: float
    others_accuracy_ablated: float
    accuracy_kept_only: float
    others_accuracy_kept_only: float
    per_class_ablated: list[float] = field(default_factory=list)  # every class, ablated

    def to_json(self) -> dict[str, Any]:
        """The command line's record of this class."""
        return {"units": self.units, "accuracy": self.accuracy,
                "accuracy_ablated": self.accuracy_ablated,
                "others_accuracy": self.others_accuracy,
                "others_accuracy_ablated": self.others_accuracy_ablated,
                "accuracy_kept_only": self.accuracy_kept_only,
                "others_accuracy_kept_only": self.others_accuracy_kept_only}


@dataclass
class AblationAccuracy:
    """``ablation_accuracy``'s result: per-class accuracy without ablation (``accuracy[c]`` for
    every output of the model, NaN for a class without images) and one ``ClassAblation`` per
    ranked class."""

    layer: str
    k: int
    accuracy: list[float]
    classes: dict[int, ClassAblation]

    def drop_matrix(self) -> torch.Tensor:
        """``(ranked classes, classes)``: row ``c`` = accuracy drop of every class when class
        ``c``'s top units are ablated (positive: the class got worse)."""
        return torch.tensor([[before - after for before, after in
                              zip(self.accuracy, entry.per_class_ablated)]
                             for entry in self.classes.values()])


def _accuracy(correct: torch.Tensor, rows: torch.Tensor) -> float:
    return float(correct[rows].float().mean()) if bool(rows.any()) else float("nan")


def ablation_accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, layer: str,
                      units_by_class: Mapping[int, Sequence[int]], k: int, batch: int = 64
                      ) -> AblationAccuracy:
    """For each class of ``units_by_class``, its first ``k`` units zeroed at ``layer``: the
    class's accuracy and every other class's before and after, and the class's accuracy with
    only those ``k`` units kept (every other unit of the layer zeroed), and the other classes'
    then.

    Args:
        images: ``(N, 3, H, W)`` as the model takes them; labels ``(N,)`` class indices.
        units_by_class: ``{class: units, most relevant first}`` (``UnitRanking.top_units``).
        k: units ablated per class.

    The model is unchanged afterwards (the hooks are removed, its mode restored).

    Example::

        ranking = class_unit_ranking(classifier, probe, probe_labels, "layer4")
        result = ablation_accuracy(classifier, images, labels, "layer4",
                                   ranking.top_units(10), 10)
        result.drop_matrix()      # (classes, classes) accuracy drops
    """
    labels = torch.as_tensor(labels, dtype=torch.int64).reshape(-1).cpu()
    if labels.numel() != images.shape[0]:
        raise UserError(f"{images.shape[0]} images but {labels.numel()} labels")
    short = [c for c, units in units_by_class.items() if len(units) < k]
    if k < 1 or short:
        raise UserError(f"k must be at least 1 and at most the units given per class, got {k}")
    with eval_mode(model), torch.no_grad(), Trace(model, layer, view=first_tensor) as traced:
        classes = model(images[:1].to(model_device(model))).shape[-1]
    width = traced.output.shape[_channel_dim(model, layer, traced.output)]
    if k > width:
        raise UserError(f"layer {layer!r} has {width} units; k = {k} is more")
    if int(labels.min()) < 0 or int(labels.max()) >= classes:
        raise UserError(f"labels must be class indices in [0, {classes - 1}]")
    present = [torch.as_tensor(labels == c) for c in range(classes)]
    base = predictions(model, images, batch) == labels
    accuracy = [_accuracy(base, rows) for rows in present]
    result: dict[int, ClassAblation] = {}
    for cls, ranked in units_by_class.items():
        units = [int(u) for u in list(ranked)[:k]]
        with ablated_units(model, layer, units):
            ablated = predictions(model, images, batch) == labels
        chosen = set(units)
        others = [u for u in range(width) if u not in chosen]
        with ablated_units(model, layer, others):
            kept = predictions(model, images, batch) == labels
        own = labels == cls
        result[int(cls)] = ClassAblation(
            int(cls), units, _accuracy(base, own), _accuracy(ablated, own),
            _accuracy(base, ~own), _accuracy(ablated, ~own), _accuracy(kept, own),
            _accuracy(kept, ~own),
            [_accuracy(ablated, rows) for rows in present])
    return AblationAccuracy(layer, k, accuracy, result)


def accuracy_drop_figure(result: AblationAccuracy, names: Sequence[str]) -> Any:
    """A PIL image of ``result.drop_matrix()``: a row per class whose top units are ablated,
    a column per class whose accuracy drops, each cell its drop in percentage points (red: a
    drop, blue: a gain; full colour at the largest change, or 5 points if all are smaller)."""
    from PIL import Image, ImageDraw

    drops = result.drop_matrix()
    rows, cols = drops.shape
    peak = max(0.05, float(torch.nan_to_num(drops).abs().max()))  # colour scale
    cell, left, top = 56, 110, 70
    image = Image.new("RGB", (left + cols * cell + 10, top + rows * cell + 30), "white")
    draw = ImageDraw.Draw(image)
    draw.text((10, 8), f"accuracy drop (points) with each class's top {result.k} "
                       f"{result.layer} units ablated", fill="black")
    draw.text((left, 30), "accuracy of class ->", fill="black")
    for j in range(cols):
        draw.text((left + j * cell + 3, top - 18), str(names[j])[:8], fill="black")
    for i, cls in enumerate(result.classes):
        draw.text((8, top + i * cell + cell // 2 - 6), f"ablate {str(names[cls])[:9]}",
                  fill="black")
        for j in range(cols):
            value = float(drops[i, j])
            shade = 0.0 if value != value else abs(value) / peak  # NaN: no images
            tint = int(255 * (1 - shade))
            colour = (255, tint, tint) if value >= 0 else (tint, tint, 255)
            box = (left + j * cell, top + i * cell, left + (j + 1) * cell - 2,
                   top + (i + 1) * cell - 2)
            draw.rectangle(box, fill=colour, outline="grey")
            text = "-" if value != value else f"{100 * value:+.0f}"
            draw.text((box[0] + 14, box[1] + cell // 2 - 8), text,
                      fill="white" if shade > 0.6 else "black")
    draw.text((10, top + rows * cell + 8), "rows: class whose top units are ablated",
              fill="black")
    return image


# ---------------------------------------------------------------------- inputs


def layer_units(model: nn.Module, layer: str, size: int) -> int:
    """The number of units of ``layer`` (a layer with maps, ``gandissect.spatial.map_layers``
    on a grey ``size`` px image); one ``UserError`` naming the valid layers otherwise."""
    from gandissect.spatial import map_layers

    layers = map_layers(model, torch.zeros(2, 3, size, size, device=model_device(model)))
    if layer not in layers:
        raise UserError(f"the classifier has no layer with maps called {layer!r}; choose one of "
                        f"{', '.join(layers) or '(none)'}")
    return int(layers[layer][0])


def sceneworld_scenes(seed: int, start: int, n: int, size: int
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Scenes ``start .. start + n - 1`` of SceneWorld world ``seed``: ``(n, 3, size, size)``
    images in [-1, 1] and their scene class indices (scene code - 1, the shipped classifier's
    outputs)."""
    from gandissect.world import render_batch
    from gandissect.world.dataset import image_to_tensor

    rendered = render_batch(seed, range(start, start + n), size)
    return image_to_tensor(rendered["image"]), torch.from_numpy(rendered["scene"]) - 1


def class_names(model: nn.Module, classes: int) -> list[str]:
    """The model's ``class_names`` (or ``scene_names``) when it has one per output, else the
    class indices as text."""
    names = getattr(model, "class_names", None) or getattr(model, "scene_names", None)
    if not names or len(names) != classes:
        return [str(index) for index in range(classes)]
    return [str(name) for name in names]


def unit_labels(dissection: Any, layer: str) -> dict[int, tuple[str, float]]:
    """``{unit: (concept, IoU)}`` of ``layer`` in a Network Dissection result (``Dissection``);
    empty when it has no such layer."""
    entry = next((item for item in dissection.layers if item.layer == layer), None)
    if entry is None:
        return {}
    return {score.unit: (f"{score.label} ({score.category})", float(score.iou))
            for score in entry.units}
