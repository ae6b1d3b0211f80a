"""``gandissect train generator|segmenter|classifier|encoder``: start or continue a training run
(``gandissect.train``)."""

from __future__ import annotations

import argparse
from importlib import import_module

from gandissect.cli.common import add_device_argument
from gandissect.errors import UserError

# model -> (module, training function, help, default kimg, default rendering workers)
TRAINERS = {
    "generator": ("gandissect.train.gan", "train_generator",
                  "the ProGAN-style SceneWorld generator", 400, 1),
    "segmenter": ("gandissect.train.segmenter", "train_segmenter",
                  "the SceneWorld segmenter (object, part, material)", 80, 0),
    "classifier": ("gandissect.train.classifier", "train_classifier",
                   "the SceneWorld scene classifier (small ResNet)", 160, 0),
    "encoder": ("gandissect.train.encoder", "train_encoder",
                "the image -> latent encoder of the SceneWorld generator", 36, 0),
}


def _run_training(args: argparse.Namespace) -> int:
    if getattr(args, "slim", None):
        from gandissect.train.gan import slim_checkpoint

        out = slim_checkpoint(args.run_dir, args.slim)
        print(f"slim checkpoint ({out.stat().st_size / 1e6:.1f} MB) in {out}; copy it to "
              f"NEWRUN/checkpoint.pt to continue there")
        return 0
    branch, weights = getattr(args, "branch", None), getattr(args, "from_weights", None)
    if branch and getattr(args, "config", None):
        raise UserError("--config sets up a new run; a --branch continues its source's "
                        "configuration: give one of them")
    if branch and weights:
        raise UserError("--branch continues a run's checkpoint, --from-weights starts from a "
                        "weights file: give one of them")
    if args.workers < 0:
        raise UserError(f"--workers must be 0 or more, got {args.workers}")
    config = None
    if getattr(args, "config", None):
        config = _new_run_config(args.config, args.run_dir)
    if branch:
        from gandissect.train.gan import branch_run

        branch_run(branch, args.run_dir, semantic=args.semantic)
        print(f"branched {branch} into {args.run_dir}"
              + (" with a semantic critic" if args.semantic else ""))
    elif weights:
        from gandissect.train.gan import GANConfig, start_from_weights

        config = config or GANConfig()
        if args.kimg is not None:
            config.kimg = args.kimg
        start_from_weights(weights, args.run_dir, config, warmup_kimg=args.critic_warmup,
                           semantic=args.semantic)
        print(f"started {args.run_dir} from {weights}; its critics learn alone for "
              f"{args.critic_warmup:g} thousand images")
        config = None  # the run's checkpoint holds it now
    elif getattr(args, "semantic", False):
        raise UserError("--semantic adds a critic to a run started here: give --branch OLD_RUN "
                        "or --from-weights FILE as well")
    module, function, *_ = TRAINERS[args.model]
    train = getattr(import_module(module), function)
    extra = {} if config is None else {"config": config}
    trainer = train(args.run_dir, threads=args.threads, kimg=args.kimg, **extra,
                    checkpoint_minutes=args.checkpoint_minutes, device=args.device,
                    workers=args.workers)
    print(f"{trainer.images_seen:,} images seen; weights, checkpoint and log in "
          f"{trainer.run.path}")
    return 0


def _new_run_config(path: str, run_dir: str):
    """The ``GANConfig`` of a new generator run: a named recipe (``sceneworld``, the shipped
    run's) or the JSON object in the file ``path`` (fields left out keep their defaults).
    Refused for a run that already has a checkpoint, whose stored configuration is the one it
    continues with."""
    import json
    from dataclasses import fields
    from pathlib import Path

    from gandissect.train.gan import RECIPES, GANConfig

    if (Path(run_dir) / "checkpoint.pt").exists():
        raise UserError(f"{run_dir} already holds a run, which continues with the configuration "
                        f"in its checkpoint: leave out --config, or start a new --run folder")
    if path in RECIPES:
        return GANConfig(**RECIPES[path])
    try:
        values = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise UserError(f"--config {path}: cannot read a JSON object ({error}); give a JSON "
                        f"file or a recipe ({', '.join(RECIPES)})") from None
    if not isinstance(values, dict):
        raise UserError(f"--config {path}: expected a JSON object of GANConfig fields")
    known = {f.name for f in fields(GANConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise UserError(f"--config {path}: unknown fields {unknown}; GANConfig has "
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
            parser.add_argument("--config", metavar="JSON|RECIPE",
                                help="a new run's settings: a JSON file of GANConfig fields "
                                     "(channels, d_channels, batch, condition_kimg, ...; the "
                                     "rest keep their defaults), or 'sceneworld': the shipped "
                                     "generator's recipe")
            parser.add_argument("--from-weights", metavar="FILE",
                                help="start --run (a new folder) from generator weights "
                                     "written by gandissect (the shipped ones included) "
                                     "with fresh critics")
            parser.add_argument("--critic-warmup", type=float, default=20.0, metavar="KIMG",
                                help="with --from-weights: thousands of images the fresh "
                                     "critics learn alone before the generator moves "
                                     "(default 20)")
            parser.add_argument("--semantic", action="store_true",
                                help="with --branch or --from-weights: add the semantic "
                                     "critic (it scores the frozen segmenter's label maps)")
        parser.set_defaults(run=_run_training)


def register(commands) -> None:
    """Add ``train`` and its model sub-commands."""
    train = commands.add_parser("train", help="train the shipped SceneWorld models (resumable)")
    models = train.add_subparsers(dest="model", metavar="MODEL")
    models.required = True
    register_models(models)
