"""Latency of one masked edit of one sample at the generator's resolution (bar: median <= 100 ms).

    python benchmarks/bench_edit.py [--repeats 50] [--threads 2]

Uses the shipped SceneWorld generator when its weights exist, else the same architecture with
random weights (latency does not depend on the weights). Prints the median, 10th and 90th
percentile latencies of ``render_edited`` with one painted stroke of 15 units, beside the
latency of the plain forward pass of the same sample.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from gandissect.intervene import Stroke, render_edited
from gandissect.models.registry import load_generator, shipped_path
from gandissect.train.gan import stand_in_generator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if shipped_path("generator").exists():
        generator, source = load_generator("sceneworld"), "shipped"
    else:
        generator, source = stand_in_generator(), "random"
    size = generator.resolution
    z = torch.randn(1, generator.z_dim)
    mask = torch.zeros(size, size)
    mask[size // 4: size // 2, size // 8: size // 2] = 1
    stroke = [Stroke(units=list(range(15)), mode="ablate", mask=mask)]

    def timed(fn) -> list[float]:
        fn()  # warm up
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start) * 1000)
        return times

    with torch.no_grad():
        plain = timed(lambda: generator(z))
    edited = timed(lambda: render_edited(generator, z, "layer4", stroke))
    deciles = statistics.quantiles(edited, n=10)
    result = {"generator": source, "resolution": size, "threads": torch.get_num_threads(),
              "edit_median_ms": round(statistics.median(edited), 2),
              "edit_p10_ms": round(deciles[0], 2), "edit_p90_ms": round(deciles[-1], 2),
              "plain_forward_median_ms": round(statistics.median(plain), 2)}
    print(f"masked edit of one {size}px sample: median {result['edit_median_ms']} ms "
          f"(p10 {result['edit_p10_ms']}, p90 {result['edit_p90_ms']}); plain forward "
          f"{result['plain_forward_median_ms']} ms; bar 100 ms")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
