"""Network Dissection of classifiers: which concept, if any, each unit of a CNN's layer detects.

    from gandissect.netdissect import netdissect, SceneWorldProbe, write_netdissect_report

    probe = SceneWorldProbe(seed=1001, n=2000)          # held-out world, exact labels
    result = netdissect(classifier, ["layer3", "layer4"], probe)
    result.layer("layer4").units[5]     # UnitScore(unit=5, label='dome', iou=0.31, ...)
    result.settings["summary"]["layer4"]   # detectors, unique_detectors, per category
    write_netdissect_report(result, "out/", classifier, probe)   # dissect.json, report.html

Per unit: threshold = top 0.5% of its activations (``Quantile`` sketch, first pass);
activations upsampled bilinearly to the labels; IoU pooled over the dataset with the
category-conditioned denominator (``IoUTally``); scene labels as full-image masks; detector
when IoU > 0.04. The result is GAN dissection's ``Dissection`` (same JSON, same report).

Modules, along the data path: ``probe`` (labelled images in batches: SceneWorld, Broden),
``folder`` (the user's own images, labelled by a segmenter), ``datasets`` (probe sets by name:
``sceneworld``, ``broden:DIR``, ``folder:DIR``), ``core`` (``netdissect``, detector counts),
``report`` (the shared report, with probe images), ``formulas`` (each unit labelled by a
logical formula of concepts, Mu and Andreas 2020: ``label_formulas(result, model, probe)``),
``rotation`` (a function-preserving change of basis), ``experiments`` and ``plots`` (the paper's
experiments as JSON + PNG). Inputs are mapped to what a model expects by
``gandissect.models.inputs``.

Command line (``gandissect/cli/netdissect.py``, ``netdissect_experiment.py``)::

    gandissect netdissect --classifier sceneworld --layer layer3 --layer layer4 --out out/nd
    gandissect netdissect --classifier sceneworld --layer layer4 --formulas 3 --out out/nd3
    gandissect netdissect --classifier torchvision:resnet18 --weights r18.pth \\
        --dataset broden:broden1_224 --layer layer4 --out out/r18
    gandissect netdissect --classifier torchvision:resnet18 --weights r18.pth \\
        --dataset folder:photos/ --segmenter sceneworld --layer layer4 --out out/r18_photos
    gandissect netdissect-experiment rotation --out out/rot      # --layer, --alphas, --rotations
    gandissect netdissect-experiment checkpoints --out out/ckpt  # + a random-init baseline
    gandissect netdissect-experiment layers --out out/layers
"""

from gandissect.models.inputs import normalize, preprocess_for, rescale
from gandissect.netdissect.core import (
    concept_table,
    layer_summary,
    netdissect,
    unique_detectors,
)
from gandissect.netdissect.folder import FolderProbe
from gandissect.netdissect.formulas import label_formulas
from gandissect.netdissect.probe import (
    BrodenProbe,
    ProbeBatch,
    ProbeSet,
    SceneWorldProbe,
    full_image_plane,
)
from gandissect.netdissect.report import probe_samples, write_netdissect_report
from gandissect.netdissect.rotation import (
    BasisRotation,
    RotatedBasis,
    fractional_rotation,
    random_rotation,
)

__all__ = [
    "BasisRotation",
    "BrodenProbe",
    "FolderProbe",
    "ProbeBatch",
    "ProbeSet",
    "RotatedBasis",
    "SceneWorldProbe",
    "concept_table",
    "fractional_rotation",
    "full_image_plane",
    "label_formulas",
    "layer_summary",
    "netdissect",
    "normalize",
    "preprocess_for",
    "random_rotation",
    "rescale",
    "probe_samples",
    "unique_detectors",
    "write_netdissect_report",
]
