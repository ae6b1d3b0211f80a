"""``gandissect train segmenter|classifier``: the supervised models' training sub-commands.

``register_models(models)`` adds them to the ``train`` command's sub-parsers; each parser's
``run`` default is the callback ``callback(args) -> int``.
"""

from __future__ import annotations

import argparse


def _run_segmenter(args: argparse.Namespace) -> int:
    from gandissect.train.segmenter import WEIGHTS_NAME, train_segmenter

    trainer = train_segmenter(args.run_dir, threads=args.threads, kimg=args.kimg,
                              checkpoint_minutes=args.checkpoint_minutes)
    print(f"{trainer.images_seen:,} images seen; weights in {trainer.run.path / WEIGHTS_NAME}")
    return 0


def _run_classifier(args: argparse.Namespace) -> int:
    from gandissect.train.classifier import WEIGHTS_NAME, train_classifier

    trainer = train_classifier(args.run_dir, threads=args.threads, kimg=args.kimg,
                               checkpoint_minutes=args.checkpoint_minutes)
    print(f"{trainer.images_seen:,} images seen; weights in {trainer.run.path / WEIGHTS_NAME}"
          f" and snapshots in {trainer.run.path / 'snapshots'}")
    return 0


def _add(models, name: str, help: str, default_kimg: float, callback) -> None:
    parser = models.add_parser(name, help=help)
    parser.add_argument("--run", dest="run_dir", required=True,
                        help="run folder; an existing checkpoint there is continued")
    parser.add_argument("--kimg", type=float, default=None,
                        help=f"train until this many thousand images (default {default_kimg:g})")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--checkpoint-minutes", type=float, default=5.0)
    parser.set_defaults(run=callback)


def register_models(models) -> None:
    """Add the ``segmenter`` and ``classifier`` parsers to ``train``'s model sub-parsers."""
    _add(models, "segmenter", "the SceneWorld segmenter (object, part, material)", 80,
         _run_segmenter)
    _add(models, "classifier", "the SceneWorld scene classifier (small ResNet)", 40,
         _run_classifier)
