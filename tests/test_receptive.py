"""Receptive-field centres and the upsampling that places each cell at its centre."""

import torch
from torch import nn

from gandissect.attribute.evaluate import pixel_maps
from gandissect.receptive import aligned_upsample, cell_centres


def test_centres_of_a_strided_symmetric_convolution():
    """A 3x3 all-ones kernel, stride 2, padding 1: cell i looks at rows 2i-1 .. 2i+1, so its
    centre is 2i, except cell 0 whose row -1 is padding: rows 0 and 1, centre 0.5."""
    conv = nn.Conv2d(3, 1, 3, stride=2, padding=1, bias=False)
    nn.init.ones_(conv.weight)
    model = nn.Sequential()
    model.add_module("conv", conv)
    rows, columns = cell_centres(model, "conv", size=16)
    expected = torch.tensor([0.5] + [2.0 * i for i in range(1, 8)], dtype=torch.float64)
    assert torch.allclose(rows, expected, atol=1e-9)
    assert torch.allclose(columns, expected, atol=1e-9)


def test_aligned_upsample_interpolates_between_centres_by_a_loop():
    maps = torch.rand(2, 3, 4, dtype=torch.float64)
    rows = torch.tensor([1.0, 5.0, 12.0], dtype=torch.float64)
    columns = torch.tensor([0.0, 4.0, 9.0, 15.0], dtype=torch.float64)
    out = aligned_upsample(maps, (16, 16), (rows, columns))

    def position(pixel: int, centres: torch.Tensor) -> float:
        """Fractional cell index of a pixel: linear between centres, held beyond the ends."""
        if pixel <= centres[0]:
            return 0.0
        if pixel >= centres[-1]:
            return float(len(centres) - 1)
        i = int((centres <= pixel).nonzero().max())
        return i + (pixel - centres[i]) / (centres[i + 1] - centres[i])

    for y in range(16):
        for x in range(16):
            u, v = position(y, rows), position(x, columns)
            i0, j0 = min(int(u), 1), min(int(v), 2)
            a, b = u - i0, v - j0
            expected = ((1 - a) * (1 - b) * maps[:, i0, j0] + (1 - a) * b * maps[:, i0, j0 + 1]
                        + a * (1 - b) * maps[:, i0 + 1, j0] + a * b * maps[:, i0 + 1, j0 + 1])
            assert torch.allclose(out[:, y, x], expected, atol=1e-9), (y, x)


def test_shipped_classifier_layer4_centres_are_pulled_inwards_at_the_borders():
    from gandissect.models.registry import load_classifier

    model = load_classifier("sceneworld")
    flags = [p.requires_grad for p in model.parameters()]
    rows, columns = cell_centres(model, "layer4", 64)
    assert [p.requires_grad for p in model.parameters()] == flags
    cells = len(rows)
    stride = 64 // cells
    bilinear = torch.arange(cells, dtype=torch.float64) * stride + (stride - 1) / 2
    middle = slice(cells // 4, 3 * cells // 4)
    # "same"-padded stride-2 convs centre cell i on row stride * i, above bilinear's centre;
    # at the borders the clipped receptive field pulls the centre inwards
    assert (rows[middle] - bilinear[middle]).mean() < 0
    assert (columns[middle] - bilinear[middle]).mean() < 0
    assert rows[0] > bilinear[0] + 2 and columns[0] > bilinear[0] + 2
    assert rows[-1] < bilinear[-1] - 2 and columns[-1] < bilinear[-1] - 2
    assert (rows.diff() > 0).all() and (columns.diff() > 0).all()
    maps = torch.zeros(1, cells, cells)
    maps[0, 1, 2] = 1.0
    peak = pixel_maps(maps, (64, 64), centres=(rows, columns))[0]
    y, x = divmod(int(peak.argmax()), 64)
    assert abs(y - rows[1]) <= 0.5 and abs(x - columns[2]) <= 0.5
