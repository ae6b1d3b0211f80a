"""GAN dissection: planted units, a slow reference, resumption, cache keys, adaptive mode."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import ChannelSegmenter, PlantedGenerator, PlantedSegmenter, TinyGenerator
from torch.nn import functional as F

from gandissect.dissect import dissect, latents, save_dissection, upsample
from gandissect.dissect.sweep import ThresholdSweep
from gandissect.hooks import Trace
from gandissect.stats import IoUTally

PLANTED = dict(n=48, batch=8, quantile=0.8, progress=False)


class Interrupted(Exception):
    pass


def stop_after(batches: int):
    calls = []

    def hook(name: str, done: int) -> None:
        calls.append((name, done))
        if len(calls) == batches:
            raise Interrupted(f"after {name} {done}")
    return hook


def ious(unit) -> dict[str, float]:
    return dict(unit.concepts)


# -- latents -------------------------------------------------------------------------------
def test_latents_are_a_function_of_seed_and_index():
    whole = latents(1, range(600), 16)
    assert torch.equal(latents(1, [5, 300, 599], 16), whole[[5, 300, 599]])
    assert torch.equal(latents(1, [300], 16)[0], whole[300])
    assert not torch.equal(latents(2, [5], 16), whole[5:6])
    assert whole.std().item() == pytest.approx(1, abs=0.05)


def test_upsample_matches_bilinear_interpolation():
    maps = torch.randn(2, 5, 8, 6)
    expected = F.interpolate(maps, size=(32, 20), mode="bilinear", align_corners=False)
    assert torch.allclose(upsample(maps, (32, 20)), expected, atol=1e-5)


# -- planted units -------------------------------------------------------------------------
def test_planted_units_are_labelled_with_their_concepts():
    result = dissect(PlantedGenerator(), PlantedSegmenter(), "units", **PLANTED)
    a, b, noise = result.layer("units").units
    assert (a.label, a.category) == ("A", "object") and a.iou > 0.9 and a.interpretable
    assert (b.label, b.category) == ("B", "object") and b.iou > 0.9 and b.interpretable
    assert noise.iou < result.settings["min_iou"] and not noise.interpretable
    assert [name for name, _ in a.concepts] == ["A", "P", "B"]  # best first
    assert a.threshold == 0.0  # the sketch's exact zero bin
    assert len(a.top_images) == 12 and {"0.01", "0.5", "0.99", "0.995", "0.8"} <= set(a.quantiles)


def test_segmenter_runs_once_per_sample():
    class Counting(PlantedSegmenter):
        images = 0

        def segment(self, images):
            Counting.images += images.shape[0]
            return super().segment(images)

    dissect(PlantedGenerator(), Counting(), ["units", "mirror"], **PLANTED)
    assert Counting.images == PLANTED["n"] + 1  # + the one-sample probe of shapes


# -- the whole pipeline against a slow restatement -----------------------------------------
def test_iou_equals_a_slow_reference():
    generator, segmenter = TinyGenerator().eval(), ChannelSegmenter()
    n, batch, q = 24, 8, 0.9
    result = dissect(generator, segmenter, "units", n=n, batch=batch, quantile=q, progress=False)
    layer = result.layer("units")
    acts, labels = [], []
    with torch.no_grad():
        for start in range(0, n, batch):
            with Trace(generator, "units") as trace:
                images = generator(latents(1, range(start, start + batch), 8))
            acts.append(trace.output)
            labels.append(segmenter.segment(images))
    acts = torch.cat(acts)
    labels = {c: torch.cat([lab[c] for lab in labels]) for c in segmenter.categories}

    # Thresholds: within the sketch's bin of the exact quantile (sorting all activations).
    thresholds = layer.stats["thresholds"]
    values = acts.transpose(0, 1).reshape(acts.shape[1], -1)
    for unit in range(acts.shape[1]):
        exact = values[unit].sort().values
        rank = q * (exact.numel() - 1)
        exact_q = torch.quantile(exact, q).item()
        assert abs(thresholds[unit].item() - exact_q) <= 2**-7 * abs(exact_q) + 1e-6, unit
        assert exact[int(rank) - 2] <= thresholds[unit] <= exact[int(rank) + 3]

    # IoU by plain loops with the category-conditioned denominator.
    up = F.interpolate(acts, size=(32, 32), mode="bilinear", align_corners=False)
    for unit in range(acts.shape[1]):
        for category, names in segmenter.concepts.items():
            for code, name in enumerate(names[1:], start=1):
                inter = union_unit = area = 0
                for i in range(n):
                    mask = up[i, unit] > thresholds[unit]
                    present = bool((labels[category][i] > 0).any())
                    concept = labels[category][i] == code
                    inter += int((mask & concept).sum())
                    area += int(concept.sum())
                    union_unit += int(mask.sum()) if present else 0
                expected = inter / max(union_unit + area - inter, 1)
                got = ious(layer.units[unit])[name]
                assert got == pytest.approx(expected, abs=2e-3), (unit, name)


def test_iou_tally_label_codes_equal_one_hot_masks():
    torch.manual_seed(0)
    masks = torch.rand(5, 4, 6, 7) > 0.7
    codes = torch.stack([torch.randint(0, 4, (5, 6, 7)), torch.randint(0, 3, (5, 6, 7))], 1)
    codes[1, 1] = 0  # category 1 absent from image 1
    category = torch.tensor([0, 0, 0, 1, 1])
    one_hot = torch.cat([F.one_hot(codes[:, 0], 4)[..., 1:], F.one_hot(codes[:, 1], 3)[..., 1:]],
                        -1).permute(0, 3, 1, 2).bool()
    dense, sparse = IoUTally(category), IoUTally(category)
    dense.add(masks, one_hot)
    sparse.add_labels(masks, codes)
    for name in ("intersection", "unit_area", "concept_area"):
        assert torch.equal(getattr(dense, name), getattr(sparse, name)), name


def test_threshold_sweep_counts_equal_iou_at_each_candidate():
    torch.manual_seed(1)
    maps = torch.randn(3, 2, 8, 8)
    codes = torch.stack([torch.randint(0, 3, (3, 8, 8)), torch.randint(0, 2, (3, 8, 8))], 1)
    codes[2, 1] = 0
    category = torch.tensor([0, 0, 1])
    grid = torch.tensor([[-1.0, 0.0, 0.5], [-0.5, 0.2, 1.0]])
    sweep = ThresholdSweep(grid, category, 2)
    sweep.add(maps, codes)
    for j in range(3):
        tally = IoUTally(category)
        tally.add_labels(maps > grid[:, j][None, :, None, None], codes)
        assert torch.allclose(sweep.iou()[..., j], tally.result())
    assert (sweep.iqr() >= 0).all() and (sweep.iqr() <= 1 + 1e-9).all()


# -- resumption and cache keys -------------------------------------------------------------
@pytest.mark.parametrize("mode", ["quantile", "iqr"])
def test_interrupted_runs_resume_to_identical_json(tmp_path, mode):
    extra = {"threshold": mode, "selection_n": 24} if mode == "iqr" else {}
    generator, segmenter = PlantedGenerator(), PlantedSegmenter()
    clean = dissect(generator, segmenter, ["units", "mirror"], **PLANTED, **extra)
    save_dissection(clean, tmp_path / "clean")
    cache = tmp_path / "cache"
    # Killed in pass 1, then again in later passes (the selection passes in iqr mode).
    for batches in (3, 5, 4):
        with pytest.raises(Interrupted):
            dissect(generator, segmenter, ["units", "mirror"], **PLANTED, **extra,
                    cache_dir=cache, checkpoint_seconds=0, on_batch=stop_after(batches))
    resumed = dissect(generator, segmenter, ["units", "mirror"], **PLANTED, **extra,
                      cache_dir=cache)
    save_dissection(resumed, tmp_path / "resumed")
    assert (tmp_path / "resumed/dissect.json").read_bytes() == (
        tmp_path / "clean/dissect.json").read_bytes()


def test_a_run_killed_between_checkpoints_still_gives_the_same_result(tmp_path):
    generator, segmenter = PlantedGenerator(), PlantedSegmenter()
    clean = dissect(generator, segmenter, "units", **PLANTED)
    with pytest.raises(Interrupted):
        dissect(generator, segmenter, "units", **PLANTED, cache_dir=tmp_path,
                checkpoint_seconds=1e9, on_batch=stop_after(4))
    again = dissect(generator, segmenter, "units", **PLANTED, cache_dir=tmp_path)
    assert again.to_json() == clean.to_json()


def test_cache_is_keyed_by_layer_seed_and_quantile(tmp_path):
    generator, segmenter = PlantedGenerator(), PlantedSegmenter()
    units = dissect(generator, segmenter, "units", **PLANTED, cache_dir=tmp_path)
    mirror = dissect(generator, segmenter, "mirror", **PLANTED, cache_dir=tmp_path)
    assert mirror.to_json() == dissect(generator, segmenter, "mirror", **PLANTED).to_json()
    assert mirror.layers[0].to_json()["units"] != units.layers[0].to_json()["units"]
    assert len(list(tmp_path.glob("layer-*"))) == 2
    assert len(list(tmp_path.glob("labels-*"))) == 1  # both layers share the stored labels

    for change in ({"seed": 2}, {"quantile": 0.9}):
        settings = {**PLANTED, **change}
        cached = dissect(generator, segmenter, "units", **settings, cache_dir=tmp_path)
        assert cached.to_json() == dissect(generator, segmenter, "units", **settings).to_json()
        assert cached.to_json()["layers"] != units.to_json()["layers"]

    calls = []
    relabelled = dissect(generator, segmenter, "units", **PLANTED, min_iou=0.99,
                         cache_dir=tmp_path, on_batch=lambda *a: calls.append(a))
    assert calls == []  # min_iou only relabels: no pass ran again
    assert [u.iou for u in relabelled.layers[0].units] == [u.iou for u in units.layers[0].units]
    assert not any(u.interpretable for u in relabelled.layers[0].units)

    other = PlantedGenerator()
    with torch.no_grad():
        other.gain.fill_(2.0)
    doubled = dissect(other, segmenter, "units", **PLANTED, cache_dir=tmp_path)
    assert doubled.layers[0].units[2].quantiles != units.layers[0].units[2].quantiles


# -- adaptive (IQR) thresholds -------------------------------------------------------------
def test_iqr_mode_picks_sensible_thresholds_on_a_separate_sample():
    result = dissect(PlantedGenerator(), PlantedSegmenter(), "units", **PLANTED,
                     threshold="iqr", selection_n=24)
    settings = result.settings
    assert settings["selection_seed"] == settings["seed"] + 1000
    assert settings["selection_n"] == 24 and settings["min_iou"] == 0.05
    a, b, noise = result.layer("units").units
    assert (a.label, b.label) == ("A", "B")
    for unit in (a, b):
        assert unit.iou > 0.9 and unit.iqr > 0.5 and unit.interpretable
        assert -1 < unit.threshold < 1  # between the surround (-1) and the centre (+1)
    assert not noise.interpretable
    stats = result.layer("units").stats
    picked_on_selection = ThresholdSweep.__new__(ThresholdSweep)
    picked_on_selection.load_state_dict(stats["selection"])
    assert torch.equal(picked_on_selection.iqr().argmax(-1), stats["choice"])
    assert picked_on_selection.images == 24


# -- validation ----------------------------------------------------------------------------
def test_bad_arguments_fail_before_any_pass():
    generator, segmenter = PlantedGenerator(), PlantedSegmenter()
    with pytest.raises(ValueError, match="Valid layers: .*units"):
        dissect(generator, segmenter, "unit", progress=False)
    with pytest.raises(ValueError, match="n >= 1"):
        dissect(generator, segmenter, "units", n=0, progress=False)
    with pytest.raises(ValueError, match="quantile"):
        dissect(generator, segmenter, "units", quantile=1.0, progress=False)
    with pytest.raises(ValueError, match="threshold"):
        dissect(generator, segmenter, "units", threshold="otsu", progress=False)
    with pytest.raises(ValueError, match="z_dim"):
        dissect(torch.nn.Sequential(torch.nn.Identity()), segmenter, "0", progress=False)


def test_json_round_trip(tmp_path):
    from gandissect.dissect import load_dissection

    result = dissect(PlantedGenerator(), PlantedSegmenter(), "units", **PLANTED)
    save_dissection(result, tmp_path)
    data = json.loads((tmp_path / "dissect.json").read_text())
    assert set(data) == {"settings", "layers"}
    unit = data["layers"][0]["units"][0]
    assert {"unit", "label", "category", "iou", "threshold", "concepts", "top_images"} <= set(unit)
    loaded = load_dissection(tmp_path, stats=True)
    assert loaded.to_json() == result.to_json()
    assert torch.equal(loaded.layers[0].stats["insertion"], result.layers[0].stats["insertion"])
