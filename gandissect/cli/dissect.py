"""``gandissect dissect``: the command line of the dissection (thin: it validates and calls
``gandissect.dissect.dissect`` and ``gandissect.report.write_report``).

Sharded over processes with ``torchrun --nproc_per_node K -m gandissect dissect ...``: every
process takes its share of the samples, the statistics are merged after each pass, and rank 0
writes the one result (see ``gandissect.dissect.shard``).

"""

from __future__ import annotations

import argparse
from contextlib import nullcontext
from pathlib import Path

from gandissect.cli.common import add_device_argument, add_generator_arguments, load_generator
from gandissect.errors import UserError

__all__ = ["register"]


def _run_dissect(args: argparse.Namespace) -> int:
    import torch.distributed as dist

    from gandissect.dissect import check_layers, check_settings
    from gandissect.dissect.shard import init_from_environment
    from gandissect.fileio import FolderLock, writable_folder
    from gandissect.models.specs import resolve_segmenter

    layers = args.layer or ["layer4"]
    check_settings(args.samples, args.quantile, args.threshold, args.top_k, args.batch,
                   args.min_iou, args.quantile_over)
    if args.images < 0:
        raise UserError("--images must be 0 or more")
    out = writable_folder(args.out)
    shard, device = init_from_environment(args.device)
    try:
        generator = load_generator(args, device)
        segmenter = resolve_segmenter(args.segmenter, device, args.segmenter_weights)
        check_layers(generator, layers)
        cache = Path(args.cache) if args.cache else out / "cache"
        # the inputs are checked: only now does the output folder appear (with its lock)
        lock = (nullcontext() if cache.resolve() == out.resolve()  # dissect locks its cache
                else FolderLock(out, shard.lock_name(), what="--out folder"))
        with lock:
            return _dissect(args, generator, segmenter, layers, out, cache, shard)
    finally:
        if not shard.single and dist.is_initialized():
            dist.destroy_process_group()


def _dissect(args: argparse.Namespace, generator, segmenter, layers: list[str], out: Path,
             cache: Path, shard) -> int:
    from gandissect.dissect import dissect
    from gandissect.report import write_report

    result = dissect(
        generator, segmenter, layers, n=args.samples, seed=args.seed, quantile=args.quantile,
        min_iou=args.min_iou, top_k=args.top_k, batch=args.batch, threshold=args.threshold,
        cache_dir=cache, quantile_over=args.quantile_over, segmenter_name=args.segmenter,
        selection_seed=args.selection_seed, selection_n=args.selection_samples, shard=shard,
        checkpoint_seconds=args.checkpoint_seconds,
    )
    if shard.rank != 0:
        return 0  # rank 0 holds the same merged result and writes it
    result.settings.update(generator_name=args.generator, segmenter_name=args.segmenter)
    if args.no_sketch:
        for layer in result.layers:
            layer.stats.pop("quantile", None)
    path = write_report(result, out, generator=generator, html=not args.no_html,
                        images=min(args.images, args.top_k))
    for layer in result.layers:
        print(f"{layer.layer}: {len(layer.interpretable())} of {len(layer.units)} units "
              "interpretable")
    print(f"wrote {path}" + ("" if args.no_html else f" and {out / 'report.html'}"))
    return 0


def register(commands) -> None:
    """Add ``dissect`` to an argparse sub-parsers action."""
    parser = commands.add_parser(
        "dissect", help="label each unit of a generator's layers with the concept it draws",
        description="GAN Dissection: threshold each unit's upsampled activation, segment the "
                    "generated images, and score every unit against every concept by IoU.")
    add_generator_arguments(parser)
    parser.add_argument("--layer", action="append",
                        help="layer to dissect (repeat for several; default layer4)")
    parser.add_argument("--samples", type=int, default=10000, help="number of latents")
    parser.add_argument("--seed", type=int, default=1, help="seed of the latent sample")
    parser.add_argument("--quantile", type=float, default=0.99,
                        help="per-unit threshold level in quantile mode")
    parser.add_argument("--threshold", choices=["quantile", "iqr"], default="quantile",
                        help="fixed quantile threshold, or adaptive per-concept (max IQR)")
    parser.add_argument("--quantile-over", choices=["layer", "image"], default="layer",
                        help="take the threshold quantile over the layer's cells (default) or "
                             "over the maps upsampled to the image, as GAN Dissection's "
                             "reference code does (about twice the active pixels)")
    parser.add_argument("--min-iou", type=float, default=None,
                        help="interpretable above this IoU (default 0.04; 0.05 in iqr mode)")
    parser.add_argument("--top-k", type=int, default=12, help="top images kept per unit")
    parser.add_argument("--batch", type=int, default=32, help="samples per batch")
    parser.add_argument("--selection-seed", type=int, default=None,
                        help="iqr mode: seed of the threshold-selection sample (seed + 1000)")
    parser.add_argument("--selection-samples", type=int, default=None,
                        help="iqr mode: size of the selection sample (min(samples, 2000))")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--cache", default=None,
                        help="cache folder for labels and resumable statistics (OUT/cache)")
    parser.add_argument("--checkpoint-seconds", type=float, default=30.0,
                        help="save the statistics at least this often (a killed run resumes)")
    parser.add_argument("--images", type=int, default=8, help="top images shown per unit")
    parser.add_argument("--no-html", action="store_true", help="write only the JSON and stats")
    parser.add_argument("--no-sketch", action="store_true",
                        help="leave the activation quantile sketches out of stats_<layer>.pt "
                             "(tens of MB; needed only by passes that continue this run, "
                             "which keep their own copy under --cache)")
    add_device_argument(parser)
    parser.set_defaults(run=_run_dissect)
