"""Per-unit activation statistics of any layer over SceneWorld scenes.

The smallest end-to-end use of the hooks and the streaming statistics: stream scenes through a
model, stop the forward at the layers asked for, and tally each unit's activation quantiles, its
top-activating scenes, and its mean activation on every object concept. Memory does not depend
on the number of scenes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from gandissect.errors import UserError
from gandissect.fileio import save_state, write_json
from gandissect.hooks import TraceDict, get_layer
from gandissect.stats import ConditionalMean, Quantile, TopK
from gandissect.torchutil import model_device
from gandissect.world import concepts, render_batch
from gandissect.world.dataset import image_to_tensor

QUANTILES = (0.005, 0.5, 0.99, 0.995)


@dataclass
class LayerStats:
    """The streaming statistics of one layer."""

    quantile: Quantile
    top: TopK
    object_mean: ConditionalMean


def _scene_batches(seed: int, n: int, size: int, batch: int, device: torch.device):
    for start in range(0, n, batch):
        indices = list(range(start, min(start + batch, n)))
        rendered = render_batch(seed, indices, size)  # a pool per batch would cost more
        images = image_to_tensor(rendered["image"])
        objects = torch.from_numpy(rendered["object"]).long()
        yield indices, images.to(device), objects.to(device)


def collect_unit_stats(
    model: torch.nn.Module,
    layers: list[str],
    n: int,
    size: int = 64,
    seed: int = 0,
    batch: int = 32,
    top_k: int = 8,
    progress: bool = True,
) -> dict[str, LayerStats]:
    """Stream ``n`` SceneWorld scenes (images in [-1, 1]) through ``model`` and tally ``layers``."""
    if n <= 0:
        raise UserError("need at least one scene (n >= 1)")
    for layer in layers:
        get_layer(model, layer)  # fail fast on a wrong name, listing valid ones
    device = model_device(model)
    n_objects = len(concepts("object"))
    result = {name: LayerStats(Quantile(), TopK(top_k), ConditionalMean()) for name in layers}
    bar = tqdm(total=n, unit="scene", disable=not progress, desc="unit stats")
    for indices, images, objects in _scene_batches(seed, n, size, batch, device):
        with torch.no_grad(), TraceDict(model, layers, stop=True, clone=False) as traces:
            model(images)
        one_hot = F.one_hot(objects, n_objects + 1)[..., 1:].permute(0, 3, 1, 2).bool()
        for name, trace in traces.items():
            acts = trace.output
            if acts.dim() != 4:
                raise UserError(f"layer {name!r} outputs shape {tuple(acts.shape)}; "
                                "choose a convolutional layer with (batch, units, H, W) output")
            stats = result[name]
            stats.quantile.add_maps(acts)
            stats.top.add(acts.amax((2, 3)), indices)
            upsampled = F.interpolate(acts, size=objects.shape[1:], mode="bilinear",
                                      align_corners=False)
            stats.object_mean.add(upsampled, one_hot)
        bar.update(len(indices))
    bar.close()
    return result


def summarize(stats: dict[str, LayerStats], settings: dict) -> dict:
    """A JSON-ready summary: per unit, its quantiles, top scenes and most-activating objects."""
    names = [c.name for c in concepts("object")]
    layers = []
    for layer, s in stats.items():
        levels = s.quantile.quantiles(list(QUANTILES))
        top_scores, top_ids = s.top.result()
        means = s.object_mean.result()
        units = []
        for unit in range(levels.shape[0]):
            ranked = means[unit].nan_to_num(float("-inf")).argsort(descending=True)[:3].tolist()
            units.append({
                "unit": unit,
                "quantiles": {str(q): round(float(v), 6) for q, v in zip(QUANTILES, levels[unit])},
                "top_scenes": top_ids[unit].tolist(),
                "top_scores": [round(v, 6) for v in top_scores[unit].tolist()],
                "top_objects_by_mean": [[names[c], round(float(means[unit, c]), 6)]
                                        for c in ranked],
            })
        layers.append({"layer": layer, "units": units})
    return {"settings": settings, "layers": layers}


def write_unit_stats(out: str | Path, stats: dict[str, LayerStats], settings: dict) -> Path:
    """Write ``out/unit_stats.json`` (``summarize``) and each layer's statistics' states in
    ``out/stats_<layer>.pt`` (read back with ``gandissect.fileio.load_state``)."""
    out = Path(out)
    for layer, s in stats.items():
        save_state(out / f"stats_{layer}.pt", {
            "quantile": s.quantile.state_dict(), "top": s.top.state_dict(),
            "object_mean": s.object_mean.state_dict(), "settings": settings})
    write_json(out / "unit_stats.json", summarize(stats, settings))
    return out / "unit_stats.json"
