"""``gandissect train generator|segmenter|classifier``: start or continue a training run."""

from __future__ import annotations

import argparse
from importlib import import_module

from gandissect.cli import add_device_argument

# model -> (module, training function, help, default kimg, default rendering workers)
TRAINERS = {
    "generator": ("gandissect.train.gan", "train_generator",
                  "the ProGAN-style SceneWorld generator", 400, 1),
    "segmenter": ("gandissect.train.segmenter", "train_segmenter",
                  "the SceneWorld segmenter (object, part, material)", 80, 0),
    "classifier": ("gandissect.train.classifier", "train_classifier",
                   "the SceneWorld scene classifier (small ResNet)", 160, 0),
}


def _run_training(args: argparse.Namespace) -> int:
    if getattr(args, "slim", None):
        from gandissect.train.gan import slim_checkpoint

        out = slim_checkpoint(args.run_dir, args.slim)
        print(f"slim checkpoint ({out.stat().st_size / 1e6:.1f} MB) in {out}; copy it to "
              f"NEWRUN/checkpoint.pt to continue there")
        return 0
    if getattr(args, "branch", None) and getattr(args, "config", None):
        raise ValueError("--config sets up a new run; a --branch continues its source's "
                         "configuration: give one of them")
    if getattr(args, "branch", None):
        from gandissect.train.gan import branch_run

        branch_run(args.branch, args.run_dir, patch=args.patch)
        print(f"branched {args.branch} into {args.run_dir}"
              + (" with a patch discriminator" if args.patch else ""))
    elif getattr(args, "patch", False):
        raise ValueError("--patch adds the texture critic to a branch of a trained run: give "
                         "--branch OLD_RUN as well")
    if args.workers < 0:
        raise ValueError(f"--workers must be 0 or more, got {args.workers}")
    module, function, *_ = TRAINERS[args.model]
    train = getattr(import_module(module), function)
    extra = {}
    if getattr(args, "config", None):
        extra["config"] = _new_run_config(args.config, args.run_dir)
    trainer = train(args.run_dir, threads=args.threads, kimg=args.kimg, **extra,
                    checkpoint_minutes=args.checkpoint_minutes, device=args.device,
                    workers=args.workers)
    print(f"{trainer.images_seen:,} images seen; weights, checkpoint and log in "
          f"{trainer.run.path}")
    return 0


def _new_run_config(path: str, run_dir: str):
    """The ``GANConfig`` of a new generator run from the JSON object in ``path`` (fields left
    out keep their defaults). Refused for a run that already has a checkpoint, whose stored
    configuration is the one it continues with."""
    import json
    from dataclasses import fields
    from pathlib import Path

    from gandissect.train.gan import GANConfig

    if (Path(run_dir) / "checkpoint.pt").exists():
        raise ValueError(f"{run_dir} already holds a run, which continues with the configuration "
                         f"in its checkpoint: leave out --config, or start a new --run folder")
    try:
        values = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"--config {path}: cannot read a JSON object ({error})") from None
    if not isinstance(values, dict):
        raise ValueError(f"--config {path}: expected a JSON object of GANConfig fields")
    known = {f.name for f in fields(GANConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"--config {path}: unknown fields {unknown}; GANConfig has "
                         f"{sorted(known)}")
    return GANConfig(**values)


def register_models(models) -> None:
    """Add one parser per trainable model to ``train``'s sub-parsers."""
    for name, (_, _, help_text, default_kimg, default_workers) in TRAINERS.items():
        parser = models.add_parser(name, help=help_text)
        parser.add_argument("--run", dest="run_dir", required=True,
                            help="run folder; an existing checkpoint there is continued")
        parser.add_argument("--kimg", type=float, default=None,
                            help=f"train until this many thousand images "
                                 f"(default {default_kimg:g})")
        parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
        parser.add_argument("--checkpoint-minutes", type=float, default=5.0)
        add_device_argument(parser, "where to train")
        parser.add_argument("--workers", type=int, default=default_workers,
                            help=f"rendering processes (default {default_workers}; 0: render "
                                 f"in the training process)")
        if name == "generator":
            parser.add_argument("--slim", metavar="FILE",
                                help="only write a slim copy of the run's checkpoint (no "
                                     "optimiser state, float16) to FILE, to continue the run "
                                     "on another machine, and exit")
            parser.add_argument("--branch", metavar="OLD_RUN",
                                help="start --run (a new folder) from OLD_RUN's checkpoint, "
                                     "leaving OLD_RUN as it is")
            parser.add_argument("--config", metavar="JSON",
                                help="a new run's settings: a JSON object of GANConfig fields "
                                     "(channels, d_channels, batch, condition_kimg, ...); "
                                     "the rest keep their defaults")
            parser.add_argument("--patch", action="store_true",
                                help="with --branch: add the texture (patch) discriminator "
                                     "from the checkpoint's point on")
        parser.set_defaults(run=_run_training)


def register(commands) -> None:
    """Add ``train`` and its model sub-commands."""
    train = commands.add_parser("train", help="train the shipped SceneWorld models (resumable)")
    models = train.add_subparsers(dest="model", metavar="MODEL")
    models.required = True
    register_models(models)
