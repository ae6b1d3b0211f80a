"""The shipped classifier's per-image domain check on SceneWorld scenes and on other images.

    python benchmarks/bench_classifier_domain.py [--reference 512] [--scenes 1024]

Builds the shipped SceneWorld classifier's reference (``classifier_domain_reference``) from
held-out scenes ``0 .. --reference - 1`` of world 1001, its evaluation world, then reports, one
image at a time as the app and ``gandissect attribute`` check them, the feature shift of:
other scenes (world 1001 after the reference's, and world 1000), scenes at 32 and 128 px
resized to 64, grey and upside down; photos and pictures of ``skimage.data`` (astronaut,
coffee, chelsea, camera, rocket, ...; offline); drawn faces and digits
(``tests/test_domain.py``); textures (``benchmarks/bench_domain.py``); uniform noise. Each
group: the standardised feature shift (in-domain standard deviations, the shipped bar 3.5)
and the raw mean shift (nats, the generic bar 1.0) as ranges, and how many images each bar
flags. Then the reference as Python (for ``SHIPPED_CLASSIFIER_REFERENCES``) and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_domain import textures  # noqa: E402
from test_domain import digits, faces  # noqa: E402

from gandissect.classifier_domain import (  # noqa: E402
    GENERIC_IMAGE_SHIFT_BAR,
    SHIPPED_BAR,
    check_classifier_domain,
    classifier_domain_reference,
    per_image_shifts,
)
from gandissect.models import registry  # noqa: E402
from gandissect.world import render_batch  # noqa: E402
from gandissect.world.dataset import image_to_tensor  # noqa: E402

PICTURES = ("astronaut", "coffee", "chelsea", "camera", "rocket", "immunohistochemistry",
            "retina", "brick", "grass", "gravel", "moon", "page", "text", "coins", "clock",
            "horse", "logo", "colorwheel", "hubble_deep_field", "checkerboard")


def picture(name: str, size: int = 64) -> torch.Tensor:
    """``skimage.data.<name>()`` as a ``(3, size, size)`` image in [-1, 1], loaded as uploads
    are (shorter side resized, centre square)."""
    import skimage.data
    from PIL import Image

    array = np.asarray(getattr(skimage.data, name)())
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    elif array.dtype != np.uint8:
        array = (array.astype(np.float64) / max(float(array.max()), 1e-12) * 255).astype(np.uint8)
    image = Image.fromarray(array[..., :3] if array.ndim == 3 else array).convert("RGB")
    scale = size / min(image.size)
    image = image.resize((max(size, round(image.width * scale)),
                          max(size, round(image.height * scale))), Image.Resampling.BILINEAR)
    left, top = (image.width - size) // 2, (image.height - size) // 2
    pixels = np.asarray(image.crop((left, top, left + size, top + size)), dtype=np.uint8)
    return torch.from_numpy(pixels.copy()).permute(2, 0, 1).float() / 127.5 - 1


def scenes(seed: int, first: int, n: int, size: int = 64) -> torch.Tensor:
    images = image_to_tensor(render_batch(seed, range(first, first + n), size)["image"])
    return images if size == 64 else F.interpolate(images, 64, mode="bilinear",
                                                   antialias=True, align_corners=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=int, default=512, help="scenes of the reference")
    parser.add_argument("--scenes", type=int, default=1024, help="scenes of each test group")
    args = parser.parse_args()
    classifier = registry.load_classifier("sceneworld").eval()
    reference = classifier_domain_reference(
        classifier, scenes(1001, 0, args.reference), SHIPPED_BAR,
        f"per-image shifts of held-out SceneWorld scenes 0 .. {args.reference - 1} of world "
        "1001 at 64 px (benchmarks/bench_classifier_domain.py)")
    classifier.domain_reference = reference  # the figures below use this reference
    n = args.scenes
    groups = {
        f"SceneWorld world 1001, scenes {args.reference}-{args.reference + n - 1}":
            lambda: scenes(1001, args.reference, n),
        f"SceneWorld world 1000, scenes 0-{n - 1}": lambda: scenes(1000, 0, n),
        "SceneWorld rendered at 32 px, resized": lambda: scenes(1000, 0, 256, 32),
        "SceneWorld rendered at 128 px, resized": lambda: scenes(1000, 0, 256, 128),
        "SceneWorld grey": lambda: scenes(1000, 0, 256).mean(1, keepdim=True)
        .expand(-1, 3, -1, -1),
        "SceneWorld upside down": lambda: scenes(1000, 0, 256).flip(2),
        **{f"skimage {name}": (lambda name=name: picture(name)[None]) for name in PICTURES},
        "faces (drawn)": lambda: faces(32).float(),
        "digits (MNIST-like)": lambda: digits(32).float(),
        "textures": lambda: textures(32, 0).float(),
        "uniform noise": lambda: torch.rand(32, 3, 64, 64,
                                            generator=torch.Generator().manual_seed(0)) * 2 - 1,
    }
    figures = {}
    print(f"{'images':44s} {'n':>5s}  {'shift (std)':>13s} {'> bar':>6s}  {'shift (nats)':>12s}"
          f" {'> bar':>6s}")
    for name, make in groups.items():
        images = make()
        values = []
        for chunk in images.split(256):
            values += check_classifier_domain(classifier, chunk).feature_shift
        nats = torch.stack(list(per_image_shifts(classifier, images).values()), 1).mean(1)
        std = torch.tensor(values)
        flagged, flagged_nats = int((std > reference.bar).sum()), int(
            (nats > GENERIC_IMAGE_SHIFT_BAR).sum())
        figures[name] = {"images": len(images), "shift_std": [float(std.min()),
                                                              float(std.max())],
                         "flagged": flagged, "shift_nats": [float(nats.min()), float(nats.max())],
                         "flagged_nats": flagged_nats}
        print(f"{name:44s} {len(images):5d}  {float(std.min()):5.2f}-{float(std.max()):6.2f} "
              f"{flagged:6d}  {float(nats.min()):5.2f}-{float(nats.max()):5.2f} "
              f"{flagged_nats:6d}")
    print(f"bars: {reference.bar} in-domain standard deviations (with the reference), "
          f"{GENERIC_IMAGE_SHIFT_BAR} nats (without)")
    print("reference layers:", json.dumps(reference.layers))
    print(json.dumps({"reference_scenes": args.reference, "scenes": n, "groups": figures}))


if __name__ == "__main__":
    main()
