"""The loop over samples: batches in a fixed order, checkpoints, resumption.

A *pass* runs a set of per-layer accumulators over one latent sample. Batches always cover
``[0, batch), [batch, 2 batch), ...`` so every run sees the same batches; each layer records
how many samples it has taken in, and a resumed pass starts at the first batch some layer
lacks. Statistics are saved atomically every ``checkpoint_seconds``, with the label codes
flushed first, so a run killed at any point continues to bit-identical counts.

The first pass over a sample runs the whole generator and the segmenter (each image is
segmented once; its codes go to the sample's ``LabelStore``); later passes stop the generator
at the deepest requested layer and read the codes back.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from gandissect.dissect.labels import ConceptTable, LabelStore
from gandissect.dissect.latents import latent_law, latents
from gandissect.dissect.passes import Accumulator
from gandissect.fileio import DamagedFile, load_state, save_state
from gandissect.hooks import TraceDict
from gandissect.torchutil import model_device

__all__ = ["Sample", "LayerCache", "Runner"]


@dataclass
class Sample:
    """This process's share of a latent sample of ``seed``: the sample ids ``ids`` (all of
    ``0 .. n-1`` for a single process, see ``shard``), and the store of their label codes,
    indexed by position in ``ids``."""

    seed: int
    ids: torch.Tensor
    labels: LabelStore

    @property
    def n(self) -> int:
        return len(self.ids)


@dataclass
class LayerCache:
    """One layer's progress and statistics per pass, in ``folder/state.pt``."""

    folder: Path
    key: dict[str, Any]
    passes: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> {done, state}

    @classmethod
    def open(cls, folder: Path, key: dict[str, Any]) -> LayerCache:
        path = folder / "state.pt"
        try:
            saved = load_state(path) if path.is_file() else None
        except DamagedFile:
            saved = None  # a cache: recomputed
        if isinstance(saved, dict) and saved.get("key") == key:
            return cls(folder, key, saved["passes"])
        return cls(folder, key)

    def done(self, name: str) -> int:
        return self.passes.get(name, {}).get("done", 0)

    def state(self, name: str) -> dict[str, Any] | None:
        return self.passes.get(name, {}).get("state")

    def record(self, name: str, done: int, state: dict[str, Any]) -> None:
        self.passes[name] = {"done": done, "state": state}

    def save(self) -> None:
        save_state(self.folder / "state.pt", {"key": self.key, "passes": self.passes})


class Runner:
    """Runs passes of a generator (and, where labels are missing, a segmenter) over samples."""

    def __init__(self, generator: nn.Module, segmenter: Any, table: ConceptTable, z_dim: int,
                 batch: int, progress: bool = True, checkpoint_seconds: float = 30.0,
                 on_batch: Callable[[str, int], None] | None = None) -> None:
        self.generator, self.segmenter, self.table = generator, segmenter, table
        self.law = latent_law(generator)
        self.z_dim, self.batch = z_dim, batch
        self.progress, self.checkpoint_seconds, self.on_batch = (
            progress, checkpoint_seconds, on_batch)
        self.device = model_device(generator)

    def _forward(self, z: torch.Tensor, layers: list[str], segment: bool):
        """Traced activations of ``layers`` and, if ``segment``, the images' label codes."""
        if not segment:
            with TraceDict(self.generator, layers, stop=True) as traces:
                self.generator(z)
            return {name: trace.output for name, trace in traces.items()}, None
        if layers:
            with TraceDict(self.generator, layers) as traces:
                images = self.generator(z)
            acts = {name: trace.output for name, trace in traces.items()}
        else:
            images, acts = self.generator(z), {}
        return acts, self.table.stack(self.segmenter.segment(images))

    def run(self, name: str, sample: Sample, caches: dict[str, LayerCache],
            accumulators: dict[str, Accumulator]) -> None:
        """Run pass ``name`` for the layers in ``accumulators`` (states already loaded).

        Progress (``done``) counts positions in ``sample.ids``: batch ``[first, last)`` holds
        the samples ``sample.ids[first:last]``."""
        n, store = sample.n, sample.labels
        needs_labels = any(a.needs_labels for a in accumulators.values())
        if needs_labels and store.done < n:
            raise RuntimeError(f"pass {name!r} needs the labels of all {n} samples first")
        done = {layer: caches[layer].done(name) for layer in accumulators}
        start = min([*done.values(), store.done, n])
        start -= start % self.batch
        bar = tqdm(total=n, initial=start, unit="img", disable=not self.progress,
                   desc=f"dissect {name}")
        last_save = time.monotonic()

        def checkpoint() -> None:
            store.commit(labelled)
            for layer, accumulator in accumulators.items():
                caches[layer].record(name, done[layer], accumulator.state_dict())
                caches[layer].save()

        labelled = store.done
        with torch.no_grad():
            for first in range(start, n, self.batch):
                last = min(first + self.batch, n)
                layers = [layer for layer in accumulators if done[layer] <= first]
                segment = labelled < last  # labels of this batch not stored yet
                if layers or segment:
                    ids = sample.ids[first:last]
                    z = latents(sample.seed, ids, self.z_dim, self.law).to(self.device)
                    acts, codes = self._forward(z, layers, segment)
                    if segment:
                        store.write(first, codes)
                        labelled = last
                    elif needs_labels:
                        codes = store.read(first, last)
                    for layer in layers:
                        accumulators[layer].add(acts[layer], ids.to(self.device), codes)
                        done[layer] = last
                bar.update(last - first)
                if time.monotonic() - last_save >= self.checkpoint_seconds:
                    checkpoint()
                    last_save = time.monotonic()
                if self.on_batch is not None:
                    self.on_batch(name, last)
        checkpoint()
        bar.close()
