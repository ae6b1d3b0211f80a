"""Occlusion: Captum's spellings, the slow restatement (one forward per window), chunking that
never changes the result, the default memory bound and windows that scale with the image."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gandissect.attribute import Occlusion
from gandissect.attribute import occlusion as occlusion_module
from gandissect.attribute.occlusion import default_window
from gandissect.errors import UserError

TARGET = [1, 2]


def tiny_cnn(seed: int = 0) -> nn.Sequential:
    """conv-ReLU-conv-ReLU-pool-linear, 3 classes, float64 (no ReLU in place: Captum runs the
    model outside our guard)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(),
                             nn.Conv2d(4, 5, 3, padding=1), nn.ReLU(),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                             nn.Linear(5, 3)).double().eval()


def images(height: int = 8, width: int = 8, n: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, height, width, generator=torch.Generator().manual_seed(seed),
                       dtype=torch.float64)


def starts(size: int, patch: int, stride: int) -> list[int]:
    """Every ``stride`` from 0, and one window flush with the far edge if the last misses it."""
    found = list(range(0, size - patch + 1, stride))
    return found if found[-1] == size - patch else [*found, size - patch]


def slow_occlusion(model, x, target, patch, stride, baseline=0.0):
    """The definition, one forward per window: each pixel's mean score drop over the windows
    that cover it, on all channels."""
    (ph, pw), (sh, sw) = patch, stride
    n, _, height, width = x.shape
    fill = torch.as_tensor(baseline, dtype=x.dtype).broadcast_to(x.shape)
    drops, counts = torch.zeros(n, height, width, dtype=x.dtype), torch.zeros(n, height, width,
                                                                             dtype=x.dtype)
    with torch.no_grad():
        for i in range(n):
            base = model(x[i:i + 1])[0, target[i]]
            for top in starts(height, ph, sh):
                for left in starts(width, pw, sw):
                    hidden = (..., slice(top, top + ph), slice(left, left + pw))
                    occluded = x[i:i + 1].clone()
                    occluded[hidden] = fill[i:i + 1][hidden]
                    drops[i][hidden[1:]] += base - model(occluded)[0, target[i]]
                    counts[i][hidden[1:]] += 1
    return (drops / counts.clamp(min=1))[:, None].expand(x.shape)


def close(a, b):
    return torch.allclose(a, b, rtol=1e-9, atol=1e-12)


# ------------------------------------------------------------------ Captum's spellings


@pytest.mark.parametrize("window, stride, patch", [
    ({"sliding_window_shapes": (3, 4, 4), "strides": (3, 2, 2)}, None, (4, 4)),
    ({"sliding_window_shapes": (3, 3, 5), "strides": (1, 2, 3)}, None, (3, 5)),
    ({"patch": (3, 5, 2), "stride": (2, 1)}, None, (5, 2)),
    ({"sliding_window_shapes": (4, 3)}, (1, 1), (4, 3)),  # Captum's default stride: 1
    ({"patch": 3, "stride": 2}, None, (3, 3)),
    ({"patch": (3, 6)}, (1, 3), (3, 6)),  # our default stride: half the window
])
def test_windows_spelled_as_captum_or_as_ours_match_the_slow_definition(window, stride, patch):
    model, x = tiny_cnn(), images(9, 10)
    if stride is None:
        spelled = window.get("strides", window.get("stride"))
        stride = (spelled,) * 2 if isinstance(spelled, int) else tuple(spelled)[-2:]
    fast = Occlusion(model).attribute(x, TARGET, **window)
    assert fast.shape == x.shape
    assert close(fast, slow_occlusion(model, x, TARGET, patch, stride))


def test_tensor_baselines_fill_the_hidden_pixels_from_the_tensor():
    model, x = tiny_cnn(), images()
    reference = images(seed=7)
    for baseline in (reference, reference[:1], reference[0], 0.25):
        fast = Occlusion(model).attribute(x, TARGET, sliding_window_shapes=(3, 3, 3),
                                          strides=2, baselines=baseline)
        assert close(fast, slow_occlusion(model, x, TARGET, (3, 3), (2, 2), baseline))


@pytest.mark.parametrize("options, message", [
    ({"sliding_window_shapes": (2, 4, 4)}, r"covers 2 of the image's 3 channels.*pass "
                                           r"\(3, 4, 4\) or \(4, 4\)"),
    ({"patch": (1, 4, 4)}, r"covers 1 of the image's 3 channels"),
    ({"patch": (4, 4, 4, 4)}, r"patch must be a positive int, \(h, w\) or \(C, h, w\)"),
    ({"patch": 0}, r"positive int"),
    ({"strides": (2.5, 2)}, r"stride must be a positive int"),
    ({"patch": 4, "sliding_window_shapes": (3, 4, 4)}, r"one of patch and sliding_window"),
    ({"stride": 2, "strides": 2}, r"one of stride and strides"),
    ({"baseline": 0.0, "baselines": 0.0}, r"one of baseline and baselines"),
    ({"baselines": torch.zeros(3, 3)}, r"baseline tensor must broadcast to the input"),
    ({"internal_batch_size": 4, "perturbations_per_eval": 2}, r"one of internal_batch_size"),
    ({"perturbations_per_eval": 0}, r"perturbations_per_eval must be a positive int"),
])
def test_a_window_or_option_that_cannot_work_is_one_user_error(options, message):
    with pytest.raises(UserError, match=message):
        Occlusion(tiny_cnn()).attribute(images(), TARGET, **options)


# ------------------------------------------------------------------ chunks and memory


class CountRows(nn.Module):
    """The model, recording the rows of every forward."""

    def __init__(self, model):
        super().__init__()
        self.model, self.rows = model, []

    def forward(self, x):
        self.rows.append(x.shape[0])
        return self.model(x)


def test_the_result_does_not_depend_on_the_chunk_size():
    model, x = tiny_cnn(), images(8, 8, n=3)
    method = Occlusion(model)
    whole = method.attribute(x, TARGET + [0], patch=3, stride=2, internal_batch_size=10**6)
    for chunk in ({"internal_batch_size": 1}, {"internal_batch_size": 7}, {},
                  {"perturbations_per_eval": 1}, {"perturbations_per_eval": 5}):
        chunked = method.attribute(x, TARGET + [0], patch=3, stride=2, **chunk)
        assert torch.allclose(chunked, whole, rtol=0, atol=1e-13), chunk


def test_default_forwards_stay_within_the_copy_budget(monkeypatch):
    x = images(16, 16)
    image_bytes = x[0].numel() * x.element_size()
    monkeypatch.setattr(occlusion_module, "COPY_BUDGET", 10 * image_bytes)
    counted = CountRows(tiny_cnn())
    Occlusion(counted).attribute(x, TARGET)
    windows = 15 * 15  # default window 2 px every 1 px on 16 px
    assert counted.rows[0] == 2  # the unoccluded scores
    assert max(counted.rows[1:]) == 10 and sum(counted.rows[1:]) == 2 * windows
    counted.rows.clear()
    Occlusion(counted).attribute(x, TARGET, perturbations_per_eval=4)
    assert max(counted.rows[1:]) == 8  # Captum's count: 4 windows over the 2 images


def test_default_window_is_an_eighth_of_the_image_every_sixteenth():
    assert default_window(64, 64) == ((8, 8), (4, 4))
    assert default_window(224, 224) == ((28, 28), (14, 14))
    assert default_window(8, 40) == ((1, 5), (1, 2))
    counted = CountRows(nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                     nn.Linear(3, 3)).double())
    costs = []
    for size in (64, 224):
        counted.rows.clear()
        Occlusion(counted).attribute(images(size, size, n=1), 0, internal_batch_size=256)
        costs.append(sum(counted.rows[1:]))
    assert costs == [225, 225]  # the same forwards at every size


def test_show_progress_draws_a_bar_over_the_occluded_images(capsys):
    Occlusion(tiny_cnn()).attribute(images(), TARGET, patch=4, stride=4, show_progress=True)
    assert "occlusion" in capsys.readouterr().err


# ------------------------------------------------------------------ Captum itself


@pytest.mark.parametrize("seed", [0, 1])
def test_equals_captum_occlusion_where_the_stride_lands_on_the_edge(seed):
    captum = pytest.importorskip("captum.attr")
    # float32: Captum sums float64 drops into a float32 map
    model, x = tiny_cnn(seed).float(), images(10, 12, n=3, seed=seed).float()
    target = [0, 2, 1]
    baseline = images(10, 12, n=1, seed=9).float()
    for window, stride, base in (((3, 4, 4), (3, 2, 2), 0.0), ((3, 2, 4), (3, 2, 4), 0.5),
                                 ((3, 4, 3), (3, 3, 3), baseline)):
        theirs = captum.Occlusion(model).attribute(x, sliding_window_shapes=window,
                                                   strides=stride, baselines=base,
                                                   target=target, perturbations_per_eval=4)
        ours = Occlusion(model).attribute(x, target, sliding_window_shapes=window,
                                          strides=stride, baselines=base)
        assert torch.allclose(ours, theirs, rtol=1e-5, atol=1e-9), (window, stride)


def test_differs_from_captum_only_where_its_last_window_is_cut_off():
    captum = pytest.importorskip("captum.attr")
    model, x = tiny_cnn().float(), images(8, 8).float()
    # windows of 3 every 2 on 8 px: Captum's last starts at 6 (2 px wide), ours at 5 (flush)
    theirs = captum.Occlusion(model).attribute(x, sliding_window_shapes=(3, 3, 3),
                                               strides=(3, 2, 2), target=TARGET)
    ours = Occlusion(model).attribute(x, TARGET, sliding_window_shapes=(3, 3, 3),
                                      strides=(3, 2, 2))
    assert torch.allclose(ours[..., :5, :5], theirs[..., :5, :5], rtol=1e-5, atol=1e-9)
    assert not torch.allclose(ours[..., 5:], theirs[..., 5:], rtol=1e-3)
