"""Compositional explanations (``netdissect --formulas``): formula IoU restated by a loop over
images, the planted formula found exactly, length 1 = Network Dissection's label, the formula
never below the label, the CLI's fields and its errors."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from gandissect.cli import main
from gandissect.hooks import Trace
from gandissect.models.registry import load_classifier
from gandissect.netdissect import ProbeBatch, ProbeSet, SceneWorldProbe, concept_table, netdissect
from gandissect.netdissect.formulas import (
    AND,
    AND_NOT,
    OR,
    Formula,
    FormulaSearch,
    ProbeMasks,
    label_formulas,
    unit_masks,
    written_names,
)

SCENES = 40


@pytest.fixture(scope="module")
def shipped():
    """The shipped classifier dissected at layer4 on 40 scenes, with the units' masks."""
    model, probe = load_classifier("sceneworld"), SceneWorldProbe(seed=1001, n=SCENES)
    with pytest.warns(Warning):  # 40 scenes are few for the statistics: a Caution
        result = netdissect(model, "layer4", probe, batch=20)
    masks, active = unit_masks(result, model, probe)
    return model, probe, result, masks, active["layer4"]


def parse(text: str, names: list[str]) -> list:
    """``a OP b OP c`` (left operand in parentheses) as ``[a, (op, b), (op, c)]`` of indices."""
    tokens = text.replace("(", " ").replace(")", " ").split()
    terms, operator = [], None
    index = 0
    while index < len(tokens):
        token = tokens[index]
        if token == "AND" and tokens[index + 1] == "NOT":
            operator, index = "AND NOT", index + 2
        elif token in ("AND", "OR"):
            operator, index = token, index + 1
        else:
            concept = names.index(token)
            terms.append(concept if operator is None else (operator, concept))
            index += 1
    return terms


def slow_formula_iou(terms: list, unit_maps: torch.Tensor, threshold: float,
                     labels: torch.Tensor, concept_category: list[int],
                     codes: list[int]) -> float:
    """IoU by the definition, image by image: the formula's mask from the label planes, the
    unit's mask from its upsampled map, counted only in images that label every category the
    formula names."""
    inter = union = 0
    concepts = [terms[0]] + [c for _, c in terms[1:]]
    for image in range(labels.shape[0]):
        planes = labels[image]
        if not all(bool((planes[concept_category[c]] > 0).any()) for c in concepts):
            continue

        def mask(c, planes=planes):
            return planes[concept_category[c]] == codes[c]

        formula = mask(terms[0])
        for operator, concept in terms[1:]:
            if operator == "AND":
                formula = formula & mask(concept)
            elif operator == "OR":
                formula = formula | mask(concept)
            else:
                formula = formula & ~mask(concept)
        active = unit_maps[image] > threshold
        inter += int((formula & active).sum())
        union += int((formula | active).sum())
    return inter / union if union else 0.0


def test_formula_iou_equals_a_loop_over_images(shipped):
    model, probe, result, masks, active = shipped
    table = concept_table(probe)
    names = written_names(table)
    search = FormulaSearch(masks, length=3, beam=5)
    labels = torch.cat([b.labels for b in probe.batches(SCENES)])
    images = probe.images(range(SCENES))
    with torch.no_grad(), Trace(model, "layer4") as trace:
        model(images)
    maps = F.interpolate(trace.output, size=labels.shape[2:], mode="bilinear",
                         align_corners=False)
    thresholds = result.layer("layer4").stats["thresholds"]
    category = table.concept_category.tolist()
    codes = masks.code.tolist()
    by_hand = ["sky AND NOT tree", "(grass OR tree) AND NOT green", "(dome OR tower) AND grey",
               "window",
               "(object:water AND lake) OR blue"]
    units = [0, 2, 4, 9, 33]
    for unit in units:
        found, score, _, _ = search.unit(active[unit])
        for text in [found.text(names), *by_hand]:
            terms = parse(text, names)
            formula = Formula(terms[0], tuple(terms[1:]))
            assert formula.text(names) == text  # the readable form parses back
            slow = slow_formula_iou(terms, maps[:, unit], float(thresholds[unit]), labels,
                                    category, codes)
            assert search.score(active[unit], formula) == pytest.approx(slow, abs=1e-4)
        assert score == pytest.approx(search.score(active[unit], found), abs=1e-12)


class PlantedProbe(ProbeSet):
    """Images whose channel 0 is 1 exactly on ``planted`` (else 0), labelled by ``labels``."""

    categories = ("object", "material")
    concepts = {"object": ["none", "A", "B", "E"], "material": ["none", "C", "D"]}

    def __init__(self, labels: torch.Tensor, planted: torch.Tensor) -> None:
        self.labels = labels
        self.pixels = torch.zeros(len(labels), 3, *labels.shape[2:])
        self.pixels[:, 0] = planted.float()

    def __len__(self) -> int:
        return len(self.labels)

    def batches(self, size: int, start: int = 0):
        for first in range(start, len(self), size):
            ids = torch.arange(first, min(first + size, len(self)))
            yield ProbeBatch(ids, self.pixels[ids], self.labels[ids])

    def images(self, ids):
        return self.pixels[list(ids)]


def test_planted_unit_gets_its_formula_with_iou_one():
    g = torch.Generator().manual_seed(3)
    n, size = 24, 32
    objects = torch.zeros(n, size, size, dtype=torch.int64)  # A=1, B=2, E=3
    materials = torch.zeros(n, size, size, dtype=torch.int64)  # C=1, D=2
    for plane, codes, sides in ((objects, (1, 2, 3), (14, 10, 8)), (materials, (1, 2), (12, 9))):
        for i in range(n):
            for code, side in zip(codes, sides):
                y, x = torch.randint(0, size - side + 1, (2,), generator=g).tolist()
                plane[i, y:y + side, x:x + side] = code
    labels = torch.stack([objects, materials], 1)
    a, b, c = objects == 1, objects == 2, materials == 1
    assert bool((a & c).any()) and bool((b & c).any())  # AND NOT C changes both A and B
    planted = (a | b) & ~c
    masks = ProbeMasks(labels, torch.tensor([0, 0, 0, 1, 1]))
    names = ["A", "B", "E", "C", "D"]
    search = FormulaSearch(masks, length=3, beam=5)
    pixels = planted.flatten().nonzero()[:, 0]
    formula, score, single, single_score = search.unit(pixels)
    assert formula == Formula(0, ((OR, 1), (AND_NOT, 3)))
    assert formula.text(names) == "(A OR B) AND NOT C" and score == 1.0
    assert single.text(names) == "A" and single_score < 0.8
    # Shorter searches stop short of it; every operator evaluates as its name says.
    short, short_score, _, _ = FormulaSearch(masks, length=2, beam=5).unit(pixels)
    assert len(short) == 2 and single_score <= short_score < 1.0
    # A concept rarer than min_fraction may label the unit alone but never extends a formula.
    rare = float(c.float().mean()) + 1e-3
    pruned, pruned_score, _, _ = FormulaSearch(masks, 3, 5, min_fraction=rare).unit(pixels)
    assert 3 not in pruned.concepts and pruned_score < 1.0
    both = Formula(0, ((AND, 3),)).evaluate(lambda k: masks.mask(k))
    assert torch.equal(both, (a & c).flatten())
    # The whole path: a unit that copies the planted channel, dissected, then labelled.
    model = nn.Conv2d(3, 1, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([1.0, 0, 0])[None, :, None, None])
    probe = PlantedProbe(labels, planted)
    with pytest.warns(Warning):  # 24 images are few for the statistics
        result = netdissect(nn.Sequential(model), "0", probe, quantile=0.5, batch=10)
    label_formulas(result, nn.Sequential(model), probe, length=3)
    unit = result.layer("0").units[0]
    assert (unit.label, unit.formula, unit.formula_iou) == ("A", "(A OR B) AND NOT C", 1.0)


def test_length_one_is_the_label_and_formulas_never_lose(shipped):
    model, probe, result, _, _ = shipped
    table = concept_table(probe)
    names = written_names(table)
    units = result.layer("layer4").units
    label_formulas(result, model, probe, length=1)
    for unit in units:
        label = next(i for i, name in enumerate(table.names)
                     if name == unit.label and table.category_of(i) == unit.category)
        assert unit.formula == names[label]
        assert unit.formula_iou == pytest.approx(unit.iou, rel=1e-5, abs=1e-7)
    label_formulas(result, model, probe, length=3)
    assert result.settings["formulas"]["length"] == 3
    gains = [unit.formula_iou - unit.iou for unit in units]
    assert min(gains) >= -1e-6  # the beam holds the single concepts
    assert sum(gain > 0 for gain in gains) > 0


def test_cli_writes_formulas_and_rejects_bad_lengths(tmp_path, capsys):
    out = tmp_path / "nd"
    assert main(["netdissect", "--classifier", "sceneworld", "--layer", "layer4", "--n", "24",
                 "--formulas", "2", "--images", "1", "--out", str(out), "--quiet"]) == 0
    data = json.loads((out / "dissect.json").read_text())
    assert data["settings"]["formulas"]["length"] == 2
    for unit in data["layers"][0]["units"]:
        formula = unit["formula"]
        assert formula.count(" AND ") + formula.count(" OR ") <= 1
        assert unit["formula_iou"] >= unit["iou"]
    html = (out / "report.html").read_text()
    assert "formula IoU" in html and data["layers"][0]["units"][0]["formula"] in html
    capsys.readouterr()
    for bad in ("0", "6"):
        assert main(["netdissect", "--formulas", bad, "--out", str(tmp_path / "x"),
                     "--quiet"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and f"from 1 to 5, got {bad}" in err
    assert not (tmp_path / "x" / "dissect.json").exists()
