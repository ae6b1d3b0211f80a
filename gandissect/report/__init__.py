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

__all__ = ["write_report", "render_html", "write_html", "load_dissection", "load_layer_stats",
           "save_dissection"]


def write_report(dissection: Dissection, folder: str | Path, generator: nn.Module | None = None,
                 html: bool = True, images: int = 8) -> Path:
    """Write the JSON, the statistics and (if ``html``) ``report.html`` into ``folder``.

    ``generator`` (the dissected one) lets the page show each unit's top ``images`` samples,
    regenerated from their latents, with the unit's mask. Returns the JSON's path.
    """
    path = save_dissection(dissection, folder)
    if html:
        write_html(dissection, Path(folder) / "report.html", generator, images)
    return path
