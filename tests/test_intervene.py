"""Interventions: mask pooling, stroke composition, ablation and insertion at a layer."""

import pytest
import torch

from gandissect.hooks import Trace
from gandissect.intervene import (
    Stroke,
    pool_mask,
    render_edited,
    stroke_alpha,
    stroke_edit,
)
from gandissect.models.proggan import ProGANGenerator


@pytest.fixture(scope="module")
def generator():
    torch.manual_seed(0)
    return ProGANGenerator(z_dim=16, channels=[12, 10, 8]).eval()  # 16 px, layer4 at 8x8


def test_pool_mask_is_max_over_each_cell():
    g = torch.Generator().manual_seed(0)
    mask = (torch.rand(32, 32, generator=g) > 0.97).float()
    pooled = pool_mask(mask, (8, 8))
    for i in range(8):
        for j in range(8):
            assert pooled[i, j] == mask[4 * i:4 * i + 4, 4 * j:4 * j + 4].max()
    assert pool_mask(torch.ones(2, 16, 16), (8, 8)).shape == (2, 8, 8)
    with pytest.raises(ValueError, match="divide"):
        pool_mask(torch.ones(30, 30), (8, 8))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        pool_mask(torch.full((16, 16), 2.0), (8, 8))


def test_strokes_apply_in_order_as_the_slow_definition():
    """Two strokes (a weak ablation under one mask, an insertion under another), restated cell
    by cell: each cell is edited as strongly as the strongest painted pixel inside it (max
    pooling), ablation writes 0, insertion the unit's value, and the second stroke edits what
    the first left."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 5, 4, 4, generator=g)
    values = torch.randn(5, generator=g)
    first = torch.zeros(16, 16)
    first[0:5, 0:9] = 0.5  # cells rows 0-1, columns 0-2 (at 4 px a cell)
    second = torch.zeros(16, 16)
    second[6, 6] = 1.0  # one pixel: cell (1, 1)
    strokes = [Stroke(units=[0, 2], mode="ablate", mask=first, strength=0.8),
               Stroke(units=[2, 4], mode="insert", mask=second, strength=0.5)]
    edited = stroke_edit(strokes, values)(x)
    expected = x.clone()
    for stroke in strokes:
        for unit in stroke.units:
            for i in range(4):
                for j in range(4):
                    a = stroke.strength * float(stroke.mask[4 * i:4 * i + 4, 4 * j:4 * j + 4].max())
                    v = 0.0 if stroke.mode == "ablate" else float(values[unit])
                    expected[:, unit, i, j] = expected[:, unit, i, j] * (1 - a) + v * a
    torch.testing.assert_close(edited, expected)


def test_ablation_zeroes_chosen_units_under_the_mask(generator):
    z = torch.randn(2, 16)
    mask = torch.zeros(16, 16)
    mask[0:4, 4:10] = 1  # covers cells rows 0-1, columns 2-4 at 8x8
    strokes = [Stroke(units=[1, 3], mode="ablate", mask=mask)]
    with Trace(generator, "layer4") as clean:
        generator(z)
    with Trace(generator, "layer4", edit=stroke_edit(strokes, None)) as edited:
        generator(z)
    cells = torch.zeros(8, 8, dtype=torch.bool)
    cells[0:2, 2:5] = True
    out, ref = edited.output, clean.output
    assert (out[:, [1, 3]][:, :, cells] == 0).all()
    untouched = torch.ones_like(out, dtype=torch.bool)
    untouched[:, [1, 3]] = ~cells
    assert torch.equal(out[untouched], ref[untouched])


def test_insertion_writes_the_unit_values_and_full_strength_is_exact(generator):
    z = torch.randn(1, 16)
    values = torch.arange(10, dtype=torch.float32)
    strokes = [Stroke(units=[2], mode="insert", mask=None)]
    edit = stroke_edit(strokes, values)
    with Trace(generator, "layer4", edit=edit) as edited:
        generator(z)
    assert (edited.output[0, 2] == 2.0).all()
    images = render_edited(generator, z, "layer4", strokes, values)
    assert images.shape == (1, 3, 16, 16)


def test_empty_stroke_list_and_zero_strength_are_identity(generator):
    z = torch.randn(3, 16)
    with torch.no_grad():
        clean = generator(z)
    assert torch.equal(render_edited(generator, z, "layer4", []), clean)
    weak = [Stroke(units=[0, 1], mode="ablate", strength=0.0)]
    assert torch.equal(render_edited(generator, z, "layer4", weak), clean)


def test_bad_strokes_say_what_to_do(generator):
    with pytest.raises(ValueError, match="mode"):
        Stroke(units=[0], mode="paint")
    with pytest.raises(ValueError, match="unit ids"):
        stroke_alpha(Stroke(units=[10]), 10, (8, 8))
    with pytest.raises(ValueError, match="insert_values"):
        render_edited(generator, torch.randn(1, 16), "layer4", [Stroke([0], "insert")])
