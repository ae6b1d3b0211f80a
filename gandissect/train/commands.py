"""``gandissect train generator|segmenter|classifier``: start or continue a training run."""

from __future__ import annotations

import argparse
from importlib import import_module

# model -> (module, training function, help, default kimg)
TRAINERS = {
    "generator": ("gandissect.train.gan", "train_generator",
                  "the ProGAN-style SceneWorld generator", 400),
    "segmenter": ("gandissect.train.segmenter", "train_segmenter",
                  "the SceneWorld segmenter (object, part, material)", 80),
    "classifier": ("gandissect.train.classifier", "train_classifier",
                   "the SceneWorld scene classifier (small ResNet)", 40),
}


def _run_training(args: argparse.Namespace) -> int:
    module, function, _, _ = TRAINERS[args.model]
    train = getattr(import_module(module), function)
    trainer = train(args.run_dir, threads=args.threads, kimg=args.kimg,
                    checkpoint_minutes=args.checkpoint_minutes)
    print(f"{trainer.images_seen:,} images seen; weights, checkpoint and log in "
          f"{trainer.run.path}")
    return 0


def register_models(models) -> None:
    """Add one parser per trainable model to ``train``'s sub-parsers."""
    for name, (_, _, help_text, default_kimg) in TRAINERS.items():
        parser = models.add_parser(name, help=help_text)
        parser.add_argument("--run", dest="run_dir", required=True,
                            help="run folder; an existing checkpoint there is continued")
        parser.add_argument("--kimg", type=float, default=None,
                            help=f"train until this many thousand images "
                                 f"(default {default_kimg:g})")
        parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
        parser.add_argument("--checkpoint-minutes", type=float, default=5.0)
        parser.set_defaults(run=_run_training)


def register(commands) -> None:
    """Add ``train`` and its model sub-commands."""
    train = commands.add_parser("train", help="train the shipped SceneWorld models (resumable)")
    models = train.add_subparsers(dest="model", metavar="MODEL")
    models.required = True
    register_models(models)
