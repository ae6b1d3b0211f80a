"""The Network Dissection experiments on the SceneWorld classifier, each a JSON result and a plot.

- ``rotation_experiment``: interpretability is not discriminative power. Rotate a layer's
  basis by ``Q^alpha`` (function unchanged) and dissect the rotated units: top-1 stays, the
  number of detectors and unique detectors falls as alpha goes to 1.
- ``checkpoints_experiment``: detectors per layer over the training snapshots in
  ``models/classifier_checkpoints`` (with each snapshot's top-1).
- ``layers_experiment``: detectors per layer, ``conv1`` ... ``layer4``, and per category.

All use SceneWorld scenes ``0 .. n-1`` of the held-out world ``seed`` (default 1001, the
classifier's evaluation world) as the probe set and for top-1.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gandissect.errors import UserError
from gandissect.evaluate.classifier import evaluate_classifier
from gandissect.models.inputs import Preprocess
from gandissect.netdissect.core import netdissect
from gandissect.netdissect.plots import Bars, Lines, draw_figure
from gandissect.netdissect.probe import SceneWorldProbe
from gandissect.netdissect.rotation import RotatedBasis, fractional_rotation, random_rotation
from gandissect.torchutil import eval_mode

__all__ = ["LAYERS", "ALPHAS", "rotation_experiment", "checkpoints_experiment",
           "layers_experiment", "plot_rotation", "plot_checkpoints", "plot_layers",
           "checkpoint_files"]

LAYERS = ("conv1", "layer1", "layer2", "layer3", "layer4")
ALPHAS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


def _top1(model: nn.Module, n: int, seed: int, batch: int) -> float:
    return float(evaluate_classifier(model, n=n, seed=seed, batch=batch, progress=False)["top1"])


def _units(model: nn.Module, layer: str, probe: SceneWorldProbe,
           preprocess: Preprocess | None) -> int:
    from gandissect.hooks import Trace

    images = probe.images([0])
    with torch.no_grad(), Trace(model, layer, stop=True) as trace:
        model(images if preprocess is None else preprocess(images))
    return int(trace.output.shape[1])


def rotation_experiment(model: nn.Module, layer: str = "layer4",
                        alphas: Sequence[float] = ALPHAS, n: int = 1000, seed: int = 1001,
                        rotation_seed: int = 0, rotations: int = 3, quantile: float = 0.995,
                        min_iou: float = 0.04, batch: int = 50, progress: bool = False,
                        preprocess: Preprocess | None = None) -> dict[str, Any]:
    """Dissect ``layer`` after rotating its basis by ``Q^alpha`` for each alpha, for
    ``rotations`` random ``Q`` (seeds ``rotation_seed, rotation_seed + 1, ...``; alpha 0, the
    identity, is run once); top-1 of each rotated network on the same ``n`` scenes.
    ``curve`` holds the mean, minimum and maximum over the rotations at each alpha."""
    if rotations < 1:
        raise UserError(f"need at least one rotation, got {rotations}")
    probe = SceneWorldProbe(seed, n)
    units = _units(model, layer, probe, preprocess)
    check = probe.images(range(min(n, 16)))
    check = check if preprocess is None else preprocess(check)
    with torch.no_grad(), eval_mode(model):
        reference = model(check)
    runs = []
    for k in range(rotations):
        full = random_rotation(units, rotation_seed + k)
        for alpha in alphas:
            if alpha == 0 and k > 0:
                continue  # the identity: the same for every Q
            started = time.monotonic()
            wrapped = RotatedBasis(model, layer, fractional_rotation(full, float(alpha)))
            with torch.no_grad(), eval_mode(wrapped):
                change = float((wrapped(check) - reference).abs().max())
            result = netdissect(wrapped, "rotated", probe, quantile, min_iou, batch=batch,
                                preprocess=preprocess, progress=progress)
            summary = result.settings["summary"]["rotated"]
            runs.append({"alpha": float(alpha), "rotation_seed": rotation_seed + k,
                         "top1": _top1(wrapped, n, seed, batch), "max_logit_change": change,
                         **summary, "seconds": round(time.monotonic() - started, 1)})
    curve = []
    for alpha in alphas:
        here = [r for r in runs if r["alpha"] == float(alpha)]
        curve.append({"alpha": float(alpha), "rotations": len(here), **{
            f"{key}_{stat}": fn([r[key] for r in here])
            for key in ("detectors", "unique_detectors", "top1")
            for stat, fn in (("mean", lambda v: sum(v) / len(v)), ("min", min), ("max", max))}})
    return {"experiment": "rotation", "layer": layer, "units": units, "n": n, "seed": seed,
            "rotation_seeds": list(range(rotation_seed, rotation_seed + rotations)),
            "quantile": quantile, "min_iou": min_iou, "curve": curve, "runs": runs}


def checkpoint_files(folder: str | Path) -> list[tuple[int, Path]]:
    """``(images seen, path)`` of every ``images_NNNNNNNN.safetensors`` in ``folder``, sorted."""
    folder = Path(folder)
    found = []
    for path in folder.glob("images_*.safetensors"):
        match = re.fullmatch(r"images_(\d+)\.safetensors", path.name)
        if match:
            found.append((int(match.group(1)), path))
    if not found:
        raise UserError(f"no images_NNNNNNNN.safetensors snapshots in {folder}")
    return sorted(found)


def _initial_model(path: Path, seed: int = 0) -> nn.Module:
    """A randomly initialised copy (torch seed ``seed``) of the architecture a snapshot holds:
    a before-training baseline (not the run's own initial weights, which were not saved)."""
    from gandissect.models.registry import build, read_weights

    _, config, _ = read_weights(path)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build(config).eval()


def checkpoints_experiment(folder: str | Path | None = None, layers: Sequence[str] = LAYERS,
                           n: int = 1000, seed: int = 1001, quantile: float = 0.995,
                           min_iou: float = 0.04, batch: int = 50, progress: bool = False,
                           initial: bool = True) -> dict[str, Any]:
    """Dissect ``layers`` of every training snapshot of the shipped classifier, after a
    randomly initialised copy of the architecture (``images_seen`` 0) if ``initial``."""
    from gandissect.models.registry import load_weights_file, models_dir

    folder = Path(folder) if folder is not None else models_dir() / "classifier_checkpoints"
    snapshots = checkpoint_files(folder)
    probe = SceneWorldProbe(seed, n)
    models = [(0, "random init (torch seed 0)", lambda: _initial_model(snapshots[0][1]))]
    models = models if initial else []
    models += [(images_seen, path.name, lambda path=path: load_weights_file(path))
               for images_seen, path in snapshots]
    runs = []
    for images_seen, name, load in models:
        started = time.monotonic()
        model = load()
        result = netdissect(model, list(layers), probe, quantile, min_iou, batch=batch,
                            progress=progress)
        runs.append({"images_seen": images_seen, "model": name,
                     "top1": _top1(model, n, seed, batch),
                     "layers": result.settings["summary"],
                     "seconds": round(time.monotonic() - started, 1)})
    return {"experiment": "checkpoints", "folder": str(folder), "layers": list(layers), "n": n,
            "seed": seed, "quantile": quantile, "min_iou": min_iou, "runs": runs}


def layers_experiment(model: nn.Module, layers: Sequence[str] = LAYERS, n: int = 1000,
                      seed: int = 1001, quantile: float = 0.995, min_iou: float = 0.04,
                      batch: int = 50, progress: bool = False,
                      preprocess: Preprocess | None = None) -> dict[str, Any]:
    """Dissect ``layers`` of ``model`` in one run; detectors per layer and per category."""
    started = time.monotonic()
    probe = SceneWorldProbe(seed, n)
    result = netdissect(model, list(layers), probe, quantile, min_iou, batch=batch,
                        preprocess=preprocess, progress=progress)
    return {"experiment": "layers", "layers": list(layers), "n": n, "seed": seed,
            "quantile": quantile, "min_iou": min_iou, "categories": probe.categories,
            "summary": result.settings["summary"],
            "seconds": round(time.monotonic() - started, 1)}


def _setting_line(result: dict[str, Any]) -> str:
    return (f"SceneWorld seed {result['seed']}, n = {result['n']}; threshold: top "
            f"{100 * (1 - result['quantile']):.1f}% per unit; detector: IoU > {result['min_iou']}")


def plot_rotation(result: dict[str, Any], path: str | Path) -> Path:
    """Detectors and unique detectors (mean over rotations, min-max bars), and top-1, against
    the rotation's alpha."""
    curve = result["curve"]
    labels = [f"{c['alpha']:g}" for c in curve]

    def spread(key: str) -> list[tuple[float, float]]:
        return [(c[f"{key}_min"], c[f"{key}_max"]) for c in curve]

    axis = f"rotation Q^alpha of {result['layer']}"
    counts = Lines("detectors of the rotated units", labels,
                   {"detector units": [c["detectors_mean"] for c in curve],
                    "unique concepts": [c["unique_detectors_mean"] for c in curve]},
                   "units / concepts", axis,
                   spread={"detector units": spread("detectors"),
                           "unique concepts": spread("unique_detectors")})
    accuracy = Lines("top-1 accuracy (function unchanged)", labels,
                     {"top-1": [c["top1_mean"] for c in curve]}, "top-1", axis,
                     y_range=(0.0, 1.0), spread={"top-1": spread("top1")})
    rotations = len(result["rotation_seeds"])
    return draw_figure([counts, accuracy], path,
                       title=f"Interpretability is not discriminative power: random rotation "
                             f"of {result['layer']} ({result['units']} units)",
                       caption=f"{_setting_line(result)}; mean over {rotations} random "
                               "rotations, bars: min to max")


def plot_checkpoints(result: dict[str, Any], path: str | Path) -> Path:
    """Unique detectors and detectors per layer, and top-1, over training snapshots."""
    runs, layers = result["runs"], result["layers"]
    labels = [f"{r['images_seen'] // 1000}k" if r["images_seen"] else "init" for r in runs]
    unique = Lines("unique detected concepts per layer", labels,
                   {layer: [r["layers"][layer]["unique_detectors"] for r in runs]
                    for layer in layers}, "unique concepts", "training images seen")
    detectors = Lines("detector units per layer", labels,
                      {layer: [r["layers"][layer]["detectors"] for r in runs]
                       for layer in layers}, "detector units", "training images seen")
    accuracy = Lines("top-1 accuracy", labels, {"top-1": [r["top1"] for r in runs]}, "top-1",
                     "training images seen", y_range=(0.0, 1.0))
    return draw_figure([unique, detectors, accuracy], path,
                       title="Detectors over the scene classifier's training",
                       caption=_setting_line(result))


def plot_layers(result: dict[str, Any], path: str | Path) -> Path:
    """Detectors and unique detectors per layer; detectors per category per layer."""
    layers, summary = result["layers"], result["summary"]
    totals = Bars("detectors per layer", layers,
                  {"detector units": [summary[layer]["detectors"] for layer in layers],
                   "unique concepts": [summary[layer]["unique_detectors"] for layer in layers]},
                  "units / concepts", notes=[f"of {summary[layer]['units']} units"
                                             for layer in layers])
    categories = [c for c in result["categories"]
                  if any(c in summary[layer]["detectors_per_category"] for layer in layers)]
    per_category = Bars("detector units by concept category", layers,
                        {c: [summary[layer]["detectors_per_category"].get(c, 0)
                             for layer in layers] for c in categories}, "detector units")
    return draw_figure([totals, per_category], path,
                       title="Detectors layer by layer (SceneWorld scene classifier)",
                       caption=_setting_line(result))
