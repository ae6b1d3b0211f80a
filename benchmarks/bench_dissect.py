"""Dissection cost against the bare cost of generating and segmenting the same samples.

    python benchmarks/bench_dissect.py [--samples 10000] [--batch 32] [--layer layer4]
    python benchmarks/bench_dissect.py --device cuda [--quantile-over image]

Uses the shipped SceneWorld generator and segmenter when their weights exist, else stand-ins of
the same architectures and cost (random weights: ``--stand-in`` forces them; ``--z-dim`` and
``--channels`` shape the generator, ``--seg-channels`` the segmenter). Prints the wall time of
``dissect`` at the layer, the time of one generator forward plus one segmenter forward over the
same samples and batch size, their ratio (the bar is <= 1.3, on a CPU as on a GPU), and the
process's peak memory (and, on a GPU, its peak GPU memory), then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time

import torch

from gandissect.dissect import dissect, latents


def load_models(args):
    from gandissect.models import registry
    from gandissect.models.proggan import ProGANGenerator
    from gandissect.models.segmenter import Segmenter

    if not args.stand_in:
        try:
            generator = registry.load_generator("sceneworld")
            segmenter = registry.load_segmenter("sceneworld")
            return generator, segmenter, "shipped sceneworld"
        except FileNotFoundError:
            pass
    torch.manual_seed(0)
    generator = ProGANGenerator(args.z_dim, args.channels).eval()
    segmenter = Segmenter(args.seg_channels).eval()
    return generator, segmenter, "stand-in (random weights, shipped architectures)"


def peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024 if sys.platform == "darwin" else 1024)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (GPU kernels run asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def bare_cost(generator, segmenter, n: int, batch: int, device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    for first in range(0, n, batch):
        z = latents(1, range(first, min(first + batch, n)), generator.z_dim)
        segmenter.segment(generator(z.to(device)))
    synchronize(device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=10000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--layer", default="layer4")
    parser.add_argument("--threshold", choices=["quantile", "iqr"], default="quantile")
    parser.add_argument("--quantile-over", choices=["layer", "image"], default=None,
                        help="where the threshold quantile is taken (dissect's default)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--stand-in", action="store_true", help="never load shipped weights")
    parser.add_argument("--z-dim", type=int, default=256)
    parser.add_argument("--channels", type=int, nargs="+", default=[256, 256, 128, 64, 32])
    parser.add_argument("--seg-channels", type=int, nargs="+", default=[24, 48, 96, 160])
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    generator, segmenter, which = load_models(args)
    generator, segmenter = generator.to(device), segmenter.to(device)
    options = {} if args.quantile_over is None else {"quantile_over": args.quantile_over}

    bare_cost(generator, segmenter, args.batch, args.batch, device)  # warm up
    bare = bare_cost(generator, segmenter, args.samples, args.batch, device)
    rss_bare = peak_rss_mb()
    with tempfile.TemporaryDirectory() as cache:
        synchronize(device)
        start = time.perf_counter()
        result = dissect(generator, segmenter, args.layer, n=args.samples, batch=args.batch,
                         threshold=args.threshold, cache_dir=cache, progress=False, **options)
        synchronize(device)
        seconds = time.perf_counter() - start
    figures = {
        "models": which, "device": str(device), "samples": args.samples, "batch": args.batch,
        "layer": args.layer, "threshold": args.threshold,
        "quantile_over": result.settings["quantile_resolution"],
        "threads": torch.get_num_threads(),
        "dissect_s": round(seconds, 2), "generate_and_segment_s": round(bare, 2),
        "ratio": round(seconds / bare, 3), "bar": 1.3,
        "peak_rss_mb_after_baseline": round(rss_bare, 1),
        "peak_rss_mb_after_dissect": round(peak_rss_mb(), 1),
        "interpretable_units": len(result.layer(args.layer).interpretable()),
    }
    if device.type == "cuda":
        figures["gpu"] = torch.cuda.get_device_name(device)
        figures["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    print(f"models: {which}, on {device}")
    print(f"dissect {args.samples} samples at {args.layer}: {seconds:.1f} s")
    print(f"one generator + one segmenter forward over them: {bare:.1f} s")
    print(f"ratio {seconds / bare:.3f} (bar <= 1.3); "
          f"peak memory {figures['peak_rss_mb_after_dissect']} MB")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
