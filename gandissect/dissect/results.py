"""What a dissection returns, and how it is written to and read from a folder.

``DIR/dissect.json``::

    {"settings": {...},
     "layers": [{"layer": "layer4", "shape": [U, h, w],
                 "units": [{"unit", "label", "category", "iou", "threshold", "concepts",
                            "top_images", "interpretable", "quantiles", "iqr", "formula",
                            "formula_iou", ...}, ...]}]}

``DIR/stats_<layer>.pt``: the layer's statistics' states (the quantile sketch, top-k, the IoU
tally or threshold sweep, the mean activation map), loadable with ``load_layer_stats``; the
intervention code takes its insertion values (each unit's 0.99 quantile) from there.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gandissect.errors import UserError, caution
from gandissect.fileio import DamagedFile, load_state, save_state, write_json

__all__ = [
    "UnitScore",
    "LayerDissection",
    "Dissection",
    "save_dissection",
    "load_dissection",
    "load_layer_stats",
]


@dataclass
class UnitScore:
    """One unit's best concept and the evidence for it."""

    unit: int
    label: str  # best concept by IoU (whether or not the unit is interpretable)
    category: str
    iou: float
    threshold: float  # the activation level above which the unit counts as active
    concepts: list[list[Any]]  # [[name, iou], ...] best first (the top few)
    top_images: list[int]  # sample ids, highest spatial-max activation first
    interpretable: bool
    quantiles: dict[str, float] = field(default_factory=dict)
    top_scores: list[float] = field(default_factory=list)
    iqr: float | None = None  # adaptive mode only
    formula: str | None = None  # netdissect --formulas: e.g. "(tree OR grass) AND NOT sky"
    formula_iou: float | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for optional in ("iqr", "formula", "formula_iou"):
            if data[optional] is None:
                del data[optional]
        return data


@dataclass
class LayerDissection:
    """The units of one layer, plus the statistics' states they were computed from."""

    layer: str
    shape: tuple[int, int, int]  # (units, height, width) of the layer's output
    units: list[UnitScore]
    stats: dict[str, Any] = field(default_factory=dict, repr=False)  # state dicts (not JSON)

    def to_json(self) -> dict[str, Any]:
        return {"layer": self.layer, "shape": list(self.shape),
                "units": [u.to_json() for u in self.units]}

    def interpretable(self) -> list[UnitScore]:
        """The units that count as detectors of their label."""
        return [u for u in self.units if u.interpretable]


@dataclass
class Dissection:
    """A generator's units scored against a segmenter's concepts, layer by layer."""

    settings: dict[str, Any]
    layers: list[LayerDissection]

    def layer(self, name: str) -> LayerDissection:
        """The results of layer ``name``."""
        for layer in self.layers:
            if layer.layer == name:
                return layer
        raise KeyError(f"no layer {name!r} in this dissection; it has "
                       f"{[layer.layer for layer in self.layers]}")

    @property
    def quantile_over(self) -> str:
        """Where the threshold quantile was taken, ``"layer"`` or ``"image"`` (recorded as
        ``quantile_resolution``; files written before the choice existed used ``"layer"``)."""
        return self.settings.get("quantile_resolution", "layer")

    @property
    def warnings(self) -> list[str]:
        """What the run warned about (an out-of-domain segmenter, a small probe set), one line
        each; empty for files written before warnings were recorded."""
        return list(self.settings.get("warnings", []))

    def to_json(self) -> dict[str, Any]:
        return {"settings": self.settings, "layers": [layer.to_json() for layer in self.layers]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Dissection:
        layers = [
            LayerDissection(entry["layer"], tuple(entry.get("shape", ())),
                            [UnitScore(**unit) for unit in entry["units"]])
            for entry in data["layers"]
        ]
        return cls(data["settings"], layers)


def _stats_path(folder: Path, layer: str) -> Path:
    return folder / f"stats_{layer}.pt"


def save_dissection(dissection: Dissection, folder: str | Path) -> Path:
    """Write ``dissect.json`` and one ``stats_<layer>.pt`` per layer (atomically)."""
    folder = Path(folder)
    for layer in dissection.layers:
        if layer.stats:
            save_state(_stats_path(folder, layer.layer),
                       {"settings": dissection.settings, "layer": layer.layer, **layer.stats})
    path = folder / "dissect.json"
    write_json(path, dissection.to_json())
    return path


def load_dissection(folder: str | Path, stats: bool = False) -> Dissection:
    """Read a dissection written by ``save_dissection`` (with the statistics if ``stats``).

    The warnings its run recorded (an out-of-domain segmenter, too few samples) are raised
    again as ``Caution`` warnings: whatever uses the dissection inherits them."""
    folder = Path(folder)
    path = folder / "dissect.json"
    if not path.is_file():
        raise UserError(f"no dissect.json in {folder}; run `gandissect dissect` first")
    try:
        dissection = Dissection.from_json(json.loads(path.read_text()))
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as error:
        raise UserError(f"{path} is damaged ({type(error).__name__}: {error}); run "
                        "`gandissect dissect` again") from None
    if stats:
        for layer in dissection.layers:
            layer.stats = load_layer_stats(folder, layer.layer)
    for line in dissection.warnings:
        caution(line)
    return dissection


def load_layer_stats(folder: str | Path, layer: str) -> dict[str, Any]:
    """The statistics' states saved for ``layer``: ``quantile``, ``top``, ``mean_map``, and
    ``iou`` (fixed threshold) or ``sweep`` and ``selection`` (adaptive threshold)."""
    path = _stats_path(Path(folder), layer)
    if not path.is_file():
        raise UserError(f"no statistics for layer {layer!r} at {path}")
    try:
        return load_state(path)
    except DamagedFile as error:
        raise UserError(f"{error}; run `gandissect dissect` again") from None
