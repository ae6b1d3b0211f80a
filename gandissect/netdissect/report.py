"""Writing a classifier's dissection with the GAN dissection report (one report code path).

The shared report draws each unit's top images by calling a "generator" on the latents of the
top sample ids (``latents(settings["seed"], ids, settings["z_dim"])``) while tracing the
dissected layer. ``ProbeImages`` is that generator for a probe set: it reads the sample ids
back from those latents, fetches the probe images and runs the classifier on them, so the
report shows real probe images with the unit's mask.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from gandissect.dissect.latents import latents
from gandissect.dissect.results import Dissection
from gandissect.netdissect.core import eval_mode
from gandissect.netdissect.inputs import Preprocess
from gandissect.netdissect.probe import ProbeSet
from gandissect.report import write_report

__all__ = ["ProbeImages", "write_netdissect_report"]


class ProbeImages(nn.Module):
    """A stand-in generator: latents of sample ids -> those probe images, through ``model``.

    It shares ``model``'s children under their own names, so ``Trace(probe_images, "layer4")``
    traces the classifier's ``layer4`` while the images pass through the classifier.
    """

    def __init__(self, model: nn.Module, probe: ProbeSet, seed: int, z_dim: int,
                 ids: list[int], preprocess: Preprocess | None = None) -> None:
        super().__init__()
        for name, child in model.named_children():
            self.add_module(name, child)
        self._model = (model,)  # a tuple: not registered twice
        self.probe, self.preprocess = probe, preprocess
        self.z_dim = z_dim
        ids = sorted(set(int(i) for i in ids))
        codes = latents(seed, ids, z_dim) if ids else torch.empty(0, z_dim)
        self._ids = {tuple(row.tolist()): i for row, i in zip(codes, ids)}
        if len(self._ids) != len(ids):
            raise ValueError("two samples share a latent; use a larger z_dim")

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        try:
            ids = [self._ids[tuple(row.tolist())] for row in z.cpu()]
        except KeyError:
            raise ValueError("ProbeImages only knows the latents of the ids it was built "
                             "with") from None
        parameter = next(self.parameters(), None)
        device = parameter.device if parameter is not None else torch.device("cpu")
        images = self.probe.images(ids).to(device)
        (model,) = self._model
        model(images if self.preprocess is None else self.preprocess(images))
        return images


def write_netdissect_report(dissection: Dissection, folder: str | Path, model: nn.Module,
                            probe: ProbeSet, preprocess: Preprocess | None = None,
                            html: bool = True, images: int = 8) -> Path:
    """``dissect.json``, ``stats_<layer>.pt`` and ``report.html`` via the shared report writer;
    the page shows each unit's top ``images`` probe images with the unit's mask."""
    settings = dissection.settings
    source = None
    if html and images > 0:
        ids = [i for layer in dissection.layers for unit in layer.units
               for i in unit.top_images[:images]]
        source = ProbeImages(model, probe, settings["seed"], settings["z_dim"], ids, preprocess)
    with eval_mode(model):
        return write_report(dissection, folder, generator=source, html=html, images=images)
