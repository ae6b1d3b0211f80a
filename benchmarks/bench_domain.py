"""The shipped segmenter's domain check on SceneWorld and on images from other worlds.

    python benchmarks/bench_domain.py [--images 32] [--batches 4]

For each group of images, ``gandissect.domain.check_domain`` of the shipped SceneWorld
segmenter over ``--batches`` batches of ``--images``: the confidence (least confident
category's mean max-probability), the feature shift (nats) and how many batches are judged
out of domain. Groups: rendered SceneWorld scenes of the segmenter's evaluation world (seed
1000; also at 32 and 128 px, grey, upside down), the shipped generator's samples, drawn faces
and MNIST-like digits (``tests/test_domain.py``), textures (smooth noise, stripes, fine
noise, checkerboards), the samples of a random-weight DCGAN and of the shipped generator's
architecture with random weights, and uniform noise; with ``--generator SPEC`` (repeatable,
any generator spelling, e.g. a real checkpoint of another domain), that generator's samples
too. Prints a table, then one JSON line.

    python benchmarks/bench_domain.py --generator mnist_gan:generator
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from test_domain import digits, faces, random_proggan  # noqa: E402

from gandissect.dissect import latents  # noqa: E402
from gandissect.domain import check_domain  # noqa: E402
from gandissect.models import registry  # noqa: E402
from gandissect.world import render_batch  # noqa: E402
from gandissect.world.dataset import image_to_tensor  # noqa: E402


def textures(n: int, seed: int) -> torch.Tensor:
    """Smooth coloured noise, stripes, fine noise and checkerboards, in turn."""
    rng = np.random.default_rng(seed)
    g = torch.Generator().manual_seed(seed)
    yy, xx = np.mgrid[0:64, 0:64] / 64.0
    pictures = []
    for i in range(n):
        c1, c2 = rng.uniform(0, 1, 3), rng.uniform(0, 1, 3)
        if i % 4 == 0:
            coarse = torch.rand(1, 3, 4, 4, generator=g)
            image = F.interpolate(coarse, 64, mode="bicubic")[0].clamp(0, 1).permute(1, 2, 0)
            image = image.numpy()
        elif i % 4 == 1:
            angle, frequency = rng.uniform(0, np.pi), rng.uniform(3, 12)
            wave = 0.5 + 0.5 * np.sin(2 * np.pi * frequency * (np.cos(angle) * xx
                                                              + np.sin(angle) * yy))
            image = wave[..., None] * c1 + (1 - wave[..., None]) * c2
        elif i % 4 == 2:
            fine = torch.rand(1, 3, 32, 32, generator=g)
            image = 0.5 * F.interpolate(fine, 64, mode="bilinear")[0].permute(1, 2, 0).numpy()
            image = image + 0.5 * c1
        else:
            side = int(rng.integers(4, 16))
            board = (np.floor(xx * 64 / side) + np.floor(yy * 64 / side)) % 2
            image = board[..., None] * c1 + (1 - board[..., None]) * c2
        pictures.append((np.clip(image, 0, 1) * 255).astype(np.uint8))
    return image_to_tensor(np.stack(pictures))


def random_dcgan(n: int, seed: int) -> torch.Tensor:
    """Samples of the DCGAN paper's generator (z 100 -> 64 px) with its N(0, 0.02) init."""
    torch.manual_seed(seed)
    layers, width = [], 512
    layers += [nn.ConvTranspose2d(100, width, 4, 1, 0, bias=False), nn.BatchNorm2d(width),
               nn.ReLU()]
    for _ in range(3):
        layers += [nn.ConvTranspose2d(width, width // 2, 4, 2, 1, bias=False),
                   nn.BatchNorm2d(width // 2), nn.ReLU()]
        width //= 2
    layers += [nn.ConvTranspose2d(width, 3, 4, 2, 1, bias=False), nn.Tanh()]
    generator = nn.Sequential(*layers)
    for module in generator.modules():
        if isinstance(module, nn.ConvTranspose2d):
            nn.init.normal_(module.weight, 0, 0.02)
    generator.train()  # untrained running statistics would flatten every image: batch ones
    with torch.no_grad():
        return generator(torch.randn(n, 100, 1, 1))


def rendered(size: int):
    def make(n: int, seed: int) -> torch.Tensor:
        return image_to_tensor(render_batch(1000, range(seed * n, seed * n + n), size)["image"])
    return make


def user_samples(spec: str):
    """The samples of the generator ``spec`` names, drawn from its own latent law."""
    from gandissect.dissect.latents import sample_latents
    from gandissect.models.specs import resolve_generator

    generator = resolve_generator(spec)

    def make(n: int, seed: int) -> torch.Tensor:
        with torch.no_grad():
            return generator(sample_latents(generator, seed, range(n)))
    return make


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=32, help="images a check")
    parser.add_argument("--batches", type=int, default=4, help="checks a group")
    parser.add_argument("--generator", action="append", default=[],
                        help="also the samples of this generator (any spelling; repeatable)")
    args = parser.parse_args()
    generator = registry.load_generator("sceneworld")
    segmenter = registry.load_segmenter("sceneworld")

    def samples(n: int, seed: int) -> torch.Tensor:
        with torch.no_grad():
            return generator(latents(1, range(seed * n, seed * n + n), generator.z_dim))

    groups = {
        "SceneWorld rendered, 64 px (seed 1000)": rendered(64),
        "SceneWorld rendered, 32 px": rendered(32),
        "SceneWorld rendered, 128 px": rendered(128),
        "SceneWorld rendered, grey": lambda n, s: rendered(64)(n, s).mean(1, keepdim=True)
        .expand(-1, 3, -1, -1),
        "SceneWorld rendered, upside down": lambda n, s: rendered(64)(n, s).flip(2),
        "SceneWorld generator samples": samples,
        "faces (drawn)": faces,
        "digits (MNIST-like)": digits,
        "textures": textures,
        "random-weight DCGAN samples": random_dcgan,
        "random-weight ProGAN samples (shipped architecture)": random_proggan,
        "uniform noise": lambda n, s: torch.rand(n, 3, 64, 64,
                                                 generator=torch.Generator().manual_seed(s)) * 2
        - 1,
    }
    for spec in args.generator:
        groups[f"samples of {spec}"] = user_samples(spec)
    figures = {}
    print(f"{'images':54s} confidence   feature shift (nats)   out of domain")
    for name, make in groups.items():
        checks = [check_domain(segmenter, make(args.images, seed).float())
                  for seed in range(args.batches)]
        confidence = [c.confidence for c in checks]
        shift = [c.feature_shift for c in checks]
        out = sum(c.verdict == "out of domain" for c in checks)
        figures[name] = {"confidence": [min(confidence), max(confidence)],
                         "feature_shift": [min(shift), max(shift)], "out_of_domain": out}
        print(f"{name:54s} {min(confidence):.3f}-{max(confidence):.3f}  "
              f"{min(shift):.4f}-{max(shift):.4f}          {out}/{len(checks)}")
    reference = checks[0]
    print(f"bars: confidence below {1 - 5 * (1 - reference.reference):.4f} (5x the "
          f"uncertainty of {reference.reference}), feature shift above "
          f"{reference.feature_shift_bar}")
    print(json.dumps({"images": args.images, "batches": args.batches, "groups": figures}))


if __name__ == "__main__":
    main()
