"""How much compositional formulas add to Network Dissection's single labels, and what the
search costs, on the shipped classifier (or any dissection written with ``--formulas``).

    python benchmarks/bench_formulas.py --n 300 --length 3 [--layer layer4]
    python benchmarks/bench_formulas.py --dissection OUT/dissect.json   # figures of a run
    python benchmarks/bench_formulas.py --n 300 --figure docs/formulas_layer4.png

Prints the seconds of the dissection and of the formula search (one more pass plus the beam
search), the share of units whose formula's IoU beats their label's, the median and mean gain
over those units, the formulas' lengths, and the most common formulas. ``--held-out`` also
searches on the first half of the probe and scores the found formula and the half's best single
concept on the second half (the search picks among thousands of formulas, so some gain is
selection on the probe itself).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import Counter
from pathlib import Path


def figures(units: list[dict]) -> dict:
    """Share of units whose formula beats their label, and by how much."""
    gains = [u["formula_iou"] - u["iou"] for u in units]
    better = [g for g in gains if g > 1e-9]
    lengths = Counter(1 + u["formula"].count(" AND ") + u["formula"].count(" OR ")
                      for u in units)
    relative = [u["formula_iou"] / u["iou"] for u in units if u["iou"] > 0]
    return {"units": len(units), "formula_beats_label": len(better),
            "share": len(better) / len(units),
            "share_gain_at_least_0.01": sum(g >= 0.01 for g in gains) / len(units),
            "share_gain_at_least_20_percent": sum(r >= 1.2 for r in relative) / len(units),
            "median_ratio": statistics.median(relative) if relative else 0.0,
            "median_gain_where_better": statistics.median(better) if better else 0.0,
            "mean_gain_where_better": statistics.fmean(better) if better else 0.0,
            "median_label_iou": statistics.median(u["iou"] for u in units),
            "median_formula_iou": statistics.median(u["formula_iou"] for u in units),
            "lengths": dict(sorted(lengths.items())),
            "common": Counter(u["formula"] for u in units).most_common(8)}


def _half(masks, pixels: list, first: bool):
    """The first or second half of the probe's images: its masks and the units' pixels."""
    import torch

    from gandissect.netdissect.formulas import ProbeMasks

    half = masks.images // 2
    start, stop = (0, half) if first else (half, masks.images)
    codes = masks.codes.view(len(masks.sizes), masks.images, 1, -1)  # rows of one image
    labels = codes[:, start:stop].transpose(0, 1)
    low, high = start * masks.pixels, stop * masks.pixels
    inside = [p[(p >= low) & (p < high)] - low for p in pixels]
    return ProbeMasks(labels.to(torch.int64), masks.category), inside


def held_out(model, probe, result, layer: str, length: int, beam: int) -> dict:
    """Formula and single label found on the first half, scored on the second."""
    from gandissect.netdissect.formulas import FormulaSearch, unit_masks

    masks, active = unit_masks(result, model, probe)
    search_masks, search_pixels = _half(masks, active[layer], True)
    test_masks, test_pixels = _half(masks, active[layer], False)
    search = FormulaSearch(search_masks, length, beam)
    test = FormulaSearch(test_masks, length, beam)
    better, gains = 0, []
    for found_on, scored_on in zip(search_pixels, test_pixels):
        formula, _, single, _ = search.unit(found_on)
        gain = test.score(scored_on, formula) - test.score(scored_on, single)
        gains.append(gain)
        better += gain > 1e-9
    return {"held_out_formula_beats_label": better, "held_out_share": better / len(gains),
            "held_out_median_gain": statistics.median(gains)}


def draw_units(model, probe, result, layer: str, path: str, units: int = 3) -> None:
    """The ``units`` units (label IoU at least 0.04, one per label) whose formula gains most
    over their label, drawn by ``formula_figure``."""
    from gandissect.netdissect import probe_samples
    from gandissect.netdissect.formulas import formula_figure

    scores = [u for u in result.layer(layer).units if u.iou >= 0.04]
    scores.sort(key=lambda u: u.iou - u.formula_iou)
    best = {}
    for score in scores:
        best.setdefault(score.label, score)
    chosen = sorted(u.unit for u in list(best.values())[:units])
    formula_figure(result, layer, probe_samples(model, probe), chosen, path)
    print(f"wrote {path} (units {', '.join(map(str, chosen))})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300, help="SceneWorld probe scenes")
    parser.add_argument("--length", type=int, default=3)
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--layer", default="layer4")
    parser.add_argument("--held-out", action="store_true",
                        help="also search on half the probe and score on the other half")
    parser.add_argument("--dissection", default=None,
                        help="a dissect.json written with --formulas: only its figures")
    parser.add_argument("--figure", default=None, metavar="PNG",
                        help="also draw the units whose formula gains most over their label")
    args = parser.parse_args()
    if args.dissection:
        data = json.loads(Path(args.dissection).read_text())
        for layer in data["layers"]:
            print(layer["layer"], json.dumps(figures(layer["units"]), indent=1))
        return

    from gandissect.models.registry import load_classifier
    from gandissect.netdissect import SceneWorldProbe, netdissect
    from gandissect.netdissect.formulas import label_formulas

    model, probe = load_classifier("sceneworld"), SceneWorldProbe(seed=1001, n=args.n)
    start = time.perf_counter()
    result = netdissect(model, args.layer, probe)
    dissected = time.perf_counter()
    label_formulas(result, model, probe, args.length, args.beam)
    searched = time.perf_counter()
    units = [u.to_json() for u in result.layer(args.layer).units]
    print(f"netdissect {dissected - start:.1f} s, formulas {searched - dissected:.1f} s "
          f"({args.n} scenes, length {args.length}, beam {args.beam})")
    print(json.dumps(figures(units), indent=1))
    if args.held_out:
        print(json.dumps(held_out(model, probe, result, args.layer, args.length, args.beam)))
    if args.figure:
        draw_units(model, probe, result, args.layer, args.figure)


if __name__ == "__main__":
    main()
