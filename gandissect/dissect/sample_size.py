"""Is a probe set large enough for a dissection's statistics? One line when it is not.

Two statistics need enough data, and each has a bound from its sampling spread:

- **the IoU**, a ratio of intersections and unions pooled over images. When each image's
  intersection and union vary about as much as their mean (coefficient of variation about 1,
  as for sparse detectors) and independently, the IoU's relative standard error is about
  ``sqrt(2 / images)``: 20% at ``MIN_IMAGES`` = 50 images, so that an IoU at the 0.04 cut is
  known to +-0.008; 32% at 20 images.
- **the threshold**, each unit's q-quantile of ``cells`` values an image (the layer's cells,
  or the image's pixels for a quantile over the upsampled maps). About ``(1 - q) * images *
  cells`` values lie above it; the binomial spread of that count is about its square root,
  so its relative spread is ``1 / sqrt(count)``: under 10% needs ``MIN_ABOVE`` = 100 values
  above the quantile (at q = 0.99 and 8x8 cells, 157 images). Pixels of one image are
  correlated, so this is the least a threshold needs, not a guarantee.
"""

from __future__ import annotations

import math

__all__ = ["MIN_ABOVE", "MIN_IMAGES", "sample_size_warning"]

MIN_IMAGES = 50
MIN_ABOVE = 100


def sample_size_warning(images: int, quantile: float | None, cells: int,
                        what: str = "samples", advice: str = "--samples {n}") -> str | None:
    """One line when ``images`` images are too few for IoUs or for thresholds at the
    ``quantile`` of ``cells`` values an image (None: no quantile threshold), see the module
    docstring; else None. ``advice`` says how to get more, ``{n}`` standing for the number
    needed."""
    above = math.inf if quantile is None else (1 - quantile) * images * cells
    problems = []
    if images < MIN_IMAGES:
        problems.append(f"an IoU pooled over {images} images has a standard error of about "
                        f"{math.sqrt(2 / images):.0%} of its value ({MIN_IMAGES} images keep it "
                        "under 20%)")
    if above < MIN_ABOVE:
        spread = 1 / math.sqrt(above) if above > 0 else math.inf
        shown = "over 100%" if spread > 1 else f"about {spread:.0%}"
        count = f"about {above:.0f} values" if above >= 1 else "less than one value"
        problems.append(f"each unit's {quantile:g} quantile rests on {count} above it "
                        f"(binomial spread {shown}; {MIN_ABOVE} keep it under 10%)")
    if not problems:
        return None
    needed = MIN_IMAGES if quantile is None else max(
        MIN_IMAGES, math.ceil(MIN_ABOVE / ((1 - quantile) * cells)))
    return (f"{images} {what} are too few for this dissection's statistics: "
            f"{'; '.join(problems)}; use {advice.format(n=needed)} or more")
