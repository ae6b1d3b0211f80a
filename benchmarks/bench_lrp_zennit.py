"""LRP (the standard composite: z-box, generalised gamma, epsilon) against zennit's
``EpsilonGammaBox`` on the torchvision classifiers people bring.

    OMP_NUM_THREADS=2 python benchmarks/bench_lrp_zennit.py [--size 224 --batch 4 --repeats 2
        --models resnet18,resnet50,vgg11,densenet121 --json]

Each model has random weights, BatchNorm statistics and affine parameters drawn at random
(eval mode), 1000 classes, targets 0..N-1 on uniform images in [-1, 1]. zennit runs with the
canonizers that match (``ResNetCanonizer``, ``VGGCanonizer``; for DenseNet, which zennit has no
canonizer for, ``NamedMergeBatchNorm`` of ``conv0``/``norm0`` and each layer's
``conv1``/``norm2``, and a forward whose final ReLU and pooling are modules; see
``gandissect.attribute.lrp``). Printed per model, all in one run: the lowest per-image Pearson
r, the largest ``|ours - zennit|`` relative to the largest ``|zennit|`` of the image, and our
time over zennit's (the faster of ``--repeats`` calls of each, after a warm-up).

zennit's BatchNorm merge leaves each merged BatchNorm computing ``x / sqrt(1 + eps)``, and
DenseNet-121's maps at 224 px are sensitive to that shift; ``--bn-eps 0`` makes the merge exact,
and the maps then agree to float rounding.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torchvision
from torch import nn

from gandissect.attribute import LRP
from gandissect.attribute.evaluate import METHODS
from gandissect.attribute.peers import with_random_statistics, zennit_lrp

CLASSES = 1000


def random_model(name: str, bn_eps: float | None = None) -> nn.Module:
    torch.manual_seed(0)
    return with_random_statistics(torchvision.models.get_model(name, num_classes=CLASSES),
                                  bn_eps=bn_eps)


def fastest(run, repeats: int) -> tuple[float, torch.Tensor]:
    result = run()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
    return min(times), result


def compare(name: str, size: int, batch: int, repeats: int, bn_eps: float | None) -> dict:
    model = random_model(name, bn_eps)
    x = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(1)) * 2 - 1
    target = torch.arange(batch)
    lrp = METHODS["lrp"].build(model, "")
    assert isinstance(lrp, LRP)
    ours_s, ours = fastest(lambda: lrp.attribute(x, target), repeats)
    peer_s, peer = fastest(lambda: zennit_lrp(model, x, target)[0], repeats)
    pearson = [float(torch.corrcoef(torch.stack([p, q]))[0, 1])
               for p, q in zip(ours.flatten(1), peer.flatten(1))]
    relative = ((ours - peer).flatten(1).abs().max(1).values
                / peer.flatten(1).abs().max(1).values)
    return {"model": name, "min_pearson": min(pearson),
            "max_relative_difference": float(relative.max()),
            "ours_s": ours_s, "zennit_s": peer_s, "speed_ratio": ours_s / peer_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--models", default="resnet18,resnet50,vgg11,densenet121")
    parser.add_argument("--bn-eps", type=float, default=None,
                        help="every BatchNorm's eps (default: torchvision's 1e-5); 0 makes "
                             "zennit's BatchNorm merge exact")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = [compare(name, args.size, args.batch, args.repeats, args.bn_eps)
            for name in args.models.split(",")]
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    eps = "torchvision's" if args.bn_eps is None else args.bn_eps
    print(f"{args.size} px, batch {args.batch}, {torch.get_num_threads()} threads, "
          f"BatchNorm eps {eps}, torch {torch.__version__}")
    print(f"{'model':<13}{'min r':>12}{'max |diff| rel':>16}{'ours s':>9}{'zennit s':>10}"
          f"{'ours/zennit':>13}")
    for row in rows:
        print(f"{row['model']:<13}{row['min_pearson']:>12.8f}"
              f"{row['max_relative_difference']:>16.2e}{row['ours_s']:>9.2f}"
              f"{row['zennit_s']:>10.2f}{row['speed_ratio']:>13.2f}")


if __name__ == "__main__":
    main()
