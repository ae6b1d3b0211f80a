"""How the scene classifier's training decides where its class activation maps point.

    python benchmarks/bench_cam_training.py [--runs 40k:0,160k:0,40k:1,160k:1,40k:0:small,...]
        [--n 200 --seed 1001 --out DIR --threads 2]

Each run trains a classifier with ``gandissect train classifier``'s recipe (``ClassifierConfig``)
for the given thousands of images and training seed; ``:small`` replaces the 3x3 convolutions
of ``layer3`` and ``layer4`` by 1x1 ones (``layer4``'s receptive field shrinks from 55 px to
23 px), ``:small4`` only those of ``layer4`` (39 px). Then the CAM and Grad-CAM pointing game
on ``--n`` held-out scenes (``gandissect.attribute.evaluate``, target the true class), beside
the centre baseline, per class, and top-1 on 500 scenes. Prints a table and one JSON line.
Runs already trained in ``--out`` are evaluated again without training (the runs resume).
About 4.5 minutes of training per 40k images on 2 cores.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from torch import nn

from gandissect.attribute.evaluate import evaluate_attribution
from gandissect.evaluate.classifier import evaluate_classifier
from gandissect.models.classifier import SceneClassifier
from gandissect.train.classifier import ClassifierConfig, ClassifierTrainer
from gandissect.train.common import run_training
from gandissect.train.supervised import SupervisedTrainer

# variant -> layers whose 3x3 convolutions become 1x1
VARIANTS = {"": (), "small": ("layer3", "layer4"), "small4": ("layer4",)}


def pointwise(model: SceneClassifier, layers: tuple[str, ...]) -> SceneClassifier:
    """``model`` with every 3x3 convolution under ``layers`` replaced by a 1x1 one (same
    channels and stride, fresh weights)."""
    for name, module in list(model.named_modules()):
        if (isinstance(module, nn.Conv2d) and module.kernel_size == (3, 3)
                and name.split(".")[0] in layers):
            parent, child = name.rsplit(".", 1)
            setattr(model.get_submodule(parent), child,
                    nn.Conv2d(module.in_channels, module.out_channels, 1, module.stride,
                              bias=False))
    return model


def trainer_for(layers: tuple[str, ...]) -> type[ClassifierTrainer]:
    """A ``ClassifierTrainer`` whose model has 1x1 convolutions under ``layers`` (built from the
    same seeded random state as the recipe's model, then changed)."""

    class Trainer(ClassifierTrainer):
        def __init__(self, config, run, device="cpu", workers=0) -> None:
            torch.manual_seed(config.seed)
            model = pointwise(SceneClassifier(config.channels, config.blocks,
                                              strides=config.strides), layers)
            SupervisedTrainer.__init__(self, config, model, run, device, workers)

    return Trainer


def train(run_dir: Path, kimg: float, seed: int, variant: str, threads: int) -> nn.Module:
    """Train (or resume) one run; its model in eval mode."""
    trainer = run_training(trainer_for(VARIANTS[variant]), ClassifierConfig, str(run_dir),
                           ClassifierConfig(seed=seed, kimg=kimg), threads=threads)
    return trainer.model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="40k:0,160k:0,40k:1,160k:1,40k:0:small,40k:0:small4",
                        help="comma-separated KIMGk:SEED[:small|:small4]")
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1001, help="held-out world seed")
    parser.add_argument("--out", default="bench_cam_training")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    runs = []
    for spelling in args.runs.split(","):
        parts = spelling.split(":")
        if len(parts) not in (2, 3) or not parts[0].endswith("k") or (
                len(parts) == 3 and parts[2] not in VARIANTS):
            parser.error(f"bad run {spelling!r}: write KIMGk:SEED or KIMGk:SEED:small|small4")
        runs.append((float(parts[0][:-1]), int(parts[1]), parts[2] if len(parts) == 3 else ""))
    results = []
    for kimg, seed, variant in runs:
        name = f"{kimg:g}k-seed{seed}" + (f"-{variant}" if variant else "")
        model = train(Path(args.out) / name, kimg, seed, variant, args.threads)
        torch.set_num_threads(args.threads)
        scores = evaluate_attribution(model, methods=["cam", "gradcam"], n=args.n, seed=args.seed,
                                      cascade_n=0, progress=False)
        top1 = evaluate_classifier(model, n=500, seed=args.seed)["top1"]
        cam = scores["cam"]
        results.append({"run": name, "kimg": kimg, "seed": seed, "variant": variant,
                        "top1": top1, "cam": cam["pointing_game"],
                        "gradcam": scores["gradcam"]["pointing_game"],
                        "center": cam["center_baseline"],
                        "cam_per_class": {k: round(v, 3)
                                          for k, v in cam["pointing_game_per_class"].items()}})
        r = results[-1]
        print(f"{name:22s} top-1 {top1:.3f}  CAM {r['cam']:.3f}  Grad-CAM {r['gradcam']:.3f}  "
              f"centre {r['center']:.3f}  {r['cam_per_class']}", flush=True)
    print(json.dumps({"n": args.n, "seed": args.seed, "runs": results}))


if __name__ == "__main__":
    main()
