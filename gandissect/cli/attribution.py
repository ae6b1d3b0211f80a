"""``gandissect evaluate-attribution``: every attribution method scored against SceneWorld's
exact labels (thin: it validates and calls ``gandissect.attribute.evaluate``).

    gandissect evaluate-attribution [--n 1000 --seed 1001 --methods gradcam,saliency,...
        --batch 16 --tolerance 4 --steps 16 --baseline zeros|blur --layer layer4
        --cascade-n 16 --classifier sceneworld --weights PATH] [--json] [--quiet]

``--json`` prints one JSON object, method name -> scores (``pointing_game``,
``center_baseline``, ``deletion_auc``, ``insertion_auc``, ``sanity_rank_corr``,
``seconds_per_image``, ...), plus ``settings``; without it, a table.
"""

from __future__ import annotations

import argparse
import json

from gandissect.cli.common import add_classifier_arguments
from gandissect.errors import UserError

__all__ = ["register", "format_table"]

# The keys of ``gandissect.attribute.evaluate.METHODS`` (a test checks), written out so that
# --help loads no torch.
METHOD_NAMES = ("saliency", "input_x_gradient", "smoothgrad", "integrated_gradients",
                "guided_backprop", "deconvolution", "occlusion", "cam", "gradcam",
                "gradcam_plus_plus", "scorecam", "lrp")

COLUMNS = (("pointing_game", "point"), ("center_baseline", "centre"),
           ("deletion_auc", "del"), ("insertion_auc", "ins"), ("sanity_rank_corr", "sanity"),
           ("seconds_per_image", "s/img"))


def format_table(result: dict) -> str:
    """The headline scores of an ``evaluate_attribution`` result, one row per method, with
    integrated gradients' completeness error (pooled and worst image) when it was run."""
    methods = {name: scores for name, scores in result.items() if name != "settings"}
    completeness = any("completeness_error_pooled" in scores for scores in methods.values())
    lines = [f"{'method':22s}" + "".join(f"{title:>9s}" for _, title in COLUMNS)
             + (f"{'IG err pooled':>15s}{'IG err max':>12s}" if completeness else "")]
    for name, scores in methods.items():
        row = f"{name:22s}"
        for key, _ in COLUMNS:
            value = scores[key]
            row += f"{value:9.4f}" if key == "seconds_per_image" else f"{value:9.3f}"
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
    return "\n".join(lines)


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
    model = preprocess_inside(*resolve_classifier_and_preprocess(args.classifier, args.weights))
    result = evaluate_attribution(
        model, methods=_methods(args.methods), n=args.n, seed=args.seed, batch=args.batch,
        progress=not args.quiet, layer=args.layer, tolerance=args.tolerance, steps=args.steps,
        baseline=args.baseline, cascade_n=args.cascade_n, upsample=args.upsample)
    print(json.dumps(result) if args.json else format_table(result))
    return 0


def register(commands) -> None:
    """Add ``evaluate-attribution`` to an argparse sub-parsers action."""
    parser = commands.add_parser(
        "evaluate-attribution",
        help="score attribution methods on SceneWorld (pointing game, deletion, sanity, time)",
        description="Pointing game against the scene's defining concepts beside the centre "
                    "baseline, deletion and insertion AUC, the weight-randomisation sanity "
                    "check and time per image, for each attribution method, on held-out "
                    "SceneWorld scenes with the true scene class as target.")
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
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(run=_run)
