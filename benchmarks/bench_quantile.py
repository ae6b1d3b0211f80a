"""Quantile sketch against exact torch.kthvalue: speed, memory and accuracy.

    python benchmarks/bench_quantile.py [--units 256] [--values 2000000]

Prints, from one run on the same data: seconds to update the sketch with all values (streamed in
chunks, as a dissection does) against seconds for an exact ``torch.kthvalue`` over the whole
tensor (which must hold every value in memory); the sketch's memory at growing value counts
(constant) against the exact method's (linear); and the realised fraction of values above each
unit's estimated 0.99 level for normal, log-normal and sparse ReLU-like data.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from gandissect.stats import Quantile


def make(kind: str, units: int, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(units, n, generator=g)
    if kind == "lognormal":
        x.exp_()
    elif kind == "relu":
        x.sub_(0.5).relu_()
    return x * torch.logspace(-2, 2, units)[:, None]


def sketch_bytes(sketch: Quantile) -> int:
    tensors = (sketch.counts, sketch.minimum, sketch.maximum)
    return sum(t.numel() * t.element_size() for t in tensors)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=256)
    parser.add_argument("--values", type=int, default=2_000_000, help="values per unit")
    parser.add_argument("--chunk", type=int, default=250_000, help="values per unit per add")
    args = parser.parse_args()
    units, n, q = args.units, args.values, 0.99
    results: dict[str, object] = {"units": units, "values_per_unit": n,
                                  "threads": torch.get_num_threads()}

    data = make("normal", units, n, seed=0)
    sketch = Quantile()
    start = time.perf_counter()
    for chunk in data.split(args.chunk, dim=1):
        sketch.add_maps(chunk.t())
    estimate = sketch.quantiles(q)
    sketch_seconds = time.perf_counter() - start

    start = time.perf_counter()
    exact = torch.kthvalue(data, round(q * n), dim=1).values
    kth_seconds = time.perf_counter() - start
    results["sketch_update_and_query_s"] = round(sketch_seconds, 3)
    results["exact_kthvalue_s"] = round(kth_seconds, 3)
    results["speed_ratio_kthvalue_over_sketch"] = round(kth_seconds / sketch_seconds, 2)
    results["max_relative_value_error"] = float(((estimate - exact) / exact).abs().max())
    print(f"update+query sketch: {sketch_seconds:.2f} s   exact kthvalue: {kth_seconds:.2f} s   "
          f"(kthvalue / sketch = {kth_seconds / sketch_seconds:.2f}x)")

    memory = []
    growing = Quantile()
    added = 0
    for target in (10**4, 10**5, 10**6, n):
        while added < target:
            step = min(args.chunk, target - added)
            growing.add_maps(data[:, added:added + step].t())
            added += step
        assert growing.count == added  # also flushes pooled batches before measuring
        memory.append({"values_per_unit": added,
                       "sketch_mb": round(sketch_bytes(growing) / 2**20, 2),
                       "exact_needs_mb": round(units * added * 4 / 2**20, 2)})
        print(f"values/unit {added:>9,}: sketch {memory[-1]['sketch_mb']:8.2f} MB   "
              f"all values (exact) {memory[-1]['exact_needs_mb']:9.2f} MB")
    results["memory"] = memory
    del data

    accuracy = {}
    for kind in ("normal", "lognormal", "relu"):
        data = make(kind, units, n, seed=1)
        s = Quantile()
        for chunk in data.split(args.chunk, dim=1):
            s.add_maps(chunk.t())
        level = s.quantiles(q)
        fraction = (data > level[:, None]).double().mean(1) * 100
        accuracy[kind] = [round(float(fraction.min()), 4), round(float(fraction.max()), 4)]
        print(f"{kind:>9}: % of values above the estimated 0.99 level: "
              f"{fraction.min():.4f} .. {fraction.max():.4f} over {units} units (bar 0.97 .. 1.03)")
        del data
    results["percent_above_q99_min_max"] = accuracy
    print(json.dumps(results))


if __name__ == "__main__":
    main()
