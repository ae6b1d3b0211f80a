"""The attribution evaluation against its definitions, restated the slow way on tiny inputs:
pointing game and centre baseline, deletion / insertion curves and their areas, Spearman rank
correlation with tied values, cascading randomisation, the defining-concepts table, refused
training seeds, and a CLI smoke run on the shipped classifier."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from gandissect.attribute.evaluate import (
    DEFINING_CONCEPTS,
    METHODS,
    auc,
    cascading_randomization,
    center_hits,
    concept_energy,
    defining_masks,
    evaluate_attribution,
    maximum_points,
    perturbation_curves,
    pixel_maps,
    pointing_hits,
    rank_average,
    spearman,
)
from gandissect.cli import main
from gandissect.models.registry import SEEDS
from gandissect.world import concept, concepts, render_batch

REQUIRED = {"pointing_game", "center_baseline", "deletion_auc", "insertion_auc",
            "sanity_rank_corr", "seconds_per_image"}


# ---------------------------------------------------------------- pointing game


def slow_hit(point: tuple[int, int], mask: torch.Tensor, tolerance: int) -> bool:
    """A mask pixel within Euclidean distance ``tolerance`` of ``point``, by a plain loop."""
    rows, cols = mask.shape
    for r in range(rows):
        for c in range(cols):
            near = (r - point[0]) ** 2 + (c - point[1]) ** 2 <= tolerance ** 2
            if mask[r, c] and near:
                return True
    return False


def slow_argmax(grid: torch.Tensor) -> tuple[int, int]:
    best, where = -math.inf, (0, 0)
    for r in range(grid.shape[0]):
        for c in range(grid.shape[1]):
            if grid[r, c] > best:
                best, where = float(grid[r, c]), (r, c)
    return where


@pytest.mark.parametrize("tolerance", [0, 1, 3])
def test_pointing_game_and_centre_match_a_loop(tolerance):
    g = torch.Generator().manual_seed(tolerance)
    maps = torch.randn(12, 9, 10, generator=g, dtype=torch.float64)
    masks = torch.rand(12, 9, 10, generator=g) > 1 - 0.4 / (1 + tolerance) ** 2
    hits = pointing_hits(maps, masks, tolerance)
    centre = center_hits(masks, tolerance)
    for k in range(12):
        assert bool(hits[k]) == slow_hit(slow_argmax(maps[k]), masks[k], tolerance)
        assert bool(centre[k]) == slow_hit((9 // 2, 10 // 2), masks[k], tolerance)
    assert 0 < int(hits.sum()) < 12  # the test sees hits and misses


def test_tied_maxima_point_at_their_centre_and_constant_maps_miss():
    maps = torch.zeros(2, 8, 8)
    maps[0, :3, :3] = 1.0  # a flat corner block, as bilinear upsampling makes them
    assert maximum_points(maps)[0].tolist() == [1, 1]
    masks = torch.zeros(2, 8, 8, dtype=torch.bool)
    masks[:, 1, 1] = True
    masks[1] = True  # the constant map's image is all concept, yet it has no maximum
    assert pointing_hits(maps, masks, 0).tolist() == [True, False]


def test_concept_energy_is_the_positive_mass_on_the_mask():
    maps = torch.tensor([[[2.0, -1.0], [1.0, 1.0]], [[-1.0, -1.0], [-1.0, -1.0]]])
    masks = torch.tensor([[[True, True], [False, False]]] * 2)
    assert concept_energy(maps, masks).tolist() == pytest.approx([0.5, 0.0])


def test_pixel_maps_reduce_channels_and_upsample():
    raw = torch.tensor([[[[1.0]], [[-3.0]], [[1.0]]]])  # (1, 3, 1, 1)
    assert pixel_maps(raw, (1, 1), "signed").item() == -1.0
    assert pixel_maps(raw, (1, 1), "abs").item() == 5.0
    cam = torch.arange(4.0).reshape(1, 2, 2)
    up = pixel_maps(cam, (8, 8))
    assert up.shape == (1, 8, 8) and up[0, 0, 0] == 0 and up[0, -1, -1] == 3


# ---------------------------------------------------------------- defining concepts


def test_defining_concepts_cover_every_scene_with_object_concepts():
    assert set(DEFINING_CONCEPTS) == {c.name for c in concepts("scene")}
    for names in DEFINING_CONCEPTS.values():
        assert names
        for name in names:
            assert concept(name, "object").category == "object"  # raises if unknown


def test_defining_masks_are_the_concepts_pixels():
    rendered = render_batch(1001, range(6), 32)
    names = [c.name for c in concepts("scene")]
    scenes = [names[s - 1] for s in rendered["scene"]]
    masks = defining_masks(rendered["object"], scenes)
    for k, scene in enumerate(scenes):
        codes = [concept(n, "object").code for n in DEFINING_CONCEPTS[scene]]
        assert np.array_equal(masks[k].numpy(), np.isin(rendered["object"][k], codes))
        assert masks[k].any()  # every scene shows its defining concepts


# ---------------------------------------------------------------- deletion and insertion


def tiny_classifier() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(3 * 5 * 4, 4)).double().eval()


def test_deletion_and_insertion_match_a_hand_loop():
    model = tiny_classifier()
    g = torch.Generator().manual_seed(1)
    images = torch.randn(2, 2, 5, 4, generator=g, dtype=torch.float64)
    maps = torch.randn(2, 5, 4, generator=g, dtype=torch.float64)  # no ties
    target = torch.tensor([1, 3])
    steps = 3
    deletion, insertion = perturbation_curves(model, images, maps, target, steps, chunk=5)
    for i in range(2):
        values = [(float(maps[i, r, c]), r, c) for r in range(5) for c in range(4)]
        values.sort(reverse=True)
        for k in range(steps + 1):
            count = round(k * 20 / steps)
            removed, inserted = images[i].clone(), torch.zeros_like(images[i])
            for _, r, c in values[:count]:
                removed[:, r, c] = 0.0
                inserted[:, r, c] = images[i, :, r, c]
            with torch.no_grad():
                p_del = model(removed[None]).softmax(1)[0, target[i]]
                p_ins = model(inserted[None]).softmax(1)[0, target[i]]
            assert deletion[i, k].item() == pytest.approx(p_del.item(), abs=1e-12)
            assert insertion[i, k].item() == pytest.approx(p_ins.item(), abs=1e-12)
        # trapezoid rule over fractions 0, 1/3, 2/3, 1
        for curve, area in ((deletion[i], auc(deletion)[i]), (insertion[i], auc(insertion)[i])):
            by_hand = sum((curve[k] + curve[k + 1]) / 2 * (1 / steps) for k in range(steps))
            assert area.item() == pytest.approx(float(by_hand), abs=1e-12)


def test_auc_of_simple_curves():
    curves = torch.tensor([[1.0, 0.5, 0.0], [1.0, 1.0, 1.0], [0.0, 1.0, 0.0]])
    assert auc(curves).tolist() == pytest.approx([0.5, 1.0, 0.5])


def test_ties_in_the_ranking_are_broken_the_same_way_every_time():
    model = tiny_classifier()
    images = torch.randn(1, 2, 5, 4, dtype=torch.float64)
    flat = torch.zeros(1, 5, 4, dtype=torch.float64)  # every pixel tied
    first = perturbation_curves(model, images, flat, torch.tensor([0]), 4)
    again = perturbation_curves(model, images, flat, torch.tensor([0]), 4)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])


# ---------------------------------------------------------------- rank correlation


def slow_ranks(values: list[float]) -> list[float]:
    """Average ranks: 1 + (values below) + (other equal values) / 2."""
    return [1 + sum(w < v for w in values) + (sum(w == v for w in values) - 1) / 2
            for v in values]


def slow_spearman(a: list[float], b: list[float]) -> float:
    ra, rb = slow_ranks(a), slow_ranks(b)
    ma, mb = sum(ra) / len(ra), sum(rb) / len(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    var_a = sum((x - ma) ** 2 for x in ra)
    var_b = sum((y - mb) ** 2 for y in rb)
    return cov / math.sqrt(var_a * var_b)


def test_spearman_with_ties_matches_the_explicit_formula():
    g = torch.Generator().manual_seed(2)
    a = torch.randint(0, 4, (5, 3, 4), generator=g).double()  # many ties
    b = torch.randint(0, 5, (5, 3, 4), generator=g).double()
    rho = spearman(a, b)
    for k in range(5):
        flat_a, flat_b = a[k].flatten().tolist(), b[k].flatten().tolist()
        assert rank_average(a[k].reshape(1, -1))[0].tolist() == slow_ranks(flat_a)
        assert rho[k].item() == pytest.approx(slow_spearman(flat_a, flat_b), abs=1e-12)


def test_spearman_without_ties_is_the_classic_formula_and_constant_rows_are_nan():
    a = torch.tensor([[3.0, 1.0, 4.0, 1.5, 9.0, 2.6]])
    b = torch.tensor([[2.0, 7.0, 1.0, 8.0, 2.8, 1.8]])
    d2 = sum((x - y) ** 2 for x, y in zip(slow_ranks(a[0].tolist()), slow_ranks(b[0].tolist())))
    assert spearman(a, b).item() == pytest.approx(1 - 6 * d2 / (6 * (36 - 1)))
    assert spearman(a, -a).item() == pytest.approx(-1.0)
    assert math.isnan(spearman(a, torch.ones_like(a)).item())


# ---------------------------------------------------------------- randomisation


def test_cascading_randomization_is_nested_and_leaves_the_model_alone():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(),
                          nn.Linear(2, 2))
    before = copy.deepcopy(model.state_dict())
    state = torch.get_rng_state()
    stages = cascading_randomization(model, seed=5)
    assert [name for name, _ in stages] == ["4", "1", "0"]
    assert torch.equal(torch.get_rng_state(), state)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])
    first, second, last = (m for _, m in stages)
    assert not torch.equal(first[4].weight, model[4].weight)
    assert torch.equal(first[0].weight, model[0].weight)  # lower layers still trained
    assert torch.equal(last[4].weight, first[4].weight)  # each stage keeps the one before
    assert torch.equal(last[1].running_var, torch.ones(2))
    assert not torch.equal(last[0].weight, model[0].weight)
    again = cascading_randomization(model, seed=5)[-1][1]
    assert torch.equal(again[0].weight, last[0].weight)


# ---------------------------------------------------------------- the evaluation and its CLI


@pytest.mark.parametrize("seed", sorted(SEEDS.values()))
def test_training_seeds_are_refused(seed, capsys):
    with pytest.raises(ValueError, match="trained the"):
        evaluate_attribution(tiny_classifier(), n=1, seed=seed)
    assert main(["evaluate-attribution", "--n", "1", "--seed", str(seed), "--json"]) == 2
    assert "trained the" in capsys.readouterr().err


def test_unknown_methods_are_refused():
    from gandissect.models.registry import load_classifier

    with pytest.raises(ValueError, match="unknown attribution methods"):
        evaluate_attribution(load_classifier("sceneworld"), methods=["nope"], n=1)


def test_cli_smoke_prints_the_required_keys(capsys):
    assert main(["evaluate-attribution", "--n", "8", "--methods", "saliency,gradcam",
                 "--json", "--quiet", "--cascade-n", "8"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) == {"saliency", "gradcam", "settings"}
    for name in ("saliency", "gradcam"):
        scores = result[name]
        assert set(scores) >= REQUIRED
        for key in ("pointing_game", "center_baseline", "deletion_auc", "insertion_auc"):
            assert 0.0 <= scores[key] <= 1.0
        assert -1.0 <= scores["sanity_rank_corr"] <= 1.0
        assert set(scores["sanity_cascade"]) == set(result["settings"]["cascade_stages"])
    assert result["settings"]["n"] == 8 and result["settings"]["seed"] == 1001
    assert result["saliency"]["center_baseline"] == result["gradcam"]["center_baseline"]


def test_every_method_is_registered_with_a_known_pixel_map():
    for spec in METHODS.values():
        assert spec.pixel_map in ("signed", "abs")


def test_completeness_scores_restate_integrated_gradients_sums():
    """The completeness keys, from the attributions' sums and the model's scores directly."""
    from gandissect.attribute import IntegratedGradients
    from gandissect.attribute.evaluate import COMPLETENESS_BAR, _render

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                          nn.Flatten(), nn.Linear(16, 6)).eval()
    scores = evaluate_attribution(model, ["integrated_gradients"], n=6, batch=4, size=16,
                                  progress=False, cascade_n=0)["integrated_gradients"]
    data = _render(1001, range(6), 16, torch.device("cpu"))
    attributions = IntegratedGradients(model).attribute(data.images, target=data.target,
                                                        steps=64, method="gauss_legendre")
    absolute, gaps = [], []
    for i in range(6):
        with torch.no_grad():
            f_x = float(model(data.images[i:i + 1])[0, data.target[i]])
            f_0 = float(model(torch.zeros_like(data.images[i:i + 1]))[0, data.target[i]])
        absolute.append(abs(float(attributions[i].sum()) - (f_x - f_0)))
        gaps.append(abs(f_x - f_0))
    relative = sorted(a / g for a, g in zip(absolute, gaps))
    assert scores["completeness_error_pooled"] == pytest.approx(sum(absolute) / sum(gaps),
                                                                rel=1e-3, abs=1e-7)
    assert scores["completeness_error_max"] == pytest.approx(relative[-1], rel=1e-3, abs=1e-7)
    assert scores["completeness_error_mean"] == pytest.approx(np.mean(relative), rel=1e-3,
                                                              abs=1e-7)
    assert scores["completeness_error_median"] == pytest.approx(relative[2], rel=1e-3, abs=1e-7)
    assert scores["completeness_abs_error_max"] == pytest.approx(max(absolute), rel=1e-3,
                                                                 abs=1e-7)
    assert scores["completeness_gap_median"] == pytest.approx(sorted(gaps)[2], rel=1e-5)
    assert scores["completeness_share_over_bar"] == pytest.approx(
        sum(r > COMPLETENESS_BAR for r in relative) / 6)


def test_the_table_shows_integrated_gradients_completeness_only_when_it_ran():
    from gandissect.cli.attribution import format_table

    scores = {"pointing_game": 0.5, "center_baseline": 0.25, "deletion_auc": 0.3,
              "insertion_auc": 0.7, "sanity_rank_corr": 0.1, "seconds_per_image": 0.01}
    settings = {"n": 4, "seed": 1001, "tolerance_px": 4, "steps": 16, "baseline": "zeros"}
    ig = {**scores, "completeness_error_pooled": 0.002, "completeness_error_max": 53.0}
    table = format_table({"saliency": scores, "integrated_gradients": ig, "settings": settings})
    lines = table.splitlines()
    assert "IG err pooled" in lines[0]
    assert lines[2].split()[-2:] == ["2.00e-03", "5.30e+01"]
    assert lines[1].split()[-1] == "0.0100"  # saliency's row ends with its time
    assert "IG err" not in format_table({"saliency": scores, "settings": settings})
