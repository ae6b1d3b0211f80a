"""``gandissect evaluate-attribution``: every attribution method scored against SceneWorld's
exact labels (thin: it validates and calls ``gandissect.attribute.evaluate``).

    gandissect evaluate-attribution [--n 1000 --seed 1001 --methods gradcam,saliency,...
        --batch 16 --tolerance 4 --steps 16 --baseline zeros|blur --layer layer4
        --cascade-n 16 --classifier sceneworld --weights PATH
        --metrics pointing,deletion,insertion,sanity,cascade,mass,rank,road]
        [--json] [--per-class] [--cascade] [--cascade-figure FILE.svg] [--quiet]

``--json`` prints one JSON object, method name -> scores (``pointing_game``,
``center_baseline``, ``deletion_auc``, ``insertion_auc``, ``sanity_rank_corr``,
``relevance_mass_accuracy``, ``relevance_rank_accuracy``, ``road_morf_auc``,
``seconds_per_image``, ``per_class``, ...), plus ``settings``; without it, a table;
``--per-class`` adds one table per method with every score per scene class, ``--cascade`` the
cascading randomisation's rank correlation per randomised layer, ``--cascade-figure`` that curve
as an SVG chart.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from gandissect.cli.common import add_classifier_arguments
from gandissect.errors import UserError

__all__ = ["register", "format_table"]

# The keys of ``gandissect.attribute.evaluate.METHODS`` (a test checks), written out so that
# --help loads no torch.
METHOD_NAMES = ("saliency", "input_x_gradient", "smoothgrad", "integrated_gradients",
                "guided_backprop", "deconvolution", "occlusion", "cam", "gradcam",
                "gradcam_plus_plus", "scorecam", "lrp", "deeplift", "gradient_shap",
                "feature_ablation", "kernel_shap", "lime")

COLUMNS = (("pointing_game", "point"), ("center_baseline", "centre"),
           ("deletion_auc", "del"), ("insertion_auc", "ins"), ("sanity_rank_corr", "sanity"),
           ("seconds_per_image", "s/img"))
# shown when some method has them (metrics that are not computed by default, or new)
OPTIONAL_COLUMNS = (("relevance_mass_accuracy", "mass"), ("relevance_rank_accuracy", "rank"),
                    ("road_morf_auc", "ROAD-M"), ("road_lerf_auc", "ROAD-L"))
# the per-class table's columns, in this order where present
CLASS_COLUMNS = (("images", "images"), ("pointing_game", "point"),
                 ("center_baseline", "centre"), ("deletion_auc", "del"),
                 ("insertion_auc", "ins"), ("sanity_rank_corr", "sanity"),
                 ("relevance_mass_accuracy", "mass"), ("relevance_rank_accuracy", "rank"),
                 ("concept_area", "area"), ("road_morf_auc", "ROAD-M"),
                 ("road_lerf_auc", "ROAD-L"))
METRIC_NAMES = ("pointing", "deletion", "insertion", "sanity", "cascade", "mass", "rank", "road")


def _cell(value, width: int = 9, digits: int = 3) -> str:
    return f"{'-':>{width}s}" if value is None else f"{value:{width}.{digits}f}"


def format_table(result: dict) -> str:
    """The headline scores of an ``evaluate_attribution`` result, one row per method, with
    integrated gradients' completeness error (pooled and worst image) when it was run."""
    methods = {name: scores for name, scores in result.items() if name != "settings"}
    completeness = any("completeness_error_pooled" in scores for scores in methods.values())
    columns = COLUMNS + tuple(c for c in OPTIONAL_COLUMNS
                              if any(c[0] in scores for scores in methods.values()))
    lines = [f"{'method':22s}" + "".join(f"{title:>9s}" for _, title in columns)
             + (f"{'IG err pooled':>15s}{'IG err max':>12s}" if completeness else "")]
    for name, scores in methods.items():
        row = f"{name:22s}"
        for key, _ in columns:
            row += _cell(scores.get(key), digits=4 if key == "seconds_per_image" else 3)
        if "completeness_error_pooled" in scores:
            row += (f"{scores['completeness_error_pooled']:15.2e}"
                    f"{scores['completeness_error_max']:12.2e}")
        lines.append(row)
    settings = result["settings"]
    lines.append(f"n {settings['n']}, seed {settings['seed']}, pointing on the defining concepts' "
                 f"pixels (within {settings['tolerance_px']} px in the JSON), "
                 f"{settings['steps']} steps, baseline {settings['baseline']}")
    if completeness:
        lines.append("IG err: integrated gradients' completeness error relative to "
                     "f(x) - f(baseline), all images pooled, and the worst image's")
    if len(columns) > len(COLUMNS):
        lines.append("mass / rank: relevance mass / rank accuracy on the defining concepts; "
                     "ROAD-M / ROAD-L: ROAD's MoRF (lower is better) / LeRF (higher) areas")
    return "\n".join(lines)


def format_per_class(result: dict) -> str:
    """Every score of each method per scene class (``per_class``), one block per method."""
    blocks = []
    for name, scores in result.items():
        table = scores.get("per_class") if name != "settings" else None
        if not table:
            continue
        columns = [c for c in CLASS_COLUMNS if any(c[0] in row for row in table.values())]
        lines = [f"{name}", f"{'class':18s}" + "".join(f"{t:>9s}" for _, t in columns)]
        for scene, row in table.items():
            lines.append(f"{scene:18s}" + "".join(
                f"{row[key]:9d}" if key == "images" else _cell(row.get(key))
                for key, _ in columns))
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def format_cascade(result: dict) -> str:
    """The cascading randomisation curve: per method, the mean rank correlation of its maps
    with the trained model's at each stage (layers randomised from the logits down)."""
    stages = result["settings"].get("cascade_stages") or []
    methods = {name: scores["sanity_cascade"] for name, scores in result.items()
               if name != "settings" and scores.get("sanity_cascade")}
    if not methods or not stages:
        return "no cascading randomisation in this result (--metrics cascade, --cascade-n > 0)"
    width = max(9, *(len(stage) + 2 for stage in stages))
    lines = [f"{'method':22s}" + "".join(f"{stage:>{width}s}" for stage in stages)]
    for name, curve in methods.items():
        lines.append(f"{name:22s}" + "".join(_cell(curve.get(stage), width)
                                             for stage in stages))
    lines.append(f"Spearman rank correlation with the trained model's maps, each stage "
                 f"randomising one more layer from the logits down "
                 f"({result['settings'].get('cascade_images')} images); low passes")
    return "\n".join(lines)


def _metrics(text: str | None) -> list[str] | None:
    if text is None:
        return None
    names = list(dict.fromkeys(name.strip().lower() for name in text.split(",")
                               if name.strip()))
    unknown = [name for name in names if name not in METRIC_NAMES]
    if unknown or not names:
        raise UserError(f"unknown --metrics {', '.join(unknown) or '(none given)'}; choose "
                        f"from {','.join(METRIC_NAMES)}")
    return names


def _methods(text: str | None) -> list[str] | None:
    if text is None:
        return None
    names = [name.strip().replace("-", "_") for name in text.split(",") if name.strip()]
    if not names:
        raise UserError("--methods needs at least one method name")
    return names


def _run(args: argparse.Namespace) -> int:
    from gandissect.attribute.evaluate import evaluate_attribution
    from gandissect.evaluate.metrics import check_held_out
    from gandissect.models.inputs import preprocess_inside
    from gandissect.models.specs import resolve_classifier_and_preprocess

    check_held_out(args.seed)  # before loading anything
    metrics = _metrics(args.metrics)
    if args.cascade_figure:
        from gandissect.fileio import writable_folder

        writable_folder(Path(args.cascade_figure).expanduser().parent, "--cascade-figure folder")
    model = preprocess_inside(*resolve_classifier_and_preprocess(args.classifier, args.weights))
    result = evaluate_attribution(
        model, methods=_methods(args.methods), n=args.n, seed=args.seed, batch=args.batch,
        progress=not args.quiet, layer=args.layer, tolerance=args.tolerance, steps=args.steps,
        baseline=args.baseline, cascade_n=args.cascade_n, upsample=args.upsample,
        metrics=metrics)
    if args.cascade_figure:
        from gandissect.report.cascade import cascade_svg

        curves = {name: scores.get("sanity_cascade") or {} for name, scores in result.items()
                  if name != "settings"}
        figure = Path(args.cascade_figure).expanduser()
        figure.parent.mkdir(parents=True, exist_ok=True)
        figure.write_text(cascade_svg(curves, result["settings"].get("cascade_stages") or []))
    if args.json:
        print(json.dumps(result))
        return 0
    print(format_table(result))
    if args.per_class:
        print("\n" + format_per_class(result))
    if args.cascade:
        print("\n" + format_cascade(result))
    return 0


def register(commands) -> None:
    """Add ``evaluate-attribution`` to an argparse sub-parsers action."""
    parser = commands.add_parser(
        "evaluate-attribution",
        help="score attribution methods on SceneWorld (pointing game, deletion, sanity, time)",
        description="Pointing game against the scene's defining concepts beside the centre "
                    "baseline, deletion and insertion AUC, the weight-randomisation sanity "
                    "check (and its cascade, layer by layer), relevance mass and rank "
                    "accuracy, ROAD when asked (--metrics), and time per image, for each "
                    "attribution method, on held-out SceneWorld scenes with the true scene "
                    "class as target; every score also per scene class (--per-class).")
    parser.add_argument("--n", type=int, default=1000, help="scenes 0 .. n-1 (default 1000)")
    parser.add_argument("--seed", type=int, default=1001,
                        help="SceneWorld world seed, never a training seed (default 1001)")
    parser.add_argument("--methods", default=None,
                        help=f"comma-separated, default all: {','.join(METHOD_NAMES)}")
    add_classifier_arguments(parser)  # its classes must be SceneWorld's scene classes
    parser.add_argument("--batch", type=int, default=16, help="images per attribute call")
    parser.add_argument("--layer", default="layer4", help="layer of the CAM family")
    parser.add_argument("--tolerance", type=int, default=4,
                        help="tolerance in pixels of the second, tolerant pointing game "
                             "(default 4: VOC's 15 px at 224)")
    parser.add_argument("--steps", type=int, default=16, help="deletion / insertion chunks")
    parser.add_argument("--baseline", choices=["zeros", "blur"], default="zeros",
                        help="what deleted pixels become and insertion starts from")
    parser.add_argument("--cascade-n", type=int, default=16,
                        help="images for the per-stage cascading randomisation (0: none)")
    parser.add_argument("--upsample", choices=["aligned", "bilinear"], default="bilinear",
                        help="layer maps to pixels: plain bilinear (default, as Grad-CAM's code) "
                             "or cells at their receptive fields' measured centres")
    parser.add_argument("--metrics", default=None,
                        help="comma-separated scores: pointing (pointing game, centre "
                             "baseline), deletion, insertion, sanity (every layer randomised), "
                             "cascade (cascading randomisation, layer by layer, on --cascade-n "
                             "images), mass and rank (relevance mass / rank accuracy on the "
                             "defining concepts' exact masks), road (ROAD: noisy linear "
                             "imputation, MoRF and LeRF at 10%%..90%%; slow). Default: all but "
                             "road")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("--per-class", action="store_true",
                        help="also print every score per scene class (always in --json)")
    parser.add_argument("--cascade", action="store_true",
                        help="also print the cascading randomisation per layer (always in "
                             "--json, as sanity_cascade)")
    parser.add_argument("--cascade-figure", metavar="FILE.svg",
                        help="write the cascading randomisation curve as an SVG chart")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(run=_run)
