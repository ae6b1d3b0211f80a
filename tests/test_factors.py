"""SceneWorld's factors and variants, the MI estimator, and ``gandissect factors``."""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest

from gandissect.cli import main
from gandissect.factors import (
    conditional_mutual_information,
    known_mi,
    mutual_information,
    rank_bins,
)
from gandissect.world import render, render_batch
from gandissect.world.factors import FACTORS, render_variant, scene_factors

# sha256 of render_batch(7, range(40), 64)'s images, object and material labels and scenes,
# taken before the draws named their factors: naming them must not change a scene.
SHIPPED_SCENES = "bf24dabb5d35fc64bc08b1d38ea81485f523fe7fe048145a25bf7d412c64e976"


def _sample_xy(rng, k: int, p: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    x = rng.integers(0, k, n)
    return x, np.where(rng.random(n) < p, x, rng.integers(0, k, n))


def test_known_mi_closed_form():
    assert known_mi(4, 1.0) == pytest.approx(2.0)
    assert known_mi(4, 0.0) == pytest.approx(0.0, abs=1e-12)
    # the same closed form by summing p(x, y) log p(x, y) / (p(x) p(y)) over the k x k table
    k, p = 5, 0.3
    joint = np.full((k, k), (1 - p) / k / k) + np.eye(k) * p / k
    loop = sum(joint[a, b] * math.log2(joint[a, b] * k * k) for a in range(k) for b in range(k))
    assert known_mi(k, p) == pytest.approx(loop)


def test_plug_in_mi_is_the_definition():
    rng = np.random.default_rng(3)
    x, y = rng.integers(0, 3, 80), rng.integers(0, 4, 80)
    n, total = len(x), 0.0
    for a in set(x):
        for b in set(y):
            pxy = np.mean((x == a) & (y == b))
            if pxy:
                total += pxy * math.log2(pxy / (np.mean(x == a) * np.mean(y == b)))
    assert mutual_information(x, y, correct=False) == pytest.approx(total)
    # Miller-Madow: (mx - 1 + my - 1 - (mxy - 1)) / (2 n ln 2) bits more than the plug-in
    cells = len(set(zip(x, y)))
    extra = (len(set(x)) - 1 + len(set(y)) - 1 - (cells - 1)) / (2 * n * math.log(2))
    assert mutual_information(x, y) == pytest.approx(total + extra)


def test_conditional_mi_by_strata():
    rng = np.random.default_rng(5)
    z = rng.integers(0, 3, 300)
    x = rng.integers(0, 4, 300)
    y = np.where(z == 0, x, rng.integers(0, 4, 300))  # y tells x only where z == 0
    loop = sum(np.mean(z == v) * mutual_information(x[z == v], y[z == v]) for v in range(3))
    assert conditional_mutual_information(x, y, z) == pytest.approx(loop)
    assert conditional_mutual_information(x, y, z) == pytest.approx(2 / 3, abs=0.15)
    # y = z carries z but nothing about x beyond it
    assert conditional_mutual_information(z, z, z, correct=False) == 0.0


def test_estimator_error_on_known_mi():
    rng = np.random.default_rng(0)
    k, p = 4, 0.6
    truth = known_mi(k, p)
    for n, tolerance in ((200, 0.015), (2000, 0.003)):
        draws = [_sample_xy(rng, k, p, n) for _ in range(150)]
        plug = np.mean([mutual_information(x, y, correct=False) for x, y in draws]) - truth
        corrected = np.mean([mutual_information(x, y) for x, y in draws]) - truth
        assert plug > 0  # the plug-in estimate is biased upwards
        assert abs(corrected) < tolerance
        assert abs(corrected) < abs(plug) / 3
    # independent variables: the plug-in bias is about (k-1)^2 / (2 n ln 2), corrected ~0
    n = 100
    draws = [_sample_xy(rng, k, 0.0, n) for _ in range(200)]
    plug = np.mean([mutual_information(x, y, correct=False) for x, y in draws])
    corrected = np.mean([mutual_information(x, y) for x, y in draws])
    assert plug == pytest.approx((k - 1) ** 2 / (2 * n * math.log(2)), rel=0.3)
    assert abs(corrected) < plug / 4


def test_rank_bins_equal_population_and_ties():
    values = np.random.default_rng(1).normal(size=400)
    counts = np.bincount(rank_bins(values, 8))
    assert len(counts) == 8 and counts.min() == counts.max() == 50
    constant = rank_bins(np.ones(50), 8)
    assert len(set(constant)) == 1
    assert mutual_information(constant, np.arange(50) % 3, correct=False) == 0.0


def test_shipped_scenes_unchanged():
    batch = render_batch(7, range(40), 64)
    digest = hashlib.sha256(batch["image"].tobytes() + batch["object"].tobytes()
                            + batch["material"].tobytes() + batch["scene"].tobytes())
    assert digest.hexdigest() == SHIPPED_SCENES


def test_scene_factors_codes():
    for index in range(12):
        record = scene_factors(7, index)
        assert list(record) == list(FACTORS)
        assert record["scene"] == render(7, index, 32).scene_name
        assert record["lighting"] in ("day", "dusk", "overcast")
        assert record["palette"] in ("autumn", "summer")
        assert record["material"] in ("none", "brick", "stone", "plaster", "glass")
        assert record == scene_factors(7, index)


def test_unchanged_variant_is_the_scene():
    for index in range(6):
        assert np.array_equal(render_variant(7, index, None, 0, 32).image,
                              render(7, index, 32).image)


def test_variants_change_only_their_factor():
    changed = dict.fromkeys(FACTORS, 0)
    for index in range(10):
        scene = render(7, index, 48)
        for factor in FACTORS:
            variant = render_variant(7, index, factor, 1, 48)
            again = render_variant(7, index, factor, 1, 48)
            assert np.array_equal(variant.image, again.image)  # deterministic
            changed[factor] += not np.array_equal(variant.image, scene.image)
            if factor == "palette":  # colours alone: every label and the scene held
                for cat in ("object", "part", "material"):
                    assert np.array_equal(variant.labels[cat], scene.labels[cat])
                assert variant.scene == scene.scene
            if factor in ("lighting", "texture"):  # materials and the scene held
                assert np.array_equal(variant.labels["material"], scene.labels["material"])
                assert variant.scene == scene.scene
            if factor not in ("scene", "layout"):
                assert variant.scene == scene.scene
    assert all(changed[f] >= 5 for f in ("layout", "shape", "palette", "lighting", "texture"))
    assert changed["material"] >= 1


def test_factors_cli_json(capsys, tmp_path):
    figure = tmp_path / "mi.png"
    assert main(["factors", "--classifier", "sceneworld", "--layer", "layer4", "--n", "16",
                 "--pairs", "4", "--figure", str(figure), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["factors"] == list(FACTORS)
    assert {u["unit"] for u in out["units"]} == set(range(len(out["units"])))
    assert all(set(u["mi"]) == set(FACTORS) for u in out["units"])
    assert set(out["class_mi"]) == set(out["sensitivity"]) == set(FACTORS)
    assert set(out["probability_shift"]) == set(out["class_mi_within_scene"]) == set(FACTORS)
    assert all(0 <= r <= 1 for r in out["sensitivity"].values() if r == r)
    assert figure.stat().st_size > 0


def test_factors_cli_bad_layer(capsys):
    assert main(["factors", "--layer", "nope", "--n", "8"]) == 2
    assert "no layer with maps called 'nope'" in capsys.readouterr().err


def test_factor_study_restated():
    import torch
    from torch import nn

    from gandissect.factors import factor_study, factor_table
    from gandissect.world.dataset import image_to_tensor

    torch.manual_seed(0)
    model = nn.Sequential()
    model.add_module("conv", nn.Conv2d(3, 4, 3, stride=2))
    model.add_module("relu", nn.ReLU())
    model.add_module("pool", nn.AdaptiveAvgPool2d(1))
    model.add_module("flat", nn.Flatten())
    model.add_module("head", nn.Linear(4, 3))
    study = factor_study(model, "conv", 7, 16, 32, pairs=6, bins=4)
    images = image_to_tensor(render_batch(7, range(16), 32)["image"])
    with torch.no_grad():
        pooled = model.conv(images).mean((2, 3)).numpy()
        predicted = model(images).argmax(1).numpy()
    table = factor_table(7, range(16))
    for u in range(4):
        for j, f in enumerate(FACTORS):
            assert study.unit_mi[u, j] == pytest.approx(
                mutual_information(rank_bins(pooled[:, u], 4), table[f]), abs=1e-9)
    for f in FACTORS:
        assert study.class_mi[f] == pytest.approx(mutual_information(predicted, table[f]))
        flips = differ = 0
        for i in range(6):
            variant = render_variant(7, i, f, 1, 32).image
            if np.array_equal(variant, render(7, i, 32).image):
                continue
            differ += 1
            with torch.no_grad():
                flips += int(model(image_to_tensor(variant[None])).argmax(1)[0] != predicted[i])
        assert study.pairs[f] == differ
        if differ:
            assert study.sensitivity[f] == pytest.approx(flips / differ)
