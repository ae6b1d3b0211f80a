"""The shipped SceneWorld generator against a quick version of its model-card bars."""

import pytest
import torch

from gandissect.models.registry import (
    load_classifier,
    load_generator,
    load_segmenter,
    shipped_path,
)

pytestmark = pytest.mark.skipif(
    not shipped_path("generator").exists(),
    reason="the SceneWorld generator is still training (models/sceneworld_generator.safetensors)",
)


def test_shipped_generator_layout():
    generator = load_generator("sceneworld")
    names = [name for name, _ in generator.named_children()]
    assert names[-1] == f"output_{generator.resolution}x{generator.resolution}"
    assert generator.resolution >= 64
    painting = dict(generator.named_children())["layer4"]
    assert painting.conv.out_channels >= 256
    with torch.no_grad():
        out = generator(torch.randn(2, generator.z_dim))
    assert out.shape == (2, 3, generator.resolution, generator.resolution)


def test_shipped_generator_quick_metrics():
    from gandissect.evaluate.generator import evaluate_generator

    torch.manual_seed(0)
    result = evaluate_generator(load_generator(), load_segmenter(), load_classifier(), n=300,
                                seed=3000, batch=100, progress=False)
    assert result["object_freq_tv"] <= 0.08
    assert result["scene_hist_tv"] <= 0.15
    assert result["precision"] >= 0.6 and result["recall"] >= 0.4
