"""SceneWorld: a procedural outdoor-scene renderer with pixel-exact concept labels.

Deterministic: ``render(seed, index, size)`` gives the same bits on every machine. Used to train
segmenters, GANs and scene classifiers, and as a Broden-style probe set for dissection.
"""

from gandissect.world.concepts import CATEGORIES, CONCEPTS, Concept, concept, concepts
from gandissect.world.render import WorldSample, render, render_batch, render_many

__all__ = [
    "CATEGORIES", "CONCEPTS", "Concept", "concept", "concepts",
    "WorldSample", "render", "render_batch", "render_many",
    "SceneWorld", "SceneWorldStream", "export_broden", "BrodenDataset", "sample_grid",
    "FACTORS", "scene_factors", "render_variant", "can_add",
]

_LAZY = {
    "SceneWorld": "gandissect.world.dataset",
    "SceneWorldStream": "gandissect.world.dataset",
    "export_broden": "gandissect.world.broden",
    "BrodenDataset": "gandissect.world.broden",
    "sample_grid": "gandissect.world.grid",
    "FACTORS": "gandissect.world.factors",
    "scene_factors": "gandissect.world.factors",
    "render_variant": "gandissect.world.factors",
    "can_add": "gandissect.world.counterfactual",
}


def __getattr__(name: str):
    # torch and PIL load only when their parts are used, so worker processes start fast.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'gandissect.world' has no attribute {name!r}")
