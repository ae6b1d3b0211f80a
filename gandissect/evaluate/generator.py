"""How close a generator's images are to SceneWorld, measured with the shipped segmenter and
scene classifier.

- ``object_freq_tv``: total variation distance between the object-concept pixel frequencies of
  generated and real images (both labelled by the segmenter, so its errors cancel);
- ``scene_hist_tv``: the same between the classifier's predicted scene histograms;
- ``concept_freq_ratio``: per painting concept, (share of generated images where it appears) /
  (share of real images where it appears); "appears" means at least ``MIN_PIXELS`` pixels;
- ``fd``: Frechet distance between Gaussians fitted to the classifier's penultimate features,
  beside ``fd_real_real`` for two disjoint real sets of the same size;
- ``precision`` / ``recall``: the k-nearest-neighbour manifold estimate (Kynkaanniemi et al.
  2019, k = 3) in the same feature space.

Beside them, for diagnosis: ``object_pixel_share_*`` and ``material_pixel_share_*`` (each
concept's share of all pixels, ``none`` included, for ``fake`` and ``real`` images), the
scene shares, each painting concept's share of real images that show it, and
``facade_purity_*``: over the images with at least ``FACADE_MIN_PIXELS`` pixels of facade
materials (``FACADE_MATERIALS``), the mean share of those pixels that the image's most common
facade material takes (1 when every wall in the image is labelled one material), with
``facade_images_*``, how many images that is. SceneWorld paints each building in one
material, so walls that the segmenter splits between materials show up here.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from gandissect.errors import UserError
from gandissect.models.registry import SEEDS
from gandissect.torchutil import model_device

GANPAINT_CONCEPTS = (("object", "tree"), ("object", "grass"), ("part", "door"),
                     ("object", "sky"), ("object", "cloud"), ("material", "brick"),
                     ("object", "dome"))
MIN_PIXELS = 4  # a concept "appears" in an image with at least this many labelled pixels
FACADE_MATERIALS = ("brick", "plaster", "stone")
FACADE_MIN_PIXELS = 64  # images with fewer facade pixels have no facade purity
PIXEL_SHARES = ("object", "material")  # categories whose pixel shares the result reports


def quantize(images: torch.Tensor) -> torch.Tensor:
    """Clamp to [-1, 1] and round to the 256 levels of a saved image (as real images are)."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round() / 127.5 - 1


# ---------------------------------------------------------------------- distances
def total_variation(p: torch.Tensor, q: torch.Tensor) -> float:
    """Half the L1 distance between two histograms, each normalised to sum 1."""
    p, q = p.double() / p.sum(), q.double() / q.sum()
    return float((p - q).abs().sum() / 2)


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Frechet distance between Gaussians fitted to feature sets ``a`` and ``b`` (N, D)."""
    a, b = a.double(), b.double()
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.t()), torch.cov(b.t())
    # tr sqrt(cov_a cov_b) = tr sqrt(S cov_b S) with S = cov_a^(1/2), a symmetric PSD product
    values, vectors = torch.linalg.eigh(cov_a)
    root_a = vectors @ torch.diag(values.clamp(min=0).sqrt()) @ vectors.t()
    middle = torch.linalg.eigvalsh(root_a @ cov_b @ root_a).clamp(min=0).sqrt().sum()
    distance = (mu_a - mu_b).pow(2).sum() + cov_a.trace() + cov_b.trace() - 2 * middle
    return float(distance)


def _kth_neighbour_radius(features: torch.Tensor, k: int, chunk: int = 1024) -> torch.Tensor:
    """Distance from each point to its k-th nearest other point in the same set."""
    radii = []
    for start in range(0, len(features), chunk):
        d = torch.cdist(features[start:start + chunk], features)
        radii.append(d.kthvalue(k + 1, dim=1).values)  # +1: the point itself is at distance 0
    return torch.cat(radii)


def _covered(queries: torch.Tensor, support: torch.Tensor, radii: torch.Tensor,
             chunk: int = 1024) -> torch.Tensor:
    """For each query, whether it lies within some support point's radius."""
    inside = []
    for start in range(0, len(queries), chunk):
        d = torch.cdist(queries[start:start + chunk], support)
        inside.append((d <= radii[None, :]).any(1))
    return torch.cat(inside)


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3) -> tuple[float, float]:
    """k-NN manifold precision (fakes inside the real manifold) and recall (reals inside the
    fake manifold)."""
    real, fake = real.float(), fake.float()
    precision = _covered(fake, real, _kth_neighbour_radius(real, k)).float().mean()
    recall = _covered(real, fake, _kth_neighbour_radius(fake, k)).float().mean()
    return float(precision), float(recall)


# ---------------------------------------------------------------------- measuring images
class _Tally:
    """Segmenter and classifier statistics of one set of images."""

    def __init__(self, segmenter, classifier) -> None:
        self.segmenter, self.classifier = segmenter, classifier
        self.pixels = {category: torch.zeros(len(segmenter.concepts[category]),
                                             dtype=torch.float64)
                       for category in PIXEL_SHARES}
        self.scene_counts = torch.zeros(len(classifier.scene_names), dtype=torch.float64)
        self.appears = torch.zeros(len(GANPAINT_CONCEPTS), dtype=torch.float64)
        self.facade_purity, self.facade_images = 0.0, 0
        self.features: list[torch.Tensor] = []
        self.images = 0

    @torch.no_grad()
    def add(self, images: torch.Tensor) -> None:
        labels = self.segmenter.segment(images)
        for category, counts in self.pixels.items():
            counts += torch.bincount(labels[category].flatten().cpu(),
                                     minlength=len(counts)).double()
        logits = self.classifier(images)
        self.scene_counts += torch.bincount(logits.argmax(1).cpu(),
                                            minlength=len(self.scene_counts)).double()
        for i, (category, name) in enumerate(GANPAINT_CONCEPTS):
            code = self.segmenter.concepts[category].index(name)
            pixels = (labels[category] == code).flatten(1).sum(1)
            self.appears[i] += (pixels >= MIN_PIXELS).sum().item()
        materials = self.segmenter.concepts["material"]
        facade = torch.stack([(labels["material"] == materials.index(name)).flatten(1).sum(1)
                              for name in FACADE_MATERIALS if name in materials]
                             or [labels["material"].new_zeros(len(images))], 1)
        walled = facade.sum(1) >= FACADE_MIN_PIXELS
        purity = facade[walled].amax(1).double() / facade[walled].sum(1).double()
        self.facade_purity += float(purity.sum())
        self.facade_images += int(walled.sum())
        self.features.append(self.classifier.features(images).float().cpu())
        self.images += len(images)

    def feature_matrix(self) -> torch.Tensor:
        return torch.cat(self.features)


def _real_batches(seed: int, n: int, batch: int, size: int, device):
    from gandissect.world import render_batch
    from gandissect.world.dataset import image_to_tensor

    for start in range(0, n, batch):
        indices = range(start, min(start + batch, n))
        images = render_batch(seed, indices, size)["image"]
        yield image_to_tensor(images).to(device)


def _fake_batches(generator, seed: int, n: int, batch: int, device):
    latents = torch.Generator().manual_seed(seed)
    z_dim = generator.z_dim
    for start in range(0, n, batch):
        z = torch.randn(min(batch, n - start), z_dim, generator=latents).to(device)
        with torch.no_grad():
            yield quantize(generator(z))


def evaluate_generator(generator, segmenter, classifier, n: int = 5000, seed: int = 2000,
                       batch: int = 100, progress: bool = True) -> dict:
    """All generator metrics on ``n`` generated images (latents from ``seed``) against ``n`` real
    images of world ``seed`` (and ``n`` more, of world ``seed + 1``, for the real-vs-real FD)."""
    if n < 10:
        raise UserError("need n >= 10 images for the generator metrics")
    if seed in SEEDS.values() or seed + 1 in SEEDS.values():
        raise UserError(f"seed {seed} (or {seed + 1}) is a training seed {SEEDS}; choose another")
    device = model_device(generator)
    size = generator.resolution
    sets = {"fake": _fake_batches(generator, seed, n, batch, device),
            "real": _real_batches(seed, n, batch, size, device),
            "real2": _real_batches(seed + 1, n, batch, size, device)}
    tallies = {}
    for name, batches in sets.items():
        tally = _Tally(segmenter, classifier)
        for images in tqdm(batches, total=-(-n // batch), desc=f"eval {name}",
                           disable=not progress):
            tally.add(images)
        tallies[name] = tally
    fake, real, real2 = tallies["fake"], tallies["real"], tallies["real2"]
    ratios = {}
    for i, (_, concept_name) in enumerate(GANPAINT_CONCEPTS):
        real_share = real.appears[i] / real.images
        fake_share = fake.appears[i] / fake.images
        ratios[concept_name] = round(float(fake_share / real_share), 4) if real_share else None
    precision, recall = precision_recall(real.feature_matrix(), fake.feature_matrix())
    shares = {f"{category}_pixel_share_{name}": _shares(tally.pixels[category],
                                                         segmenter.concepts[category])
              for category in PIXEL_SHARES for name, tally in (("fake", fake), ("real", real))}
    return {
        "n": n,
        "seed": seed,
        "object_freq_tv": round(total_variation(fake.pixels["object"], real.pixels["object"]),
                                5),
        "scene_hist_tv": round(total_variation(fake.scene_counts, real.scene_counts), 5),
        "concept_freq_ratio": ratios,
        "concept_share_real": {c: round(float(real.appears[i] / real.images), 4)
                               for i, (_, c) in enumerate(GANPAINT_CONCEPTS)},
        "fd": round(frechet_distance(fake.feature_matrix(), real.feature_matrix()), 4),
        "fd_real_real": round(frechet_distance(real2.feature_matrix(), real.feature_matrix()), 4),
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        **shares,
        **{f"facade_{key}_{name}": value for name, tally in (("fake", fake), ("real", real))
           for key, value in (("purity", round(tally.facade_purity / tally.facade_images, 4)
                               if tally.facade_images else None),
                              ("images", tally.facade_images))},
        "scene_share_fake": dict(zip(classifier.scene_names, (fake.scene_counts / n).tolist())),
        "scene_share_real": dict(zip(classifier.scene_names, (real.scene_counts / n).tolist())),
    }


def _shares(counts: torch.Tensor, names: list[str]) -> dict[str, float]:
    """Pixel counts per concept as shares of all pixels (the category's "none" included)."""
    return {name: round(float(v), 5) for name, v in zip(names, counts / counts.sum())}


def comparison_grid(generator, seed: int = 2000, n: int = 64):
    """A PIL image: ``n`` generated images (left) beside ``n`` real ones (right), 8 per row."""
    from PIL import Image

    from gandissect.report.images import image_grid

    device = model_device(generator)
    fake = next(_fake_batches(generator, seed, n, n, device)).cpu()
    real = next(_real_batches(seed, n, n, generator.resolution, "cpu"))
    left, right = image_grid(fake), image_grid(real)
    gap = 8
    canvas = Image.new("RGB", (left.shape[1] * 2 + gap, left.shape[0]), (255, 255, 255))
    canvas.paste(Image.fromarray(left), (0, 0))
    canvas.paste(Image.fromarray(right), (left.shape[1] + gap, 0))
    return canvas


def material_grid(generator, segmenter, seed: int = 2000, n: int = 12, candidates: int = 200,
                  min_pixels: int = 300):
    """A PIL image: ``n`` real images with buildings (at least ``min_pixels`` building pixels)
    and their material labels (top two rows), then ``n`` generated ones and theirs, chosen in
    order from the first ``candidates`` of each set (latents and world ``seed``)."""
    from PIL import Image

    from gandissect.world.dataset import tensor_to_image
    from gandissect.world.grid import colorize

    device = model_device(generator)
    building = segmenter.concepts["object"].index("building")
    rows = []
    for images in (next(_real_batches(seed, candidates, candidates, generator.resolution,
                                      device)),
                   next(_fake_batches(generator, seed, candidates, candidates, device))):
        with torch.no_grad():
            labels = segmenter.segment(images)
        chosen = ((labels["object"] == building).flatten(1).sum(1) >= min_pixels).nonzero()
        chosen = chosen.flatten()[:n]
        if len(chosen) < n:
            raise UserError(f"only {len(chosen)} of {candidates} images show a building of "
                            f"{min_pixels} pixels; raise candidates or lower min_pixels")
        materials = labels["material"][chosen].cpu().numpy()
        rows.append(np.concatenate(list(tensor_to_image(images[chosen])), 1))
        rows.append(np.concatenate([colorize(m, "material") for m in materials], 1))
    grid = np.concatenate(rows, 0)
    return Image.fromarray(grid).resize((grid.shape[1] * 2, grid.shape[0] * 2), Image.NEAREST)
