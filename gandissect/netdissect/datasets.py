"""Probe sets by name, as the command line and the app spell them: ``sceneworld`` (a held-out
SceneWorld seed, exact labels), ``broden:DIR`` (a Broden directory), ``folder:DIR`` (your
own images, labelled by a segmenter) and ``masks:DIR`` (your own images with your own label
PNGs, ``gandissect.netdissect.masks``)."""

from __future__ import annotations

from gandissect.errors import UserError
from gandissect.netdissect.folder import FolderProbe
from gandissect.netdissect.probe import BrodenProbe, ProbeSet, SceneWorldProbe

__all__ = ["DATASETS", "resolve_probe"]

DATASETS = "sceneworld, broden:DIR, folder:DIR or masks:DIR"


def resolve_probe(spec: str, n: int | None, seed: int, size: int | None,
                  segmenter: str | None = None, device: str = "cpu",
                  input_size: int | None = None, segmenter_weights: str | None = None
                  ) -> ProbeSet:
    """The probe set a ``--dataset`` spelling names: ``sceneworld`` (``n`` scenes of world
    ``seed``, default 2000), ``broden:DIR``, ``folder:DIR`` (images labelled by
    ``segmenter``, a model spelling, default the shipped one, with ``segmenter_weights`` when
    it takes them) or ``masks:DIR`` (labelled by hand); scenes are rendered and folders resized
    at ``size``, else at the classifier's ``input_size`` (a ViT takes no other), else 64."""
    if (segmenter is not None or segmenter_weights is not None) \
            and not spec.startswith("folder:"):
        raise UserError("--segmenter labels a folder:DIR dataset; SceneWorld, Broden and "
                        "masks:DIR bring their own labels")
    if spec == "sceneworld":
        from gandissect.evaluate.metrics import check_held_out

        check_held_out(seed)
        return SceneWorldProbe(seed, 2000 if n is None else n, size or input_size or 64)
    kind, _, directory = spec.partition(":")
    if kind == "broden" and directory:
        return BrodenProbe(directory, n, size)
    if kind == "folder" and directory:
        from gandissect.models.specs import resolve_segmenter

        return FolderProbe(directory, resolve_segmenter(segmenter or "sceneworld", device,
                                                        segmenter_weights),
                           size or input_size or 64, n, segmenter_name=segmenter or "sceneworld")
    if kind == "masks" and directory:
        from gandissect.netdissect.masks import MaskProbe

        return MaskProbe(directory, size or input_size or 64, n)
    raise UserError(f"unknown dataset {spec!r}: use {DATASETS}")
