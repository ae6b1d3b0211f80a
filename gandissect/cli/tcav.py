"""``gandissect tcav``: is a class's prediction sensitive to a concept? TCAV scores (Kim et al.
2018) with their significance (thin: it checks the options and calls ``gandissect.tcav``).

    gandissect tcav --classifier sceneworld --layer layer4 --class church --concepts dome,tree
        [--concept-dir NAME=DIR ...] [--random-dir DIR] [--class-dir DIR]
        [--runs 20] [--n 50] [--min-share 0.01] [--alpha 0.05] [--json] [--figure PNG]

A concept is a SceneWorld concept with pixel masks (``dome``, ``window``, ``material:water``):
its examples are SceneWorld scenes (world 1002) where it covers at least ``--min-share`` of
the pixels, its counterexamples scenes where it covers none; or any name given a folder of
images with ``--concept-dir NAME=DIR`` (then the counterexamples come from ``--random-dir``, or
SceneWorld scenes). The class's images are SceneWorld scenes of that scene (world 1001, held
out), or ``--class-dir``. ``--runs`` CAVs per concept, each against a different random draw of
``--n`` counterexamples, are compared with as many random-vs-random CAVs by Welch's two-sided
t-test; a concept is significant when ``p < alpha / K`` over the ``K`` concepts (Bonferroni).
Prints ``{"scores": {concept: {"tcav", "std", "p", "significant", "runs"}}, "random": {...},
"correction": "bonferroni over K concepts", ...}``.
"""

from __future__ import annotations

import argparse

from gandissect.cli.common import add_classifier_arguments, add_device_argument
from gandissect.errors import UserError

__all__ = ["register"]



def _concept_dirs(pairs: list[str]) -> dict[str, str]:
    dirs = {}
    for pair in pairs:
        name, _, folder = pair.partition("=")
        if not name.strip() or not folder.strip():
            raise UserError(f"--concept-dir takes NAME=DIR, got {pair!r}")
        dirs[name.strip()] = folder.strip()
    return dirs


def _count_images(folder: str, what: str, least: int) -> None:
    """A ``UserError`` unless ``folder`` holds at least ``least`` images."""
    from gandissect.netdissect.folder import image_files

    found = len(image_files(folder))
    if found < least:
        raise UserError(f"{what} {folder} holds {found} images; TCAV needs at least {least}")


def _folder_images(folder: str, size: int):
    """Every image of ``folder`` at ``size`` px, in [-1, 1]."""
    import torch

    from gandissect.netdissect.folder import image_files, load_image

    return torch.stack([load_image(path, size) for path in image_files(folder)])


def _check(args: argparse.Namespace) -> tuple[list[str], dict[str, str]]:
    """The concept names and folders, checked before any model is loaded."""
    from gandissect.tcav import MIN_EXAMPLES, sceneworld_concept

    if args.n < MIN_EXAMPLES:
        raise UserError(f"--n must be at least {MIN_EXAMPLES}, got {args.n}")
    if args.runs < 2:
        raise UserError(f"--runs must be at least 2 for the t-test, got {args.runs}")
    if not 0 < args.alpha < 1 or not 0 < args.min_share <= 1:
        raise UserError("--alpha must lie in (0, 1) and --min-share in (0, 1]")
    dirs = _concept_dirs(args.concept_dir)
    names = list(dict.fromkeys(n.strip() for n in (args.concepts or "").split(",") if n.strip()))
    names += [name for name in dirs if name not in names]
    if not names:
        raise UserError("--concepts needs at least one concept name (or give --concept-dir)")
    for name in names:
        if name not in dirs:
            sceneworld_concept(name)
    for name, folder in dirs.items():
        _count_images(folder, f"--concept-dir {name}", MIN_EXAMPLES)
    if args.random_dir:
        _count_images(args.random_dir, "--random-dir", 2 * args.n)
    if args.class_dir:
        _count_images(args.class_dir, "--class-dir", MIN_EXAMPLES)
    return names, dirs


def _class_index(model, target: str) -> tuple[int, str]:
    import torch

    from gandissect.torchutil import model_device
    from gandissect.units_relevance import class_names

    size = int(getattr(model, "input_size", None) or 64)
    with torch.no_grad():
        classes = model(torch.zeros(1, 3, size, size, device=model_device(model))).shape[1]
    names = class_names(model, classes)
    if target in names:
        return names.index(target), target
    if target.isdigit() and int(target) < classes:
        return int(target), names[int(target)]
    raise UserError(f"unknown class {target!r}; choose one of {', '.join(names)} (or an index "
                    f"below {classes})")


def _run(args: argparse.Namespace) -> int:
    from gandissect.models.inputs import preprocess_inside
    from gandissect.models.specs import resolve_classifier_and_preprocess
    from gandissect.tcav import (
        CLASS_SEED,
        CONCEPT_SEED,
        sceneworld_class_images,
        sceneworld_concept,
        sceneworld_examples,
        tcav,
    )
    from gandissect.units_relevance import layer_units
    from gandissect.world import concepts as world_concepts

    names, dirs = _check(args)
    model = preprocess_inside(*resolve_classifier_and_preprocess(args.classifier, args.weights,
                                                                 args.device)).eval()
    size = int(getattr(model, "input_size", None) or 64)
    target, class_name = _class_index(model, args.class_name)
    scenes = [c.name for c in world_concepts("scene")]
    if args.class_dir is None and class_name not in scenes:
        raise UserError(f"class {class_name!r} is no SceneWorld scene; give its images with "
                        "--class-dir DIR")
    layer_units(model, args.layer, size)  # a layer with maps, or one line naming them
    pool = 4 * args.n
    given = {name: _folder_images(dirs[name], size) for name in names if name in dirs}
    randoms = _folder_images(args.random_dir, size) if args.random_dir else None
    class_images = (_folder_images(args.class_dir, size) if args.class_dir
                    else sceneworld_class_images(class_name, args.n, size, CLASS_SEED))
    world = [name for name in names if name not in dirs]
    drawn = (sceneworld_examples(world, args.n, pool, size, CONCEPT_SEED, args.min_share)
             if world or randoms is None else None)
    examples = {name: given[name] if name in dirs else drawn.concepts[name] for name in names}
    if randoms is not None:
        pools, null = randoms, randoms
    else:
        pools = {name: drawn.randoms.get(name, drawn.scenes) for name in names}
        null = drawn.scenes
    result = tcav(model, args.layer, target, class_images, examples, pools, runs=args.runs,
                  n=args.n, alpha=args.alpha, seed=args.seed, batch=args.batch, null_images=null)
    sources = {name: (f"folder {dirs[name]}" if name in dirs else
                      "SceneWorld scenes where {1} {0} covers at least {2:.0%} of the pixels"
                      .format(*sceneworld_concept(name), args.min_share))
               for name in names}
    output = {"classifier": args.classifier, "layer": args.layer, "class": class_name,
              "class_images": len(class_images), "runs": args.runs, "n": args.n,
              "concepts": sources,
              "random_source": ("folder " + args.random_dir if args.random_dir else
                                f"SceneWorld world {CONCEPT_SEED} scenes without the concept"),
              **result.to_json()}
    if args.figure:
        from gandissect.tcav import tcav_figure

        tcav_figure(result, args.figure, f"TCAV of {class_name} at {args.layer} "
                                         f"({args.runs} runs; * significant)")
    if args.json:
        import json

        print(json.dumps(output))
        return 0
    print(f"TCAV of {class_name} at {args.layer} ({args.runs} runs, {args.n} examples per set; "
          f"{result.correction}, alpha {args.alpha})")
    for name, score in result.scores.items():
        mark = "significant" if score.significant else "not significant"
        print(f"  {name:16s} {score.tcav:.3f} +- {score.std:.3f}  p={score.p:.2g}  {mark}")
    runs = output["random"]
    print(f"  {'random vs random':16s} {runs['tcav']:.3f} +- {runs['std']:.3f}")
    return 0


def register(commands) -> None:
    """Add ``tcav``."""
    parser = commands.add_parser(
        "tcav", help="TCAV: a class's sensitivity to concepts, with significance",
        description="Concept activation vectors (Kim et al. 2018): for each concept, the share "
                    "of the class's images whose logit rises along the concept's direction at "
                    "a layer, tested against random directions.")
    add_classifier_arguments(parser)
    parser.add_argument("--layer", required=True, help="a layer with (N, units, h, w) maps")
    parser.add_argument("--class", dest="class_name", required=True, metavar="C",
                        help="the class: a name of the classifier's classes, or an index")
    parser.add_argument("--concepts", default=None, metavar="A,B",
                        help="comma-separated SceneWorld concepts (object, part or material; "
                             "category:name for material:water), or names of --concept-dir")
    parser.add_argument("--concept-dir", action="append", default=[], metavar="NAME=DIR",
                        help="a folder of example images for concept NAME (repeatable)")
    parser.add_argument("--random-dir", default=None, metavar="DIR",
                        help="a folder of random counterexamples (at least 2 * --n images; "
                             "default: SceneWorld scenes without the concept)")
    parser.add_argument("--class-dir", default=None, metavar="DIR",
                        help="images of the class (default: SceneWorld scenes of that scene)")
    parser.add_argument("--runs", type=int, default=20,
                        help="CAVs per concept, and random-vs-random CAVs (default 20)")
    parser.add_argument("--n", type=int, default=50,
                        help="examples per concept, random set and class (default 50)")
    parser.add_argument("--min-share", type=float, default=0.01,
                        help="share of the pixels a SceneWorld concept covers in its examples "
                             "(default 0.01)")
    parser.add_argument("--alpha", type=float, default=0.05,
                        help="the test's level before the Bonferroni correction (default 0.05)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the random draws")
    parser.add_argument("--batch", type=int, default=64, help="images per forward pass")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--figure", default=None, metavar="PNG",
                        help="also write a bar chart of the scores to this PNG")
    add_device_argument(parser)
    parser.set_defaults(run=_run)
