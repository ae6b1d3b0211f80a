"""Where a dissection comes from: a folder the user names (checked against the models), the
one shipped beside the shipped generator, or one computed once (with a progress bar) and cached.

The cache is keyed by everything that changes the numbers (both models' fingerprints, the
layer, the sample count and seed), exactly as ``gandissect dissect`` keys its own statistics,
so another generator or other settings never reuse a dissection computed for something else.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from gandissect.dissect import Dissection, dissect, load_dissection, save_dissection
from gandissect.dissect.core import DEFAULT_QUANTILE_OVER
from gandissect.dissect.identity import fingerprint, settings_key
from gandissect.errors import UserError
from gandissect.models.registry import shipped_dissection_dir

__all__ = ["check_dissection", "open_dissection", "read_dissection", "shipped_dissection"]


def check_dissection(dissection: Dissection, generator: nn.Module, segmenter: Any, layer: str,
                     where: str, rank: bool = True) -> None:
    """Raise a ``UserError`` with what to do when ``dissection`` (read from ``where``) was not
    made for this generator, segmenter (None: not checked) and layer, or, with ``rank``, cannot
    rank units by IoU."""
    settings = dissection.settings
    if settings.get("kind") == "netdissect":
        raise UserError(f"{where} holds a classifier's dissection (gandissect netdissect), not "
                        "a generator's; make one with `gandissect dissect`")
    redo = f"make one with `gandissect dissect --layer {layer} --out DIR`"
    if settings.get("generator") != fingerprint(generator):
        raise UserError(f"the dissection in {where} was computed for another generator (its "
                        f"weights differ from the generator loaded); {redo} using the same "
                        "--generator, or leave out --dissection to compute one here")
    if segmenter is not None and settings.get("segmenter") != fingerprint(segmenter):
        raise UserError(f"the dissection in {where} was labelled by another segmenter; {redo} "
                        "using the same --segmenter")
    names = [entry.layer for entry in dissection.layers]
    if layer not in names:
        raise UserError(f"the dissection in {where} has no layer {layer!r} (it has "
                        f"{', '.join(names)}); use --layer {names[0]}, or dissect this layer "
                        f"with `gandissect dissect --layer {layer}`")
    if rank and "iou" not in dissection.layer(layer).stats:
        raise UserError(f"the dissection in {where} used --threshold iqr; units are ranked by "
                        "the fixed-threshold IoU: dissect with --threshold quantile")


def read_dissection(folder: str | Path, generator: nn.Module, segmenter: Any,
                    layer: str, rank: bool = True) -> Dissection:
    """The dissection in ``folder``, with its statistics, checked by ``check_dissection``."""
    folder = Path(folder)
    try:
        result = load_dissection(folder, stats=True)
    except (KeyError, TypeError) as error:
        raise UserError(f"{folder}/dissect.json is not a gandissect dissection ({error})") \
            from None
    check_dissection(result, generator, segmenter, layer, str(folder), rank)
    return result


def open_dissection(generator: nn.Module, segmenter: Any, layer: str, *,
                    folder: str | Path | None = None, shipped: bool = False,
                    samples: int = 1000, seed: int = 1, cache_dir: str | Path,
                    progress: bool = True) -> tuple[Dissection, str, Path]:
    """The dissection of ``layer`` (with its statistics), a few words saying where it came
    from (for the page), and its folder (where causal weights shipped with it lie, in ``ace/``).

    ``folder``: read it from there (checked against the models); else, when ``shipped`` and a
    shipped dissection of this very generator exists, that one; else the cached one for these
    models and settings; else compute it now (``samples`` latents of ``seed``, a tqdm bar when
    ``progress``), resumably, and cache it under ``cache_dir``.
    """
    if folder is not None:
        return (read_dissection(folder, generator, segmenter, layer), f"read from {folder}",
                Path(folder))
    shipped_dir = shipped_dissection_dir()
    if shipped and (shipped_dir / "dissect.json").is_file():
        try:
            return (read_dissection(shipped_dir, generator, segmenter, layer),
                    "shipped with the generator", shipped_dir)
        except UserError:
            pass  # shipped for other weights (e.g. a retrained generator): compute below
    key = settings_key({"generator": fingerprint(generator), "segmenter": fingerprint(segmenter),
                        "layer": layer, "samples": samples, "seed": seed})
    cached = Path(cache_dir) / f"dissection-{key}"
    if (cached / "dissect.json").is_file():
        return (load_dissection(cached, stats=True), f"of {samples} samples, from the cache",
                cached)
    result = dissect(generator, segmenter, [layer], n=samples, seed=seed,
                     cache_dir=Path(cache_dir) / "statistics", progress=progress)
    save_dissection(result, cached)
    return result, f"computed from {samples} samples (cached)", cached


def shipped_dissection(generator: nn.Module, segmenter: Any, layer: str, samples: int,
                       seed: int) -> Dissection | None:
    """The dissection shipped with the generator when it is exactly the one ``dissect`` would
    compute here (same models, ``layer``, sample count and seed, fixed 0.99 threshold taken
    where ``dissect`` takes it by default), with its statistics; else None."""
    folder = shipped_dissection_dir()
    if not (folder / "dissect.json").is_file():
        return None
    result = load_dissection(folder, stats=True)
    settings = result.settings
    same = (settings.get("generator") == fingerprint(generator)
            and settings.get("segmenter") == fingerprint(segmenter)
            and settings.get("n") == samples and settings.get("seed") == seed
            and settings.get("threshold") == "quantile" and settings.get("quantile") == 0.99
            and result.quantile_over == DEFAULT_QUANTILE_OVER
            and layer in [entry.layer for entry in result.layers])
    return result if same else None
