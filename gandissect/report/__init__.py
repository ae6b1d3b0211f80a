"""Dissection reports: ``dissect.json``, per-layer statistics, and a self-contained HTML page.

    from gandissect.report import write_report, load_dissection

    write_report(dissection, "out/", generator=generator)   # out/dissect.json, out/report.html,
                                                            # out/stats_<layer>.pt
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from gandissect.dissect.results import (
    Dissection,
    load_dissection,
    load_layer_stats,
    save_dissection,
)
from gandissect.report.html import render_html, write_html
from gandissect.report.images import SampleSource, generator_samples

__all__ = ["write_report", "render_html", "write_html", "load_dissection", "load_layer_stats",
           "save_dissection"]


def write_report(dissection: Dissection, folder: str | Path, generator: nn.Module | None = None,
                 html: bool = True, images: int = 8,
                 samples: SampleSource | None = None) -> Path:
    """Write the JSON, the statistics and (if ``html``) ``report.html`` into ``folder``.

    The page shows each unit's top ``images`` samples with the unit's mask when it can produce
    them: from ``generator`` (the dissected one: samples regenerated from their latents) or any
    other ``samples`` source (``report.images.SampleSource``). Returns the JSON's path.
    """
    if samples is None and generator is not None:
        settings = dissection.settings
        samples = generator_samples(generator, settings["seed"], settings["z_dim"])
    path = save_dissection(dissection, folder)
    if html:
        write_html(dissection, Path(folder) / "report.html", samples, images)
    return path
