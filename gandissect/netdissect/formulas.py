"""Compositional explanations (Mu and Andreas 2020): each unit labelled by a logical formula of
concepts, ``(tree OR grass) AND NOT sky``, found by beam search and scored by IoU.

Data path (after ``netdissect``, with its thresholds)::

    probe batch -> model -> layer activations
        one more pass: the unit's binary mask exactly as Network Dissection makes it (bilinear
        upsampling to the labels, above the unit's threshold: ``IoUPass.active``), kept as the
        active pixels' indices, and the probe's label codes (int16)
    per unit: beam search over formulas c1 op c2 op c3 ... (left to right, op in AND, OR,
        AND NOT), scored by IoU of the formula's mask with the unit's mask over the probe set

Counting. A formula's IoU is ``sum |F and A| / sum |F or A|`` over the images where every
category the formula names is labelled (its *scope*): for one concept this is Network
Dissection's category-conditioned denominator, so a length-1 formula scores exactly the unit's
IoU with that concept, and the beam (seeded with the best single concepts, never dropping an
entry for a worse one) never ends below the unit's label. Extending ``F`` by a concept ``c``
needs only counts per *group* of images (images that label the same categories, so that any
scope is a union of groups: a handful, however many images): ``|F|``, ``|F and c|`` (one
bincount of the label codes under F's pixels, the same for every unit, cached), ``|F and A|``
and ``|F and c and A|`` (over the unit's few active pixels), from which all three operators
follow:
``|F or c| = |F| + |c| - |F and c|``, ``|F and not c| = |F| - |F and c|``. A formula naming a
category that some images lack (SceneWorld's parts) is scored on fewer images, as a single
concept of that category is.

Candidates: every concept of every category may seed the beam; concepts labelled on fewer than
``min_fraction`` of the probe's pixels (default 1e-4) never extend a formula (too rare to
explain anything, and they would cost a step of the search each). A concept never appears twice
in one formula. Names that occur in several categories are written ``category:name``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from gandissect.dissect.labels import ConceptTable
from gandissect.dissect.passes import IoUPass
from gandissect.dissect.results import Dissection
from gandissect.errors import UserError
from gandissect.models.inputs import Preprocess
from gandissect.netdissect.core import _run_pass, concept_table
from gandissect.netdissect.probe import ProbeSet
from gandissect.torchutil import eval_mode

__all__ = ["AND", "AND_NOT", "MAX_LENGTH", "OPERATORS", "OR", "Formula", "FormulaSearch",
           "ProbeMasks", "check_formula_settings", "formula_figure", "label_formulas",
           "unit_masks", "written_names"]

AND, OR, AND_NOT = "AND", "OR", "AND NOT"
OPERATORS = (AND, OR, AND_NOT)
MAX_LENGTH = 5  # the search grows as beam x 3 x concepts per step; longer reads poorly anyway


def check_formula_settings(length: int, beam: int) -> None:
    """One clear line for a formula length outside 1..MAX_LENGTH or a beam below 1."""
    if not 1 <= length <= MAX_LENGTH:
        raise UserError(f"--formulas takes a formula length from 1 to {MAX_LENGTH}, got {length}")
    if beam < 1:
        raise UserError(f"--formula-beam must be at least 1, got {beam}")


@dataclass(frozen=True)
class Formula:
    """``first op1 c1 op2 c2 ...`` read left to right: ``((first op1 c1) op2 c2)``; concepts
    are indices into the probe's concept table."""

    first: int
    steps: tuple[tuple[str, int], ...] = ()

    def __len__(self) -> int:
        return 1 + len(self.steps)

    @property
    def concepts(self) -> tuple[int, ...]:
        return (self.first, *(c for _, c in self.steps))

    def extend(self, operator: str, concept: int) -> Formula:
        return Formula(self.first, (*self.steps, (operator, concept)))

    def evaluate(self, mask: Callable[[int], torch.Tensor]) -> torch.Tensor:
        """The formula's boolean mask, given each concept's mask."""
        value = mask(self.first)
        for operator, concept in self.steps:
            other = mask(concept)
            value = (value & other if operator == AND else value | other if operator == OR
                     else value & ~other)
        return value

    def text(self, names: Sequence[str]) -> str:
        """Readable, with the left operand in parentheses when it is itself a formula."""
        out = names[self.first]
        for step, (operator, concept) in enumerate(self.steps):
            out = f"({out})" if step else out
            out = f"{out} {operator} {names[concept]}"
        return out


class ProbeMasks:
    """The probe's concept masks held as label codes: ``(K, N * P)`` int16 (category, pixel of
    every image; 2 bytes a category and pixel, 12 MB for 300 images of 64 px and 5 categories),
    each concept one code of one category (the ``ConceptTable`` numbering)."""

    def __init__(self, labels: torch.Tensor, concept_category: torch.Tensor) -> None:
        if labels.dim() != 4:
            raise UserError("ProbeMasks expects (images, categories, H, W) label codes")
        self.images, categories = labels.shape[:2]
        self.pixels = labels.shape[2] * labels.shape[3]
        small = int(labels.max()) < torch.iinfo(torch.int16).max  # Broden: ~1,200 a category
        self.codes = labels.transpose(0, 1).reshape(categories, -1).to(
            torch.int16 if small else torch.int32)
        self.category = torch.as_tensor(concept_category, dtype=torch.int64)
        sizes = torch.bincount(self.category, minlength=categories)
        self.sizes = sizes.tolist()
        self.code = torch.arange(len(self.category)) - (sizes.cumsum(0) - sizes)[self.category] + 1
        # Images grouped by which categories they label: (G, K) patterns, each image's group.
        labelled = (self.codes.view(categories, self.images, -1) > 0).any(2).t()
        self.presence, self.group = labelled.unique(dim=0, return_inverse=True)
        self.groups = len(self.presence)
        self.counts = self.overlap(torch.ones(self.images * self.pixels, dtype=torch.bool))

    @property
    def concepts(self) -> int:
        return len(self.category)

    def mask(self, concept: int) -> torch.Tensor:
        """``(N * P,)`` booleans: where ``concept`` is labelled."""
        return self.mask_at(self.codes, concept)

    def overlap(self, where: torch.Tensor) -> torch.Tensor:
        """``(G, C)`` int64: per group of images, the pixels of ``where`` (``(N * P,)``
        booleans) that each concept labels."""
        pixels = where.nonzero()[:, 0]
        return self.tally(self.group_of(pixels), self.codes[:, pixels])

    def group_of(self, pixels: torch.Tensor) -> torch.Tensor:
        """The group of the image of each of ``pixels`` (flat indices)."""
        return self.group[pixels // self.pixels]

    def tally(self, slot: torch.Tensor, codes: torch.Tensor,
              slots: int | None = None) -> torch.Tensor:
        """``(slots, C)`` int64: pixels per slot and concept, given each pixel's slot ``(M,)``
        (below ``slots``, default the groups) and its label codes ``(K, M)``."""
        slots = self.groups if slots is None else slots
        parts = []
        for k, size in enumerate(self.sizes):
            keys = slot * (size + 1) + codes[k].long()
            counts = torch.bincount(keys, minlength=slots * (size + 1))
            parts.append(counts.view(slots, size + 1)[:, 1:])
        return torch.cat(parts, 1)

    def mask_at(self, codes: torch.Tensor, concept: int) -> torch.Tensor:
        """Where ``concept`` is labelled, given label codes ``(K, M)`` of some pixels."""
        return codes[int(self.category[concept])] == int(self.code[concept])

    def scope(self, formula: Formula) -> torch.Tensor:
        """``(G,)`` booleans: the groups of images that label every category ``formula``
        names."""
        return self.presence[:, self.category[list(formula.concepts)]].all(1)


class FormulaSearch:
    """Beam search for each unit's best formula over ``masks`` (``ProbeMasks``).

    ``unit(pixels)`` takes a unit's active pixels (flat indices into the probe's ``N * P``
    pixels) and returns ``(formula, IoU)``, and the unit's best single concept and IoU. The
    search keeps ``beam`` formulas, seeded with the best single concepts; each step extends
    every kept formula shorter than ``length`` by each operator and each candidate concept and
    keeps the ``beam`` best of old and new (ties: shorter first, then found first).
    """

    def __init__(self, masks: ProbeMasks, length: int = 3, beam: int = 5,
                 min_fraction: float = 1e-4) -> None:
        check_formula_settings(length, beam)
        self.masks, self.length, self.beam = masks, length, beam
        total = masks.images * masks.pixels
        self.candidate = masks.counts.sum(0) >= max(1.0, min_fraction * total)
        self._global: dict[Formula, tuple[torch.Tensor, torch.Tensor]] = {}

    def score(self, pixels: torch.Tensor, formula: Formula) -> float:
        """IoU of ``formula`` with the unit whose active pixels are ``pixels``."""
        unit = _UnitCounts(self.masks, pixels.long())
        size, _ = self._unit_free(formula)
        hit, _ = unit.under(unit.evaluate(formula)[None])
        scope = self.masks.scope(formula)[:, None]
        return float(unit.iou(hit[0], size[:, None], scope)[0])

    def _unit_free(self, formula: Formula) -> tuple[torch.Tensor, torch.Tensor]:
        """``|F|`` ``(G,)`` and ``|F and c|`` ``(G, C)`` per group: no unit in them."""
        cached = self._global.get(formula)
        if cached is None:
            masks = self.masks
            where = formula.evaluate(masks.mask)
            size = torch.zeros(masks.groups, dtype=torch.int64).index_add_(
                0, masks.group, where.view(masks.images, -1).sum(1))
            cached = (size, masks.overlap(where))
            self._global[formula] = cached
        return cached

    def unit(self, pixels: torch.Tensor) -> tuple[Formula, float, Formula, float]:
        """The best formula and its IoU, and the best single concept and its IoU."""
        unit = _UnitCounts(self.masks, pixels.long())
        singles = unit.iou(unit.single, self.masks.counts, unit.category_scope)
        # Rank as Network Dissection does (its IoU in float32, stable): the same label on ties.
        order = singles.float().argsort(descending=True, stable=True)
        entries = [(float(singles[c]), Formula(int(c))) for c in order[:self.beam].tolist()]
        best_single = entries[0]
        seen, extended = {f for _, f in entries}, set()
        for _ in range(self.length - 1):
            grow = [f for _, f in entries if len(f) < self.length and f not in extended]
            extended.update(grow)
            found = self._extend(grow, unit)
            pool = entries + [(score, f) for score, f in found if f not in seen]
            seen.update(f for _, f in found)
            # stable sort: among equal IoUs (as float32), shorter formulas, then found first
            pool.sort(key=lambda entry: (-_float32(entry[0]), len(entry[1])))
            entries = pool[:self.beam]
        (score, formula), (single_score, single) = entries[0], best_single
        return formula, score, single, single_score

    def _extend(self, formulas: list[Formula],
                unit: _UnitCounts) -> list[tuple[float, Formula]]:
        """The ``beam`` best extensions of each of ``formulas`` by one operator and one
        concept, all formulas scored at once: ``(formulas, operators, concepts)`` IoUs."""
        if not formulas:
            return []
        free = [self._unit_free(f) for f in formulas]
        size = torch.stack([f[0] for f in free])[:, :, None]  # (E, G, 1): |F|
        size_c = torch.stack([f[1] for f in free])  # (E, G, C): |F and c|
        hit, hit_c = unit.under(torch.stack([unit.evaluate(f) for f in formulas]))
        scope = torch.stack([self.masks.scope(f) for f in formulas])[:, :, None] \
            & unit.category_scope
        counts = self.masks.counts
        inter = torch.stack([hit_c, hit + unit.single - hit_c, hit - hit_c], 1)  # OPERATORS
        sizes = torch.stack([size_c, size + counts - size_c, size - size_c], 1)
        scores = unit.iou(inter, sizes, scope[:, None])  # (E, 3, C)
        allowed = self.candidate[None].repeat(len(formulas), 1)
        for row, formula in enumerate(formulas):
            allowed[row, list(formula.concepts)] = False
        scores.masked_fill_(~allowed[:, None], -1.0)
        top = scores.flatten(1).topk(min(self.beam, int(allowed.sum(1).max()) * len(OPERATORS)))
        out = []
        for formula, values, indices in zip(formulas, top.values.tolist(),
                                            top.indices.tolist()):
            for score, flat in zip(values, indices):
                if score >= 0:
                    operator, concept = divmod(flat, self.masks.concepts)
                    out.append((score, formula.extend(OPERATORS[operator], concept)))
        return out


def _float32(value: float) -> float:
    return float(np.float32(value))


class _UnitCounts:
    """One unit's active pixels against the probe's concepts: counts per group of images."""

    def __init__(self, masks: ProbeMasks, pixels: torch.Tensor) -> None:
        self.masks = masks
        self.group = masks.group_of(pixels)
        self.codes = masks.codes[:, pixels]  # (K, M): the labels under the unit's pixels
        self.area = torch.bincount(self.group, minlength=masks.groups)  # |A|
        self.category_scope = masks.presence[:, masks.category]  # (G, C)
        self.single = masks.tally(self.group, self.codes)  # |c and A|

    def evaluate(self, formula: Formula) -> torch.Tensor:
        """``formula`` at the unit's active pixels ``(M,)``."""
        return formula.evaluate(lambda concept: self.masks.mask_at(self.codes, concept))

    def under(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``|F and A|`` (E, G, 1) and ``|F and c and A|`` (E, G, C) per group for E formulas,
        formula ``e`` true at ``rows[e]`` (``(E, M)`` booleans) of the unit's active pixels."""
        formula, pixel = rows.nonzero().unbind(1)
        groups = self.masks.groups
        slot = formula * groups + self.group[pixel]  # one (formula, group) pair a slot
        area = torch.bincount(slot, minlength=len(rows) * groups)
        hit = self.masks.tally(slot, self.codes[:, pixel], len(rows) * groups)
        return area.view(len(rows), groups, 1), hit.view(len(rows), groups, -1)

    def iou(self, inter: torch.Tensor, size: torch.Tensor, scope: torch.Tensor) -> torch.Tensor:
        """``(..., C)`` IoU from per-group ``(..., G, C)`` intersections and formula sizes,
        summed over the groups in ``scope``; 0 where the union is empty."""
        inside = scope.long()
        union = (size + self.area[:, None] - inter) * inside
        return (inter * inside).sum(-2).double() / union.sum(-2).clamp(min=1).double()


class _FormulaPass(IoUPass):
    """``IoUPass`` that also keeps each unit's active pixels (flat indices over the probe) and,
    when ``keep_labels``, the label codes (int16 where they fit)."""

    def __init__(self, thresholds: torch.Tensor, concept_category: torch.Tensor,
                 n_categories: int, keep_labels: bool) -> None:
        super().__init__(thresholds, concept_category, n_categories)
        self.keep_labels = keep_labels
        self.units: list[torch.Tensor] = []
        self.pixels: list[torch.Tensor] = []
        self.labels: list[torch.Tensor] = []
        self.seen = 0

    def add(self, acts, ids, labels) -> None:
        active = self.active(acts, labels.shape[2:]).cpu()
        per_image = labels.shape[2] * labels.shape[3]
        self.units.append(active[:, 1])
        self.pixels.append((active[:, 0] + self.seen) * per_image + active[:, 2])
        if self.keep_labels:
            small = int(labels.max()) < torch.iinfo(torch.int16).max  # else int32 (cat promotes)
            self.labels.append(labels.cpu().to(torch.int16 if small else torch.int32))
        self.seen += acts.shape[0]

    def per_unit(self, units: int) -> list[torch.Tensor]:
        """Each unit's active pixels, in order."""
        unit, pixels = torch.cat(self.units), torch.cat(self.pixels)
        order = unit.argsort(stable=True)
        return list(pixels[order].split(torch.bincount(unit, minlength=units).tolist()))


def unit_masks(dissection: Dissection, model: nn.Module, probe: ProbeSet,
               preprocess: Preprocess | None = None,
               progress: bool = False) -> tuple[ProbeMasks, dict[str, list[torch.Tensor]]]:
    """The probe's concept masks and, per layer of ``dissection`` (a fixed-threshold
    ``netdissect`` result on ``probe``, with its statistics), each unit's active pixels (flat
    indices over the probe's ``N * P`` label pixels), from one more pass at the dissection's
    thresholds and batch size."""
    names = [layer.layer for layer in dissection.layers]
    if any("thresholds" not in layer.stats for layer in dissection.layers):
        raise UserError("formulas need a fixed-threshold dissection with its statistics "
                        "(netdissect's result, or load_dissection(..., stats=True))")
    table = concept_table(probe)
    passes = {name: _FormulaPass(dissection.layer(name).stats["thresholds"],
                                 table.concept_category, len(table.categories), i == 0)
              for i, name in enumerate(names)}
    with eval_mode(model):
        _run_pass(model, probe, names, passes, preprocess,
                  int(dissection.settings.get("batch", 32)), "netdissect formulas", progress,
                  {"shapes": {}, "label_shape": None})
    masks = ProbeMasks(torch.cat(passes[names[0]].labels), table.concept_category)
    return masks, {name: passes[name].per_unit(len(dissection.layer(name).units))
                   for name in names}


def label_formulas(dissection: Dissection, model: nn.Module, probe: ProbeSet, length: int = 3,
                   beam: int = 5, preprocess: Preprocess | None = None,
                   min_fraction: float = 1e-4, progress: bool = False) -> Dissection:
    """Give every unit of ``dissection`` (a ``netdissect`` result on ``probe``, with its
    statistics) a ``formula`` of up to ``length`` concepts and its ``formula_iou``.

    The units' masks come from ``unit_masks``; the search is ``FormulaSearch`` (beam
    ``beam``). Records ``settings["formulas"]``. Returns ``dissection``, changed in place."""
    check_formula_settings(length, beam)
    masks, active = unit_masks(dissection, model, probe, preprocess, progress)
    written = written_names(concept_table(probe))
    search = FormulaSearch(masks, length, beam, min_fraction)
    for layer in dissection.layers:
        for unit, pixels in tqdm(list(zip(layer.units, active[layer.layer])),
                                 desc=f"formulas {layer.layer}", disable=not progress):
            formula, score, _, _ = search.unit(pixels)
            unit.formula = formula.text(written)
            unit.formula_iou = float(f"{score:.6g}")
    dissection.settings["formulas"] = {
        "length": length, "beam": beam, "operators": list(OPERATORS),
        "min_fraction": min_fraction, "candidates": int(search.candidate.sum()),
        "scope": "images where every category the formula names is labelled"}
    return dissection


def written_names(table: ConceptTable) -> list[str]:
    """Concept names as formulas write them: ``category:name`` where a name is ambiguous."""
    names = list(table.names)
    repeated = {n for n in names if names.count(n) > 1}
    return [f"{table.category_of(c)}:{n}" if n in repeated else n for c, n in enumerate(names)]


def formula_figure(dissection: Dissection, layer: str, samples: Callable, units: Sequence[int],
                   path: str, count: int = 4, scale: int = 2) -> None:
    """Write a PNG to ``path``: one row per unit of ``units`` (of ``dissection``'s ``layer``,
    labelled by ``label_formulas``), its ``count`` top images with the unit's mask outlined
    (``gandissect.report.images.top_image_strips`` on ``samples``, a sample source such as
    ``probe_samples``), captioned with its single label and IoU and its formula and IoU."""
    from PIL import Image, ImageDraw

    from gandissect.report.images import top_image_strips

    entry = dissection.layer(layer)
    chosen = [entry.units[u] for u in units]
    if any(score.formula is None for score in chosen):
        raise UserError("label the units with label_formulas before drawing their formulas")
    only = type(entry)(entry.layer, entry.shape, chosen)
    strips = top_image_strips(samples, only, count)
    pictures = [Image.fromarray(strips[score.unit]) for score in chosen]
    pictures = [p.resize((p.width * scale, p.height * scale), Image.NEAREST) for p in pictures]
    caption = 34
    width = max(p.width for p in pictures) + 16
    image = Image.new("RGB", (width, sum(p.height + caption + 10 for p in pictures) + 6),
                      "white")
    draw = ImageDraw.Draw(image)
    top = 6
    for score, picture in zip(chosen, pictures):
        draw.text((8, top), f"{layer} unit {score.unit}   label: {score.label} "
                            f"(IoU {score.iou:.3f})", fill="black")
        draw.text((8, top + 14), f"formula: {score.formula} (IoU {score.formula_iou:.3f})",
                  fill=(20, 70, 180))
        image.paste(picture, (8, top + caption))
        top += picture.height + caption + 10
    image.save(path)
