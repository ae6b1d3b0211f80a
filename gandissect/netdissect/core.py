"""``netdissect``: score every unit of a classifier's layers against a probe set's concepts.

Data path (Network Dissection, Bau et al. 2017)::

    probe batch (images, labels) -> model -> layer activations (B, U, h, w)
        pass 1: per-unit quantile sketch (threshold = top 0.5% level), top images, mean map
        pass 2: upsample (bilinear) to the labels' size, threshold, count intersections and
                category-conditioned unions (``IoUTally``) -> IoU per (unit, concept)

The passes and the labelling are GAN dissection's own (``gandissect.dissect.passes`` and its
scorer), so both dissections give the same ``Dissection`` and the same report. Memory does not
grow with the dataset: each batch is traced, folded into the statistics and dropped; nothing is
written to disk.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from gandissect.dissect.core import KEPT_QUANTILES, check_layers, check_settings
from gandissect.dissect.core import _score_layer as score_layer
from gandissect.dissect.identity import fingerprint
from gandissect.dissect.labels import ConceptTable
from gandissect.dissect.passes import Accumulator, FirstPass, IoUPass
from gandissect.dissect.results import Dissection, LayerDissection
from gandissect.hooks import TraceDict
from gandissect.netdissect.inputs import Preprocess
from gandissect.netdissect.probe import ProbeSet

__all__ = ["netdissect", "layer_summary", "unique_detectors", "concept_table", "eval_mode"]


def concept_table(probe: ProbeSet) -> ConceptTable:
    """The probe set's concepts, numbered category by category (code 0 left out)."""
    return ConceptTable(tuple(probe.categories),
                        {c: tuple(probe.concepts[c]) for c in probe.categories})


def unique_detectors(layer: LayerDissection) -> int:
    """Number of distinct concepts (category, label) among the layer's detector units."""
    return len({(u.category, u.label) for u in layer.interpretable()})


def layer_summary(layer: LayerDissection) -> dict[str, Any]:
    """Units, detectors, unique detectors and detectors per category of one layer."""
    detectors = layer.interpretable()
    per_category = Counter(u.category for u in detectors)
    return {"units": len(layer.units), "detectors": len(detectors),
            "unique_detectors": unique_detectors(layer),
            "detectors_per_category": dict(sorted(per_category.items())),
            "concepts": sorted({f"{u.label} ({u.category})" for u in detectors})}


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode (BatchNorm uses its running statistics), training flags restored after."""
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        yield
    finally:
        for m, training in modes:
            m.training = training


def _device(model: nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def _run_pass(model: nn.Module, probe: ProbeSet, names: list[str],
              accumulators: dict[str, Accumulator], preprocess: Preprocess | None, batch: int,
              desc: str, progress: bool, shapes: dict[str, tuple] | None = None) -> tuple:
    """One pass over the probe set; returns the label shape seen."""
    device, label_shape = _device(model), None
    bar = tqdm(total=len(probe), unit="img", desc=desc, disable=not progress)
    with torch.no_grad():
        for item in probe.batches(batch):
            images = item.images.to(device)
            with TraceDict(model, names, stop=True) as traces:
                model(images if preprocess is None else preprocess(images))
            labels = item.labels.to(device) if accumulators[names[0]].needs_labels else None
            label_shape = tuple(item.labels.shape[2:])
            for name in names:
                acts = traces[name].output
                if acts.dim() != 4:
                    raise ValueError(f"layer {name!r} outputs shape {tuple(acts.shape)}; "
                                     "dissection needs a convolutional (N, units, H, W) output")
                if shapes is not None:
                    shapes.setdefault(name, tuple(acts.shape[1:]))
                accumulators[name].add(acts.float(), item.ids.to(device), labels)
            bar.update(len(item.ids))
    bar.close()
    if label_shape is None:
        raise ValueError("the probe set yielded no batches")
    return label_shape


def netdissect(
    model: nn.Module,
    layers: str | Sequence[str],
    dataset: ProbeSet,
    quantile: float = 0.995,
    min_iou: float = 0.04,
    top_k: int = 12,
    batch: int = 32,
    preprocess: Preprocess | None = None,
    progress: bool = False,
) -> Dissection:
    """Network Dissection of ``layers`` of ``model`` over the probe set ``dataset``.

    Args:
        model: any ``nn.Module`` taking ``(N, 3, H, W)`` images; layers are dotted submodule
            names whose outputs are ``(N, units, h, w)``.
        dataset: a ``ProbeSet`` (``SceneWorldProbe``, ``BrodenProbe`` or your own): images in
            [-1, 1] and per-category label codes, image-level categories as full planes.
        quantile: each unit's threshold is this quantile of its activations over all pixels
            (at the layer's resolution) of all images: 0.995 is the top 0.5% of the reference.
        min_iou: a unit is a detector of its best concept when that IoU exceeds this.
        preprocess: maps [-1, 1] images to the model's input (see ``preprocess_for``).

    The model runs in eval mode (its training flags are restored afterwards); it is traced
    only up to the deepest requested layer. ``settings["summary"]`` holds each layer's
    detectors and unique detectors (``layer_summary``).
    """
    names = check_layers(model, layers)  # before any work: the error lists valid layers
    n = len(dataset)
    check_settings(n, quantile, top_k=top_k, batch=batch, min_iou=min_iou)
    table = concept_table(dataset)
    levels = sorted({*KEPT_QUANTILES, quantile})
    with eval_mode(model):
        first = {name: FirstPass(top_k) for name in names}
        shapes: dict[str, tuple] = {}
        _run_pass(model, dataset, names, first, preprocess, batch, "netdissect quantiles",
                  progress, shapes)
        second = {name: IoUPass(first[name].quantile.quantiles(quantile),
                                table.concept_category, len(table.categories))
                  for name in names}
        label_shape = _run_pass(model, dataset, names, second, preprocess, batch,
                                "netdissect IoU", progress)
    described = dataset.describe()
    settings: dict[str, Any] = {
        "kind": "netdissect", **described, "model": fingerprint(model), "layers": names,
        "n": n, "quantile": quantile, "min_iou": float(min_iou), "top_k": top_k,
        "batch": batch, "categories": list(table.categories), "quantile_levels": levels,
        "quantile_resolution": "layer", "upsampling": "bilinear",
        "label_shape": list(label_shape), "iou_denominator": "category-conditioned",
        "seed": described.get("seed", 0),
    }
    results = [score_layer(name, shapes[name], table, first[name], second[name], None, levels,
                           settings) for name in names]
    settings["summary"] = {layer.layer: layer_summary(layer) for layer in results}
    return Dissection(settings, results)
