"""Server-side latency of one paint edit in the app (median and p95).

    python benchmarks/bench_app.py [--repeats 40] [--threads 1] [--canvas 512]

Two figures, both for one "Remove tree" press on a painted stroke:

- ``callback``: the work the server does for the press (the painted mask pooled to the layer's
  cells, the brush's units, the scene rendered with and without the strokes, the pictures
  enlarged and encoded), timed around ``app.paint.apply_brush``;
- ``round trip``: the same press through the running app's API on localhost
  (``gradio_client``): the paint as the page sends it, the queue, the callback, the outputs'
  encoding and download, as a browser pays it minus the drawing
  (``bench_paint_browser.py`` times the click in a browser).

Uses the shipped SceneWorld generator when its weights exist, else the same architecture with
random weights (latency does not depend on the weights), with the shipped segmenter; the
dissection behind the brushes is computed on ``--dissect-samples`` latents (it changes which
units a brush takes, not how long an edit takes).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from gandissect.app import paint
from gandissect.app.canvas import paint_value
from gandissect.app.session import Session
from gandissect.app.ui import build_app, launch
from gandissect.app.workspace import AppConfig, Workspace
from gandissect.models.registry import shipped_path
from gandissect.train.gan import stand_in_generator


def percentiles(times: list[float]) -> dict[str, float]:
    """Median and 95th percentile, in milliseconds."""
    ordered = sorted(times)
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
    return {"median_ms": round(statistics.median(ordered), 1), "p95_ms": round(p95, 1)}


def painted(ws: Workspace) -> str:
    """A stroke over the left middle of the canvas, as the page sends it
    (``gandissect.app.canvas``)."""
    side = ws.scenes.resolution * ws.scale
    mask = np.zeros((side, side), bool)
    mask[side // 3: side // 2, side // 8: side // 2] = True
    return paint_value(mask)


def time_callback(ws: Workspace, repeats: int) -> list[float]:
    session = Session()
    paint.choose_scene(ws, session, 0)
    paint_value = painted(ws)
    concept = ws.scenes.brushes[0].key
    times = []
    for i in range(repeats + 1):
        session.strokes.clear()
        start = time.perf_counter()
        paint.apply_brush(ws, session, paint_value, concept, "remove", 1.0, 15)
        assert len(session.strokes) == 1
        if i:  # the first press warms the caches up
            times.append((time.perf_counter() - start) * 1000)
    return times


def time_round_trip(ws: Workspace, repeats: int) -> list[float]:
    import socket

    from gradio_client import Client

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    demo = launch(build_app(ws), "127.0.0.1", port, block=False)
    try:
        client = Client(demo.local_url, analytics_enabled=False, verbose=False)
        client.predict(0, api_name="/show_scene")
        paint_value, concept = painted(ws), ws.scenes.brushes[0].key
        times = []
        for i in range(repeats + 1):
            client.predict(api_name="/reset")
            start = time.perf_counter()
            client.predict(paint_value, concept, 1.0, 15, api_name="/remove")
            if i:
                times.append((time.perf_counter() - start) * 1000)
        return times
    finally:
        demo.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--canvas", type=int, default=512)
    parser.add_argument("--dissect-samples", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    shipped = shipped_path("generator").exists()
    generator = None if shipped else stand_in_generator()
    with tempfile.TemporaryDirectory() as cache:
        config = AppConfig(samples=args.dissect_samples, cache=Path(cache), canvas=args.canvas,
                           progress=False)
        ws = Workspace.open(config, generator=generator)
        if ws.problem:
            raise SystemExit(ws.problem)
        try:
            callback = percentiles(time_callback(ws, args.repeats))
            round_trip = percentiles(time_round_trip(ws, args.repeats))
        finally:
            ws.close()
    result = {"generator": "shipped" if shipped else "random weights, shipped architecture",
              "resolution": ws.scenes.resolution, "canvas": ws.scenes.resolution * ws.scale,
              "threads": torch.get_num_threads(), "repeats": args.repeats,
              "callback": callback, "round_trip": round_trip}
    print(f"one paint edit ({result['resolution']} px scene on a {result['canvas']} px canvas, "
          f"{result['threads']} thread(s)): callback median {callback['median_ms']} ms, p95 "
          f"{callback['p95_ms']} ms; API round trip median {round_trip['median_ms']} ms, p95 "
          f"{round_trip['p95_ms']} ms")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
