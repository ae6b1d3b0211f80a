"""GAN Dissection: which concept, if any, each unit of a generator's layer draws.

    from gandissect.dissect import dissect, save_dissection, load_dissection

    result = dissect(generator, segmenter, "layer4", n=10000, seed=1)
    result.layer("layer4").units[17]        # UnitScore(unit=17, label='tree', iou=0.21, ...)
    save_dissection(result, "out/")         # dissect.json + stats_layer4.pt

Modules, along the data path: ``latents`` (z of sample i), ``engine`` (the batch loop, caching
and resumption), ``passes`` (what each pass accumulates), ``maps`` (upsampling), ``labels``
(the segmenter's vocabulary and the stored label codes), ``sweep`` (the adaptive IQR threshold),
``sample_size`` (the warning for too few samples), ``core`` (``dissect`` itself and the
labelling), ``results`` (dataclasses and files). The segmenter's domain check is
``gandissect.domain``.
"""

from gandissect.dissect.core import KEPT_QUANTILES, MODES, check_layers, check_settings, dissect
from gandissect.dissect.latents import latents, sample_latents, z_dim_of
from gandissect.dissect.maps import upsample
from gandissect.dissect.results import (
    Dissection,
    LayerDissection,
    UnitScore,
    load_dissection,
    load_layer_stats,
    save_dissection,
)

__all__ = [
    "KEPT_QUANTILES",
    "MODES",
    "Dissection",
    "LayerDissection",
    "UnitScore",
    "check_layers",
    "check_settings",
    "dissect",
    "latents",
    "sample_latents",
    "load_dissection",
    "load_layer_stats",
    "save_dissection",
    "upsample",
    "z_dim_of",
]
