"""Sharded dissection: wall time of 1 process against K processes (torchrun, gloo), same cores.

    python benchmarks/bench_dissect_scaling.py [--samples 2000] [--processes 1,2]
        [--proggan256-samples 32]

Each run is the ``gandissect dissect`` command line in a fresh process group: one process with
every core (``--threads`` = the machine's cores), or K processes with cores / K threads each, so
the comparison uses the same hardware. The generator is the shipped SceneWorld one when its
weights exist, else the same architecture with random weights (cost does not depend on the
weights), with the shipped segmenter; layer4, quantile mode, no HTML. All runs' dissect.json
must be identical (checked).

``--proggan256-samples``: also measures the per-sample cost of a 256 px ProGAN in GAN
Dissection's layout (z 512, 14 layers; random weights, loaded through ``proggan:PATH``) with the
same command on one process, and from it the estimate for a 10,000-sample dissection on 1 and
8 devices: T_K = N * c / (K * e) + startup, with c the measured per-sample cost and e the
parallel efficiency measured here at 2 processes (an estimate: the devices' own c must be
measured on them, e.g. with ``--device cuda`` on a GPU machine).
Prints a table and one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def generator_spec(folder: Path) -> tuple[str, str]:
    """The shipped generator, or a random one of its architecture written to ``folder``."""
    from gandissect.models.registry import save_weights, shipped_path
    from gandissect.train.gan import stand_in_generator

    if shipped_path("generator").is_file():
        return "sceneworld", "shipped sceneworld"
    generator = stand_in_generator()
    path = folder / "stand_in_generator.safetensors"
    save_weights(generator, path, generator.config())
    return str(path), "random weights, shipped architecture"


def run(spec: str, samples: int, processes: int, threads: int, out: Path, batch: int,
        device: str) -> float:
    """Seconds of wall time of one dissect command (process start-up included)."""
    argv = ["dissect", "--generator", spec, "--layer", "layer4", "--samples", str(samples),
            "--batch", str(batch), "--seed", "1", "--no-html", "--images", "0",
            "--device", device, "--out", str(out)]
    if processes == 1:
        command = [sys.executable, "-m", "gandissect", *argv]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                   "--nproc_per_node", str(processes), "-m", "gandissect", *argv]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return seconds


def proggan256(folder: Path) -> str:
    """A random 256 px ProGAN in GAN Dissection's file layout (state dict, layer1..14)."""
    from gandissect.models.proggan import ProGANGenerator

    torch.manual_seed(0)
    generator = ProGANGenerator(512, [512, 512, 512, 512, 256, 128, 64])
    path = folder / "proggan256.pth"
    torch.save(generator.state_dict(), path)
    return f"proggan:{path}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--processes", default="1,2")
    parser.add_argument("--cores", type=int, default=os.cpu_count())
    parser.add_argument("--proggan256-samples", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    counts = [int(k) for k in args.processes.split(",")]

    with tempfile.TemporaryDirectory(prefix="bench-scaling-") as temporary:
        folder = Path(temporary)
        spec, source = generator_spec(folder)
        # start-up alone: a one-sample run (imports, model load, probe, writing the result)
        startup = run(spec, 1, 1, args.cores, folder / "startup", args.batch, args.device)
        times, results = {}, {}
        for k in counts:
            out = folder / f"p{k}"
            times[k] = run(spec, args.samples, k, max(args.cores // k, 1), out, args.batch,
                           args.device)
            results[k] = (out / "dissect.json").read_text()
            print(f"{k} process(es) x {max(args.cores // k, 1)} thread(s): {times[k]:.1f} s",
                  flush=True)
        identical = len(set(results.values())) == 1
        base = counts[0]
        report = {
            "generator": source, "samples": args.samples, "batch": args.batch,
            "cores": args.cores, "startup_s": round(startup, 1),
            "wall_s": {str(k): round(t, 1) for k, t in times.items()},
            "speedup": {str(k): round(times[base] / t, 2) for k, t in times.items()},
            "identical_json": identical,
        }
        if 2 in times and 1 in times:
            work1, work2 = times[1] - startup, times[2] - startup
            report["efficiency_2"] = round(work1 / (2 * work2), 2)
        if args.proggan256_samples:
            n = args.proggan256_samples
            spec256 = proggan256(folder)
            small = run(spec256, 1, 1, args.cores, folder / "g1", 8, args.device)
            big = run(spec256, n, 1, args.cores, folder / "g256", 8, args.device)
            per_sample = (big - small) / (n - 1)
            efficiency = report.get("efficiency_2", 1.0)
            report["proggan256"] = {
                "samples": n, "per_sample_s": round(per_sample, 3),
                "estimate_10000_hours": {
                    "1 process": round(10000 * per_sample / 3600, 2),
                    "8 processes": round(10000 * per_sample / (8 * efficiency) / 3600, 2),
                },
                "note": f"per-sample cost on {args.device} with {args.cores} cores; "
                        "8 GPUs: put a GPU's measured per-sample cost in the same formula",
            }
        if not identical:
            raise SystemExit("the runs' dissect.json differ: " + json.dumps(report))
    print(json.dumps(report))


if __name__ == "__main__":
    main()
