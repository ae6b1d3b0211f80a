"""``gandissect train generator|segmenter|classifier``: start or continue a training run."""

from __future__ import annotations

import argparse


def _run_generator(args: argparse.Namespace) -> int:
    from gandissect.train.gan import train_generator

    trainer = train_generator(args.run_dir, threads=args.threads, kimg=args.kimg,
                              checkpoint_minutes=args.checkpoint_minutes)
    print(f"{trainer.images_seen:,} images seen; weights in "
          f"{trainer.run.path / 'sceneworld_generator.safetensors'}")
    return 0


def register(commands) -> None:
    """Add ``train`` and its model sub-commands."""
    train = commands.add_parser("train", help="train the shipped SceneWorld models (resumable)")
    models = train.add_subparsers(dest="model", metavar="MODEL")
    models.required = True
    gen = models.add_parser("generator", help="the ProGAN-style SceneWorld generator")
    gen.add_argument("--run", dest="run_dir", required=True,
                     help="run folder; an existing checkpoint there is continued")
    gen.add_argument("--kimg", type=float, default=None,
                     help="train until this many thousand images (default 400)")
    gen.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    gen.add_argument("--checkpoint-minutes", type=float, default=5.0)
    gen.set_defaults(run=_run_generator)

    from gandissect.train.supervised_commands import register_models

    register_models(models)
