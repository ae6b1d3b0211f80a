"""The interventions' bars on the shipped SceneWorld models, in one run.

    python benchmarks/bench_interventions.py [--dissection DIR] [--samples 1000] [--refine]

For each concept (tree, dome, door, brick, cloud, grass, sky): the fraction of its pixels
removed by ablating the top K = 20 units everywhere, ranked by IoU and by ACE, with the
collateral change of the other pixels (evaluation seed 3; dissection seed 1, ACE selection
seed 4); with --refine also the ACE top K improved by swaps on the selection images. Then the
locality of a masked edit (mean absolute change outside the dilated mask, as a share of the
range). Prints a table and one JSON line. Needs the shipped generator, segmenter and a
dissection (computed and cached if --dissection is not given). Door insertion by context is
measured by bench_insertion_context.py.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from gandissect.ace import ace_report, units_by_iou
from gandissect.causal import ConceptRef, locality
from gandissect.dissect import dissect, latents, load_dissection
from gandissect.intervene import Stroke
from gandissect.models.registry import load_generator, load_segmenter

CONCEPTS = ("tree", "dome", "door", "brick", "cloud", "grass", "sky")
BARS = {"tree": 0.60, "dome": 0.78, "door": 0.54, "brick": 0.43, "cloud": 0.28}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dissection", help="a dissect output folder (default: dissect now)")
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--units", type=int, default=20)
    parser.add_argument("--layer", default="layer4")
    parser.add_argument("--cache", default=str(Path.home() / ".cache" / "gandissect"))
    parser.add_argument("--refine", action="store_true",
                        help="also measure the ACE top K improved by swaps (refine_by_swaps)")
    args = parser.parse_args()
    generator, segmenter = load_generator(), load_segmenter()
    if args.dissection:
        dissection = load_dissection(args.dissection, stats=True)
    else:
        dissection = dissect(generator, segmenter, [args.layer], n=10000, seed=1,
                             cache_dir=Path(args.cache) / "dissect")
    results: dict[str, object] = {"removal": {}}
    for name in CONCEPTS:
        concept = ConceptRef.find(segmenter, name)
        report = ace_report(generator, segmenter, dissection, args.layer, concept,
                            k=args.units, n=args.samples, seed=3,
                            cache_dir=Path(args.cache) / "ace", refine=args.refine)
        results["removal"][name] = report
        removed = "  ".join(f"{ranking} {value}"
                            for ranking, value in report["removed_fraction"].items())
        print(f"{name:6s} removed {removed}  collateral {report['collateral']}  "
              f"bar {BARS.get(name, '-')}")
    tree_units = units_by_iou(dissection, args.layer, ConceptRef.find(segmenter, "tree"))
    size = generator.resolution
    mask = torch.zeros(size, size)
    mask[size // 4: size // 2, size // 4: size // 2] = 1
    results["locality"] = locality(generator, args.layer,
                                   [Stroke(tree_units[:args.units], "ablate", mask)],
                                   latents(6, range(100), generator.z_dim))
    print(f"locality: mean change outside the dilated mask {results['locality']:.4f} "
          "of the range (bar 0.02)")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
