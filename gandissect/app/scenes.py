"""The generator side of the app: samples, edits, brushes and units, as calls into gandissect.

One ``SceneModels`` serves every session: the generator, its segmenter, the dissection of the
painting layer and the caches (brush rankings, learned causal weights). Every model call holds
``lock``, because tracing and editing put hooks on the shared modules: two sessions must never
run the generator at the same time.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from gandissect.ace import (
    Drawing,
    cached_ace_weights,
    cached_drawing,
    iou_scores,
    ranked_units,
    units_by_ace,
    units_for_drawing,
)
from gandissect.brushes import BRUSH_EXCLUDED
from gandissect.causal import ConceptRef
from gandissect.dissect import Dissection, LayerDissection
from gandissect.dissect.counts import best_in_category, count_title, labelled
from gandissect.dissect.latents import sample_latents
from gandissect.hooks import Trace
from gandissect.intervene import Stroke, pool_mask, render_edited, stroke_edit
from gandissect.report.images import generator_samples, top_image_strips
from gandissect.torchutil import model_device

__all__ = ["Brush", "SceneModels", "MAX_SEED", "BRUSH_EXCLUDED"]

MAX_SEED = 2**31 - 1  # scene numbers: 0 .. MAX_SEED
GANPAINT_BRUSHES = ("tree", "grass", "door", "sky", "cloud", "brick", "dome")


@dataclass(frozen=True)
class Brush:
    """A concept one can paint: ``key`` is ``"category/name"``; ``units`` how many units of the
    layer have it as their best concept of its category, ``labelled`` how many interpretable
    units it labels (``gandissect.dissect.counts``)."""

    key: str
    category: str
    name: str
    units: int
    labelled: int = 0

    @property
    def title(self) -> str:
        return count_title(self.category, self.name, self.labelled, self.units)


class SceneModels:
    """A generator, its segmenter and the dissection of its painting ``layer``."""

    def __init__(self, generator: nn.Module, segmenter: Any, dissection: Dissection, layer: str,
                 source: str, cache_dir: str | Path, min_brush_units: int = 1,
                 dissection_dir: str | Path | None = None) -> None:
        self.generator, self.segmenter = generator, segmenter
        self.dissection, self.layer = dissection, layer
        self.source = source  # where the dissection came from, for the page
        self.cache_dir = Path(cache_dir)
        self.dissection_dir = Path(dissection_dir) if dissection_dir is not None else None
        self.lock = threading.RLock()
        self.units_dissection: LayerDissection = dissection.layer(layer)
        self.n_units, *cells = self.units_dissection.shape
        self.cells: tuple[int, int] = (int(cells[0]), int(cells[1]))
        self.insert_values: torch.Tensor = self.units_dissection.stats["insertion"]
        self.z_dim: int = int(generator.z_dim)
        self.brushes = self._brushes(min_brush_units)
        self._rankings: dict[str, tuple[list[int], str]] = {}
        self._weights: dict[str, torch.Tensor | None] = {}
        self._drawings: dict[str, Drawing | None] = {}
        self._device = model_device(generator)
        self.resolution: int = int(getattr(generator, "resolution", 0) or 0) or int(
            self.render(self.latent(0)).shape[-1])

    # ------------------------------------------------------------------ concepts and brushes

    def _brushes(self, min_units: int) -> list[Brush]:
        counts = best_in_category(self.dissection, self.layer)
        by_label = labelled(self.units_dissection)
        brushes = [Brush(f"{c}/{n}", c, n, k, by_label[(c, n)]) for (c, n), k in counts.items()
                   if k >= min_units and c not in BRUSH_EXCLUDED]
        # GANPaint's brushes first, in its order (tree is the page's default), then the others
        first = {name: i for i, name in enumerate(GANPAINT_BRUSHES)}
        return sorted(brushes, key=lambda b: (first.get(b.name, len(first)), -b.units, b.name))

    def concept(self, key: str) -> ConceptRef:
        """The segmenter's concept for a ``"category/name"`` key."""
        category, _, name = key.partition("/")
        return ConceptRef.find(self.segmenter, name, category or None)

    def ace_dir(self) -> Path:
        """Where causal weights learned here are cached."""
        return self.cache_dir / "ace"

    def ace_dirs(self) -> list[Path]:
        """Where learned causal weights are looked for: the cache, then ``ace/`` beside the
        dissection (the shipped generator's brushes come with theirs). A file there is used
        only when its key matches these very models, dissection and settings."""
        shipped = [self.dissection_dir / "ace"] if self.dissection_dir is not None else []
        return [self.ace_dir(), *shipped]

    def ranking(self, key: str) -> tuple[list[int], str]:
        """All units for the concept, best first, and ``"ace+swaps"``, ``"ace"`` or ``"iou"``
        (see ``gandissect.ace.ranked_units``); cached until causal weights are learned."""
        if key not in self._rankings:
            with self.lock:
                self._rankings[key] = ranked_units(self.generator, self.segmenter,
                                                   self.dissection, self.layer,
                                                   self.concept(key), self.ace_dirs())
        return self._rankings[key]

    def brush_units(self, key: str, k: int) -> tuple[list[int], str]:
        """The top ``k`` units of a brush that removes, and how they were ranked."""
        ranking, method = self.ranking(key)
        return ranking[:k], method

    def drawing(self, key: str) -> Drawing | None:
        """The concept's learned drawing edit (``gandissect.ace.Drawing``), where it has been
        learned (here, or shipped beside the dissection); None otherwise."""
        if key not in self._drawings:
            with self.lock:
                self._drawings[key] = cached_drawing(self.generator, self.segmenter,
                                                     self.dissection, self.layer,
                                                     self.concept(key), self.ace_dirs())
        return self._drawings[key]

    def draw_units(self, key: str, k: int) -> tuple[list[int], str, Drawing | None]:
        """What a brush that draws edits: where a drawing was learned, every unit it weighs,
        most weighted first, ``"draw"`` and the ``Drawing`` (its weights and values; ``k``
        does not apply); else the top ``k`` units of the removal ranking, how they were
        ranked, and None (each unit writes its 0.99 quantile)."""
        learned = self.drawing(key)
        if learned is None:
            return (*self.brush_units(key, k), None)
        return learned.units, "draw", learned

    def learn_drawing(self, key: str, progress: bool = True) -> Drawing:
        """Learn which units draw the concept where it belongs (``units_for_drawing``), or
        read them back; its brush draws with them from the next stroke on."""
        with self.lock:
            learned = self.drawing(key)
            if learned is None:
                learned = units_for_drawing(self.generator, self.segmenter, self.dissection,
                                            self.layer, self.concept(key),
                                            cache_dir=self.ace_dir(), progress=progress)
                self._drawings[key] = learned
        return learned

    def causal_weights(self, key: str) -> torch.Tensor | None:
        """The concept's learned causal weights per unit, if they have been learned."""
        if key not in self._weights:
            with self.lock:
                self._weights[key] = cached_ace_weights(self.generator, self.segmenter,
                                                        self.dissection, self.layer,
                                                        self.concept(key), self.ace_dirs())
        return self._weights[key]

    def effects(self, keys) -> dict[str, torch.Tensor | None]:
        """The learned causal weights of each concept key, None where not learned."""
        return {key: self.causal_weights(key) for key in dict.fromkeys(keys)}

    def learn_causal_weights(self, key: str, progress: bool = True) -> torch.Tensor:
        """Learn the concept's causal weights (``units_by_ace``), or read them back where they
        are cached or shipped; brushes of this concept rank by them from now on."""
        with self.lock:
            weights = self.causal_weights(key)
            if weights is None:
                _, weights = units_by_ace(self.generator, self.segmenter, self.dissection,
                                          self.layer, self.concept(key),
                                          cache_dir=self.ace_dir(), progress=progress)
                self._weights[key] = weights
            self._rankings.pop(key, None)  # ranked by these weights from the next stroke on
        return weights

    def iou_with(self, key: str) -> torch.Tensor:
        """``(U,)`` IoU of every unit with the concept."""
        return iou_scores(self.dissection, self.layer, self.concept(key))

    # ------------------------------------------------------------------ samples and edits

    def latent(self, seed: int) -> torch.Tensor:
        """Scene ``seed``'s latent ``(1, z_dim)``: the same on every machine."""
        return sample_latents(self.generator, seed, [0])

    def layer_cells(self, mask: np.ndarray) -> torch.Tensor:
        """A painted ``(H, W)`` mask at any multiple of the layer's size, max-pooled exactly to
        the layer's ``(h, w)`` cells (GANPaint's rule, ``gandissect.intervene.pool_mask``)."""
        return pool_mask(torch.from_numpy(np.asarray(mask, dtype=np.float32)), self.cells)

    def render(self, z: torch.Tensor, strokes: Sequence[Stroke] = (),
               generator: nn.Module | None = None) -> torch.Tensor:
        """The ``(1, 3, H, W)`` image of ``z`` with ``strokes`` applied at the layer (by
        ``generator``: an inverted image's, else the shared one)."""
        generator = self.generator if generator is None else generator
        with self.lock:
            if not strokes:
                with torch.no_grad():
                    return generator(z.to(self._device)).cpu()
            return render_edited(generator, z, self.layer, list(strokes),
                                 self.insert_values).cpu()

    def segment(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """The segmenter's label codes of ``images``."""
        with self.lock, torch.no_grad():
            return {c: v.cpu() for c, v in self.segmenter.segment(images.to(self._device)).items()}

    def activation(self, z: torch.Tensor, unit: int) -> torch.Tensor:
        """Unit ``unit``'s ``(h, w)`` activation map on ``z``'s scene."""
        return self.activations(z)[unit]

    def activations(self, z: torch.Tensor, strokes: Sequence[Stroke] = (),
                    generator: nn.Module | None = None) -> torch.Tensor:
        """Every unit's ``(U, h, w)`` activation map on ``z``'s scene, ``strokes`` applied (by
        ``generator``: an inverted image's, else the shared one)."""
        generator = self.generator if generator is None else generator
        edit = stroke_edit(list(strokes), self.insert_values) if strokes else None
        with self.lock, torch.no_grad(), Trace(generator, self.layer, stop=True,
                                               edit=edit) as trace:
            generator(z.to(self._device))
        return trace.output[0].cpu()

    def top_images(self, unit: int, count: int = 6) -> np.ndarray:
        """Unit ``unit``'s top ``count`` dissection samples side by side, its mask outlined."""
        settings = self.dissection.settings
        samples = generator_samples(self.generator, settings["seed"], settings["z_dim"])
        only = LayerDissection(self.layer, self.units_dissection.shape,
                               [self.units_dissection.units[unit]])
        with self.lock:
            return top_image_strips(samples, only, count)[unit]
