"""Causal effects of generator units on a concept, measured with the segmenter.

- ``removal``: ablate a unit set at every location and measure the fraction of the concept's
  pixels that disappear, over images where the concept is present, and the collateral change:
  the share of all other pixels (the concept's own original pixels excluded) whose label changes.
- ``select_by_ace``: learn a soft weight per unit (the average-causal-effect selection of GAN
  Dissection): ablating the weighted units should remove the concept where it is present,
  inserting them should draw it where it is absent, with an L2 penalty on the weights; with
  ``keep`` > 0, also a term that keeps the labels of the rest of the picture (specificity).
- ``refine_by_swaps``: improve a unit set (e.g. the ACE top K) by exact swaps: the gradient at
  the current set proposes the swaps, the segmenter's labels decide.
- ``select_for_drawing``: learn which units draw the concept where it belongs, and how
  strongly (a weight and a value per unit), in windows of its context (doors on buildings).
- ``insertion_maps`` / ``insertion_by_context``: insert units in every small window of the layer,
  one at a time, and measure the concept area that appears, grouped by what the window showed
  before (building, tree, sky, grass, ...).
- ``locality``: how much an edit under a mask changes the image outside the mask.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch.nn import functional as F
from tqdm import tqdm

from gandissect.dissect.latents import sample_latents
from gandissect.errors import UserError
from gandissect.fileio import JobCheckpoint
from gandissect.hooks import Trace, apply_edit, edit_alpha, forward_from, partial_forward
from gandissect.intervene import Stroke, pool_mask, render_edited, stroke_edit
from gandissect.torchutil import eval_mode, model_device


@dataclass(frozen=True)
class ConceptRef:
    """A concept of the segmenter: ``category`` and ``code`` (index in its concept list)."""

    category: str
    name: str
    code: int

    @classmethod
    def find(cls, segmenter, name: str, category: str | None = None) -> ConceptRef:
        """Look a concept up by name in the segmenter's learned categories."""
        matches = [(cat, names.index(name)) for cat, names in segmenter.concepts.items()
                   if name in names[1:] and (category is None or cat == category)]
        if not matches:
            known = sorted({n for names in segmenter.concepts.values() for n in names[1:]})
            raise UserError(f"unknown concept {name!r}; the segmenter knows: {', '.join(known)}")
        if len(matches) > 1:
            raise UserError(f"{name!r} is in several categories "
                            f"({', '.join(c for c, _ in matches)}); say which")
        cat, code = matches[0]
        return cls(cat, name, code)


@torch.no_grad()
def removal(generator, segmenter, layer: str, units: Sequence[int], concept: ConceptRef,
            n: int = 1000, seed: int = 3, batch: int = 50, progress: bool = True,
            checkpoint: JobCheckpoint | None = None) -> dict:
    """Ablate ``units`` everywhere; fraction of the concept's pixels removed and collateral.

    ``checkpoint``: the counts so far are saved there (batch by batch, at its interval) and a
    saved state is resumed from, so a killed run restarted ends with the same counts."""
    if n < 1:
        raise UserError("need at least one sample")
    strokes = [Stroke(units=list(units), mode="ablate")]
    checkpoint = checkpoint or JobCheckpoint(None, "")
    saved = checkpoint.load()
    begin, counts = (saved["next"], saved["counts"]) if saved else (0, dict.fromkeys(
        ("before", "removed", "other", "other_changed", "images_with"), 0))
    for start in tqdm(range(begin, n, batch), desc=f"remove {concept.name}",
                      disable=not progress):
        z = sample_latents(generator, seed, range(start, min(start + batch, n))).to(
            model_device(generator))
        clean = segmenter.segment(generator(z))[concept.category]
        edited = segmenter.segment(render_edited(generator, z, layer, strokes))[concept.category]
        present = (clean == concept.code).flatten(1).any(1)
        counts["images_with"] += int(present.sum())
        batch_counts = _removal_counts(clean[present], edited[present], concept.code).tolist()
        for name, value in zip(("before", "removed", "other", "other_changed"), batch_counts):
            counts[name] += value
        if checkpoint.due():
            checkpoint.save({"next": start + batch, "counts": counts})
    checkpoint.save({"next": n, "counts": counts})
    before, other = counts["before"], counts["other"]
    return {
        "concept": concept.name,
        "category": concept.category,
        "units": list(map(int, units)),
        "images_with_concept": counts["images_with"],
        "removed_fraction": round(counts["removed"] / before, 4) if before else None,
        "collateral": round(counts["other_changed"] / other, 4) if other else None,
    }


def _shows(generator, segmenter, concept: ConceptRef, z: torch.Tensor,
           batch: int) -> torch.Tensor:
    """Whether each latent's image shows the concept (segmented), ``(N,)`` bool."""
    return torch.cat([
        (segmenter.segment(generator(z[i:i + batch]))[concept.category] == concept.code)
        .flatten(1).any(1) for i in range(0, len(z), batch)])


def ace_sample(generator, segmenter, concept: ConceptRef, n: int, seed: int, batch: int = 20,
               top_up: bool = True, scan: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    """The latents an ACE selection learns from and whether each image shows the concept.

    The first ``n`` latents of ``seed``; with ``top_up``, when fewer than half of them show the
    concept, the following latents that show it are added until half of ``n`` do (looking at
    most ``scan * n`` latents in all). Removal is learnt only from images with the concept, so
    a rare concept (a dome in one image of eight) would otherwise teach it from a handful."""
    if n < 1:
        raise UserError(f"the ACE selection needs n >= 1 samples, got n={n}")
    device = model_device(generator)
    z = sample_latents(generator, seed, range(n)).to(device)
    present = _shows(generator, segmenter, concept, z, batch)
    more, start = [], n
    missing = n // 2 - int(present.sum())
    while top_up and missing > 0 and start < scan * n:
        extra = sample_latents(generator, seed, range(start, min(start + batch, scan * n)))
        extra = extra.to(device)
        extra = extra[_shows(generator, segmenter, concept, extra, batch)][:missing]
        more.append(extra)
        missing -= len(extra)
        start += batch
    if more:
        z = torch.cat([z, *more])
        present = torch.cat([present, torch.ones(len(z) - len(present), dtype=torch.bool,
                                                 device=present.device)])
    return z, present


LEARNING_NEEDS = ("probabilities(images) -> {category: (N, codes, H, W) per-pixel "
                  "probabilities}, differentiable in the images")


def check_learnable(generator, segmenter, concept: ConceptRef) -> None:
    """Refuse, in one line and before any work, a segmenter that causal learning cannot use:
    it needs ``LEARNING_NEEDS`` (label codes from ``segment`` have no gradient), with the
    concept's category among them. Checked on one generated image."""
    name = type(segmenter).__name__
    if not callable(getattr(segmenter, "probabilities", None)):
        raise UserError(f"the segmenter {name} cannot learn causal effects: it needs "
                        f"{LEARNING_NEEDS}; add that method (e.g. the softmax of its logits)")
    with torch.no_grad():
        images = generator(sample_latents(generator, 0, [0]).to(model_device(generator)))
        found = segmenter.probabilities(images)
    shape = (1, len(segmenter.concepts[concept.category]), *images.shape[2:])
    got = found.get(concept.category) if isinstance(found, dict) else None
    if not isinstance(got, torch.Tensor) or tuple(got.shape) != shape:
        seen = tuple(got.shape) if isinstance(got, torch.Tensor) else (
            sorted(found) if isinstance(found, dict) else type(found).__name__)
        raise UserError(f"the segmenter {name}'s probabilities(images) must give "
                        f"{concept.category!r} as {shape} (one channel per code, at the image "
                        f"size) to learn {concept.name!r}; got {seen}")


def _probabilities(segmenter, images: torch.Tensor, category: str) -> torch.Tensor:
    """``(N, codes, H, W)`` per-pixel probabilities of ``category``, differentiable."""
    return segmenter.probabilities(images)[category]


def _log_probabilities(segmenter, images: torch.Tensor, category: str) -> torch.Tensor:
    """Their logarithms: the segmenter's own ``log_probabilities`` when it has one (exact where a
    confident segmenter's probabilities underflow), else the log of ``probabilities``."""
    own = getattr(segmenter, "log_probabilities", None)
    if callable(own):
        return own(images)[category]
    return _probabilities(segmenter, images, category).clamp_min(1e-30).log()


def _frozen(learn: Callable) -> Callable:
    """Run ``learn(generator, segmenter, layer, concept, ...)`` with both models in eval mode
    and their parameters frozen (only the unit weights learn), and the caller's modes and
    ``requires_grad`` flags restored after; the segmenter is checked first
    (``check_learnable``)."""

    @functools.wraps(learn)
    def wrapper(generator, segmenter, layer, concept, *args, **kwargs):
        check_learnable(generator, segmenter, concept)
        with eval_mode(generator, segmenter, freeze=True):
            return learn(generator, segmenter, layer, concept, *args, **kwargs)

    return wrapper


# Epochs of the ACE selection: the reference's 10. On the shipped generator, 20 epochs moved
# the removed fraction at K = 20 (validation seed 7, 300 images) by +0.25 for door (0.42 to
# 0.67) but -0.10 for brick (0.51 to 0.41) and -0.009 to +0.005 for the five other GANPaint
# concepts: no setting is better for all, so the reference's stays.
ACE_EPOCHS = 10


def _resume(checkpoint: JobCheckpoint | None, optimizer: torch.optim.Optimizer,
            order: torch.Generator, **params: torch.Tensor) -> tuple[JobCheckpoint, dict | None]:
    """A learning loop's checkpoint (one that never saves when None) and its saved state, if
    any, with ``params`` (saved under their names), the optimizer and the shuffle restored."""
    checkpoint = checkpoint or JobCheckpoint(None, "")
    saved = checkpoint.load()
    if saved:
        with torch.no_grad():
            for name, tensor in params.items():
                tensor.copy_(saved[name].to(tensor.device))
        optimizer.load_state_dict(saved["optimizer"])
        order.set_state(saved["order"])
    return checkpoint, saved


@_frozen
def select_by_ace(generator, segmenter, layer: str, concept: ConceptRef,
                  initial: torch.Tensor, insert_values: torch.Tensor, n: int = 200,
                  seed: int = 4, epochs: int = ACE_EPOCHS, lr: float = 0.01, l2: float = 0.005,
                  batch: int = 20, progress: bool = True,
                  checkpoint: JobCheckpoint | None = None,
                  top_up: bool = True, keep: float = 0.0) -> torch.Tensor:
    """Learn a weight in [0, 1] per unit by average causal effect; returns ``(U,)`` weights.

    Samples with the concept teach removal (the weighted units ablated should lower the
    concept's probability), samples without it teach insertion (the weighted units set to
    ``insert_values`` should raise it); ``l2`` penalises the weights. ``initial`` seeds the
    weights (e.g. IoU scores). The samples are ``ace_sample``'s: with ``top_up`` a rare concept
    gets images that show it added until they are half of ``n`` (the reference learns from the
    first ``n`` alone; on the shipped generator the top-up raised the dome's removed fraction
    at K = 20 from 0.61 to 0.90, ``benchmarks/bench_interventions.py``). ``checkpoint``:
    weights, optimizer and shuffle state are saved there at its interval and resumed from, so a
    killed run ends with the same weights.

    ``keep`` (0: the reference's objective) adds ``keep`` times the mean, over the pixels of
    the images with the concept that the unedited image labels otherwise, of 1 - the edited
    image's probability of that label: removal that spares the rest of the picture, the
    collateral ``removal`` reports. The unedited labels are segmented once, before the first
    step.
    """
    if n < 1 or epochs < 0 or not 0 <= keep < float("inf"):
        raise UserError(f"the ACE selection needs n >= 1 samples, epochs >= 0 and a finite "
                        f"keep >= 0, got n={n}, epochs={epochs}, keep={keep}")
    device = model_device(generator)
    with torch.no_grad():
        z, present = ace_sample(generator, segmenter, concept, n, seed, batch, top_up)
        n = len(z)
        features = torch.cat([partial_forward(generator, layer, z[i:i + batch])
                              for i in range(0, n, batch)])
        if keep:  # the unedited labels, and which pixels the keep term watches
            clean = torch.cat([
                _probabilities(segmenter, generator(z[i:i + batch]), concept.category).argmax(1)
                for i in range(0, n, batch)])
            others = (clean != concept.code) & present.view(-1, 1, 1)
    alpha = initial.detach().float().clamp(0, 1).to(device).clone().requires_grad_(True)
    optimizer = torch.optim.Adam([alpha], lr=lr)
    values = insert_values.float().to(device).view(1, -1, 1, 1)
    order = torch.Generator().manual_seed(seed)
    checkpoint, saved = _resume(checkpoint, optimizer, order, alpha=alpha)
    first_epoch, first_step = (saved["epoch"], saved["step"]) if saved else (0, 0)
    for epoch in tqdm(range(first_epoch, epochs), desc=f"ACE {concept.name}",
                      disable=not progress):
        epoch_order = order.get_state()  # the epoch's shuffle is redrawn from it on resume
        steps = torch.randperm(n, generator=order).split(batch)
        for step in range(first_step if epoch == first_epoch else 0, len(steps)):
            index = steps[step]
            x = features[index]
            a = alpha.view(1, -1, 1, 1)
            absent = (~present[index]).view(-1, 1, 1, 1)  # inserted there, ablated elsewhere
            edited = apply_edit(x, a, values * absent)
            image = forward_from(generator, layer, edited, z[index])
            probabilities = _probabilities(segmenter, image, concept.category)
            p = probabilities[:, concept.code].mean((1, 2))  # per image
            loss = torch.where(present[index], p, -p).mean() + l2 * alpha.pow(2).sum()
            if keep:
                watched = others[index].float()
                kept = probabilities.gather(1, clean[index][:, None])[:, 0]
                loss = loss + keep * ((1 - kept) * watched).sum() / watched.sum().clamp(min=1)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                alpha.clamp_(0, 1)
            if checkpoint.due():
                checkpoint.save({"epoch": epoch, "step": step + 1, "order": epoch_order,
                                 "alpha": alpha.detach().cpu(),
                                 "optimizer": optimizer.state_dict()})
    return alpha.detach().cpu()


def _window_shares(mask: torch.Tensor, area: torch.Tensor) -> torch.Tensor:
    """``(N, W)``: the share of each window's pixels (``area``, ``(W, H, W)``) where ``mask``
    (``(N, H, W)``) is set."""
    return torch.einsum("nhw,khw->nk", mask.float(), area) / area.sum((1, 2))


def drawing_windows(generator, segmenter, layer: str, concept: ConceptRef,
                    context: ConceptRef | None, z: torch.Tensor, cell: int = 2,
                    per_image: int = 4, min_share: float = 0.5, max_present: float = 0.05,
                    seed: int = 0, batch: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    """Where a brush of ``concept`` would be painted: ``cell`` x ``cell`` windows of ``layer``
    that ``context`` covers more than ``min_share`` of (None: any window) and the concept less
    than ``max_present`` of, in the images of latents ``z`` (segmented). Up to ``per_image``
    windows an image, drawn from ``seed``. Returns ``(image index, window index)`` pairs
    ``(P, 2)`` and the windows ``(W, h, w)`` (``_windows``' order)."""
    device = model_device(generator)
    with torch.no_grad(), Trace(generator, layer) as trace:
        generator(z[:1].to(device))
    h, w = trace.output.shape[2:]
    if not 1 <= cell <= min(h, w):
        raise UserError(f"cell must lie in [1, {min(h, w)}] for the {h}x{w} layer {layer!r}")
    windows = _windows(h, w, cell)
    order = torch.Generator().manual_seed(seed)
    pairs = []
    for start in range(0, len(z), batch):
        with torch.no_grad():
            labels = segmenter.segment(generator(z[start:start + batch].to(device)))
        size = labels[concept.category].shape[-2:]
        area = F.interpolate(windows[:, None], size=size, mode="nearest")[:, 0].to(device)
        fits = _window_shares(labels[concept.category] == concept.code, area) < max_present
        if context is not None:
            fits &= _window_shares(labels[context.category] == context.code, area) > min_share
        for i, row in enumerate(fits.cpu()):
            found = row.nonzero().flatten()
            chosen = found[torch.randperm(len(found), generator=order)[:per_image]]
            pairs += [(start + i, int(k)) for k in chosen.sort().values]
    return torch.tensor(pairs, dtype=torch.int64).view(-1, 2), windows


# The drawing selection's learning rate and weight penalty, measured on the door brush of the
# shipped generator: with l2 1e-4, 60 units tied at weight 1 and their top 15 drew 10 door
# pixels a stroke; with 0.003 the top 15 drew 22, and the whole learned edit 32.
DRAW_LR, DRAW_L2 = 0.05, 0.003


@torch.no_grad()
def drawn_pixels(generator, segmenter, layer: str, concept: ConceptRef, z: torch.Tensor,
                 pairs: torch.Tensor, windows: torch.Tensor, weights: torch.Tensor,
                 values: torch.Tensor, batch: int = 16) -> torch.Tensor:
    """``(P,)``: the concept pixels (segmented, in the whole image) that the edit
    ``x (1 - w) + v w`` of every unit (``weights`` ``w``, ``values`` ``v``) inside each window
    of ``pairs`` (``drawing_windows``) adds to its image."""
    device = model_device(generator)
    values = values.to(device).view(1, -1, 1, 1)
    added = []
    for start in range(0, len(pairs), batch):
        chosen = pairs[start:start + batch]
        zb = z[chosen[:, 0]].to(device)
        features = partial_forward(generator, layer, zb)
        where = windows[chosen[:, 1]].to(device)
        n_units = features.shape[1]
        alpha = edit_alpha(None, n_units, where, weights=weights).to(device)
        edited = apply_edit(features, alpha, values)
        before = segmenter.segment(generator(zb))[concept.category] == concept.code
        after = segmenter.segment(forward_from(generator, layer, edited, zb))[
            concept.category] == concept.code
        added.append(after.flatten(1).sum(1) - before.flatten(1).sum(1))
    return torch.cat(added).cpu()


@_frozen
def select_for_drawing(generator, segmenter, layer: str, concept: ConceptRef,
                       context: ConceptRef | None, initial: torch.Tensor,
                       insert_values: torch.Tensor, n: int = 200, seed: int = 6,
                       epochs: int = 10, lr: float = DRAW_LR, l2: float = DRAW_L2,
                       batch: int = 16, cell: int = 2, per_image: int = 4,
                       min_share: float = 0.5, best: bool = True, progress: bool = True,
                       checkpoint: JobCheckpoint | None = None) -> dict:
    """Learn which units draw ``concept`` where it belongs, and how strongly: a weight
    ``a_u`` in [0, 1] and a value ``v_u`` per unit. ACE's insertion term, made local: in the
    windows of ``n`` images of ``seed`` where a brush of the concept would be painted
    (``drawing_windows`` in ``context``: doors on buildings, trees on grass), the units are
    set to ``x (1 - a) + v a`` inside the window only, and the objective is the log of the
    concept's mean probability over the window's pixels (segmented), less ``l2`` times the
    weights' squares. ``v`` starts at ``insert_values`` (each unit's 0.99 quantile) and learns
    in log scale, within 1/20 to 20 times it: written at the quantile, a brush's units draw
    little (``benchmarks/bench_draw.py``). ``initial`` seeds the weights (e.g. IoU scores).

    The learned edit is the brush: every unit at its weight, writing its value. The windows
    of every fourth image are held out: after each epoch the edit learned so far draws into
    them, and the epoch whose edit adds the most concept pixels (``drawn_pixels``, the
    segmenter's labels) is the one returned, its start (the initial weights, the quantiles)
    included: weights or values that only fool the segmenter's probabilities on the training
    windows do not survive (``best`` False: the last epoch instead). ``checkpoint``: saved at
    its interval and resumed from, to the same result.

    Returns ``{"weights": (U,), "values": (U,), "epoch", "validation_pixels", "windows",
    "images"}`` (``epoch`` 0: the start; ``validation_pixels``: mean pixels added).
    """
    if n < 1 or epochs < 0 or not lr > 0 or not l2 >= 0:
        raise UserError(f"drawing selection needs n >= 1, epochs >= 0, lr > 0 and l2 >= 0, got "
                        f"n={n}, epochs={epochs}, lr={lr}, l2={l2}")
    device = model_device(generator)
    z = sample_latents(generator, seed, range(n)).to(device)
    every, windows = drawing_windows(generator, segmenter, layer, concept, context, z, cell,
                                     per_image, min_share, seed=seed)
    held = every[:, 0] % 4 == 3
    pairs, held_out = every[~held], every[held]
    if not len(pairs):
        where = f" on {context.name}" if context is not None else ""
        raise UserError(f"no image of seed {seed} has room for {concept.name}{where}: nothing "
                        "to learn drawing from")
    images = sorted(set(pairs[:, 0].tolist()))
    with torch.no_grad():
        features = {i: partial_forward(generator, layer, z[i:i + 1])[0] for i in images}
        size = generator(z[:1]).shape[-2:]
    area = F.interpolate(windows[:, None], size=size, mode="nearest")[:, 0].to(device)
    windows = windows.to(device)
    alpha = initial.detach().float().clamp(0, 1).to(device).clone().requires_grad_(True)
    log_scale = torch.zeros_like(alpha, requires_grad=True)
    base = insert_values.detach().float().to(device)
    optimizer = torch.optim.Adam([alpha, log_scale], lr=lr)
    order = torch.Generator().manual_seed(seed)

    def score(epoch: int) -> dict:
        weights = alpha.detach().cpu().clone()  # a copy: training goes on changing alpha
        values = (base * log_scale.exp()).detach().cpu()
        drawn = (drawn_pixels(generator, segmenter, layer, concept, z, held_out, windows,
                              weights, values, batch).float().mean() if len(held_out) else
                 torch.tensor(0.0))
        return {"weights": weights, "values": values, "epoch": epoch,
                "validation_pixels": round(float(drawn), 3)}

    checkpoint, saved = _resume(checkpoint, optimizer, order, alpha=alpha, log_scale=log_scale)
    if saved:
        first_epoch, first_step, chosen_state = saved["epoch"], saved["step"], saved["best"]
    else:
        first_epoch, first_step, chosen_state = 0, 0, score(0)
    for epoch in tqdm(range(first_epoch, epochs), desc=f"draw {concept.name}",
                      disable=not progress):
        epoch_order = order.get_state()
        steps = torch.randperm(len(pairs), generator=order).split(batch)
        for step in range(first_step if epoch == first_epoch else 0, len(steps)):
            chosen = pairs[steps[step]]
            x = torch.stack([features[int(i)] for i in chosen[:, 0]])
            where = windows[chosen[:, 1]][:, None]
            edited = apply_edit(x, alpha.view(1, -1, 1, 1) * where,
                                (base * log_scale.exp()).view(1, -1, 1, 1))
            image = forward_from(generator, layer, edited, z[chosen[:, 0]])
            log_p = _log_probabilities(segmenter, image, concept.category)[:, concept.code]
            region = area[chosen[:, 1]] > 0
            # log of the mean probability over the window, from log-probabilities: its
            # gradient does not vanish where a confident segmenter gives the concept ~0
            inside = (torch.logsumexp(log_p.masked_fill(~region, -math.inf).flatten(1), 1)
                      - region.flatten(1).sum(1).log())
            loss = -inside.mean() + l2 * alpha.pow(2).sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                alpha.clamp_(0, 1)
                log_scale.clamp_(-math.log(20), math.log(20))
            if checkpoint.due():
                checkpoint.save({"epoch": epoch, "step": step + 1, "order": epoch_order,
                                 "alpha": alpha.detach().cpu(),
                                 "log_scale": log_scale.detach().cpu(),
                                 "optimizer": optimizer.state_dict(), "best": chosen_state})
        now = score(epoch + 1)
        if not best or now["validation_pixels"] > chosen_state["validation_pixels"]:
            chosen_state = now
    return {**chosen_state, "windows": len(every), "images": n}


def _removal_counts(clean: torch.Tensor, edited: torch.Tensor, code: int) -> torch.Tensor:
    """``removal``'s counts for labels ``clean`` and ``edited`` of images that show the concept:
    (before, removed net of pixels that turned into it, other pixels, other pixels changed)."""
    had = clean == code
    others = ~had
    removed = int((had & (edited != code)).sum()) - int((others & (edited == code)).sum())
    return torch.tensor([int(had.sum()), removed, int(others.sum()),
                         int((others & (edited != clean)).sum())])


@_frozen
def refine_by_swaps(generator, segmenter, layer: str, concept: ConceptRef,
                    units: Sequence[int], n: int = 200, seed: int = 4, tries: int = 6,
                    max_swaps: int = 30, keep: float = 0.0, max_collateral: float = 0.1,
                    batch: int = 20, progress: bool = True,
                    checkpoint: JobCheckpoint | None = None) -> dict:
    """Improve the set ``units`` for removing ``concept`` by swapping units in and out.

    Measured as ``removal`` measures, on ``ace_sample(n, seed)``'s images that show the
    concept: the score is the removed fraction minus ``keep`` times the collateral, and a set
    is allowed when its collateral is at most ``max_collateral`` (or the starting set's, when
    that is higher): better removal never buys a less specific edit. ACE ranks units by soft
    weights learned with all units partly ablated at once; the top K of that ranking is not the
    best set of K (a unit may matter only while another is kept). Each step takes the gradient,
    at the current set, of the concept's mean probability (plus ``keep`` times the other pixels'
    lost label probability) with respect to every unit's ablation weight ``a`` (the edit
    x (1 - a)); swapping unit i out and unit j in changes it by about g_j - g_i. The ``tries``
    swaps with the best estimates (among the ``tries`` weakest members and ``tries`` strongest
    outsiders) are measured exactly; the best allowed one is made if it raises the score, else
    the search stops (also after ``max_swaps`` swaps). Deterministic; ``checkpoint`` keeps the
    set after every swap, so a killed run resumes to the same result.

    Returns ``{"units", "score", "start_score", "collateral", "start_collateral", "history":
    [[out, in, score, collateral], ...]}``.
    """
    units = [int(u) for u in units]
    if not units or len(set(units)) != len(units):
        raise UserError("refine_by_swaps needs a non-empty set of distinct units")
    if tries < 1 or max_swaps < 0 or not 0 <= keep < float("inf") or not max_collateral >= 0:
        raise UserError(f"need tries >= 1, max_swaps >= 0, a finite keep >= 0 and "
                        f"max_collateral >= 0, got tries={tries}, max_swaps={max_swaps}, "
                        f"keep={keep}, max_collateral={max_collateral}")
    device = model_device(generator)
    with torch.no_grad():
        z, present = ace_sample(generator, segmenter, concept, n, seed, batch)
        z = z[present]
        if not len(z):
            raise UserError(f"no image of seed {seed} shows {concept.name!r}: nothing to remove")
        features = torch.cat([partial_forward(generator, layer, z[i:i + batch])
                              for i in range(0, len(z), batch)])
        clean = torch.cat([segmenter.segment(generator(z[i:i + batch]))[concept.category]
                           for i in range(0, len(z), batch)])
    n_units = features.shape[1]
    if max(units) >= n_units or min(units) < 0:
        raise UserError(f"units must lie in [0, {n_units - 1}] for layer {layer!r}")

    @torch.no_grad()
    def measure(chosen: list[int]) -> tuple[float, float]:
        """(score, collateral) of ablating ``chosen``."""
        counts = torch.zeros(4, dtype=torch.long)
        for i in range(0, len(z), batch):
            x = apply_edit(features[i:i + batch], edit_alpha(chosen, n_units), 0.0)
            edited = segmenter.segment(forward_from(generator, layer, x, z[i:i + batch]))
            counts += _removal_counts(clean[i:i + batch], edited[concept.category],
                                      concept.code)
        before, removed, other, changed = counts.tolist()
        collateral = changed / max(other, 1)
        return removed / max(before, 1) - keep * collateral, collateral

    @torch.enable_grad()
    def gradient(chosen: list[int]) -> torch.Tensor:
        a = torch.zeros(n_units, device=device)
        a[chosen] = 1
        a.requires_grad_(True)
        watched_total = (clean != concept.code).sum().clamp(min=1)
        for i in range(0, len(z), batch):
            x = apply_edit(features[i:i + batch], a.view(-1, 1, 1), 0.0)
            p = _probabilities(segmenter, forward_from(generator, layer, x, z[i:i + batch]),
                               concept.category)
            labels = clean[i:i + batch]
            objective = p[:, concept.code].mean((1, 2)).sum() / len(z)
            if keep:
                lost = 1 - p.gather(1, labels[:, None])[:, 0]
                objective = objective + keep * (lost * (labels != concept.code)).sum() / (
                    watched_total)
            objective.backward()
        return a.grad.detach().cpu()

    checkpoint = checkpoint or JobCheckpoint(None, "")
    saved = checkpoint.load()
    if saved:
        chosen, history = saved["units"], saved["history"]
        (start, start_collateral), (best, collateral) = saved["start"], saved["best"]
    else:
        chosen, history = list(units), []
        start, start_collateral = best, collateral = measure(chosen)
    cap = max(max_collateral, start_collateral)
    bar = tqdm(total=max_swaps, initial=len(history), desc=f"swaps {concept.name}",
               disable=not progress)
    while len(history) < max_swaps:
        g = gradient(chosen)
        members = sorted(chosen, key=lambda u: (-float(g[u]), u))[:tries]
        outsiders = sorted(set(range(n_units)) - set(chosen), key=lambda u: (float(g[u]), u))
        estimates = sorted((float(g[j] - g[i]), i, j) for i in members for j in outsiders[:tries])
        allowed = []  # (score, unit out, unit in, collateral) of the swaps within the cap
        for _, i, j in estimates[:tries]:
            value, spill = measure([j if u == i else u for u in chosen])
            if spill <= cap:
                allowed.append((value, i, j, spill))
        if not allowed:
            break
        value, i, j, spill = max(allowed, key=lambda m: (m[0], -m[1], -m[2]))  # ties: low ids
        if value <= best:
            break
        best, collateral = value, spill
        chosen = [j if u == i else u for u in chosen]
        history.append([i, j, round(best, 6), round(collateral, 6)])
        checkpoint.save({"units": chosen, "history": history, "start": (start, start_collateral),
                         "best": (best, collateral)})
        bar.update(1)
    bar.close()
    return {"units": chosen, "score": best, "start_score": start, "collateral": collateral,
            "start_collateral": start_collateral, "history": history}


def _windows(h: int, w: int, cell: int) -> torch.Tensor:
    """Every ``cell`` x ``cell`` window of an ``h`` x ``w`` layer (stride one cell), as 0/1
    masks ``((h - cell + 1) * (w - cell + 1), h, w)`` in row-major order of their corners."""
    masks = torch.zeros((h - cell + 1) * (w - cell + 1), h, w)
    for k, (y, x) in enumerate((y, x) for y in range(h - cell + 1) for x in range(w - cell + 1)):
        masks[k, y:y + cell, x:x + cell] = 1
    return masks


@torch.no_grad()
def insertion_maps(generator, segmenter, layer: str, units: Sequence[int], concept: ConceptRef,
                   insert_values: torch.Tensor, z: torch.Tensor, cell: int = 2,
                   batch: int = 4, progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Insert ``units`` in every ``cell`` x ``cell`` window of ``layer``, one window at a time.

    Returns ``added``, ``(N, P, Q)``: the concept pixels of the whole edited image minus those
    of the clean one, for the window whose top-left layer cell is ``(p, q)``; and ``shares``,
    ``(N, objects, P, Q)``: the share of that window's pixels (at image resolution) that each
    object label covered in the clean image (``segmenter.concepts["object"]`` order, 0 = none).
    ``batch`` images are edited at a time, each in all ``P * Q`` windows at once.
    """
    device = model_device(generator)
    with Trace(generator, layer) as trace:
        size = generator(z[:1].to(device)).shape[-2:]
    h, w = trace.output.shape[2:]
    if not 1 <= cell <= min(h, w):
        raise UserError(f"cell must lie in [1, {min(h, w)}] for the {h}x{w} layer {layer!r}")
    windows = _windows(h, w, cell)
    pixels = F.interpolate(windows[:, None], size=size, mode="nearest")[:, 0].to(device)
    edit_of = stroke_edit([Stroke(units=list(units), mode="insert", mask=windows)], insert_values)
    n_objects = len(segmenter.concepts["object"])
    added, shares = [], []
    for start in tqdm(range(0, len(z), batch), desc=f"insert {concept.name}",
                      disable=not progress):
        zb = z[start:start + batch].to(device)
        with Trace(generator, layer) as trace:
            images = generator(zb)
        clean = segmenter.segment(images)
        objects = F.one_hot(clean["object"].long(), n_objects).permute(0, 3, 1, 2).float()
        shares.append(torch.einsum("nohw,khw->nok", objects, pixels)
                      / pixels.sum((1, 2)))
        features = trace.output.repeat_interleave(len(windows), 0)
        edited = torch.cat([edit_of(part) for part in features.split(len(windows))])
        after = segmenter.segment(forward_from(
            generator, layer, edited, zb.repeat_interleave(len(windows), 0)))
        count = (after[concept.category] == concept.code).flatten(1).sum(1)
        before = (clean[concept.category] == concept.code).flatten(1).sum(1)
        added.append(count.view(len(zb), len(windows)) - before[:, None])
    grid = (h - cell + 1, w - cell + 1)
    return (torch.cat(added).view(len(z), *grid).cpu(),
            torch.cat(shares).view(len(z), n_objects, *grid).cpu())


def insertion_by_context(generator, segmenter, layer: str, units: Sequence[int],
                         concept: ConceptRef, insert_values: torch.Tensor,
                         contexts: Sequence[str] = ("building", "tree", "sky", "grass"),
                         n: int = 200, seed: int = 5, cell: int = 2, batch: int = 4,
                         min_share: float = 0.5, min_pixels: int = 4,
                         progress: bool = True) -> dict:
    """Insert ``units`` in every ``cell`` x ``cell`` window of ``layer`` of ``n`` images (seed
    ``seed``), one window at a time, and group the windows by the object that covered more than
    ``min_share`` of the window before (its context), as GAN Dissection measured door insertion.

    Per context: ``windows`` and ``images`` counted, ``added_pixels`` the mean concept pixels
    added to the image, ``appears`` the share of windows where at least ``min_pixels`` were added.
    """
    object_names = segmenter.concepts["object"]
    unknown = [c for c in contexts if c not in object_names]
    if unknown:
        raise UserError(f"unknown context objects {unknown}")
    if not 0.5 <= min_share < 1:  # then at most one object covers more than min_share
        raise UserError(f"min_share must lie in [0.5, 1), got {min_share}")
    if min_pixels < 1:
        raise UserError(f"min_pixels must be at least 1, got {min_pixels}")
    added, shares = insertion_maps(generator, segmenter, layer, units, concept, insert_values,
                                   sample_latents(generator, seed, range(n)), cell=cell,
                                   batch=batch, progress=progress)
    return context_table(added, shares, [object_names.index(c) for c in contexts], contexts,
                         min_share, min_pixels)


def context_table(added: torch.Tensor, shares: torch.Tensor, codes: Sequence[int],
                  names: Sequence[str], min_share: float = 0.5, min_pixels: int = 4) -> dict:
    """``insertion_maps``' outputs grouped by context: for each object label ``codes[i]``
    (reported as ``names[i]``), the windows it covered more than ``min_share`` of: how many,
    in how many images, the mean concept pixels added and the share adding ``min_pixels``+."""
    result = {}
    for code, name in zip(codes, names):
        inside = shares[:, code] > min_share
        values = added[inside].float()
        result[name] = {
            "windows": int(inside.sum()),
            "images": int(inside.flatten(1).any(1).sum()),
            "added_pixels": round(float(values.mean()), 2) if len(values) else None,
            "appears": round(float((values >= min_pixels).float().mean()), 3)
            if len(values) else None}
    return result


@torch.no_grad()
def locality(generator, layer: str, strokes: Sequence[Stroke], z: torch.Tensor,
             insert_values: torch.Tensor | None = None) -> float:
    """Mean absolute change outside the strokes' masks dilated by one layer cell, as a fraction
    of the image range (2)."""
    clean = generator(z.to(model_device(generator)))
    edited = render_edited(generator, z, layer, strokes, insert_values)
    with Trace(generator, layer, stop=True) as trace:
        generator(z[:1].to(model_device(generator)))
    h, w = trace.output.shape[2:]
    touched = torch.zeros(len(z), h, w)
    for stroke in strokes:
        if stroke.mask is None:
            return float("nan")
        cells = pool_mask(stroke.mask, (h, w))
        touched = torch.maximum(touched, cells.expand(len(z), h, w) if cells.dim() == 2 else cells)
    dilated = F.max_pool2d(touched[:, None], 3, stride=1, padding=1)
    outside = F.interpolate(dilated, size=clean.shape[-2:], mode="nearest")[:, 0] == 0
    outside = outside[:, None].expand_as(clean).to(clean.device)
    if not bool(outside.any()):
        return 0.0
    return float((edited - clean).abs()[outside].mean() / 2)
