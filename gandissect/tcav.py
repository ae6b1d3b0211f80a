"""Testing with concept activation vectors (TCAV, Kim et al. 2018): is a class's prediction
sensitive to a human concept, as a classifier's layer represents it?

    result = tcav(model, "layer4", target=0, class_images=churches,
                  concepts={"dome": domes}, random_sets=randoms, runs=20)
    result.scores["dome"].tcav, result.scores["dome"].p, result.scores["dome"].significant

The steps, each a public function:

- **Activations**: the layer's output as a map (``gandissect.spatial.spatial_view``), flattened
  to one ``C * h * w`` vector per image (``layer_activations``).
- **CAV** (``train_cav``): an L2-regularised logistic regression on those vectors separating
  concept examples (label 1) from random counterexamples (label 0); the CAV is the unit normal
  of its decision boundary, pointing to the concept.
- **Directional derivative** (``directional_derivatives``): the gradient of the class's logit
  with respect to the layer's map, dotted with the CAV; **TCAV score** (``tcav_score``): the
  fraction of the class's images where it is positive.
- **Significance**: one CAV per run, the concept against a different random set each run, and
  as many random-vs-random CAVs (two independent random sets) for the null; the concept's TCAV
  scores and the null's are compared by Welch's two-sided t-test (``welch_t_test``), and a
  concept is significant when ``p < alpha / K`` over the ``K`` concepts tested (Bonferroni).

Concept examples come from SceneWorld's exact masks (``sceneworld_examples``: whole scenes
where the concept covers at least ``min_share`` of the pixels; counterexamples: scenes where it
covers none) or from any folder of images. Whole scenes keep the concept's context: a dome
only ever stands on a church, so the dome CAV also carries what churches look like; that is
what a concept learnt from examples is.

At the layer just before a global-average-pool and linear head (the shipped classifier's
``layer4``) the gradient of a logit is the same for every image (its class weights spread over
the map), so each run's TCAV score is 0 or 1: the sign of the CAV's pooled projection on the
class weights. A layer earlier, gradients differ between images and the scores between 0 and 1.
TCAV counts signs only: a concept the network is faintly but consistently sensitive to is
significant however small the effect.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from gandissect.errors import UserError

__all__ = ["CLASS_SEED", "CONCEPT_SEED", "ConceptScore", "SceneWorldExamples", "TCAVResult",
           "directional_derivatives", "layer_activations", "layer_gradients",
           "sceneworld_class_images", "sceneworld_concept", "sceneworld_examples", "tcav",
           "tcav_figure", "tcav_score", "train_cav", "welch_t_test"]

CLASS_SEED = 1001  # SceneWorld's held-out evaluation world: the class's images
CONCEPT_SEED = 1002  # concept examples and random counterexamples

MIN_EXAMPLES = 10  # fewer concept or random images make a CAV mostly noise
SCENE_CATEGORIES = ("object", "part", "material")


def layer_activations(model: nn.Module, layer: str, images: torch.Tensor,
                      batch: int = 64) -> torch.Tensor:
    """``(N, C * h * w)``: ``layer``'s map (``gandissect.spatial.spatial_view``) for each image,
    flattened, float32 on the CPU."""
    from gandissect.hooks import Trace
    from gandissect.spatial import first_tensor, spatial_view
    from gandissect.torchutil import eval_mode, model_device

    device = model_device(model)
    rows = []
    with eval_mode(model), torch.no_grad():
        for start in range(0, len(images), batch):
            x = images[start:start + batch].to(device)
            with Trace(model, layer, stop=True, view=first_tensor) as trace:
                model(x)
            maps = spatial_view(model, layer, trace.output, x.shape[-2:])
            rows.append(maps.flatten(1).float().cpu())
    return torch.cat(rows)


def layer_gradients(model: nn.Module, layer: str, images: torch.Tensor, target: int,
                    batch: int = 64) -> torch.Tensor:
    """``(N, C * h * w)``: the gradient of class ``target``'s logit with respect to ``layer``'s
    map, flattened like ``layer_activations``."""
    from gandissect.attribute.base import attribution_mode
    from gandissect.attribute.cam import layer_activations_and_gradients
    from gandissect.torchutil import model_device

    device = model_device(model)
    rows = []
    with attribution_mode(model):
        for start in range(0, len(images), batch):
            x = images[start:start + batch].to(device)
            _, grad = layer_activations_and_gradients(model, layer, x, target)
            rows.append(grad.flatten(1).float().cpu())
    return torch.cat(rows)


def train_cav(concept: torch.Tensor, random: torch.Tensor, l2: float = 1e-2,
              steps: int = 50) -> torch.Tensor:
    """The CAV: the unit normal of a logistic regression's boundary between ``concept``
    activations (label 1) and ``random`` ones (label 0), pointing to the concept.

    The regression minimises the mean logistic loss plus ``l2 / 2 * |w|^2`` on features
    centred by their mean and scaled by one number (their mean norm), so that ``l2`` means the
    same at every layer; the scaling is uniform, so the boundary's normal is the same direction
    in the layer's own space. The L2 optimum lies in the span of the examples
    (``w = X^T a``), so Newton's method runs on the ``N`` coefficients ``a`` and the Gram
    matrix ``K = X X^T`` (with step halving until the loss falls): the same minimum, at the
    cost of the examples' count rather than the layer's size. Deterministic.
    """
    x = torch.cat([concept, random]).double()
    y = torch.cat([torch.ones(len(concept)), torch.zeros(len(random))]).double()
    x = x - x.mean(0)
    x = x / x.norm(dim=1).mean().clamp_min(1e-12)
    gram, rows = x @ x.T, len(x)
    design = torch.cat([gram, torch.ones(rows, 1, dtype=gram.dtype)], 1)  # z = design @ theta
    penalty = torch.zeros(rows + 1, rows + 1, dtype=gram.dtype)
    penalty[:rows, :rows] = l2 * gram

    def loss(theta: torch.Tensor) -> torch.Tensor:
        z = design @ theta
        return nn.functional.binary_cross_entropy_with_logits(z, y) \
            + 0.5 * theta @ penalty @ theta

    theta = torch.zeros(rows + 1, dtype=gram.dtype)
    value = loss(theta)
    for _ in range(steps):
        p = torch.sigmoid(design @ theta)
        gradient = design.T @ (p - y) / rows + penalty @ theta
        hessian = design.T @ (design * (p * (1 - p))[:, None]) / rows + penalty
        # K is singular (centred features): a tiny ridge picks one of the equivalent steps
        ridge = 1e-10 * hessian.diagonal().abs().max().clamp_min(1e-30)
        step = torch.linalg.solve(hessian + ridge * torch.eye(rows + 1, dtype=gram.dtype),
                                  gradient)
        scale = 1.0
        while scale > 1e-6 and loss(theta - scale * step) > value:
            scale /= 2
        theta, previous = theta - scale * step, value
        value = loss(theta)
        if previous - value <= 1e-12 * max(1.0, float(value)):
            break
    normal = x.T @ theta[:-1]
    if not torch.isfinite(normal).all() or normal.norm() == 0:
        raise UserError("the concept and random activations could not be told apart (the CAV "
                        "is zero): choose another layer or more distinct examples")
    return (normal / normal.norm()).float()


def directional_derivatives(gradients: torch.Tensor, cav: torch.Tensor) -> torch.Tensor:
    """``(N,)``: each image's gradient of the class logit (``layer_gradients``) dotted with the
    ``cav``; ``(R, N)`` for ``R`` CAVs stacked as ``(R, D)``."""
    return cav @ gradients.T


def tcav_score(derivatives: torch.Tensor) -> torch.Tensor:
    """The fraction of images (last dimension) whose directional derivative is positive."""
    return (derivatives > 0).float().mean(-1)


def welch_t_test(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """``(t, p)`` of Welch's two-sided t-test that ``a`` and ``b`` have the same mean
    (unequal variances; Welch-Satterthwaite degrees of freedom). Two samples without spread
    give ``p = 1`` if their means are equal and ``p = 0`` otherwise."""
    from scipy.special import stdtr

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(a) < 2 or len(b) < 2:
        raise UserError("the t-test needs at least 2 runs on each side")
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    difference = a.mean() - b.mean()
    if va + vb == 0:
        return (0.0, 1.0) if difference == 0 else (math.copysign(math.inf, difference), 0.0)
    t = difference / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    return float(t), float(2 * stdtr(df, -abs(t)))


@dataclass(frozen=True)
class ConceptScore:
    """One concept's TCAV: the mean and standard deviation of its TCAV scores over the runs,
    the p-value of the t-test against the random-vs-random scores, and whether it passes the
    corrected level."""

    tcav: float
    std: float
    p: float
    significant: bool
    runs: list[float] = field(default_factory=list)

    def to_json(self) -> dict:
        """``{"tcav", "std", "p", "significant", "runs"}``."""
        return {"tcav": self.tcav, "std": self.std, "p": self.p,
                "significant": self.significant, "runs": self.runs}


@dataclass(frozen=True)
class TCAVResult:
    """Every concept's ``ConceptScore``, the random-vs-random TCAV scores, and the test's
    level and correction."""

    scores: dict[str, ConceptScore]
    random_runs: list[float]
    alpha: float
    correction: str

    def to_json(self) -> dict:
        """``{"scores": {concept: ...}, "random": {"tcav", "std", "runs"}, "alpha",
        "correction", "test"}``."""
        runs = np.asarray(self.random_runs)
        return {"scores": {name: score.to_json() for name, score in self.scores.items()},
                "random": {"tcav": float(runs.mean()), "std": float(runs.std(ddof=1)),
                           "runs": self.random_runs},
                "test": "Welch's two-sided t-test, concept runs against random-vs-random runs",
                "alpha": self.alpha, "correction": self.correction}


def _pick(pool: int, n: int, generator: torch.Generator) -> torch.Tensor:
    return torch.randperm(pool, generator=generator)[:n]


def tcav(model: nn.Module, layer: str, target: int, class_images: torch.Tensor,
         concepts: Mapping[str, torch.Tensor],
         random_sets: torch.Tensor | Mapping[str, torch.Tensor],
         runs: int = 20, n: int = 50, alpha: float = 0.05, seed: int = 0, batch: int = 64,
         null_images: torch.Tensor | None = None) -> TCAVResult:
    """TCAV scores of ``concepts`` for class ``target`` at ``layer``, with their significance.

    Args:
        model: a classifier, images -> ``(N, classes)`` logits.
        layer: dotted name of a layer with a map (``gandissect.spatial``).
        target: the class index.
        class_images: ``(M, 3, H, W)`` images of the class, in the model's input.
        concepts: name -> ``(N_c, 3, H, W)`` concept examples (up to ``n`` are used).
        random_sets: the pool counterexamples are drawn from: one tensor for every concept,
            or name -> the concept's own pool (SceneWorld scenes without that concept).
        runs: CAVs per concept, each against a different random draw of ``n`` counterexamples;
            as many random-vs-random CAVs make the null.
        n: examples per set.
        alpha: the test's level before the Bonferroni correction over the concepts.
        seed: seeds the random draws.
        null_images: the pool the random-vs-random pairs are drawn from (default: ``random_sets``
            when it is one tensor); at least ``2 * n`` images, two disjoint sets per pair.

    Returns:
        A ``TCAVResult``; ``result.to_json()`` for the command line.

    Example::

        result = tcav(classifier, "layer4", 0, churches, {"dome": domes}, scenes, runs=20)
        result.scores["dome"].tcav
    """
    if runs < 2:
        raise UserError(f"TCAV's t-test needs at least 2 runs, got {runs}")
    if null_images is None:
        if not isinstance(random_sets, torch.Tensor):
            raise UserError("pass null_images when each concept has its own random pool")
        null_images = random_sets
    pools = {name: random_sets if isinstance(random_sets, torch.Tensor) else random_sets[name]
             for name in concepts}
    for name, images in {**concepts, **{f"random for {k}": v for k, v in pools.items()}}.items():
        if len(images) < MIN_EXAMPLES:
            raise UserError(f"{name} has {len(images)} images; TCAV needs at least "
                            f"{MIN_EXAMPLES}")
    if len(null_images) < 2 * MIN_EXAMPLES:
        raise UserError(f"the random pool has {len(null_images)} images; the random-vs-random "
                        f"CAVs need at least {2 * MIN_EXAMPLES}")
    generator = torch.Generator().manual_seed(seed)
    gradients = layer_gradients(model, layer, class_images, target, batch)
    null_acts = layer_activations(model, layer, null_images, batch)
    size = min(n, len(null_images) // 2)
    null_cavs = []
    for _ in range(runs):
        order = torch.randperm(len(null_acts), generator=generator)
        null_cavs.append(train_cav(null_acts[order[:size]], null_acts[order[size:2 * size]]))
    null_runs = tcav_score(directional_derivatives(gradients, torch.stack(null_cavs)))
    scores = {}
    correction = f"bonferroni over {len(concepts)} concept{'s' * (len(concepts) != 1)}"
    for name, images in concepts.items():
        concept_acts = layer_activations(model, layer, images[:n], batch)
        pool_acts = layer_activations(model, layer, pools[name], batch)
        cavs = [train_cav(concept_acts, pool_acts[_pick(len(pool_acts), n, generator)])
                for _ in range(runs)]
        concept_runs = tcav_score(directional_derivatives(gradients, torch.stack(cavs)))
        _, p = welch_t_test(concept_runs.tolist(), null_runs.tolist())
        scores[name] = ConceptScore(float(concept_runs.mean()),
                                    float(concept_runs.std(unbiased=True)), p,
                                    bool(p < alpha / len(concepts)), concept_runs.tolist())
    return TCAVResult(scores, null_runs.tolist(), alpha, correction)


def sceneworld_concept(name: str) -> tuple[str, str]:
    """``(category, name)`` of a SceneWorld concept with pixel masks, spelt ``name`` (its first
    category among object, part, material: ``water`` is the object) or ``category:name``
    (``material:water``); a ``UserError`` naming the valid concepts otherwise."""
    from gandissect.world import concepts

    category, _, plain = name.rpartition(":")
    for cat in (category,) if category else SCENE_CATEGORIES:
        if cat in SCENE_CATEGORIES and any(c.name == plain for c in concepts(cat)):
            return cat, plain
    valid = ", ".join(dict.fromkeys(c.name for cat in SCENE_CATEGORIES for c in concepts(cat)))
    raise UserError(f"{name!r} is not a SceneWorld concept ({valid}; category:name for "
                    "material:water); give its examples with --concept-dir NAME=DIR")


@dataclass(frozen=True)
class SceneWorldExamples:
    """Concept examples and counterexamples drawn from SceneWorld scenes, in [-1, 1]."""

    concepts: dict[str, torch.Tensor]
    randoms: dict[str, torch.Tensor]
    scenes: torch.Tensor
    rendered: int


def sceneworld_examples(names: Sequence[str], n: int, pool: int, size: int, seed: int,
                        min_share: float = 0.01, limit: int = 5000,
                        chunk: int = 256) -> SceneWorldExamples:
    """SceneWorld scenes of world ``seed`` (from index 0), rendered in chunks until every
    concept of ``names`` (``sceneworld_concept`` spellings) has ``n`` scenes where it covers at
    least ``min_share`` of the pixels and ``pool`` scenes where it covers none, or ``limit``
    scenes are rendered (then a ``UserError`` saying how many were found). ``scenes`` holds the
    first ``pool`` scenes whatever they show (the random-vs-random pool)."""
    from gandissect.world import concept, render_batch
    from gandissect.world.dataset import image_to_tensor

    keys = {name: sceneworld_concept(name) for name in names}
    found = {name: [] for name in names}
    absent = {name: [] for name in names}
    scenes, start = [], 0
    while start < limit:
        rendered = render_batch(seed, range(start, min(start + chunk, limit)), size)
        images = image_to_tensor(rendered["image"])
        scenes.append(images)
        for name, (category, plain) in keys.items():
            share = (rendered[category] == concept(plain, category).code).mean((1, 2))
            found[name] += list(images[torch.from_numpy(share >= min_share)])
            absent[name] += list(images[torch.from_numpy(share == 0)])
        start += len(images)
        if all(len(found[k]) >= n and len(absent[k]) >= pool for k in names) \
                and start >= pool:
            break
    for name in names:
        if len(found[name]) < n or len(absent[name]) < MIN_EXAMPLES:
            raise UserError(f"among {start} SceneWorld scenes, {len(found[name])} have "
                            f"{name} on at least {min_share:.0%} of the pixels and "
                            f"{len(absent[name])} have none of it; lower --n or --min-share, "
                            "or give --concept-dir")
    return SceneWorldExamples({k: torch.stack(found[k][:n]) for k in names},
                              {k: torch.stack(absent[k][:pool]) for k in names},
                              torch.cat(scenes)[:pool], start)


def sceneworld_class_images(scene: str, n: int, size: int, seed: int, limit: int = 5000,
                            chunk: int = 256) -> torch.Tensor:
    """The first ``n`` scenes of world ``seed`` whose scene label is ``scene``, in [-1, 1]."""
    from gandissect.world import concept, render_batch
    from gandissect.world.dataset import image_to_tensor

    code = concept(scene, "scene").code
    kept, start = [], 0
    while start < limit and sum(len(k) for k in kept) < n:
        rendered = render_batch(seed, range(start, min(start + chunk, limit)), size)
        kept.append(image_to_tensor(rendered["image"][rendered["scene"] == code]))
        start += chunk
    images = torch.cat(kept)[:n]
    if len(images) < MIN_EXAMPLES:
        raise UserError(f"only {len(images)} {scene} scenes among {start} SceneWorld scenes")
    return images


def tcav_figure(result: TCAVResult, path: str, title: str = "") -> None:
    """Write a PNG bar chart of ``result`` to ``path``: each concept's mean TCAV score with its
    standard deviation as an error bar, the random-vs-random mean +- std as a grey band, and a
    ``*`` over the significant concepts (dark bars; pale bars are not significant)."""
    from PIL import Image, ImageDraw

    names = list(result.scores)
    null = np.asarray(result.random_runs, dtype=float)
    null_mean, null_std = float(null.mean()), float(null.std(ddof=1)) if len(null) > 1 else 0.0
    bar, left, top, plot_h = 70, 44, 40, 200
    width, height = left + bar * max(1, len(names)) + 16, top + plot_h + 44

    def y(score: float) -> int:
        return top + round((1 - min(1.0, max(0.0, score))) * plot_h)

    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((6, 6), title or "TCAV score per concept (* significant)", fill="black")
    draw.rectangle((left, y(null_mean + null_std), width - 16, y(null_mean - null_std)),
                   fill=(225, 225, 225))
    draw.line((left, y(null_mean), width - 16, y(null_mean)), fill=(130, 130, 130))
    draw.text((width - 120, y(null_mean) - 12), "random vs random", fill=(100, 100, 100))
    for tick in (0.0, 0.5, 1.0):
        draw.text((6, y(tick) - 6), f"{tick:.1f}", fill="black")
        draw.line((left - 4, y(tick), left, y(tick)), fill="black")
    draw.line((left, top, left, top + plot_h), fill="black")
    draw.line((left, top + plot_h, width - 16, top + plot_h), fill="black")
    for i, name in enumerate(names):
        score = result.scores[name]
        x0, x1 = left + i * bar + 12, left + (i + 1) * bar - 12
        colour = (40, 90, 200) if score.significant else (170, 190, 230)
        draw.rectangle((x0, y(score.tcav), x1, top + plot_h), fill=colour)
        middle = (x0 + x1) // 2
        draw.line((middle, y(score.tcav + score.std), middle, y(score.tcav - score.std)),
                  fill="black", width=2)
        for end in (score.tcav + score.std, score.tcav - score.std):
            draw.line((middle - 6, y(end), middle + 6, y(end)), fill="black", width=2)
        if score.significant:
            draw.text((middle - 3, y(score.tcav + score.std) - 14), "*", fill="black")
        draw.text((x0 - 8, top + plot_h + 6), name[:10], fill="black")
        draw.text((x0 - 8, top + plot_h + 20), f"{score.tcav:.2f}", fill="black")
    image.save(path)
