"""``dissect``: score every unit of a generator's layers against a segmenter's concepts.

Data path (GAN Dissection, Bau et al. 2019)::

    z (seed, i) -> generator -> layer activations (B, U, h, w) -> per-unit threshold
                            -> image -> segmenter -> label codes (stored once) --> IoU per
                                                                        (unit, concept)

Pass 1 runs the whole generator and the segmenter once per sample: quantile sketches, top
images and the mean activation map per unit, and the label codes to disk. Pass 2 stops the
generator at the deepest requested layer, upsamples (bilinear) to the labels' resolution,
thresholds, and counts intersections and category-conditioned unions. In ``threshold="iqr"``
mode the per-(unit, concept) threshold maximising the information quality ratio is chosen on a
separate latent sample (``selection_seed``) and then scored on the main one.

Under ``torchrun`` (``shard``) each process takes every K-th batch and the passes' statistics
are merged after each pass, so every process, and the result, sees the whole sample.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gandissect.dissect.engine import LayerCache, Runner, Sample
from gandissect.dissect.identity import fingerprint, settings_key
from gandissect.dissect.labels import ConceptTable, LabelStore
from gandissect.dissect.latents import latent_law, latents, law_name, z_dim_of
from gandissect.dissect.passes import FirstPass, IoUPass, SketchPass, SweepPass
from gandissect.dissect.results import Dissection, LayerDissection, UnitScore
from gandissect.dissect.sample_size import sample_size_warning
from gandissect.dissect.shard import Shard
from gandissect.dissect.sweep import CANDIDATES, candidate_grid
from gandissect.domain import DOMAIN_IMAGES, DomainCheck, check_domain
from gandissect.errors import UserError, caution
from gandissect.fileio import FolderLock
from gandissect.hooks import TraceDict, get_layer

__all__ = ["dissect", "check_settings", "check_layers", "MODES", "KEPT_QUANTILES",
           "QUANTILE_OVER", "DEFAULT_QUANTILE_OVER"]

MODES = ("quantile", "iqr")
# Where a unit's threshold quantile is taken: over the layer's cells, or over the maps
# upsampled to the labels (GAN Dissection's reference code). Why the default: docs/results.md.
QUANTILE_OVER = ("layer", "image")
DEFAULT_QUANTILE_OVER = "layer"
KEPT_QUANTILES = (0.01, 0.5, 0.99, 0.995)  # 0.99: the insertion value of interventions
TOP_CONCEPTS = 5
DEFAULT_MIN_IOU = {"quantile": 0.04, "iqr": 0.05}  # PNAS 2020 / ICLR 2019 adaptive mode
FORMAT = 1  # bump when cached statistics change meaning


def check_settings(n: int, quantile: float, threshold: str = "quantile", top_k: int = 12,
                   batch: int = 32, min_iou: float | None = None,
                   quantile_over: str = DEFAULT_QUANTILE_OVER) -> None:
    """Raise a ``UserError`` with a helpful message for any impossible setting."""
    if quantile_over not in QUANTILE_OVER:
        raise UserError(f"quantile_over must be one of {', '.join(QUANTILE_OVER)}, got "
                        f"{quantile_over!r}")
    if quantile_over == "image" and threshold == "iqr":
        raise UserError("--quantile-over image sets the fixed threshold of --threshold "
                        "quantile; --threshold iqr chooses its thresholds itself")
    if not isinstance(n, int) or n < 1:
        raise UserError(f"need at least one sample (n >= 1), got {n}")
    if not 0 < quantile < 1:
        raise UserError(f"quantile must lie strictly between 0 and 1, got {quantile}")
    if threshold not in MODES:
        raise UserError(f"threshold must be one of {', '.join(MODES)}, got {threshold!r}")
    if not isinstance(top_k, int) or top_k < 1:
        raise UserError(f"top_k must be at least 1, got {top_k}")
    if not isinstance(batch, int) or batch < 1:
        raise UserError(f"batch must be at least 1, got {batch}")
    if min_iou is not None and not 0 <= min_iou <= 1:
        raise UserError(f"min_iou must lie in [0, 1], got {min_iou}")


def check_layers(generator: nn.Module, layers: str | Sequence[str]) -> list[str]:
    """The requested layers as a list; a ``UserError`` listing valid names for a wrong one."""
    names = [layers] if isinstance(layers, str) else list(dict.fromkeys(layers))
    if not names:
        raise UserError("name at least one layer to dissect")
    for name in names:
        get_layer(generator, name)
    return names


def _probe(generator: nn.Module, segmenter: Any, table: ConceptTable, layers: list[str],
           z_dim: int, device: torch.device) -> tuple[dict[str, tuple[int, ...]], tuple]:
    """Run one sample end to end: check every output's shape before the long passes."""
    with torch.no_grad(), TraceDict(generator, layers) as traces:
        images = generator(latents(0, [0], z_dim, latent_law(generator)).to(device))
    shapes = {}
    for name, trace in traces.items():
        if trace.output.dim() != 4:
            raise UserError(f"layer {name!r} outputs shape {tuple(trace.output.shape)}; "
                            "dissection needs a convolutional (N, units, H, W) output")
        shapes[name] = tuple(trace.output.shape[1:])
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3:
        raise UserError("the generator must return (N, 3, H, W) images, got "
                        f"{getattr(images, 'shape', type(images).__name__)}")
    with torch.no_grad():
        codes = table.stack(segmenter.segment(images))
    return shapes, tuple(codes.shape[1:])


def _domain_check(generator: nn.Module, segmenter: Any, seed: int, n: int, batch: int,
                  z_dim: int, device: torch.device, name: str | None) -> DomainCheck:
    """The segmenter's domain check on the sample's first images."""
    law = latent_law(generator)
    with torch.no_grad():
        images = torch.cat([generator(latents(seed, range(first, min(first + batch, n)), z_dim,
                                              law).to(device))
                            for first in range(0, min(n, DOMAIN_IMAGES), batch)])
    return check_domain(segmenter, images, name)


@contextmanager
def _cache_root(cache_dir: str | Path | None, shard: Shard) -> Iterator[Path]:
    """The cache folder, locked (one lock per process of a sharded run) against a second job."""
    if cache_dir is not None:
        root = Path(cache_dir)
        with FolderLock(root, shard.lock_name(), what="--cache folder"):
            yield root
        return
    with tempfile.TemporaryDirectory(prefix="gandissect-dissect-") as temporary:
        yield Path(temporary)


def _run_pass(runner: Runner, name: str, sample: Sample, caches: dict[str, LayerCache],
              make: Callable[[str], Any], shard: Shard,
              fill_labels: bool = False) -> dict[str, Any]:
    """Run (or resume) pass ``name`` where incomplete; every layer's accumulator, loaded and,
    for a sharded run, merged over all processes (every process must call this)."""
    accumulators, todo = {}, {}
    for layer, cache in caches.items():
        accumulator = make(layer)
        state = cache.state(name)
        if state is not None:
            accumulator.load_state_dict(state)
        accumulators[layer] = accumulator
        if cache.done(name) < sample.n:
            todo[layer] = accumulator
    if todo or (fill_labels and sample.labels.done < sample.n):
        runner.run(name, sample, caches, todo)
    if shard.single:
        return accumulators
    states = shard.gather({layer: a.state_dict() for layer, a in accumulators.items()})
    merged = {}
    for layer in accumulators:
        merged[layer] = make(layer)
        merged[layer].load_state_dict(states[0][layer])
        for other_states in states[1:]:
            other = make(layer)
            other.load_state_dict(other_states[layer])
            merged[layer].merge(other)
    return merged


def _number(value: float) -> float:
    return float(f"{float(value):.6g}")


def dissect(
    generator: nn.Module,
    segmenter: Any,
    layers: str | Sequence[str],
    n: int = 10000,
    seed: int = 1,
    quantile: float = 0.99,
    min_iou: float | None = None,
    top_k: int = 12,
    batch: int = 32,
    threshold: str = "quantile",
    cache_dir: str | Path | None = None,
    progress: bool = True,
    *,
    z_dim: int | None = None,
    selection_seed: int | None = None,
    selection_n: int | None = None,
    candidates: int = CANDIDATES,
    min_iqr: float = 0.01,
    checkpoint_seconds: float = 30.0,
    on_batch: Callable[[str, int], None] | None = None,
    shard: Shard | None = None,
    quantile_over: str = DEFAULT_QUANTILE_OVER,
    segmenter_name: str | None = None,
) -> Dissection:
    """Dissect ``layers`` of ``generator`` over ``n`` latents of ``seed`` against ``segmenter``.

    Args:
        generator: ``nn.Module`` mapping ``(N, z_dim)`` latents to ``(N, 3, H, W)`` images.
        segmenter: ``segment(images) -> {category: (N, H, W) codes}``, ``concepts`` (category ->
            names by code, code 0 "none") and ``categories``.
        layers: a layer name or several (dotted module names; their outputs ``(N, U, h, w)``).
        quantile: fixed-threshold mode: each unit's threshold is this quantile of its
            activations over all pixels of all samples, at the resolution ``quantile_over``
            names: ``"layer"`` (the layer's cells) or ``"image"`` (the maps upsampled to the
            labels, as the IoU sees them: about ``1 - quantile`` of image pixels active; the
            layer's cells leave fewer, since upsampling smooths the peaks). Recorded in the
            settings as ``quantile_resolution``.
        min_iou: a unit is interpretable when its best IoU exceeds this (default 0.04; 0.05 in
            adaptive mode, which also needs IQR > ``min_iqr``). Only relabels: cached
            statistics are reused when it changes.
        threshold: ``"quantile"`` or ``"iqr"`` (per (unit, concept) threshold maximising IQR
            among ``candidates`` quantile-spaced ones, chosen on ``selection_n`` latents of
            ``selection_seed``, default ``seed + 1000`` and ``min(n, 2000)``).
        cache_dir: where label codes and statistics' checkpoints live (keyed by everything
            that changes them); a killed run restarted with the same arguments resumes. None:
            a temporary folder, removed afterwards.
        checkpoint_seconds: save the statistics at least this often; ``on_batch(pass, done)``
            is called after every batch (a test hook; an exception there stops the run).
        shard: this process's place in a sharded run (default ``Shard.current()``: the
            ``torch.distributed`` default group when one is initialised, else the only
            process). Every process gets the whole sample's result; write it from rank 0.
        segmenter_name: how the user spelled the segmenter, for the domain warning.

    Before the passes, the segmenter's domain is checked on the first samples
    (``gandissect.domain``) and the sample size against the statistics
    (``gandissect.dissect.sample_size``); each problem is a ``Caution`` warning (one line on
    the command line) and a line of ``settings["warnings"]``; ``settings["domain"]`` holds the
    domain check's figures and verdict.

    Memory does not grow with ``n``: activations are consumed batch by batch; label codes
    (uint8, or int16 beyond 256 codes a category) are stored on disk.
    """
    names = check_layers(generator, layers)
    check_settings(n, quantile, threshold, top_k, batch, min_iou, quantile_over)
    shard = Shard.current() if shard is None else shard
    progress = progress and shard.rank == 0
    if candidates < 2:
        raise UserError("need at least two candidate thresholds")
    min_iou = DEFAULT_MIN_IOU[threshold] if min_iou is None else float(min_iou)
    z_dim = z_dim_of(generator, z_dim)
    table = ConceptTable.from_segmenter(segmenter)
    runner = Runner(generator, segmenter, table, z_dim, batch, progress, checkpoint_seconds,
                    on_batch)
    shapes, label_shape = _probe(generator, segmenter, table, names, z_dim, runner.device)
    levels = sorted({*KEPT_QUANTILES, quantile})

    identity = {"format": FORMAT, "generator": fingerprint(generator),
                "segmenter": fingerprint(segmenter), "z_dim": z_dim, "batch": batch,
                "label_shape": list(label_shape)}
    settings: dict[str, Any] = {
        **identity, "layers": names, "n": n, "seed": seed, "threshold": threshold,
        "quantile": quantile, "min_iou": min_iou, "top_k": top_k,
        "categories": list(table.categories), "quantile_levels": levels,
        "quantile_resolution": quantile_over, "upsampling": "bilinear",
        "latent": law_name(generator),
    }
    if threshold == "iqr":
        selection_seed = seed + 1000 if selection_seed is None else selection_seed
        selection_n = min(n, 2000) if selection_n is None else selection_n
        if selection_seed == seed:
            raise UserError("the selection sample must use another seed than the main one")
        check_settings(selection_n, quantile)
        settings.update(selection_seed=selection_seed, selection_n=selection_n,
                        candidates=candidates, min_iqr=min_iqr)
    cells = (label_shape[1] * label_shape[2] if quantile_over == "image"
             else min(shapes[name][1] * shapes[name][2] for name in names))
    domain = _domain_check(generator, segmenter, seed, n, batch, z_dim, runner.device,
                           segmenter_name)
    small = sample_size_warning(n, quantile if threshold == "quantile" else None, cells)
    settings.update(domain=domain.to_json(),
                    warnings=[line for line in (domain.warning(), small) if line])
    if shard.rank == 0:
        for line in settings["warnings"]:
            caution(line)
    concept_category, n_categories = table.concept_category, len(table.categories)

    with _cache_root(cache_dir, shard) as root, ExitStack() as open_files:
        def sample(seed_: int, n_: int) -> Sample:
            key = settings_key({**identity, "seed": seed_, "n": n_, **shard.key()})
            ids = shard.ids(n_, batch)
            store = LabelStore(root / f"labels-{key}", key, len(ids), label_shape, table.dtype)
            open_files.callback(store.close)
            return Sample(seed_, ids, store)

        layer_keys = {layer: {**identity, **shard.key(), "layer": layer, "n": n, "seed": seed,
                              "threshold": threshold, "quantile": quantile, "top_k": top_k,
                              "quantile_over": quantile_over,
                              **{k: settings.get(k) for k in ("selection_seed", "selection_n",
                                                              "candidates")}}
                      for layer in names}
        caches = {layer: LayerCache.open(root / f"layer-{settings_key(key)}", key)
                  for layer, key in layer_keys.items()}
        main = sample(seed, n)
        later = "sweep" if threshold == "iqr" else "iou"
        image_size = label_shape[1:] if quantile_over == "image" else None
        first = _run_pass(runner, "first", main, caches, lambda _: FirstPass(top_k, image_size),
                          fill_labels=any(c.done(later) < main.n for c in caches.values()),
                          shard=shard)
        if threshold == "quantile":
            thresholds = {layer: first[layer].threshold_sketch().quantiles(quantile)
                          for layer in names}
            second = _run_pass(runner, "iou", main, caches, lambda layer: IoUPass(
                thresholds[layer], concept_category, n_categories), shard=shard)
            selection = None
        else:
            chosen = sample(selection_seed, selection_n)
            sketches = _run_pass(runner, "select-sketch", chosen, caches, lambda _: SketchPass(),
                                 fill_labels=any(c.done("select-sweep") < chosen.n
                                                 for c in caches.values()), shard=shard)
            grids = {layer: candidate_grid(sketches[layer].quantile, candidates)
                     for layer in names}

            def sweep(layer: str) -> SweepPass:
                return SweepPass(grids[layer], concept_category, n_categories)

            selection = _run_pass(runner, "select-sweep", chosen, caches, sweep, shard=shard)
            second = _run_pass(runner, "sweep", main, caches, sweep, shard=shard)
        results = []
        for layer in names:
            results.append(_score_layer(layer, shapes[layer], table, first[layer],
                                        second[layer], selection and selection[layer],
                                        levels, settings))
    return Dissection(settings, results)


def _score_layer(layer: str, shape: tuple, table: ConceptTable, first: FirstPass, second,
                 selection: SweepPass | None, levels: list[float],
                 settings: dict[str, Any]) -> LayerDissection:
    """Label every unit of a layer from its passes' statistics."""
    quantiles = first.quantile.quantiles(levels)  # (U, levels)
    top_scores, top_ids = first.top.result()
    stats: dict[str, Any] = {"quantile": first.quantile.state_dict(),
                             "top": first.top.state_dict(), "mean_map": first.mean_map(),
                             "insertion": first.quantile.quantiles(0.99),
                             "concepts": table.names,
                             "concept_category": table.concept_category}
    if selection is None:
        iou = second.tally.result().float()  # (U, C)
        thresholds = second.thresholds[:, None].expand_as(iou)
        iqr = None
        stats.update(iou=second.tally.state_dict(), thresholds=second.thresholds)
    else:
        choice = selection.sweep.iqr().argmax(-1)  # (U, C): picked on the selection sample
        pick = choice[..., None]
        iou = second.sweep.iou().gather(-1, pick)[..., 0].float()
        iqr = second.sweep.iqr().gather(-1, pick)[..., 0].float()
        thresholds = second.sweep.grid.cpu().gather(1, choice.cpu())
        stats.update(sweep=second.sweep.state_dict(), selection=selection.sweep.state_dict(),
                     thresholds=thresholds, choice=choice.cpu())
    iou, names = iou.cpu(), table.names
    units = []
    for unit in range(iou.shape[0]):
        order = iou[unit].argsort(descending=True, stable=True)
        best = int(order[0])
        score = UnitScore(
            unit=unit,
            label=names[best],
            category=table.category_of(best),
            iou=_number(iou[unit, best]),
            threshold=_number(thresholds[unit, best]),
            concepts=[[names[c], _number(iou[unit, c])] for c in order[:TOP_CONCEPTS].tolist()],
            top_images=top_ids[unit].tolist(),
            interpretable=bool(iou[unit, best] > settings["min_iou"]),
            quantiles={str(q): _number(v) for q, v in zip(levels, quantiles[unit].tolist())},
            top_scores=[_number(v) for v in top_scores[unit].tolist()],
        )
        if iqr is not None:
            score.iqr = _number(iqr[unit, best])
            score.interpretable = score.interpretable and score.iqr > settings["min_iqr"]
        units.append(score)
    return LayerDissection(layer, tuple(shape), units, stats)
