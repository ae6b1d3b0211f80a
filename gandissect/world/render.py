"""Rendering SceneWorld images and their labels: one image, a batch, or many in parallel.

``render(seed, index, size)`` is a pure function: its randomness comes only from
``PCG64(SeedSequence([seed, index]))`` and its arithmetic is IEEE-exact, so the same call
gives the same bits on every machine. The layout does not depend on ``size``.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np

from gandissect.errors import UserError
from gandissect.world.canvas import Canvas
from gandissect.world.colors import color_labels
from gandissect.world.compose import Layout, compose
from gandissect.world.concepts import PIXEL_CATEGORIES, code_of, concepts

MIN_SIZE, MAX_SIZE = 16, 1024


@dataclass(frozen=True)
class WorldSample:
    """One rendered scene.

    ``image``: (H, W, 3) uint8. ``labels``: category -> (H, W) uint8 codes (0 = none) for
    object, part, material and color. ``scene``: the 1-based scene code. ``present``: the
    (category, name) pairs that occur (pixel categories: on any pixel; scene: the scene).
    """

    image: np.ndarray
    labels: dict[str, np.ndarray]
    scene: int
    present: tuple[tuple[str, str], ...]

    @property
    def scene_name(self) -> str:
        """The scene concept's name."""
        return concepts("scene")[self.scene - 1].name


def check_size(size: int) -> None:
    """Raise a UserError unless ``size`` is a supported square image size."""
    if not isinstance(size, (int, np.integer)) or not MIN_SIZE <= size <= MAX_SIZE:
        raise UserError(f"size must be an integer from {MIN_SIZE} to {MAX_SIZE}, got {size!r}")


def scene_rng(seed: int, index: int) -> np.random.Generator:
    """The random generator of scene ``index`` in world ``seed``."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, index])))


def _present(labels: dict[str, np.ndarray], scene: str) -> tuple[tuple[str, str], ...]:
    found = []
    for cat in PIXEL_CATEGORIES:
        counts = np.bincount(labels[cat].ravel(), minlength=256)
        found += [(cat, c.name) for c in concepts(cat) if counts[c.code]]
    return tuple(found) + (("scene", scene),)


def render(seed: int, index: int, size: int = 64, without: Iterable[str] = (),
           add: Iterable[str] = ()) -> WorldSample:
    """Render scene ``index`` of world ``seed`` as a ``size`` x ``size`` image with labels.

    ``without`` (object or part names) and ``add`` (``"tree"``, ``"dome"``) render the scene's
    counterfactual: the same scene with those props left out (what was behind is drawn) or
    added, its name recomputed from what remains (see ``gandissect.world.counterfactual``).
    """
    if without or add:
        from gandissect.world.counterfactual import render_counterfactual

        return render_counterfactual(seed, index, size, without, add)
    check_size(size)
    return paint(compose(scene_rng(seed, index), 1.0 / size), size)


def paint(layout: Layout, size: int) -> WorldSample:
    """Paint a composed scene and label it."""
    canvas = Canvas(size)
    canvas.paint_all(layout.layers)
    image = canvas.to_uint8(layout.gain)
    labels = dict(canvas.labels)
    labels["color"] = color_labels(image)
    return WorldSample(image, labels, code_of(layout.scene, "scene"), _present(labels,
                                                                                layout.scene))


def render_batch(seed: int, indices, size: int = 64) -> dict[str, np.ndarray]:
    """Render several scenes in this process; returns stacked arrays.

    Keys: ``image`` (N, H, W, 3) uint8; ``object``, ``part``, ``material``, ``color``
    (N, H, W) uint8; ``scene`` (N,) int64; ``index`` (N,) int64.
    """
    check_size(size)
    indices = [int(i) for i in indices]
    out = {"image": np.zeros((len(indices), size, size, 3), dtype=np.uint8)}
    for cat in PIXEL_CATEGORIES:
        out[cat] = np.zeros((len(indices), size, size), dtype=np.uint8)
    out["scene"] = np.zeros(len(indices), dtype=np.int64)
    out["index"] = np.asarray(indices, dtype=np.int64)
    for k, index in enumerate(indices):
        sample = render(seed, index, size)
        out["image"][k] = sample.image
        for cat in PIXEL_CATEGORIES:
            out[cat][k] = sample.labels[cat]
        out["scene"][k] = sample.scene
    return out


def _render_chunk(job: tuple[int, list[int], int]) -> dict[str, np.ndarray]:
    seed, indices, size = job
    return render_batch(seed, indices, size)


def render_many(seed: int, indices, size: int = 64, workers: int = 2,
                chunk: int = 128) -> dict[str, np.ndarray]:
    """Render many scenes with a pool of ``workers`` processes (same result as render_batch).

    Work is split into chunks of ``chunk`` scenes; results come back in ``indices`` order.
    """
    check_size(size)
    indices = [int(i) for i in indices]
    if workers <= 1 or len(indices) <= chunk:
        return render_batch(seed, indices, size)
    jobs = [(seed, indices[i:i + chunk], size) for i in range(0, len(indices), chunk)]
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method)) as pool:
        parts = list(pool.map(_render_chunk, jobs))
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
