"""Feature visualisation against its definitions, restated the slow way on tiny models.

The tiny model (two convs on 16 x 16 images, float64) makes exact comparisons possible; two
tests at the end run on the shipped scene classifier.
"""

import math
from collections import OrderedDict

import numpy as np
import pytest
import torch
from conftest import Tripwire, hook_count
from torch import nn

from gandissect.hooks import Trace
from gandissect.visualize import (
    SCENEWORLD_COLOR_MATRIX,
    FourierImage,
    Jitter,
    Objective,
    PixelImage,
    RandomRotate,
    RandomScale,
    channel,
    class_logit,
    color_matrix,
    decorrelate_colors,
    default_transforms,
    filter_grid,
    high_frequency,
    layer,
    objective_value,
    pixel_l2,
    rotate_scale,
    sceneworld_color_matrix,
    sceneworld_top_images,
    shift,
    spectrum_scale,
    top_activating,
    total_variation,
    unit,
    visualize,
)
from gandissect.visualize.featurevis import apply_transforms


def tiny_model(seed: int = 0) -> nn.Sequential:
    """conv - BN - in-place ReLU - conv (stride 2) - ReLU - pool - linear: 3 classes, 16 px."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = nn.Sequential(OrderedDict(
            conv1=nn.Conv2d(3, 4, 3, padding=1),
            bn1=nn.BatchNorm2d(4),
            relu1=nn.ReLU(inplace=True),
            conv2=Tripwire(4, 5, 3, stride=2, padding=1),
            relu2=nn.ReLU(),
            pool=nn.AdaptiveAvgPool2d(1),
            flat=nn.Flatten(),
            fc=nn.Linear(5, 3),
        ))
        model.bn1.running_mean.normal_(0, 0.1)
        model.bn1.running_var.uniform_(0.5, 1.5)
    return model.double()


def images(n: int = 4, size: int = 16, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g, dtype=torch.float64) * 2 - 1


def traced(model, name, x):
    with torch.no_grad(), Trace(model, name) as t:
        model(x)
    return t.output


# --- objectives --------------------------------------------------------------------------------


def test_objectives_equal_hand_computed_values():
    model, x = tiny_model().eval(), images()
    conv2 = traced(model, "conv2", x)  # (4, 5, 8, 8)
    with torch.no_grad():
        logits = model(x)
    expected = {
        unit("conv2", 3): [conv2[i, 3, 4, 4] for i in range(4)],
        unit("conv2", 1, y=2, x=7): [conv2[i, 1, 2, 7] for i in range(4)],
        channel("conv2", 2): [conv2[i, 2].sum() / 64 for i in range(4)],
        layer("conv2"): [sum(float(v) ** 2 for v in conv2[i].flatten()) / 320 for i in range(4)],
        class_logit(2): [logits[i, 2] for i in range(4)],
        unit("fc", 1): [logits[i, 1] for i in range(4)],  # a (B, C) layer: the column
    }
    for objective, values in expected.items():
        got = objective_value(model, objective, x)
        assert torch.allclose(got, torch.tensor([float(v) for v in values], dtype=got.dtype)), \
            objective


def test_objectives_add_and_scale():
    model, x = tiny_model().eval(), images()
    u, c, d, k = unit("conv2", 0), channel("conv1", 1), layer("relu1"), class_logit(0)
    value = {o: objective_value(model, o, x) for o in (u, c, d, k)}
    combined = 2 * u + c * 0.5 - d + 1.0 - k
    assert combined.layers == {"conv2", "conv1", "relu1"} and combined.needs_output
    want = 2 * value[u] + 0.5 * value[c] - value[d] + 1.0 - value[k]
    assert torch.allclose(objective_value(model, combined, x), want)
    assert torch.allclose(objective_value(model, sum([u, c]), x), value[u] + value[c])
    assert torch.allclose(objective_value(model, 3 - u, x), 3 - value[u])
    with pytest.raises(TypeError):
        u * c


def test_objective_errors_name_what_is_valid():
    model, x = tiny_model().eval(), images(1)
    with pytest.raises(ValueError, match="Valid layers: conv1, bn1"):
        objective_value(model, channel("conv3", 0), x)
    with pytest.raises(ValueError, match="conv2' has 5 channels"):
        objective_value(model, channel("conv2", 5), x)
    with pytest.raises(ValueError, match="out of range"):
        objective_value(model, unit("conv2", -1), x)
    with pytest.raises(ValueError, match="outside"):
        objective_value(model, unit("conv2", 0, y=8), x)
    with pytest.raises(ValueError, match="3 classes"):
        objective_value(model, class_logit(3), x)
    with pytest.raises(ValueError, match="one value per image"):
        objective_value(model, Objective(lambda a: a.image.sum()), x)
    assert hook_count(model) == 0


def test_penalties_equal_loops():
    x = images(2, 6)
    tv = objective_value(nn.Identity(), total_variation(), x)
    for i in range(2):
        dy = sum(abs(float(x[i, c, r + 1, s] - x[i, c, r, s]))
                 for c in range(3) for r in range(5) for s in range(6)) / (3 * 5 * 6)
        dx = sum(abs(float(x[i, c, r, s + 1] - x[i, c, r, s]))
                 for c in range(3) for r in range(6) for s in range(5)) / (3 * 6 * 5)
        assert math.isclose(float(tv[i]), dy + dx, rel_tol=1e-9)
    l2 = objective_value(nn.Identity(), pixel_l2(), x)
    assert torch.allclose(l2, (x ** 2).flatten(1).mean(1))
    flat = torch.full((1, 3, 8, 8), 0.3, dtype=torch.float64)
    checker = (torch.arange(8)[:, None] + torch.arange(8)[None]) % 2 * 2.0 - 1
    checker = checker.double().expand(1, 3, 8, 8)
    hf = high_frequency(0.25)
    assert float(objective_value(nn.Identity(), hf, flat)) < 1e-20
    # the checkerboard is all energy at (0.5, 0.5): 64 per channel in the orthonormal FFT
    mask_bins = int((torch.sqrt(torch.fft.fftfreq(8)[:, None] ** 2
                                + torch.fft.rfftfreq(8)[None] ** 2) > 0.25).sum())
    assert math.isclose(float(objective_value(nn.Identity(), hf, checker)), 64 / mask_bins)


# --- parametrisations --------------------------------------------------------------------------


def explicit_irfft2(spectrum: np.ndarray, h: int, w: int) -> np.ndarray:
    """The orthonormal inverse real DFT of a half spectrum (h, w // 2 + 1), by summation: the
    columns 1 .. w/2 - 1 stand for themselves and their mirror images (weight 2), the zero and
    (for even w) Nyquist columns once; the real part is taken."""
    out = np.zeros((h, w))
    for n in range(h):
        for m in range(w):
            total = 0.0
            for k in range(h):
                for col in range(w // 2 + 1):
                    weight = 1 if col == 0 or 2 * col == w else 2
                    phase = np.exp(2j * np.pi * (k * n / h + col * m / w))
                    total += weight * (spectrum[k, col] * phase).real
            out[n, m] = total / math.sqrt(h * w)
    return out


def explicit_scale(h: int, w: int) -> np.ndarray:
    def freq(k, size):
        return (k if k <= (size - 1) // 2 else k - size) / size

    scale = np.array([[1 / max(math.hypot(freq(k, h), col / w), 1 / max(h, w))
                       for col in range(w // 2 + 1)] for k in range(h)])
    return scale / math.sqrt((scale ** 2).mean())


@pytest.mark.parametrize("h, w", [(4, 6), (5, 5)])
def test_fourier_image_is_an_explicit_inverse_dft(h, w):
    g = torch.Generator().manual_seed(0)
    param = FourierImage(2, (h, w), decorrelate=False, generator=g, init_std=1.0).double()
    assert np.allclose(spectrum_scale(h, w).numpy(), explicit_scale(h, w))
    spectrum = param.spectrum.detach().numpy()
    scaled = (spectrum[..., 0] + 1j * spectrum[..., 1]) * explicit_scale(h, w)
    raw = param.raw().detach().numpy()
    for b in range(2):
        for c in range(3):
            assert np.allclose(raw[b, c], explicit_irfft2(scaled[b, c], h, w))
    assert torch.allclose(param(), torch.tanh(param.raw()))


def test_zero_spectrum_gives_a_constant_image():
    param = FourierImage(1, 8)
    with torch.no_grad():
        param.spectrum.zero_()
        param.spectrum[0, :, 0, 0, 0] = torch.tensor([0.5, -1.0, 0.2])  # DC only: still flat
    image = param().detach()
    assert torch.allclose(image, image[..., :1, :1].expand_as(image), atol=1e-6)
    with torch.no_grad():
        param.spectrum.zero_()
    assert torch.equal(param().detach(), torch.zeros(1, 3, 8, 8))  # mid grey


def test_color_decorrelation_is_the_explicit_matmul():
    raw = images(2, 5)
    matrix = SCENEWORLD_COLOR_MATRIX.double()
    out = decorrelate_colors(raw, matrix)
    for b in range(2):
        for r in range(5):
            for s in range(5):
                assert torch.allclose(out[b, :, r, s], matrix @ raw[b, :, r, s])
    param = PixelImage(2, 5, generator=torch.Generator().manual_seed(0)).double()
    assert torch.allclose(param(), torch.tanh(decorrelate_colors(param.pixels, matrix)))


def test_color_matrix_is_the_normalised_covariance_root():
    g = torch.Generator().manual_seed(0)
    mixing = torch.tensor([[1.0, 0.0, 0.0], [0.8, 0.5, 0.0], [0.3, 0.6, 0.9]], dtype=torch.float64)
    pixels = torch.randn(5000, 3, generator=g, dtype=torch.float64) @ mixing.T
    root = color_matrix(pixels)
    cov = torch.cov(pixels.T)
    assert torch.allclose(root, root.T)
    factor = (root @ root.T)[0, 0] / cov[0, 0]
    assert torch.allclose(root @ root.T, factor * cov)
    assert math.isclose(float(root.norm(dim=0).max()), 1.0)
    # the shipped constant is what the documented recipe computes
    assert torch.allclose(sceneworld_color_matrix(n=256, seed=0).float(),
                          SCENEWORLD_COLOR_MATRIX, atol=1e-4)


# --- transforms --------------------------------------------------------------------------------


def test_transforms_are_reproducible_with_a_seed():
    x = images(3, 16)
    transforms = default_transforms(16) + [RandomScale(0.8, 1.2), RandomRotate(20)]
    run = [apply_transforms(x, transforms, torch.Generator().manual_seed(s)) for s in (4, 4, 5)]
    assert torch.equal(run[0], run[1])
    assert not torch.allclose(run[0], run[2])
    assert run[0].shape == x.shape


@pytest.mark.parametrize("dy, dx", [(2, 3), (-1, 2), (0, -3)])
def test_shift_is_a_roll_with_reflected_borders(dy, dx):
    x = images(2, 8)
    out = shift(x, dy, dx)
    rolled = torch.roll(x, (dy, dx), dims=(2, 3))
    rows = slice(dy, None) if dy >= 0 else slice(None, 8 + dy)
    cols = slice(dx, None) if dx >= 0 else slice(None, 8 + dx)
    assert torch.equal(out[..., rows, cols], rolled[..., rows, cols])

    def reflect(i):  # index into the original, mirrored about the edge pixels
        return -i if i < 0 else (14 - i if i > 7 else i)

    for r in range(8):
        for s in range(8):
            assert torch.equal(out[..., r, s], x[..., reflect(r - dy), reflect(s - dx)])


def test_jitter_draws_its_shift_from_the_generator():
    x = images(1, 8)
    g = torch.Generator().manual_seed(7)
    out = Jitter(2)(x, g)
    dy, dx = torch.randint(-2, 3, (2,), generator=torch.Generator().manual_seed(7)).tolist()
    assert torch.equal(out, shift(x, dy, dx))


def test_rotate_scale_identity_and_quarter_turn():
    x = images(2, 6)
    assert torch.allclose(rotate_scale(x, 0.0, 1.0), x, atol=1e-12)
    assert torch.allclose(rotate_scale(x, 90.0), torch.rot90(x, 1, (2, 3)), atol=1e-12)
    # magnifying by 2 about the centre: output pixel centre p samples the input at p / 2
    zoomed = rotate_scale(x, 0.0, 2.0)
    assert torch.allclose(zoomed[..., 2:4, 2:4].mean((2, 3)), x[..., 2:4, 2:4].mean((2, 3)))


# --- activation maximisation -------------------------------------------------------------------


# Margins are about half the gain 30 steps make; 300 steps reach about 1.27, 0.24 and 0.27, so
# the tiny model leaves little room above its starting values of -0.09, -0.03 and 0.17.
@pytest.mark.parametrize("objective, param, margin", [
    (unit("conv2", 3), "fourier", 0.5),
    (channel("conv2", 1), "pixel", 0.04),
    (class_logit(2), "fourier", 0.02),
])
def test_visualize_increases_the_objective(objective, param, margin):
    model = tiny_model()
    start, _ = visualize(model, objective, steps=0, size=16, param=param, transforms=[])
    images_, history = visualize(model, objective, steps=30, size=16, lr=0.1, param=param,
                                 transforms=[Jitter(1)], batch=2)
    assert images_.shape == (2, 3, 16, 16) and images_.dtype == torch.float64
    assert float(images_.abs().max()) <= 1 and len(history) == 30
    before = objective_value(model, objective, start).mean()
    after = objective_value(model, objective, images_)
    assert bool((after > before + margin).all()), (float(before), after)
    assert history[-1] > history[0]


def test_visualize_is_seeded():
    model = tiny_model()
    run = [visualize(model, channel("conv2", 0), steps=5, size=16, seed=s, batch=2,
                     transforms=default_transforms(16))[0] for s in (1, 1, 2)]
    assert torch.equal(run[0], run[1])
    assert not torch.allclose(run[0], run[2])
    assert not torch.allclose(run[0][0], run[0][1])  # batch elements start differently


def model_state(model):
    return ({k: v.clone() for k, v in model.state_dict().items()},
            [p.requires_grad for p in model.parameters()],
            [m.training for m in model.modules()],
            [m.inplace for m in model.modules() if hasattr(m, "inplace")])


def assert_same_state(model, state):
    weights, flags, modes, inplace = model_state(model)
    assert all(torch.equal(weights[k], v) for k, v in state[0].items())
    assert (flags, modes, inplace) == (state[1], state[2], state[3])
    assert hook_count(model) == 0


def test_visualize_restores_the_model_even_on_errors():
    model = tiny_model().train()
    model.conv1.weight.requires_grad_(False)
    state = model_state(model)
    visualize(model, channel("conv2", 0) + class_logit(1) + layer("relu1"), steps=3, size=16)
    assert_same_state(model, state)

    def broken(acts):
        raise RuntimeError("objective failed")

    with pytest.raises(RuntimeError, match="objective failed"):
        visualize(model, Objective(broken, ["conv2"]), steps=2, size=16)
    assert_same_state(model, state)
    model.conv2.armed = True
    with pytest.raises(RuntimeError, match="tripwire"):
        visualize(model, channel("conv2", 0), steps=2, size=16)
    model.conv2.armed = False
    assert_same_state(model, state)
    with pytest.raises(ValueError, match="Valid layers"):
        visualize(model, unit("nope", 0), steps=2, size=16)
    assert_same_state(model, state)


def test_visualize_warns_when_the_unit_is_off():
    dead = nn.Sequential(OrderedDict(conv=nn.Conv2d(3, 2, 3), relu=nn.ReLU()))
    with torch.no_grad():
        dead.conv.bias.fill_(-10.0)
    with pytest.warns(UserWarning, match="zero gradient"):
        _, history = visualize(dead, channel("relu", 0), steps=2, size=8, transforms=[])
    assert history == [0.0, 0.0]


# --- top-activating images ---------------------------------------------------------------------


def brute_force_top(model, name, x, k):
    """Per unit: every image's max-over-space activation, one image at a time, sorted by
    descending score and then ascending index (the documented tie rule)."""
    scores = torch.stack([traced(model, name, x[i:i + 1])[0].flatten(1).max(1).values
                          for i in range(len(x))])  # (N, U)
    tops = []
    for u in range(scores.shape[1]):
        order = sorted(range(len(x)), key=lambda i: (-float(scores[i, u]), i))[:k]
        tops.append((order, [float(scores[i, u]) for i in order]))
    return tops


def test_top_activating_equals_a_brute_force_loop():
    model = tiny_model().eval()
    x = images(20, 16, seed=3)
    x[13] = x[4]  # exact ties: the smaller index must come first
    x[17] = x[4]
    expected = brute_force_top(model, "conv2", x, 5)
    for source in (x, list(x.split(6)), [{"image": b} for b in x.split(7)]):
        result = top_activating(model, "conv2", source, k=5, batch_size=3)
        assert result.scores.shape == (5, 5) and result.units.tolist() == list(range(5))
        for u, (order, scores) in enumerate(expected):
            assert result.indices[u].tolist() == order
            assert torch.allclose(result.scores[u], torch.tensor(scores))
    picked = top_activating(model, "conv2", x, k=3, units=[4, 1])
    assert picked.indices.tolist() == [expected[4][0][:3], expected[1][0][:3]]
    assert top_activating(model, "conv2", x[:2], k=5).indices.shape == (5, 2)
    with pytest.raises(ValueError, match=r"\[0, 4\]"):
        top_activating(model, "conv2", x, units=[5])
    assert hook_count(model) == 0


# --- filters -----------------------------------------------------------------------------------


def test_filter_grid_pixels():
    weight = torch.zeros(3, 3, 2, 2)
    weight[1, 0, 0, 0] = 2.0   # filter 1: peak +2 -> red channel white at (0, 0)
    weight[1, 2, 1, 1] = -1.0  # -> blue channel at -0.5 at (1, 1)
    grid = filter_grid(weight, columns=2, pad=1)
    assert grid.shape == (1 + 2 * 3, 1 + 2 * 3, 3) and grid.dtype == np.uint8
    assert (grid[1:3, 1:3] == 128).all()  # zero filter: mid grey
    tile = grid[1:3, 4:6]
    assert tile[0, 0].tolist() == [255, 128, 128]
    assert tile[1, 1].tolist() == [128, 128, round(127.5 * 0.5)]
    assert (grid[0] == 0).all() and (grid[:, 3] == 0).all() and (grid[-1] == 0).all()
    assert (grid[4:6, 1:3] == 128).all() and (grid[4:6, 4:6] == 0).all()  # filter 2, empty cell
    zoomed = filter_grid(nn.Conv2d(3, 5, 3), pad=0, zoom=2)
    assert zoomed.shape == (2 * 6, 3 * 6, 3)
    with pytest.raises(ValueError, match="RGB filters"):
        filter_grid(torch.zeros(4, 2, 3, 3))


# --- the shipped classifier --------------------------------------------------------------------


@pytest.fixture(scope="module")
def classifier():
    from gandissect.models.registry import load_classifier

    return load_classifier("sceneworld")


def test_visualize_raises_a_class_logit_of_the_shipped_classifier(classifier):
    objective = class_logit(0)
    start, _ = visualize(classifier, objective, steps=0)
    images_, history = visualize(classifier, objective, steps=20)
    assert images_.shape == (1, 3, 64, 64)
    before = float(objective_value(classifier, objective, start))
    after = float(objective_value(classifier, objective, images_))
    assert after > before + 1.0, (before, after, history)
    assert not classifier.training and hook_count(classifier) == 0


def test_sceneworld_top_images_shapes(classifier):
    result = sceneworld_top_images(classifier, "layer3", n=64, k=4, units=[0, 5, 7])
    assert result.scores.shape == (3, 4) and result.indices.shape == (3, 4)
    assert result.images.shape == (3, 4, 64, 64, 3) and result.images.dtype == np.uint8
    assert int(result.indices.max()) < 64
    assert (result.scores[:, :-1] >= result.scores[:, 1:]).all()
    full = sceneworld_top_images(classifier, "layer4", n=64, k=4)
    assert full.indices.shape == (160, 4)
