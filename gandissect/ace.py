"""Choosing a concept's units two ways and measuring how much of the concept they remove.

``units_by_iou`` ranks a layer's units by their dissection IoU with the concept;
``units_by_ace`` learns a soft weight per unit by average causal effect (starting from the IoU
scores) and ranks by it; ``units_by_swaps`` improves the ACE top K by exact swaps
(``refine_by_swaps``); ``ranked_units`` gives the ACE ranking when its weights are cached (led
by the refined set when that is cached too) and the IoU ranking otherwise (what a painting
brush uses). ``ace_report`` ablates the top K of each
ranking on a fresh latent seed and reports the removed fraction and the collateral change.
``units_for_drawing`` ranks units for drawing instead (``select_for_drawing`` where the concept
belongs, ``DRAW_CONTEXTS``), with the value each unit writes. Learned weights are cached,
keyed by everything that changes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from gandissect.causal import (
    ACE_EPOCHS,
    DRAW_L2,
    DRAW_LR,
    ConceptRef,
    refine_by_swaps,
    removal,
    select_by_ace,
    select_for_drawing,
)
from gandissect.dissect import Dissection
from gandissect.dissect.counts import iou_matrix
from gandissect.dissect.identity import fingerprint, settings_key
from gandissect.errors import UserError
from gandissect.fileio import JobCheckpoint, load_state, save_state


def concept_index(dissection: Dissection, layer: str, concept: ConceptRef) -> int:
    """The concept's column in a dissection's (units x concepts) IoU matrix."""
    stats = dissection.layer(layer).stats
    categories = list(dissection.settings["categories"])
    for index, (name, category) in enumerate(zip(stats["concepts"],
                                                 stats["concept_category"].tolist())):
        if name == concept.name and categories[category] == concept.category:
            return index
    raise UserError(f"concept {concept.name!r} ({concept.category}) is not in the dissection")


def iou_scores(dissection: Dissection, layer: str, concept: ConceptRef) -> torch.Tensor:
    """``(U,)`` IoU of every unit of ``layer`` with ``concept`` (fixed-threshold dissection)."""
    return iou_matrix(dissection, layer)[:, concept_index(dissection, layer, concept)]


def units_by_iou(dissection: Dissection, layer: str, concept: ConceptRef) -> list[int]:
    """All units of ``layer``, best IoU with ``concept`` first (ties: lower unit first)."""
    scores = iou_scores(dissection, layer, concept)
    return scores.argsort(descending=True, stable=True).tolist()


def _ace_setup(generator, segmenter, dissection: Dissection, layer: str, concept: ConceptRef,
               n: int, seed: int, epochs: int,
               keep: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, str]:
    """The IoU start, the insertion values and the cache key of an ACE selection (``keep`` is
    in the key only when it is not 0, so keys of the reference's objective never changed)."""
    initial = iou_scores(dissection, layer, concept)
    initial = initial / initial.max().clamp(min=1e-8)
    insert_values = dissection.layer(layer).stats["insertion"]
    key = settings_key({"generator": fingerprint(generator), "segmenter": fingerprint(segmenter),
                        "layer": layer, "concept": [concept.category, concept.name], "n": n,
                        "seed": seed, "epochs": epochs, "sample": "top-up",
                        "initial": initial.tolist(), "insert": insert_values.tolist(),
                        **({"keep": keep} if keep else {})})
    return initial, insert_values, key


def _cache_file(cache_dir: str | Path, kind: str, layer: str, concept: ConceptRef,
                key: str) -> Path:
    """Where a selection of ``kind`` (``"ace"`` weights, ``"swaps"`` sets) is cached."""
    return Path(cache_dir) / f"{kind}_{layer}_{concept.category}_{concept.name}_{key}.pt"


def _cached_run(cache_dir: str | Path | None, kind: str, layer: str, concept: ConceptRef,
                key: str, checkpoint_seconds: float, run,
                shipped: Sequence[str | Path] = ()):
    """The state cached under ``key`` in ``cache_dir`` or in one of the read-only folders
    ``shipped`` (e.g. the causal weights shipped beside a dissection), or ``run(checkpoint)``'s,
    saved in ``cache_dir`` (with none: computed, kept nowhere). The run checkpoints beside the
    file and resumes."""
    path = _cache_file(cache_dir, kind, layer, concept, key) if cache_dir else None
    if path is not None and path.exists():
        return load_state(path)
    for folder in shipped:
        found = _cache_file(folder, kind, layer, concept, key)
        if found.exists():
            return load_state(found)
    checkpoint = JobCheckpoint(path.with_name(f".{path.stem}.progress.pt") if path else None,
                               key, checkpoint_seconds)
    state = run(checkpoint)
    if path is not None:
        save_state(path, state)
        checkpoint.remove()
    return state


def _first_cached(cache_dirs: str | Path | Sequence[str | Path], kind: str, layer: str,
                  concept: ConceptRef, key_of):
    """The state cached under ``key_of()`` in the first of ``cache_dirs`` that has it, or None.
    The key hashes the models, so it is computed only when some folder holds a file of this
    kind for the concept."""
    folders = [f for f in _folders(cache_dirs)
               if any(f.glob(_cache_file("", kind, layer, concept, "*").name))]
    if not folders:
        return None
    key = key_of()
    for folder in folders:
        path = _cache_file(folder, kind, layer, concept, key)
        if path.exists():
            return load_state(path)
    return None


def _rank(weights: torch.Tensor, initial: torch.Tensor) -> list[int]:
    # Ties (e.g. weights clamped to 0) fall back to the IoU order.
    return sorted(range(len(weights)), key=lambda u: (-float(weights[u]), -float(initial[u])))


def units_by_ace(generator, segmenter, dissection: Dissection, layer: str, concept: ConceptRef,
                 n: int = 200, seed: int = 4, epochs: int = ACE_EPOCHS,
                 cache_dir: str | Path | None = None, progress: bool = True,
                 checkpoint_seconds: float = 30.0, keep: float = 0.0,
                 shipped: Sequence[str | Path] = ()) -> tuple[list[int], torch.Tensor]:
    """All units ranked by learned causal weight (cached; the learning checkpoints in
    ``cache_dir`` and resumes; weights shipped in a ``shipped`` folder for these very
    arguments are used as they are); returns (ranking, weights). ``keep``: weight of the term
    that keeps the other pixels' labels (``select_by_ace``)."""
    initial, insert_values, key = _ace_setup(generator, segmenter, dissection, layer, concept,
                                             n, seed, epochs, keep)
    state = _cached_run(cache_dir, "ace", layer, concept, key, checkpoint_seconds,
                        lambda checkpoint: {"weights": select_by_ace(
                            generator, segmenter, layer, concept, initial, insert_values, n=n,
                            seed=seed, epochs=epochs, progress=progress,
                            checkpoint=checkpoint, keep=keep), "key": key},
                        shipped)
    return _rank(state["weights"], initial), state["weights"]


# refine_by_swaps' settings for `gandissect ace --refine`; the collateral cap is the
# specificity bar (other concepts' pixels change by less than 10%)
SWAP_TRIES, MAX_SWAPS, MAX_COLLATERAL = 6, 30, 0.1
REFINED_K = 20  # the set size whose refinement, when cached, leads a brush's ranking


def _swaps_key(generator, segmenter, dissection: Dissection, layer: str, concept: ConceptRef,
               k: int, n: int, seed: int, epochs: int, keep: float) -> str:
    """The cache key of ``units_by_swaps``' result for these arguments."""
    _, _, ace_key = _ace_setup(generator, segmenter, dissection, layer, concept, n, seed,
                               epochs, keep)
    return settings_key({"ace": ace_key, "k": k, "tries": SWAP_TRIES, "max_swaps": MAX_SWAPS,
                         "max_collateral": MAX_COLLATERAL})


def units_by_swaps(generator, segmenter, dissection: Dissection, layer: str,
                   concept: ConceptRef, k: int, n: int = 200, seed: int = 4,
                   epochs: int = ACE_EPOCHS, cache_dir: str | Path | None = None,
                   progress: bool = True, checkpoint_seconds: float = 30.0,
                   keep: float = 0.0, ace_ranking: Sequence[int] | None = None,
                   shipped: Sequence[str | Path] = ()) -> dict:
    """The ACE top ``k`` improved by ``refine_by_swaps`` on the ACE selection's own images
    (``n``, ``seed``) with the same ``keep``; cached and resumable in ``cache_dir`` like the
    ACE weights (or read from a ``shipped`` folder). ``ace_ranking``: the ``units_by_ace``
    ranking of these very arguments, when the caller has it (else it is learned or read from
    the cache). Returns ``refine_by_swaps``' result."""
    if ace_ranking is None:
        ace_ranking, _ = units_by_ace(generator, segmenter, dissection, layer, concept, n, seed,
                                      epochs, cache_dir, progress, checkpoint_seconds, keep,
                                      shipped)
    key = _swaps_key(generator, segmenter, dissection, layer, concept, k, n, seed, epochs, keep)
    return _cached_run(cache_dir, "swaps", layer, concept, key, checkpoint_seconds,
                       lambda checkpoint: refine_by_swaps(
                           generator, segmenter, layer, concept, ace_ranking[:k], n=n,
                           seed=seed, tries=SWAP_TRIES, max_swaps=MAX_SWAPS, keep=keep,
                           max_collateral=MAX_COLLATERAL, progress=progress,
                           checkpoint=checkpoint), shipped)


def cached_swaps(generator, segmenter, dissection: Dissection, layer: str, concept: ConceptRef,
                 cache_dir: str | Path | Sequence[str | Path], k: int = REFINED_K,
                 n: int = 200, seed: int = 4, epochs: int = ACE_EPOCHS) -> list[int] | None:
    """The set of ``k`` units ``units_by_swaps`` found with these arguments (the reference's
    objective, keep 0), from the first of ``cache_dir``'s folders that has it, or None (nothing
    is computed)."""
    state = _first_cached(cache_dir, "swaps", layer, concept, lambda: _swaps_key(
        generator, segmenter, dissection, layer, concept, k, n, seed, epochs, 0.0))
    return None if state is None else [int(u) for u in state["units"]]


def _folders(cache_dirs: str | Path | Sequence[str | Path]) -> list[Path]:
    if isinstance(cache_dirs, (str, Path)):
        return [Path(cache_dirs)]
    return [Path(folder) for folder in cache_dirs]


def any_cached_ace(cache_dir: str | Path, layer: str, concept: ConceptRef) -> bool:
    """Whether ``cache_dir`` holds learned weights for ``concept`` at ``layer`` for any models
    and settings: a quick test (no model is hashed) before ``cached_ace_weights``."""
    return any(Path(cache_dir).glob(_cache_file("", "ace", layer, concept, "*").name))


def cached_ace_weights(generator, segmenter, dissection: Dissection, layer: str,
                       concept: ConceptRef, cache_dir: str | Path | Sequence[str | Path],
                       n: int = 200, seed: int = 4, epochs: int = ACE_EPOCHS,
                       keep: float = 0.0) -> torch.Tensor | None:
    """The ``(U,)`` causal weights ``units_by_ace`` learned with these arguments and cached in
    ``cache_dir`` (or the first of several folders that has them, e.g. the app's cache and the
    weights shipped beside a dissection), or None when they have not been learned yet (nothing
    is computed). The file name holds the key of the models, the dissection and the settings,
    so weights learned for anything else are never used."""
    state = _first_cached(cache_dir, "ace", layer, concept, lambda: _ace_setup(
        generator, segmenter, dissection, layer, concept, n, seed, epochs, keep)[2])
    return None if state is None else state["weights"]


def ranked_units(generator, segmenter, dissection: Dissection, layer: str, concept: ConceptRef,
                 cache_dir: str | Path | Sequence[str | Path] | None = None, n: int = 200,
                 seed: int = 4, epochs: int = ACE_EPOCHS,
                 refined_k: int = REFINED_K) -> tuple[list[int], str]:
    """All units of ``layer`` for ``concept``, best first, and how they were ranked: by learned
    causal effect (``"ace"``) when ``units_by_ace`` has cached its weights in ``cache_dir`` (a
    folder or several, searched in order), else by dissection IoU (``"iou"``). When
    ``units_by_swaps`` has also cached its set of ``refined_k`` (``"ace+swaps"``), that set
    leads, then the other units; each part in ACE order. Never trains: a painting brush can
    call it per stroke."""
    if cache_dir is not None:
        weights = cached_ace_weights(generator, segmenter, dissection, layer, concept, cache_dir,
                                     n, seed, epochs)
        if weights is not None:
            ranking = _rank(weights, iou_scores(dissection, layer, concept))
            refined = cached_swaps(generator, segmenter, dissection, layer, concept, cache_dir,
                                   refined_k, n, seed, epochs)
            if refined is None:
                return ranking, "ace"
            head = set(refined)
            return ([u for u in ranking if u in head] + [u for u in ranking if u not in head],
                    "ace+swaps")
    return units_by_iou(dissection, layer, concept), "iou"


# Where a brush is painted to draw its concept, for segmenters with SceneWorld's names: GAN
# Dissection drew doors in facades, domes on roofs and trees on grass. (category, name, the
# share of a window the context must cover). Other concepts are drawn anywhere they are not.
DRAW_CONTEXTS = {"door": ("object", "building", 0.5), "dome": ("part", "roof", 0.1),
                 "tree": ("object", "grass", 0.5), "cloud": ("object", "sky", 0.5),
                 "brick": ("object", "building", 0.5)}
DRAW_SEED, DRAW_SAMPLES, DRAW_EPOCHS = 6, 200, 10  # the drawing selection's images and epochs


def draw_context(segmenter, concept: ConceptRef) -> tuple[ConceptRef | None, float]:
    """The concept a brush of ``concept`` is painted on (``DRAW_CONTEXTS``) and the share of a
    window it must cover; ``(None, 0)`` when there is none, or the segmenter does not know it."""
    found = DRAW_CONTEXTS.get(concept.name)
    if found is None:
        return None, 0.0
    category, name, share = found
    try:
        return ConceptRef.find(segmenter, name, category), share
    except UserError:
        return None, 0.0


def _draw_setup(generator, segmenter, dissection: Dissection, layer: str, concept: ConceptRef,
                n: int, seed: int, epochs: int):
    """The drawing selection's IoU start, insertion values, context and cache key."""
    initial, insert_values, _ = _ace_setup(generator, segmenter, dissection, layer, concept,
                                           n, seed, epochs)
    context, share = draw_context(segmenter, concept)
    key = settings_key({"generator": fingerprint(generator), "segmenter": fingerprint(segmenter),
                        "layer": layer, "concept": [concept.category, concept.name], "n": n,
                        "seed": seed, "epochs": epochs, "draw": "window log-probability",
                        "lr": DRAW_LR, "l2": DRAW_L2,
                        "validation": "every fourth image, the whole edit",
                        "context": None if context is None else [context.category,
                                                                 context.name, share],
                        "initial": initial.tolist(), "insert": insert_values.tolist()})
    return initial, insert_values, context, share, key


@dataclass(frozen=True)
class Drawing:
    """A learned drawing edit (``select_for_drawing``): every unit's weight in [0, 1] and the
    value it writes; ``validation_pixels``: the concept pixels it added per held-out
    stroke."""

    weights: torch.Tensor
    values: torch.Tensor
    validation_pixels: float

    @property
    def units(self) -> list[int]:
        """The units the edit touches (weight > 0), most weighted first."""
        order = self.weights.argsort(descending=True, stable=True).tolist()
        return [u for u in order if float(self.weights[u]) > 0]


def units_for_drawing(generator, segmenter, dissection: Dissection, layer: str,
                      concept: ConceptRef, n: int = DRAW_SAMPLES, seed: int = DRAW_SEED,
                      epochs: int = DRAW_EPOCHS, cache_dir: str | Path | None = None,
                      progress: bool = True, checkpoint_seconds: float = 30.0,
                      shipped: Sequence[str | Path] = ()) -> Drawing:
    """The edit that draws ``concept`` where it belongs (``select_for_drawing`` in its
    ``draw_context``); cached and resumable like the ACE weights, read from a ``shipped``
    folder when there."""
    initial, insert_values, context, share, key = _draw_setup(
        generator, segmenter, dissection, layer, concept, n, seed, epochs)
    state = _cached_run(cache_dir, "draw", layer, concept, key, checkpoint_seconds,
                        lambda checkpoint: {**select_for_drawing(
                            generator, segmenter, layer, concept, context, initial,
                            insert_values, n=n, seed=seed, epochs=epochs, min_share=share,
                            progress=progress, checkpoint=checkpoint), "key": key}, shipped)
    return Drawing(state["weights"], state["values"], state["validation_pixels"])


def cached_drawing(generator, segmenter, dissection: Dissection, layer: str,
                   concept: ConceptRef, cache_dir: str | Path | Sequence[str | Path],
                   n: int = DRAW_SAMPLES, seed: int = DRAW_SEED,
                   epochs: int = DRAW_EPOCHS) -> Drawing | None:
    """``units_for_drawing``' edit when some folder of ``cache_dir`` holds it for these very
    models and settings, else None (nothing is computed)."""
    state = _first_cached(cache_dir, "draw", layer, concept, lambda: _draw_setup(
        generator, segmenter, dissection, layer, concept, n, seed, epochs)[-1])
    if state is None:
        return None
    return Drawing(state["weights"], state["values"], state["validation_pixels"])


def ace_report(generator, segmenter, dissection: Dissection, layer: str, concept: ConceptRef,
               k: int = 20, n: int = 1000, seed: int = 3, selection_n: int = 200,
               selection_seed: int = 4, epochs: int = ACE_EPOCHS,
               cache_dir: str | Path | None = None, progress: bool = True,
               checkpoint_seconds: float = 30.0, keep: float = 0.0,
               refine: bool = True, shipped: Sequence[str | Path] = ()) -> dict:
    """Removed fraction and collateral for the top ``k`` units of each ranking: ``"iou"``,
    ``"ace"``, with ``refine`` the ACE top ``k`` improved by swaps (``"refined"``), and the
    units a painting brush of ``k`` units removes (``"brush"``: ``ranked_units`` over
    ``cache_dir`` and ``shipped``, what the app paints with; with ``k = REFINED_K`` the
    refined set itself). Weights and sets shipped for these very arguments (``shipped``
    folders, e.g. the ``ace/`` beside the shipped dissection) are used as they are.

    With a ``cache_dir`` every stage checkpoints there (the ACE weights while they are learned,
    the removal counts batch by batch), so a killed run restarted gives the same report."""
    used = {"dissection": dissection.settings.get("seed"), "selection": selection_seed}
    if seed in used.values():
        raise UserError(f"evaluation seed {seed} was used for selection ({used}); "
                        "choose another --seed")
    units = dissection.layer(layer).shape[0]
    if not 1 <= k <= units:
        raise UserError(f"--units must lie in [1, {units}] for layer {layer!r}")
    rankings = {"iou": units_by_iou(dissection, layer, concept)[:k]}
    ace_ranking, _ = units_by_ace(generator, segmenter, dissection, layer, concept,
                                  selection_n, selection_seed, epochs, cache_dir, progress,
                                  checkpoint_seconds, keep, shipped)
    rankings["ace"] = ace_ranking[:k]
    if refine:
        rankings["refined"] = units_by_swaps(
            generator, segmenter, dissection, layer, concept, k, selection_n, selection_seed,
            epochs, cache_dir, progress, checkpoint_seconds, keep, ace_ranking, shipped)["units"]
    folders = [f for f in (cache_dir, *shipped) if f is not None]
    brush, brush_ranking = ranked_units(generator, segmenter, dissection, layer, concept,
                                        folders, selection_n, selection_seed, epochs,
                                        refined_k=REFINED_K)
    rankings["brush"] = brush[:k]
    results = {}
    for name, chosen in rankings.items():
        same = next((r for other, r in results.items()
                     if sorted(rankings[other]) == sorted(chosen)), None)
        if same is not None:  # the same set removes the same pixels: measured once
            results[name] = same
            continue
        key = settings_key({"generator": fingerprint(generator),
                            "segmenter": fingerprint(segmenter), "layer": layer,
                            "concept": [concept.category, concept.name], "units": chosen,
                            "n": n, "seed": seed})
        counts = (Path(cache_dir) / f"removal_{layer}_{concept.category}_{concept.name}_"
                  f"{name}_{key}.pt") if cache_dir else None
        results[name] = removal(generator, segmenter, layer, chosen, concept, n=n, seed=seed,
                                progress=progress,
                                checkpoint=JobCheckpoint(counts, key, checkpoint_seconds))
    return {
        "concept": concept.name,
        "category": concept.category,
        "layer": layer,
        "units": k,
        "samples": n,
        "seed": seed,
        "images_with_concept": results["iou"]["images_with_concept"],
        "removed_fraction": {name: r["removed_fraction"] for name, r in results.items()},
        "collateral": {name: r["collateral"] for name, r in results.items()},
        "unit_ids": rankings,
        "brush_ranking": brush_ranking,
        "selection": {"samples": selection_n, "seed": selection_seed, "epochs": epochs,
                      "keep": keep, **({"swap_tries": SWAP_TRIES, "max_swaps": MAX_SWAPS,
                                        "max_collateral": MAX_COLLATERAL} if refine else {})},
    }
