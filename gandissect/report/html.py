"""The self-contained HTML report: everything inline (CSS, JS, SVG, images as data URIs).

Per layer: a bar graph of interpretable units per concept grouped by category, and a table
with one row per unit (unit, label, category, IoU, its formula and the formula's IoU when
``netdissect --formulas`` found them, threshold, a heatmap of its mean activation, its top
images with its mask) that sorts by any column on a click.
"""

from __future__ import annotations

from html import escape
from pathlib import Path

from gandissect.dissect.counts import best_in_category, labelled
from gandissect.dissect.results import Dissection, LayerDissection
from gandissect.fileio import write_text
from gandissect.report.images import (
    SampleSource,
    data_uri,
    heatmap,
    top_image_strips,
)
from gandissect.report.svg import concept_bars

__all__ = ["render_html", "write_html"]

_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;font-size:13px}
th,td{padding:3px 6px;border-bottom:1px solid #ddd;text-align:left;vertical-align:middle}
th[data-sort]{cursor:pointer;background:#f3f3f3;position:sticky;top:0}
th[data-sort]:hover{background:#e4e4e4}
tr.unit.no td.label{color:#999}
img{image-rendering:pixelated}
img.strip{height:64px}
img.heat{width:48px;height:48px}
.settings td{border:none;padding:1px 8px;font-size:12px}
.empty{color:#888}
"""

_JS = """
document.querySelectorAll('table.units').forEach(function(table){
  table.querySelectorAll('th[data-sort]').forEach(function(th, col){
    th.addEventListener('click', function(){
      var body = table.tBodies[0], rows = Array.from(body.rows);
      var numeric = th.dataset.sort === 'num', dir = th.dataset.dir === 'asc' ? -1 : 1;
      th.dataset.dir = dir === 1 ? 'asc' : 'desc';
      rows.sort(function(a, b){
        var x = a.cells[col].dataset.v, y = b.cells[col].dataset.v;
        if (numeric) { return dir * (parseFloat(x) - parseFloat(y)); }
        return dir * x.localeCompare(y);
      });
      rows.forEach(function(r){ body.appendChild(r); });
    });
  });
});
"""


def _cell(value, text: str | None = None, css: str = "") -> str:
    shown = escape(str(value) if text is None else text)
    klass = f' class="{css}"' if css else ""
    return f'<td{klass} data-v="{escape(str(value))}">{shown}</td>'


def concept_charts(dissection: Dissection, layer: LayerDissection) -> str:
    """Units per concept counted both ways (``gandissect.dissect.counts``): interpretable
    units by their label, and units by their best concept in each category; each chart with
    a heading and one sentence that says what it counts."""
    categories = list(dissection.settings.get("categories", []))
    by_label = labelled(layer)
    min_iou = dissection.settings.get("min_iou")
    parts = [f"<h3>Interpretable units per concept, by label</h3><p class=\"what\">Units whose "
             f"best concept over every category is the concept, with IoU above {min_iou}."
             "</p>", concept_bars([(c, n, k) for (c, n), k in by_label.items()], categories)]
    if "iou" in layer.stats:  # an adaptive-threshold dissection keeps no IoU matrix
        by_category = best_in_category(dissection, layer.layer)
        parts += ["<h3>Units per concept, by best concept in its category</h3><p class="
                  "\"what\">Each unit counted once per category, for its best concept of that "
                  "category (IoU above 0), whatever its label: what a painting brush of the "
                  "concept draws from.</p>",
                  concept_bars([(c, n, k) for (c, n), k in by_category.items()], categories,
                               what="units per concept, by best concept in its category",
                               empty="No unit overlaps any concept.")]
    return "".join(parts)


def _layer_section(dissection: Dissection, layer: LayerDissection,
                   samples: SampleSource | None, images: int) -> str:
    settings = dissection.settings
    counts = labelled(layer)
    bars = concept_charts(dissection, layer)
    strips = {}
    if samples is not None and images > 0:
        strips = top_image_strips(samples, layer, images, settings.get("batch", 32))
    mean_map = layer.stats.get("mean_map")
    adaptive = any(u.iqr is not None for u in layer.units)
    head = ['<th data-sort="num">unit</th>', '<th data-sort="text">label</th>',
            '<th data-sort="text">category</th>', '<th data-sort="num">IoU</th>']
    if adaptive:
        head.append('<th data-sort="num">IQR</th>')
    formulas = any(u.formula is not None for u in layer.units)
    if formulas:
        head += ['<th data-sort="text">formula</th>', '<th data-sort="num">formula IoU</th>']
    head += ['<th data-sort="num">threshold</th>', "<th>mean activation</th>",
             "<th>top images (unit mask outlined)</th>"]
    rows = []
    for u in layer.units:
        cells = [_cell(u.unit), _cell(u.label, css="label"), _cell(u.category),
                 _cell(u.iou, f"{u.iou:.3f}")]
        if adaptive:
            cells.append(_cell(u.iqr))
        if formulas:
            cells += [_cell(u.formula or "", css="formula"),
                      _cell(u.formula_iou, "" if u.formula_iou is None else f"{u.formula_iou:.3f}")]
        cells.append(_cell(u.threshold, f"{u.threshold:.3g}"))
        heat = (f'<img class="heat" alt="mean activation of unit {u.unit}" '
                f'src="{data_uri(heatmap(mean_map[u.unit]))}">' if mean_map is not None else "")
        cells.append(f"<td>{heat}</td>")
        strip = strips.get(u.unit)
        top = (f'<img class="strip" alt="top images of unit {u.unit}" '
               f'src="{data_uri(strip, "jpeg")}">' if strip is not None else
               escape(", ".join(map(str, u.top_images))))
        cells.append(f"<td>{top}</td>")
        klass = "unit" if u.interpretable else "unit no"
        rows.append(f'<tr class="{klass}">{"".join(cells)}</tr>')
    total, good = len(layer.units), len(layer.interpretable())
    return (f'<section><h2>{escape(layer.layer)}</h2>'
            f"<p>{good} of {total} units interpretable, {len(counts)} distinct concepts "
            f"(layer output {escape(' x '.join(map(str, layer.shape)))}).</p>{bars}"
            f'<table class="units"><thead><tr>{"".join(head)}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></section>')


TITLES = {"netdissect": "Network dissection"}  # settings["kind"] -> page title


def render_html(dissection: Dissection, samples: SampleSource | None = None,
                images: int = 8) -> str:
    """The report page as a string. With a sample source (``report.images``), each unit's top
    ``images`` samples are produced again and shown with the unit's mask; without, their ids
    are listed."""
    settings = "".join(f"<tr><td>{escape(str(k))}</td><td>{escape(str(v))}</td></tr>"
                       for k, v in dissection.settings.items())
    sections = "".join(_layer_section(dissection, layer, samples, images)
                       for layer in dissection.layers)
    title = TITLES.get(dissection.settings.get("kind", ""), "GAN dissection")
    return ("<!DOCTYPE html><html><head><meta charset=\"utf-8\">"
            f"<title>{title} report</title>"
            f"<style>{_CSS}</style></head><body><h1>{title}</h1>"
            f'<table class="settings">{settings}</table>{sections}'
            f"<script>{_JS}</script></body></html>")


def write_html(dissection: Dissection, path: str | Path, samples: SampleSource | None = None,
               images: int = 8) -> Path:
    """Write ``render_html`` to ``path`` (atomically)."""
    path = Path(path)
    write_text(path, render_html(dissection, samples, images))
    return path
