"""What one browser session keeps (in ``gr.State``): its scene, its strokes, its selections.

The scene's latent lives here, never in the page: the canvas shows pictures made from it, and
the session always knows what it is editing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from gandissect.intervene import Stroke

__all__ = ["PaintStroke", "Session"]


@dataclass
class PaintStroke:
    """One applied brush stroke: the concept (``"category/name"``), the mode (``"remove"`` or
    ``"draw"``), the painted layer cells ``(h, w)``, the units it edited and how they were
    ranked, its strength, and, for a learned drawing, each unit's weight and the value it
    writes (None: every unit fully, writing its quantile)."""

    concept: str
    mode: str
    cells: torch.Tensor
    units: list[int]
    ranking: str
    strength: float
    values: torch.Tensor | None = None
    weights: torch.Tensor | None = None

    def stroke(self) -> Stroke:
        """The library's edit for this stroke."""
        return Stroke(self.units, "ablate" if self.mode == "remove" else "insert", self.cells,
                      self.strength, self.values, self.weights)


@dataclass
class Session:
    """A session's scene (``seed``, latent ``z`` and ``original``, the picture as generated:
    ``(H, W, 3)`` uint8, rendered once per scene), its strokes in order, the version of the
    canvas last sent (each reply is a new one), the unit selected in the Units tab and the
    units it ablates, and the Network Dissection it is browsing.

    A real image being painted has its ``inversion`` (``gandissect.invert.Inversion``; ``z``
    is its latent, ``original`` the image itself, ``seed`` None) and its ``image_name``."""

    seed: int | None = None
    inversion: Any = None  # gandissect.invert.Inversion while a real image is painted
    image_name: str = ""
    z: torch.Tensor | None = None
    original: np.ndarray | None = None
    strokes: list[PaintStroke] = field(default_factory=list)
    canvas_version: int = 0
    unit: int | None = None
    ablated: list[int] = field(default_factory=list)
    netdissect: tuple | None = None  # dissection_key of the result being browsed
    classifier_unit: int | None = None
