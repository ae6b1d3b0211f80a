"""``quantile_over``: the threshold quantile over the layer's cells or over the upsampled maps,
against its slow definition (torch.quantile of F.interpolate's maps); recorded, keyed, read."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import ChannelSegmenter, PlantedGenerator, PlantedSegmenter, TinyGenerator
from torch.nn import functional as F

from gandissect.cli import main
from gandissect.dissect import Dissection, dissect, latents
from gandissect.errors import UserError
from gandissect.hooks import Trace

BIN = 2 ** -8  # the sketch's relative bin width: its estimates lie in the exact value's bin
SMALL = dict(n=64, batch=16, quantile=0.99, progress=False)


def slow_thresholds(generator, layer: str, n: int, size: tuple[int, int], q: float,
                    over: str) -> torch.Tensor:
    """Each unit's q-quantile over all samples' layer cells, or over their maps upsampled
    bilinearly to ``size``, by torch.quantile on every value."""
    with torch.no_grad(), Trace(generator, layer) as trace:
        generator(latents(1, range(n), generator.z_dim))
    maps = trace.output
    if over == "image":
        maps = F.interpolate(maps, size=size, mode="bilinear", align_corners=False)
    values = maps.transpose(0, 1).reshape(maps.shape[1], -1)
    return torch.quantile(values, q, dim=1)


def test_image_level_threshold_is_the_quantile_of_the_upsampled_maps():
    generator = TinyGenerator()
    result = dissect(generator, ChannelSegmenter(), "units", quantile_over="image", **SMALL)
    assert result.settings["quantile_resolution"] == result.quantile_over == "image"
    found = torch.tensor([u.threshold for u in result.layer("units").units])
    image = slow_thresholds(generator, "units", 64, (32, 32), 0.99, "image")
    layer = slow_thresholds(generator, "units", 64, (32, 32), 0.99, "layer")
    assert torch.allclose(found, image, rtol=BIN, atol=1e-6)
    assert ((image - layer).abs() > 4 * BIN * image.abs()).any()  # the two differ
    # a unit is then active on about 1% of the image pixels it is scored on
    with torch.no_grad(), Trace(generator, "units") as trace:
        generator(latents(1, range(64), generator.z_dim))
    maps = F.interpolate(trace.output, size=(32, 32), mode="bilinear", align_corners=False)
    active = (maps > found[None, :, None, None]).float().mean((0, 2, 3))
    assert active.min() > 0.0085 and active.max() < 0.0115


def test_layer_level_threshold_stays_the_default():
    generator = TinyGenerator()
    result = dissect(generator, ChannelSegmenter(), "units", **SMALL)
    assert result.quantile_over == "layer"
    found = torch.tensor([u.threshold for u in result.layer("units").units])
    with torch.no_grad(), Trace(generator, "units") as trace:
        generator(latents(1, range(64), generator.z_dim))
    cells = trace.output.transpose(0, 1).reshape(6, -1)  # 4,096 values a unit: sparse at the
    rank = math.ceil(0.99 * cells.shape[1])  # top, so the order statistic of rank ceil(q n)
    exact = cells.kthvalue(rank, dim=1).values
    assert torch.allclose(found, exact, rtol=BIN, atol=1e-6)


def test_the_choice_keys_the_cache_and_insertion_values_stay_layer_values(tmp_path):
    options = dict(SMALL, cache_dir=tmp_path)
    layer = dissect(TinyGenerator(), ChannelSegmenter(), "units", **options)
    image = dissect(TinyGenerator(), ChannelSegmenter(), "units", quantile_over="image",
                    **options)
    again = dissect(TinyGenerator(), ChannelSegmenter(), "units", **options)
    thresholds = [[u.threshold for u in r.layer("units").units] for r in (layer, image, again)]
    assert thresholds[0] == thresholds[2] != thresholds[1]
    assert len(list(tmp_path.glob("layer-*"))) == 2
    for a, b in zip(layer.layer("units").units, image.layer("units").units):
        assert a.quantiles == b.quantiles  # kept levels (insertion values): the layer's
    assert torch.equal(layer.layer("units").stats["insertion"],
                       image.layer("units").stats["insertion"])


def test_old_files_read_as_layer_and_iqr_refuses_image():
    old = Dissection.from_json({"settings": {"n": 10}, "layers": []})
    assert old.quantile_over == "layer" and old.warnings == []
    with pytest.raises(UserError, match="--threshold iqr chooses its thresholds itself"):
        dissect(PlantedGenerator(), PlantedSegmenter(), "units", threshold="iqr",
                quantile_over="image", n=8, progress=False)
    with pytest.raises(UserError, match="quantile_over must be one of layer, image"):
        dissect(PlantedGenerator(), PlantedSegmenter(), "units", quantile_over="pixels",
                n=8, progress=False)


def test_command_line_records_the_choice(tmp_path):
    out = tmp_path / "out"
    assert main(["dissect", "--generator", "test_domain:noise_generator", "--layer", "units",
                 "--samples", "60", "--batch", "20", "--quantile-over", "image", "--no-html",
                 "--images", "0", "--out", str(out)]) == 0
    settings = json.loads((out / "dissect.json").read_text())["settings"]
    assert settings["quantile_resolution"] == "image"
