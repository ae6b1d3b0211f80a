"""Our attribution methods against Captum, pytorch-grad-cam and zennit: the cross-check table.

    OMP_NUM_THREADS=2 python benchmarks/bench_crosscheck.py [--size 112 --batch 4 --repeats 3
        --methods gradcam,lrp,... --json]

On a torchvision ResNet-18 with random weights (BatchNorm statistics randomised, eval mode) at
``--size`` px, layer4, and on the shipped SceneWorld classifier on held-out scenes (world 1001,
64 px, layer4), targets 1..N and the true classes. For each method and its peer
(``gandissect.attribute.peers.PAIRS``): the largest difference relative to the largest value
of our map, the lowest per-image Pearson r, and our time over the peer's (the faster of
``--repeats`` calls of each, after a warm-up), all in one run.
"""

from __future__ import annotations

import os

os.environ.setdefault("TQDM_DISABLE", "1")  # pytorch-grad-cam's Score-CAM bars (read at import)

import argparse  # noqa: E402
import json  # noqa: E402
import warnings  # noqa: E402

import torch  # noqa: E402
from torch import nn  # noqa: E402

from gandissect.attribute.peers import (  # noqa: E402
    PAIRS,
    crosscheck,
    format_rows,
    with_random_statistics,
)


def random_resnet18() -> nn.Module:
    import torchvision

    torch.manual_seed(0)
    return with_random_statistics(torchvision.models.resnet18(num_classes=10))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--methods", default=",".join(PAIRS))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    methods = args.methods.split(",")

    from gandissect.models.registry import load_classifier
    from gandissect.world import render_batch
    from gandissect.world.dataset import image_to_tensor

    x = torch.rand(args.batch, 3, args.size, args.size,
                   generator=torch.Generator().manual_seed(1)) * 2 - 1
    rendered = render_batch(1001, range(args.batch), 64)
    cases = {
        f"torchvision ResNet-18, random weights, {args.size} px": (
            random_resnet18(), x, torch.arange(1, args.batch + 1) % 10),
        "shipped SceneWorld classifier, 64 px scenes": (
            load_classifier("sceneworld").eval(), image_to_tensor(rendered["image"]),
            torch.from_numpy(rendered["scene"] - 1)),
    }
    report = {"threads": torch.get_num_threads(), "batch": args.batch}
    for title, (model, images, target) in cases.items():
        rows, skipped = crosscheck(model, images, target, "layer4", methods, args.repeats)
        report[title] = {"rows": [row.to_json() for row in rows], "skipped": skipped}
        if not args.json:
            print(f"\n{title} (batch {args.batch}, {torch.get_num_threads()} threads)")
            print(format_rows(rows))
            for name, reason in skipped.items():
                print(f"{name}: skipped, {reason}")
    if args.json:
        print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
