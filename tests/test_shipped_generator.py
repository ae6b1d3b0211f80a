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
    reason="the shipped SceneWorld generator is missing (models/sceneworld_generator.safetensors)",
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
    """A regression guard on 300 samples (the model card measures 5,000, where every bar holds:
    object TV 0.021, scene TV 0.037, precision 0.778 / recall 0.684, brick 1.20x). Here, on
    300: object TV 0.043, scene TV 0.080, precision 0.797 / recall 0.750, every concept ratio
    within 0.93-1.31. The guards sit above today's figures so that a retrained generator that
    is worse fails; brick, the bar the weights shipped before missed (2.34x here), is held to
    1.5x like the others."""
    from gandissect.evaluate.generator import evaluate_generator

    torch.manual_seed(0)
    result = evaluate_generator(load_generator(), load_segmenter(), load_classifier(), n=300,
                                seed=3000, batch=100, progress=False)
    assert result["object_freq_tv"] <= 0.06
    assert result["scene_hist_tv"] <= 0.15
    assert result["precision"] >= 0.7 and result["recall"] >= 0.5
    ratios = result["concept_freq_ratio"]
    for concept in ("tree", "grass", "door", "sky", "cloud", "dome", "brick"):
        assert 1 / 1.5 <= ratios[concept] <= 1.5, (concept, ratios[concept])


def test_the_shipped_brushes_find_their_causal_weights_refined_sets_and_drawings():
    """The files in ``sceneworld_generator_dissection/ace/`` are found only under the key of
    these very models, dissection and settings: a change to any of them (or to the swap or
    drawing settings) must come with new files, or the brushes fall back silently."""
    from gandissect.ace import cached_drawing, ranked_units
    from gandissect.causal import ConceptRef
    from gandissect.dissect import load_dissection
    from gandissect.models.registry import shipped_dissection_dir

    generator, segmenter = load_generator(), load_segmenter()
    folder = shipped_dissection_dir()
    dissection = load_dissection(folder, stats=True)
    for name in ("tree", "grass", "door", "sky", "cloud", "brick", "dome"):
        ranking, method = ranked_units(generator, segmenter, dissection, "layer4",
                                       ConceptRef.find(segmenter, name), folder / "ace")
        assert method == "ace+swaps", name
        assert sorted(ranking) == list(range(generator.layer4.conv.out_channels))
        drawing = cached_drawing(generator, segmenter, dissection, "layer4",
                                 ConceptRef.find(segmenter, name), [folder / "ace"])
        assert drawing is not None, name
        assert drawing.units and drawing.validation_pixels >= 8, name
