"""Benchmark SceneWorld rendering: images per second by size and worker count.

Run: python benchmarks/bench_world_render.py [--n 2000]
Pool start-up is included in the multi-worker timing (it is part of what a user waits for).
"""

from __future__ import annotations

import argparse
import time

from gandissect.world import render_many
from gandissect.world.colors import color_table


def images_per_second(n: int, size: int, workers: int, seed: int = 0) -> float:
    """Render ``n`` scenes and return the throughput."""
    start = time.perf_counter()
    render_many(seed, range(n), size, workers=workers, chunk=max(16, n // (8 * workers)))
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=2000, help="scenes at 64 px (fewer at larger)")
    args = parser.parse_args()
    color_table()  # build the colour lookup table once, outside the timings
    render_many(0, range(8), 64, workers=1)
    cases = [(64, 1, args.n), (64, 2, args.n), (128, 1, args.n // 4), (256, 1, args.n // 10)]
    for size, workers, n in cases:
        rate = images_per_second(n, size, workers)
        print(f"size {size:4d}  workers {workers}  images {n:5d}  {rate:8.1f} images/s  "
              f"{1000.0 / rate * workers:6.2f} ms/image/worker")


if __name__ == "__main__":
    main()
