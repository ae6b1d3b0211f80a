"""``netdissect``: score every unit of a classifier's layers against a probe set's concepts.

Data path (Network Dissection, Bau et al. 2017)::

    probe batch (images, labels) -> model -> layer activations (B, U, h, w)
        pass 1: per-unit quantile sketch (threshold = top 0.5% level), top images, mean map
        pass 2: upsample (bilinear) to the labels' size, threshold, count intersections and
                category-conditioned unions (``IoUTally``) -> IoU per (unit, concept)

The passes and the labelling are GAN dissection's own (``gandissect.dissect.passes`` and its
scorer), so both dissections give the same ``Dissection`` and the same report. Memory does not
grow with the dataset: each batch is traced, folded into the statistics and dropped. With a
``cache_dir`` the passes' statistics are saved there atomically every ``checkpoint_seconds``
(keyed by the model's weights, the probe set and every setting), so a run killed at any point
and started again continues to the same counts; without one nothing is written to disk.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from gandissect.dissect.core import KEPT_QUANTILES, check_layers, check_settings
from gandissect.dissect.core import _score_layer as score_layer
from gandissect.dissect.identity import fingerprint, settings_key
from gandissect.dissect.labels import ConceptTable
from gandissect.dissect.passes import Accumulator, FirstPass, IoUPass
from gandissect.dissect.results import Dissection, LayerDissection
from gandissect.dissect.sample_size import sample_size_warning
from gandissect.errors import UserError, caution
from gandissect.fileio import FolderLock, JobCheckpoint
from gandissect.hooks import TraceDict
from gandissect.models.inputs import Preprocess
from gandissect.netdissect.probe import ProbeSet
from gandissect.spatial import first_tensor, spatial_view
from gandissect.torchutil import eval_mode, model_device

FORMAT = 1  # bump when checkpointed statistics change meaning

__all__ = ["netdissect", "layer_summary", "unique_detectors", "concept_table"]


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


class _Progress:
    """A netdissect run's progress (a ``JobCheckpoint`` in ``folder/netdissect-KEY.pt``, none
    without a folder): per pass, the probe images counted and every layer's statistics, and the
    shapes seen so far."""

    def __init__(self, folder: Path | None, key: dict[str, Any], seconds: float) -> None:
        key_text = settings_key(key)
        self.job = JobCheckpoint(folder / f"netdissect-{key_text}.pt" if folder else None,
                                 key_text, seconds)
        self.saved = self.job.load() or {"passes": {}, "seen": {"shapes": {},
                                                                "label_shape": None}}
        self.seen = self.saved["seen"]

    def resume(self, name: str, accumulators: dict[str, Accumulator]) -> int:
        """Load pass ``name``'s saved statistics into ``accumulators``; images already counted
        (0 when nothing was saved for it; the probe size when the pass is complete)."""
        entry = self.saved["passes"].get(name)
        if entry is None:
            return 0
        for layer, state in entry["states"].items():
            accumulators[layer].load_state_dict(state)
        return entry["done"]

    def save(self, name: str, done: int, accumulators: dict[str, Accumulator],
             force: bool) -> None:
        if force or self.job.due():
            self.saved["passes"][name] = {"done": done, "states": {
                layer: a.state_dict() for layer, a in accumulators.items()}}
            self.job.save(self.saved)


def _preprocess_identity(preprocess: Preprocess | None) -> str | None:
    """A hash of what ``preprocess`` does to a fixed ramp of pixels (it is a plain callable)."""
    if preprocess is None:
        return None
    ramp = torch.linspace(-1, 1, 48).reshape(1, 3, 4, 4)
    with torch.no_grad():
        out = preprocess(ramp).detach().float().cpu().contiguous()
    return hashlib.sha256(out.numpy().tobytes()).hexdigest()[:20]


def _run_pass(model: nn.Module, probe: ProbeSet, names: list[str],
              accumulators: dict[str, Accumulator], preprocess: Preprocess | None, batch: int,
              desc: str, progress: bool, seen: dict[str, Any], start: int = 0,
              saved: Callable[[int, bool], None] | None = None) -> None:
    """One pass over the probe set from image ``start``, recording the layers' and the labels'
    shapes in ``seen``; ``saved(done, force)`` is offered a checkpoint after every batch and
    forced at the end."""
    device = model_device(model)
    bar = tqdm(total=len(probe), initial=start, unit="img", desc=desc, disable=not progress)
    done = start
    # a probe set written before resumption existed takes no start (a fresh pass needs none)
    batches = probe.batches(batch, start) if start else probe.batches(batch)
    with torch.no_grad():
        for item in batches:
            images = item.images.to(device)
            with TraceDict(model, names, stop=True, view=first_tensor) as traces:
                model(images if preprocess is None else preprocess(images))
            labels = item.labels.to(device) if accumulators[names[0]].needs_labels else None
            for name in names:  # token sequences become maps on the patch grid
                acts = spatial_view(model, name, traces[name].output, images.shape[-2:])
                seen["shapes"].setdefault(name, tuple(acts.shape[1:]))
                accumulators[name].add(acts.float(), item.ids.to(device), labels)
            seen["label_shape"] = tuple(item.labels.shape[2:])
            done += len(item.ids)
            bar.update(len(item.ids))
            if saved is not None:
                saved(done, False)
    bar.close()
    if done == 0:
        raise UserError("the probe set yielded no batches")
    if saved is not None:
        saved(done, True)


def _layer_cells(model: nn.Module, names: list[str], dataset: ProbeSet,
                 preprocess: Preprocess | None) -> int:
    """The fewest cells (h * w) among the layers' outputs, from one probe image."""
    image = dataset.images([0]).to(model_device(model))
    with torch.no_grad(), TraceDict(model, names, stop=True, view=first_tensor) as traces:
        model(image if preprocess is None else preprocess(image))
    return min(int(spatial_view(model, name, traces[name].output, image.shape[-2:])[0, 0].numel())
               for name in names)


def _checks(model: nn.Module, names: list[str], dataset: ProbeSet, quantile: float,
            preprocess: Preprocess | None) -> dict[str, Any]:
    """The settings' ``domain`` entry (probe sets labelled by a segmenter) and ``warnings``:
    the segmenter's domain and the probe set's size against the statistics."""
    own = getattr(dataset, "domain_check", None)
    domain = own() if callable(own) else None
    small = sample_size_warning(len(dataset), quantile,
                                _layer_cells(model, names, dataset, preprocess), "probe images",
                                "a probe set of {n} images")
    lines = [line for line in (domain and domain.warning(), small) if line]
    return {"domain": None if domain is None else domain.to_json(), "warnings": lines}


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
    cache_dir: str | Path | None = None,
    checkpoint_seconds: float = 30.0,
) -> Dissection:
    """Network Dissection of ``layers`` of ``model`` over the probe set ``dataset``.

    Args:
        model: any ``nn.Module`` taking ``(N, 3, H, W)`` images; layers are dotted submodule
            names whose outputs are maps ``(N, units, h, w)``, or a vision transformer's tokens
            read as maps on the patch grid (``gandissect.spatial``: units = channels, class
            tokens left out).
        dataset: a ``ProbeSet`` (``SceneWorldProbe``, ``BrodenProbe`` or your own): images in
            [-1, 1] and per-category label codes, image-level categories as full planes.
        quantile: each unit's threshold is this quantile of its activations over all pixels
            (at the layer's resolution) of all images: 0.995 is the top 0.5% of the reference.
        min_iou: a unit is a detector of its best concept when that IoU exceeds this.
        preprocess: maps [-1, 1] images to the model's input (see ``preprocess_for``).
        cache_dir: where to checkpoint the passes (locked against a second job while this one
            runs); a killed run started again with the same arguments resumes. None: nothing
            is written.

    The model runs in eval mode (its training flags are restored afterwards); it is traced
    only up to the deepest requested layer. Before the passes, a probe set labelled by a
    segmenter has the segmenter's domain checked on its first images (``gandissect.domain``),
    and the probe set's size is checked against the statistics
    (``gandissect.dissect.sample_size``): each problem is a ``Caution`` warning and a line of
    ``settings["warnings"]``. ``settings["summary"]`` holds each layer's
    detectors and unique detectors (``layer_summary``).
    """
    names = check_layers(model, layers)  # before any work: the error lists valid layers
    n = len(dataset)
    check_settings(n, quantile, top_k=top_k, batch=batch, min_iou=min_iou)
    table = concept_table(dataset)
    levels = sorted({*KEPT_QUANTILES, quantile})
    key = {"format": FORMAT, "model": fingerprint(model), "dataset": dataset.describe(),
           "layers": names, "quantile": quantile, "top_k": top_k, "batch": batch,
           "preprocess": _preprocess_identity(preprocess)}
    folder = Path(cache_dir) if cache_dir is not None else None
    with (FolderLock(folder, what="cache folder") if folder else nullcontext()), \
            eval_mode(model):
        checks = _checks(model, names, dataset, quantile, preprocess)
        for line in checks["warnings"]:
            caution(line)
        saved = _Progress(folder, key, checkpoint_seconds)
        seen = saved.seen

        def run(name: str, accumulators: dict[str, Accumulator], desc: str) -> None:
            start = saved.resume(name, accumulators)
            if start < n:
                _run_pass(model, dataset, names, accumulators, preprocess, batch, desc,
                          progress, seen, start, lambda done, force: saved.save(
                              name, done, accumulators, force))

        first = {name: FirstPass(top_k) for name in names}
        run("first", first, "netdissect quantiles")
        second = {name: IoUPass(first[name].quantile.quantiles(quantile),
                                table.concept_category, len(table.categories))
                  for name in names}
        run("iou", second, "netdissect IoU")
    shapes, label_shape = seen["shapes"], seen["label_shape"]
    described = dataset.describe()
    settings: dict[str, Any] = {
        "kind": "netdissect", **described, "model": fingerprint(model), "layers": names,
        "n": n, "quantile": quantile, "min_iou": float(min_iou), "top_k": top_k,
        "batch": batch, "categories": list(table.categories), "quantile_levels": levels,
        "quantile_resolution": "layer", "upsampling": "bilinear",
        "label_shape": list(label_shape), "iou_denominator": "category-conditioned",
        "seed": described.get("seed", 0), **checks,
    }
    results = [score_layer(name, shapes[name], table, first[name], second[name], None, levels,
                           settings) for name in names]
    settings["summary"] = {layer.layer: layer_summary(layer) for layer in results}
    return Dissection(settings, results)
