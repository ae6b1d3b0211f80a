"""Ranking a concept's units for a painting brush: by learned causal effect once its weights
are cached, by IoU before (``gandissect.ace.ranked_units``), without ever training."""

import pytest
import torch
from conftest import TREE_UNITS, toy_generator, toy_segmenter

from gandissect.ace import (
    any_cached_ace,
    cached_ace_weights,
    cached_swaps,
    ranked_units,
    units_by_ace,
    units_by_iou,
    units_by_swaps,
)
from gandissect.causal import ConceptRef
from gandissect.dissect import dissect


@pytest.fixture(scope="module")
def toy():
    generator, segmenter = toy_generator(), toy_segmenter()
    result = dissect(generator, segmenter, ["layer4"], n=96, seed=1, batch=32, progress=False)
    return generator, segmenter, result, ConceptRef.find(segmenter, "tree")


def test_iou_ranking_until_causal_weights_are_learned(toy, tmp_path):
    generator, segmenter, result, tree = toy
    assert not any_cached_ace(tmp_path, "layer4", tree)
    assert cached_ace_weights(generator, segmenter, result, "layer4", tree, tmp_path) is None
    ranking, method = ranked_units(generator, segmenter, result, "layer4", tree, tmp_path)
    assert method == "iou" and ranking == units_by_iou(result, "layer4", tree)
    assert set(ranking[:len(TREE_UNITS)]) == set(TREE_UNITS)
    assert not list(tmp_path.iterdir())  # asking trains nothing


def test_ace_ranking_once_learned_and_only_for_the_same_settings(toy, tmp_path):
    generator, segmenter, result, tree = toy
    learned, weights = units_by_ace(generator, segmenter, result, "layer4", tree, n=32,
                                    epochs=2, cache_dir=tmp_path, progress=False)
    assert any_cached_ace(tmp_path, "layer4", tree)
    ranking, method = ranked_units(generator, segmenter, result, "layer4", tree, tmp_path,
                                   n=32, epochs=2)
    assert method == "ace" and ranking == learned
    assert torch.equal(cached_ace_weights(generator, segmenter, result, "layer4", tree,
                                          tmp_path, n=32, epochs=2), weights)
    # other settings (here the default 200 samples) have no weights yet: IoU again
    assert ranked_units(generator, segmenter, result, "layer4", tree, tmp_path)[1] == "iou"
    grass = ConceptRef.find(segmenter, "grass")
    assert not any_cached_ace(tmp_path, "layer4", grass)
    assert ranked_units(generator, segmenter, result, "layer4", grass, tmp_path)[1] == "iou"


def test_weights_are_found_in_the_first_folder_that_has_them_and_only_for_these_models(
        toy, tmp_path):
    """The app looks in its cache, then beside the dissection (where shipped weights lie)."""
    generator, segmenter, result, tree = toy
    cache, shipped = tmp_path / "cache", tmp_path / "shipped"
    cache.mkdir()
    learned, weights = units_by_ace(generator, segmenter, result, "layer4", tree, n=32,
                                    epochs=2, cache_dir=shipped, progress=False)
    folders = [cache, shipped]
    assert cached_ace_weights(generator, segmenter, result, "layer4", tree, cache,
                              n=32, epochs=2) is None
    assert torch.equal(cached_ace_weights(generator, segmenter, result, "layer4", tree,
                                          folders, n=32, epochs=2), weights)
    assert ranked_units(generator, segmenter, result, "layer4", tree, folders,
                        n=32, epochs=2) == (learned, "ace")
    # weights learned for other models (here: a generator with one weight changed) are not used
    other = toy_generator()
    with torch.no_grad():
        next(other.parameters()).add_(1.0)
    assert cached_ace_weights(other, segmenter, result, "layer4", tree, folders,
                              n=32, epochs=2) is None
    assert ranked_units(other, segmenter, result, "layer4", tree, folders,
                        n=32, epochs=2)[1] == "iou"


def test_a_cached_refined_set_leads_the_ace_ranking(toy, tmp_path):
    """Once ``units_by_swaps`` has refined the ACE top k, a brush's ranking is that set (in ACE
    order), then every other unit (in ACE order)."""
    generator, segmenter, result, tree = toy
    learned, _ = units_by_ace(generator, segmenter, result, "layer4", tree, n=32, epochs=2,
                              cache_dir=tmp_path, progress=False)
    assert cached_swaps(generator, segmenter, result, "layer4", tree, tmp_path, k=6, n=32,
                        epochs=2) is None
    refined = units_by_swaps(generator, segmenter, result, "layer4", tree, 6, n=32, epochs=2,
                             cache_dir=tmp_path, progress=False)["units"]
    assert cached_swaps(generator, segmenter, result, "layer4", tree, tmp_path, k=6, n=32,
                        epochs=2) == refined
    ranking, method = ranked_units(generator, segmenter, result, "layer4", tree, tmp_path,
                                   n=32, epochs=2, refined_k=6)
    assert method == "ace+swaps" and sorted(ranking) == sorted(learned)
    assert set(ranking[:6]) == set(refined)
    assert ranking == sorted(ranking[:6], key=learned.index) + [
        u for u in learned if u not in refined]
    # a refinement of another size is not this one: the plain ACE ranking
    assert ranked_units(generator, segmenter, result, "layer4", tree, tmp_path,
                        n=32, epochs=2, refined_k=5) == (learned, "ace")


def test_best_in_category_counts_each_units_best_concept_of_every_category(toy):
    """Restated unit by unit: per category, the concept with the highest IoU (IoU > 0)."""
    from gandissect.dissect.counts import best_in_category
    from gandissect.stats import IoUTally

    generator, segmenter, result, tree = toy
    stats = result.layer("layer4").stats
    tally = IoUTally([0])
    tally.load_state_dict(stats["iou"])
    iou = tally.result().tolist()
    categories = result.settings["categories"]
    owner = stats["concept_category"].tolist()
    expected = {}
    for unit_ious in iou:
        for c, category in enumerate(categories):
            best_name, best = None, 0.0
            for column, name in enumerate(stats["concepts"]):
                if owner[column] == c and unit_ious[column] > best:
                    best_name, best = name, unit_ious[column]
            if best_name is not None:
                expected[(category, best_name)] = expected.get((category, best_name), 0) + 1
    counts = best_in_category(result, "layer4")
    assert dict(counts) == expected
    assert counts[("object", "tree")] >= len(TREE_UNITS)
