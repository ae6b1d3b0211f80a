"""Writing a classifier's dissection with the GAN dissection report (one report code path).

The shared report draws each unit's top images from a sample source
(``gandissect.report.images.SampleSource``: ids and a layer -> images and that layer's
activations). ``probe_samples`` is that source for a probe set: it fetches the probe images by
id and traces the classifier on them, so the report shows real probe images with the unit's
mask.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from gandissect.dissect.results import Dissection
from gandissect.hooks import Trace
from gandissect.models.inputs import Preprocess
from gandissect.netdissect.probe import ProbeSet
from gandissect.report import write_report
from gandissect.report.images import SampleSource
from gandissect.spatial import map_view
from gandissect.torchutil import eval_mode, model_device

__all__ = ["probe_samples", "write_netdissect_report"]


def probe_samples(model: nn.Module, probe: ProbeSet,
                  preprocess: Preprocess | None = None) -> SampleSource:
    """The sample source of a probe set: sample ``i`` is probe image ``i``, seen by ``model``
    (after ``preprocess``); the images are returned as the probe gives them, in [-1, 1]."""
    device = model_device(model)

    def samples(ids: list[int], layer: str) -> tuple[torch.Tensor, torch.Tensor]:
        images = probe.images(ids).to(device)
        with Trace(model, layer, view=map_view(model, layer, images.shape[-2:])) as trace:
            model(images if preprocess is None else preprocess(images))
        return images, trace.output

    return samples


def write_netdissect_report(dissection: Dissection, folder: str | Path, model: nn.Module,
                            probe: ProbeSet, preprocess: Preprocess | None = None,
                            html: bool = True, images: int = 8) -> Path:
    """``dissect.json``, ``stats_<layer>.pt`` and ``report.html`` via the shared report writer;
    the page shows each unit's top ``images`` probe images with the unit's mask."""
    with eval_mode(model):
        return write_report(dissection, folder, html=html, images=images,
                            samples=probe_samples(model, probe, preprocess))
