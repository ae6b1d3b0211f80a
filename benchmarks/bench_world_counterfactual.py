"""Benchmark counterfactual SceneWorld scenes against plain renders: milliseconds per scene.

Run: python benchmarks/bench_world_counterfactual.py [--n 200] [--size 64]
"""

from __future__ import annotations

import argparse
import time

from gandissect.world import render
from gandissect.world.colors import color_table

CASES = (
    ("plain", {}),
    ("without tree", {"without": ("tree",)}),
    ("without building, door", {"without": ("building", "door")}),
    ("add tree", {"add": ("tree",)}),
    ("without cloud, add tree", {"without": ("cloud",), "add": ("tree",)}),
)


def ms_per_scene(n: int, size: int, **kwargs) -> float:
    """Render scenes 0..n-1 of world 0 and return the mean time per scene."""
    start = time.perf_counter()
    for index in range(n):
        render(0, index, size, **kwargs)
    return (time.perf_counter() - start) * 1000.0 / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=200, help="scenes per case")
    parser.add_argument("--size", type=int, default=64, help="image size in pixels")
    args = parser.parse_args()
    color_table()  # build the colour lookup table once, outside the timings
    for name, kwargs in CASES:
        print(f"{name:26s} {ms_per_scene(args.n, args.size, **kwargs):6.2f} ms/scene")


if __name__ == "__main__":
    main()
