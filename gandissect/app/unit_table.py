"""The unit table and the bar chart both dissection tabs show (a generator's units and a
classifier's), read from a ``Dissection``: filtering, sorting, listing units by concept.

Rows come from the dissection's ``UnitScore``s (with each unit's formula and its IoU where
formulas were labelled); the IoU of every unit with a chosen concept
from ``gandissect.ace.iou_scores``; the bar chart is the HTML report's own
(``gandissect.report.svg.concept_bars``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd
import torch

from gandissect.ace import iou_scores
from gandissect.causal import ConceptRef
from gandissect.dissect import Dissection, LayerDissection
from gandissect.dissect.counts import best_in_category, count_title, labelled
from gandissect.errors import UserError
from gandissect.report.html import concept_charts

__all__ = ["ALL", "FORMULA_HEADERS", "HEADERS", "SORTS", "TableQuery", "bars_html",
           "category_choices", "concept_choices", "concept_of", "unit_table"]

ALL = "all"
HEADERS = ["unit", "label", "category", "IoU", "causal effect", "interpretable"]
FORMULA_HEADERS = ["formula", "formula IoU"]  # after "IoU", where formulas were labelled
SORTS = ["unit", "label", "category", "IoU", "causal effect"]


@dataclass
class TableQuery:
    """What the table shows: units labelled ``concept`` and of ``category`` (``ALL``: any),
    only interpretable ones or all, sorted by a ``SORTS`` column; or, with ``by_concept``,
    every unit ranked by its IoU with ``concept``."""

    concept: str = ALL
    category: str = ALL
    interpretable_only: bool = False
    sort: str = "unit"
    descending: bool = False
    by_concept: bool = False


def _vocabulary(dissection: Dissection, layer: LayerDissection) -> list[tuple[str, str]]:
    """Every (category, name) the dissection scored, in its order."""
    categories = list(dissection.settings["categories"])
    stats = layer.stats
    return [(categories[int(c)], name)
            for name, c in zip(stats["concepts"], torch.as_tensor(stats["concept_category"]))]


def concept_of(dissection: Dissection, layer: LayerDissection, key: str) -> ConceptRef:
    """The concept of a ``"category/name"`` key (its code is the segmenter's business)."""
    category, _, name = key.partition("/")
    if (category, name) not in _vocabulary(dissection, layer):
        raise UserError(f"{name!r} ({category}) is not a concept of this dissection")
    return ConceptRef(category, name, -1)


def concept_choices(dissection: Dissection, layer: LayerDissection) -> list[tuple[str, str]]:
    """``(title, key)`` per concept, titled with both counts (``gandissect.dissect.counts``):
    those labelling units first (most first), then by the units best in their category."""
    by_label = labelled(layer)
    by_category = best_in_category(dissection, layer.layer) if "iou" in layer.stats else Counter()
    concepts = sorted(_vocabulary(dissection, layer),
                      key=lambda c: (-by_label[c], -by_category[c], c[1], c[0]))
    return [(count_title(category, name, by_label[(category, name)],
                         by_category[(category, name)]), f"{category}/{name}")
            for category, name in concepts]


def category_choices(dissection: Dissection) -> list[str]:
    """The dissection's categories."""
    return list(dissection.settings["categories"])


def _effect(effects: Mapping[str, torch.Tensor | None], key: str, unit: int) -> float | None:
    weights = effects.get(key)
    return None if weights is None else round(float(weights[unit]), 4)


def unit_table(dissection: Dissection, layer: LayerDissection, query: TableQuery,
               effects: Mapping[str, torch.Tensor | None] | None = None) -> pd.DataFrame:
    """The table's rows (``HEADERS``). ``effects`` maps a concept key to its learned causal
    weight per unit, where known; the "causal effect" cell is the weight for the row's concept
    (its label, or the concept being listed), blank when unknown."""
    effects = effects or {}
    rows = []
    if query.by_concept:
        if query.concept == ALL:
            raise UserError("choose a concept to list its units")
        scores = iou_scores(dissection, layer.layer, concept_of(dissection, layer, query.concept))
        for unit in layer.units:
            rows.append([unit.unit, unit.label, unit.category,
                         round(float(scores[unit.unit]), 4),
                         _effect(effects, query.concept, unit.unit), unit.interpretable])
        rows.sort(key=lambda row: (-float(scores[row[0]]), row[0]))  # as units_by_iou ranks
    else:
        for unit in layer.units:
            if query.concept != ALL and f"{unit.category}/{unit.label}" != query.concept:
                continue
            if query.category != ALL and unit.category != query.category:
                continue
            rows.append([unit.unit, unit.label, unit.category, round(unit.iou, 4),
                         _effect(effects, f"{unit.category}/{unit.label}", unit.unit),
                         unit.interpretable])
        column = SORTS.index(query.sort) if query.sort in SORTS else 0
        known = [r for r in rows if r[column] is not None]
        known.sort(key=lambda row: (row[column], row[0]), reverse=query.descending)
        rows = known + [r for r in rows if r[column] is None]  # blanks last either way
    if query.interpretable_only:
        rows = [r for r in rows if r[5]]
    table = pd.DataFrame(rows, columns=HEADERS)
    table["causal effect"] = table["causal effect"].map(lambda v: "" if v is None else v)
    table["interpretable"] = table["interpretable"].map(lambda v: "yes" if v else "")
    return _with_formulas(table, layer)


def _with_formulas(table: pd.DataFrame, layer: LayerDissection) -> pd.DataFrame:
    """``table`` with each unit's "formula" and "formula IoU" (``FORMULA_HEADERS``) after its
    IoU, where the dissection labelled formulas (``gandissect.netdissect.formulas``)."""
    if all(unit.formula is None for unit in layer.units):
        return table
    by_unit = {unit.unit: unit for unit in layer.units}
    at = table.columns.get_loc("IoU") + 1
    table.insert(at, FORMULA_HEADERS[0], [by_unit[u].formula or "" for u in table["unit"]])
    table.insert(at + 1, FORMULA_HEADERS[1],
                 [round(by_unit[u].formula_iou, 4) if by_unit[u].formula_iou is not None else ""
                  for u in table["unit"]])
    return table


def bars_html(dissection: Dissection, layer: LayerDissection) -> str:
    """The report's two SVG bar charts (``gandissect.report.html.concept_charts``): units per
    concept by label, and by best concept in each category."""
    return concept_charts(dissection, layer)
