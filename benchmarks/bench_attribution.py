"""Time per image of every attribution method on the shipped scene classifier, on this machine.

    OMP_NUM_THREADS=1 python benchmarks/bench_attribution.py [--batch 16 --repeats 3
        --methods gradcam,scorecam,... --device cpu]

Each method runs with the settings ``gandissect evaluate-attribution`` uses
(``gandissect.attribute.evaluate.METHODS``: SmoothGrad 50 samples, integrated gradients 64
steps, occlusion 8 px patches every 4 px, Score-CAM over layer4's 160 channels, LRP's
composite) on one batch of held-out SceneWorld scenes (world 1001), target = the true class.
One untimed warm-up call, then the median of ``--repeats`` timed calls, divided by the batch
size. Prints a table (slowest first, with the images each call sends through the model per
input image) and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from gandissect.attribute.evaluate import METHODS
from gandissect.models.registry import load_classifier
from gandissect.world import render_batch
from gandissect.world.dataset import image_to_tensor


def time_method(name: str, model: torch.nn.Module, images: torch.Tensor, target: torch.Tensor,
                repeats: int) -> tuple[float, float]:
    """Median seconds per image of one method's attribute call on ``images``, and the images
    that call sends through the model's forward per input image (backward passes and LRP's
    layer-by-layer pass not counted)."""
    spec = METHODS[name]
    method = spec.build(model, "layer4")
    rows = []
    handle = model.register_forward_hook(lambda module, inputs, output: rows.append(len(output)))
    try:
        method.attribute(images, target=target, **spec.options)  # warm-up, and the count
    finally:
        handle.remove()
    seconds = []
    for _ in range(repeats):
        if images.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        method.attribute(images, target=target, **spec.options)
        if images.device.type == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds) / images.shape[0], sum(rows) / images.shape[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16, help="images per attribute call")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per method")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    model = load_classifier("sceneworld", args.device)
    rendered = render_batch(1001, range(args.batch))
    images = image_to_tensor(rendered["image"]).to(args.device)
    target = torch.from_numpy(rendered["scene"] - 1).to(args.device)
    names = args.methods.split(",")
    measured = {name: time_method(name, model, images, target, args.repeats) for name in names}
    per_image = {name: seconds for name, (seconds, _) in measured.items()}
    forwards = {name: count for name, (_, count) in measured.items()}
    print(f"{'method':22s}{'ms / image':>12s}{'x Grad-CAM':>12s}{'forwards / image':>18s}")
    reference = per_image.get("gradcam")
    for name, seconds in sorted(per_image.items(), key=lambda item: -item[1]):
        ratio = f"{seconds / reference:12.0f}" if reference else ""
        print(f"{name:22s}{seconds * 1000:12.2f}{ratio}{forwards[name]:18.1f}")
    print(json.dumps({"batch": args.batch, "repeats": args.repeats, "device": args.device,
                      "threads": torch.get_num_threads(),
                      "ms_per_image": {k: round(v * 1000, 3) for k, v in per_image.items()},
                      "forwards_per_image": forwards,
                      "slowest": max(per_image, key=per_image.get)}))


if __name__ == "__main__":
    main()
