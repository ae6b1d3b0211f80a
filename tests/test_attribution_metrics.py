"""The evaluation's newer metrics restated the slow way on tiny inputs: ROAD's noisy linear
imputation (one pixel, a corner, a removed region solved equation by equation, the noise),
its MoRF / LeRF curves and their area, relevance mass and rank accuracy, the cascading
randomisation per layer, the per-class tables, the metric selection and the CLI's tables and
figure."""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import torch
from torch import nn

from gandissect.attribute import Saliency
from gandissect.attribute.evaluate import (
    DEFAULT_METRICS,
    cascading_randomization,
    evaluate_attribution,
    pixel_maps,
    pixel_ranks,
    relevance_mass_accuracy,
    relevance_rank_accuracy,
    spearman,
)
from gandissect.attribute.road import NEIGHBOUR_WEIGHTS, road_auc, road_curves, road_impute
from gandissect.cli import main

# ---------------------------------------------------------------- ROAD's imputation


def slow_impute(image: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """The imputation's equations written one by one into a dense matrix and solved: for each
    removed pixel, (sum of its in-image neighbours' weights) * x_i - (removed neighbours'
    weights * their unknowns) = kept neighbours' weights * their values."""
    height, width = removed.shape
    unknowns = [(r, c) for r in range(height) for c in range(width) if removed[r, c]]
    index = {pixel: k for k, pixel in enumerate(unknowns)}
    a = np.zeros((len(unknowns), len(unknowns)))
    b = np.zeros((len(unknowns), image.shape[0]))
    for k, (r, c) in enumerate(unknowns):
        for dr in (-1, 0, 1):
            for dc in (-1, 0, 1):
                if (dr, dc) == (0, 0):
                    continue
                weight = 1 / 6 if dr == 0 or dc == 0 else 1 / 12
                rr, cc = r + dr, c + dc
                if not (0 <= rr < height and 0 <= cc < width):
                    continue
                a[k, k] += weight
                if removed[rr, cc]:
                    a[k, index[(rr, cc)]] -= weight
                else:
                    b[k] += weight * image[:, rr, cc]
    solved = np.linalg.solve(a, b)
    out = image.copy()
    for k, (r, c) in enumerate(unknowns):
        out[:, r, c] = solved[k]
    return out


def test_the_paper_weights_sum_to_one():
    assert sum(NEIGHBOUR_WEIGHTS.values()) == pytest.approx(1.0)
    assert len(NEIGHBOUR_WEIGHTS) == 8


def test_one_removed_pixel_is_the_weighted_mean_of_its_eight_neighbours():
    image = torch.arange(2 * 9, dtype=torch.float64).reshape(2, 3, 3) ** 1.5
    removed = torch.zeros(3, 3, dtype=torch.bool)
    removed[1, 1] = True
    filled = road_impute(image, removed, noise=0.0)
    for channel in range(2):
        v = image[channel]
        direct = v[0, 1] + v[2, 1] + v[1, 0] + v[1, 2]
        diagonal = v[0, 0] + v[0, 2] + v[2, 0] + v[2, 2]
        assert filled[channel, 1, 1].item() == pytest.approx(float(direct / 6 + diagonal / 12))
    kept = ~removed
    assert torch.equal(filled[:, kept], image[:, kept])


def test_a_corner_pixel_renormalises_over_its_three_neighbours():
    image = torch.rand(1, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    removed = torch.zeros(4, 4, dtype=torch.bool)
    removed[0, 0] = True
    filled = road_impute(image, removed, noise=0.0)
    v = image[0]
    expected = (v[0, 1] / 6 + v[1, 0] / 6 + v[1, 1] / 12) / (1 / 6 + 1 / 6 + 1 / 12)
    assert filled[0, 0, 0].item() == pytest.approx(float(expected))


def test_a_removed_region_solves_the_papers_system():
    g = torch.Generator().manual_seed(4)
    image = torch.rand(3, 7, 6, dtype=torch.float64, generator=g)
    removed = torch.rand(7, 6, generator=g) < 0.6
    removed[3, 3] = False  # at least one kept pixel
    filled = road_impute(image, removed, noise=0.0)
    expected = slow_impute(image.numpy(), removed.numpy())
    assert np.allclose(filled.numpy(), expected, atol=1e-10)
    # each removed pixel is the weighted mean of its neighbours in the filled image
    for r, c in zip(*np.nonzero(removed.numpy())):
        total = weight_sum = 0.0
        for (dr, dc), w in NEIGHBOUR_WEIGHTS.items():
            if 0 <= r + dr < 7 and 0 <= c + dc < 6:
                total = total + w * filled[:, r + dr, c + dc]
                weight_sum += w
        assert torch.allclose(filled[:, r, c], total / weight_sum, atol=1e-10)


def test_the_noise_touches_only_imputed_pixels_with_its_standard_deviation():
    g = torch.Generator().manual_seed(5)
    image = torch.rand(3, 48, 48, dtype=torch.float64, generator=g)
    removed = torch.rand(48, 48, generator=g) < 0.5
    clean = road_impute(image, removed, noise=0.0)
    noisy = road_impute(image, removed, noise=0.01, generator=torch.Generator().manual_seed(0))
    assert torch.equal(noisy[:, ~removed], image[:, ~removed])
    difference = (noisy - clean)[:, removed]
    assert 0.009 < float(difference.std()) < 0.011
    assert abs(float(difference.mean())) < 0.001
    with pytest.raises(ValueError, match="at least one kept pixel"):
        road_impute(image, torch.ones(48, 48, dtype=torch.bool))


# ---------------------------------------------------------------- ROAD's curves


def tiny_classifier() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(3 * 5 * 4, 4)).double().eval()


def test_pixel_ranks_sort_from_the_highest_and_break_ties_the_same_way():
    g = torch.Generator().manual_seed(6)
    maps = torch.randn(3, 5, 4, generator=g, dtype=torch.float64)
    ranks = pixel_ranks(maps)
    for i in range(3):
        order = sorted(range(20), key=lambda p: -float(maps[i].flatten()[p]))
        assert [int(ranks[i].flatten()[p]) for p in order] == list(range(20))
    flat = torch.zeros(2, 5, 4)
    assert torch.equal(pixel_ranks(flat)[0], pixel_ranks(flat)[1])
    assert sorted(pixel_ranks(flat)[0].flatten().tolist()) == list(range(20))


def test_road_curves_match_a_hand_loop():
    model = tiny_classifier()
    g = torch.Generator().manual_seed(7)
    images = torch.randn(2, 2, 5, 4, generator=g, dtype=torch.float64)
    maps = torch.randn(2, 5, 4, generator=g, dtype=torch.float64)  # no ties
    target = torch.tensor([2, 0])
    fractions = (0.1, 0.5, 0.85)
    morf, lerf = road_curves(model, images, pixel_ranks(maps), target, fractions, noise=0.0)
    for i in range(2):
        by_value = sorted(((float(maps[i, r, c]), r, c) for r in range(5) for c in range(4)),
                          reverse=True)
        for k, p in enumerate(fractions):
            count = round(p * 20)
            for curve, chosen in ((morf, by_value[:count]), (lerf, by_value[20 - count:])):
                removed = np.zeros((5, 4), dtype=bool)
                for _, r, c in chosen:
                    removed[r, c] = True
                filled = torch.from_numpy(slow_impute(images[i].numpy(), removed))
                with torch.no_grad():
                    p_target = model(filled[None]).softmax(1)[0, target[i]]
                assert curve[i, k].item() == pytest.approx(p_target.item(), abs=1e-9)


def test_road_auc_is_the_trapezoid_area_over_the_span():
    fractions = (0.1, 0.3, 0.9)
    curves = torch.tensor([[1.0, 0.5, 0.0], [0.2, 0.2, 0.2]])
    by_hand = [((1.0 + 0.5) / 2 * 0.2 + (0.5 + 0.0) / 2 * 0.6) / 0.8, 0.2]
    assert road_auc(curves, fractions).tolist() == pytest.approx(by_hand)


# ---------------------------------------------------------------- relevance mass and rank


def test_relevance_mass_accuracy_is_positive_relevance_inside_over_all_of_it():
    g = torch.Generator().manual_seed(8)
    maps = torch.randn(4, 6, 5, generator=g, dtype=torch.float64)
    masks = torch.rand(4, 6, 5, generator=g) < 0.3
    got = relevance_mass_accuracy(maps, masks)
    for k in range(4):
        inside = total = 0.0
        for r in range(6):
            for c in range(5):
                value = max(float(maps[k, r, c]), 0.0)
                total += value
                inside += value if masks[k, r, c] else 0.0
        assert got[k].item() == pytest.approx(inside / total)
    assert relevance_mass_accuracy(-maps.abs(), masks).tolist() == [0.0] * 4


def test_relevance_rank_accuracy_is_the_share_of_the_top_k_inside_the_mask():
    g = torch.Generator().manual_seed(9)
    maps = torch.randn(5, 6, 5, generator=g, dtype=torch.float64)
    masks = torch.rand(5, 6, 5, generator=g) < 0.35
    masks[4] = False
    got = relevance_rank_accuracy(maps, masks)
    for k in range(4):
        size = int(masks[k].sum())
        pixels = sorted(((float(maps[k, r, c]), r, c) for r in range(6) for c in range(5)),
                        reverse=True)
        hits = sum(bool(masks[k, r, c]) for _, r, c in pixels[:size])
        assert got[k].item() == pytest.approx(hits / size)
    assert math.isnan(got[4].item())  # an empty mask has no rank accuracy
    perfect = masks[:1].double()
    assert relevance_rank_accuracy(perfect, masks[:1]).item() == 1.0


# ---------------------------------------------------------------- the evaluation


def scene_classifier() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 6)).eval()


def test_per_class_tables_and_cascade_restated_from_the_maps():
    from gandissect.attribute.evaluate import _render

    model = scene_classifier()
    result = evaluate_attribution(model, ["saliency"], n=8, batch=4, size=16, progress=False,
                                  cascade_n=8, metrics=["mass", "rank", "cascade", "sanity",
                                                        "pointing"])
    scores, settings = result["saliency"], result["settings"]
    data = _render(1001, range(8), 16, torch.device("cpu"))
    maps = pixel_maps(Saliency(model).attribute(data.images, target=data.target), (16, 16),
                      "abs")
    mass = relevance_mass_accuracy(maps, data.masks)
    rank = relevance_rank_accuracy(maps, data.masks)
    assert scores["relevance_mass_accuracy"] == pytest.approx(float(mass.mean()), rel=1e-5)
    assert scores["relevance_rank_accuracy"] == pytest.approx(float(rank.mean()), rel=1e-9)
    table = scores["per_class"]
    assert set(table) == set(data.scenes)
    assert sum(row["images"] for row in table.values()) == 8
    for scene, row in table.items():
        mine = [k for k, s in enumerate(data.scenes) if s == scene]
        assert row["images"] == len(mine)
        assert row["relevance_mass_accuracy"] == pytest.approx(float(mass[mine].mean()),
                                                               rel=1e-5)
        assert row["relevance_rank_accuracy"] == pytest.approx(float(rank[mine].mean()))
        assert row["pointing_game"] == pytest.approx(scores["pointing_game_per_class"][scene])
    # the cascade, layer by layer, from the logits down: each stage's maps by hand
    stages = cascading_randomization(model, 0)
    assert settings["cascade_stages"] == [name for name, _ in stages] == ["5", "1", "0"]
    for name, copy_ in stages:
        randomised = pixel_maps(Saliency(copy_).attribute(data.images, target=data.target),
                                (16, 16), "abs")
        rho = spearman(maps.abs(), randomised.abs())
        assert scores["sanity_cascade"][name] == pytest.approx(float(rho.nanmean()), abs=1e-5)
        for scene, row in table.items():
            mine = [k for k, s in enumerate(data.scenes) if s == scene]
            assert row["sanity_cascade"][name] == pytest.approx(float(rho[mine].nanmean()),
                                                                abs=1e-5)
    assert scores["sanity_rank_corr"] == pytest.approx(scores["sanity_cascade"]["0"])


def test_metrics_choose_what_runs_and_unknown_ones_are_refused():
    model = scene_classifier()
    result = evaluate_attribution(model, ["gradcam"], n=4, batch=4, size=16, layer="2",
                                  progress=False, metrics=["mass", "road"],
                                  road_fractions=(0.25, 0.75))
    scores, settings = result["gradcam"], result["settings"]
    assert {"relevance_mass_accuracy", "road_morf_auc", "road_lerf_auc"} <= set(scores)
    assert not {"pointing_game", "deletion_auc", "sanity_rank_corr", "sanity_cascade",
                "relevance_rank_accuracy"} & set(scores)
    assert settings["cascade_stages"] == [] and settings["road_fractions"] == [0.25, 0.75]
    assert len(scores["road_morf_curve"]) == 2
    assert scores["seconds"]["sanity_randomised_copies"] == 0
    for row in scores["per_class"].values():
        assert {"road_morf_auc", "road_lerf_auc", "relevance_mass_accuracy"} <= set(row)
    assert "road" not in DEFAULT_METRICS and {"mass", "rank"} <= set(DEFAULT_METRICS)
    with pytest.raises(ValueError, match="unknown attribution metrics"):
        evaluate_attribution(model, ["saliency"], n=1, size=16, metrics=["roads"])
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        evaluate_attribution(model, ["saliency"], n=1, size=16, metrics=["road"],
                             road_fractions=(0.5, 1.0))


def test_cli_prints_per_class_and_cascade_tables_and_writes_the_figure(tmp_path, capsys):
    figure = tmp_path / "figs" / "cascade.svg"
    assert main(["evaluate-attribution", "--n", "4", "--batch", "4", "--methods", "saliency",
                 "--metrics", "pointing,mass,rank,cascade", "--cascade-n", "4", "--per-class",
                 "--cascade", "--cascade-figure", str(figure), "--quiet"]) == 0
    out = capsys.readouterr().out
    head = out.splitlines()[0].split()
    assert head[-2:] == ["mass", "rank"]
    row = out.splitlines()[1].split()
    assert row[0] == "saliency" and row[3] == "-"  # deletion was not asked for
    assert "class" in out and "fc" in out and "conv1" in out
    root = ET.fromstring(figure.read_text())
    assert root.tag.endswith("svg") and any(e.tag.endswith("polyline") for e in root.iter())
    assert main(["evaluate-attribution", "--n", "1", "--metrics", "pointing,nope"]) == 2
    assert "unknown --metrics nope" in capsys.readouterr().err
    assert main(["evaluate-attribution", "--n", "4", "--batch", "4", "--methods", "saliency",
                 "--metrics", "rank", "--json", "--quiet"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result["saliency"]["per_class"]) <= {"church", "house", "street", "forest",
                                                    "lake", "mountain_valley"}
    assert result["settings"]["metrics"] == ["rank"]
