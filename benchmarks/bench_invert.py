"""Inversion of SceneWorld scenes into the shipped generator: PSNR after each stage, object
label agreement and seconds per image, with random starts and (when shipped) the encoder.

    python benchmarks/bench_invert.py --world-seed 1000 --scenes 8

World seed 1000 is where the inversion's step counts and learning rates were chosen; report
held-out figures from another world seed (1001).
"""

from __future__ import annotations

import argparse
import statistics

import torch

from gandissect.invert import invert, label_agreement
from gandissect.models.registry import load_generator, load_segmenter, shipped_path
from gandissect.world import render


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world-seed", type=int, default=1000)
    parser.add_argument("--scenes", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    generator, segmenter = load_generator(), load_segmenter()
    encoders = {"random starts": None}
    if shipped_path("encoder").is_file():
        from gandissect.models.registry import load_encoder

        encoders["encoder"] = load_encoder()
    for start, encoder in encoders.items():
        rows = []
        for index in range(args.scenes):
            image = render(args.world_seed, index, generator.resolution).image
            inv = invert(generator, image, encoder=encoder, progress=lambda *_: None)
            agreement = label_agreement(segmenter, inv.target, inv.reconstruction)
            rows.append({**inv.stages, "agreement": agreement, "seconds": inv.seconds})
            stages = " ".join(f"{k} {v:.2f}" for k, v in inv.stages.items())
            print(f"{start}: scene {index}: {stages} dB, object agreement {agreement:.3f}, "
                  f"{inv.seconds:.1f} s", flush=True)
        means = {k: statistics.mean(row[k] for row in rows) for k in rows[0]}
        print(f"{start}: mean over {len(rows)} scenes of world seed {args.world_seed}: "
              + ", ".join(f"{k} {v:.3f}" for k, v in means.items()), flush=True)


if __name__ == "__main__":
    main()
