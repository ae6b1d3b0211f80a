"""Occlusion's time and memory: the fixed 8 px window every 4 px that the app and the evaluation
used at every size, against the window that scales with the image (1/8 of it every 1/16: 225
windows at any size), and all windows in one forward against the default memory budget.

    python benchmarks/bench_occlusion.py

Each setting runs in its own process (its peak resident memory is its own): one 224 px image
through a torchvision ResNet-18 (random weights), and 16 images at 64 px through the shipped
classifier; 2 threads. Prints one line a setting, then one JSON line.
"""

from __future__ import annotations

import json
import subprocess
import sys

SETTINGS = {
    "224 px, 8 px every 4, 64 windows a forward (before)": ("resnet18", 1, 224,
                                                             {"patch": 8, "stride": 4,
                                                              "internal_batch_size": 64}),
    "224 px, scaled window, 64 windows a forward (app, evaluation)": ("resnet18", 1, 224,
                                                                       {"internal_batch_size": 64}),
    "224 px, scaled window, default budget": ("resnet18", 1, 224, {}),
    "64 px x 16, 8 px every 4, every window in one forward (before)": (
        "sceneworld", 16, 64, {"patch": 8, "stride": 4, "internal_batch_size": 10**6}),
    "64 px x 16, 8 px every 4, default budget": ("sceneworld", 16, 64,
                                                 {"patch": 8, "stride": 4}),
}

CHILD = """
import json, resource, sys, time
import torch
torch.set_num_threads(2)
torch.manual_seed(0)
model_name, n, size, options = json.loads(sys.argv[1])
if model_name == "resnet18":
    import torchvision
    model = torchvision.models.resnet18(weights=None).eval()
else:
    from gandissect.models.registry import load_classifier
    model = load_classifier()
from gandissect.attribute import Occlusion
x = torch.rand(n, 3, size, size) * 2 - 1
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
Occlusion(model).attribute(x, target=0, **options)
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": seconds, "added_mb": (peak - before) / 1024}))
"""


def main() -> None:
    figures = {}
    for name, setting in SETTINGS.items():
        done = subprocess.run([sys.executable, "-c", CHILD, json.dumps(setting)],
                              capture_output=True, text=True, check=True)
        figures[name] = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"{name:66s} {figures[name]['seconds']:7.1f} s  "
              f"+{figures[name]['added_mb']:6.0f} MB")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
