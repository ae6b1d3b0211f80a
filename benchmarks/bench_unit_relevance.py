"""Each class's top units against random units of the same count, on the shipped classifier.

    python benchmarks/bench_unit_relevance.py [--n 600] [--k 10 20 40] [--draws 3]

Units of ``layer4`` are ranked per class on SceneWorld world 1001's scenes ``0 .. n-1``
(``gandissect.units_relevance.class_unit_ranking``); accuracy is measured on scenes
``n .. 2n-1``. For each k it prints, per class, the class's accuracy with its top k units
ablated and the mean over ``--draws`` sets of k random units, and the seconds taken.
"""

from __future__ import annotations

import argparse
import time

import torch

from gandissect.models.registry import load_classifier
from gandissect.units_relevance import (
    ablation_accuracy,
    class_names,
    class_unit_ranking,
    sceneworld_scenes,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=600)
    parser.add_argument("--k", type=int, nargs="+", default=[10, 20, 40])
    parser.add_argument("--draws", type=int, default=3)
    args = parser.parse_args()
    model = load_classifier("sceneworld")
    probe, probe_labels = sceneworld_scenes(1001, 0, args.n, 64)
    images, labels = sceneworld_scenes(1001, args.n, args.n, 64)
    ranking = class_unit_ranking(model, probe, probe_labels, "layer4")
    names = class_names(model, 6)
    chance = torch.Generator().manual_seed(0)
    for k in args.k:
        start = time.perf_counter()
        top = ablation_accuracy(model, images, labels, "layer4", ranking.top_units(k), k)
        random = [ablation_accuracy(model, images, labels, "layer4",
                                    {c: torch.randperm(160, generator=chance)[:k].tolist()
                                     for c in ranking.classes}, k)
                  for _ in range(args.draws)]
        print(f"k = {k} ({time.perf_counter() - start:.0f} s): class accuracy, top k ablated / "
              f"random k ablated (mean of {args.draws})")
        for c in ranking.classes:
            chance_accuracy = sum(r.classes[c].accuracy_ablated for r in random) / len(random)
            print(f"  {names[c]:16s} {top.classes[c].accuracy:.3f} -> "
                  f"{top.classes[c].accuracy_ablated:.3f} / {chance_accuracy:.3f}")


if __name__ == "__main__":
    main()
