"""How long a press of Remove and of Draw takes in a real browser, click to edited canvas.

    python benchmarks/bench_paint_browser.py [--presses 20] [--threads 1]

Serves the app on the shipped SceneWorld generator (random weights of its architecture when
they are missing) and drives headless Chromium (Debian's ``chromium``, through ``playwright``):
for each press, a stroke is painted across the canvas and Remove or Draw (alternately) is
clicked; the time runs from the click until the canvas shows the reply. Prints the median and
90th percentile of each, their ratio (Draw over Remove, measured in the same run), and one
JSON line.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

from gandissect.app.ui import build_app, launch
from gandissect.app.workspace import AppConfig, Workspace
from gandissect.models.registry import shipped_path
from gandissect.train.gan import stand_in_generator

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def summary(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    return {"median_s": round(statistics.median(ordered), 3),
            "p90_s": round(ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))], 3)}


def press_times(url: str, presses: int) -> dict[str, list[float]]:
    from playwright.sync_api import sync_playwright

    times: dict[str, list[float]] = {"remove": [], "draw": []}
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=shutil.which("chromium")
                                         or "/usr/bin/chromium", args=ARGS)
        page = browser.new_page(viewport={"width": 1366, "height": 900})
        page.goto(url, wait_until="domcontentloaded")
        page.wait_for_function("() => window.gandissectPaint && window.gandissectPaint.seen > 0"
                               " && document.querySelector('#paint-status').innerText"
                               ".includes('Scene 0')", timeout=120_000)
        for i in range(presses):
            mode = ("remove", "draw")[i % 2]
            box = page.locator("#paint-canvas canvas.gd-ink").bounding_box()
            y = box["y"] + box["height"] * (0.2 + 0.6 * ((i * 7) % presses) / presses)
            page.mouse.move(box["x"] + box["width"] * 0.2, y)
            page.mouse.down()
            for k in range(1, 5):
                page.mouse.move(box["x"] + box["width"] * (0.2 + 0.15 * k), y)
            page.mouse.up()
            seen = page.evaluate("() => window.gandissectPaint.seen")
            start = time.perf_counter()
            page.locator(f"#brush-{mode}").click()
            page.wait_for_function(f"() => window.gandissectPaint.seen > {seen}",
                                   timeout=120_000)
            times[mode].append(time.perf_counter() - start)
        browser.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presses", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    shipped = shipped_path("generator").exists()
    with tempfile.TemporaryDirectory() as cache:
        ws = Workspace.open(AppConfig(cache=Path(cache), progress=False),
                            generator=None if shipped else stand_in_generator())
        if ws.problem:
            raise SystemExit(ws.problem)
        demo = launch(build_app(ws), "127.0.0.1", free_port(), block=False)
        try:
            times = press_times(demo.local_url, args.presses)
        finally:
            demo.close()
            ws.close()
    result = {"generator": "shipped" if shipped else "random weights, shipped architecture",
              "threads": args.threads, "presses": args.presses,
              "remove": summary(times["remove"]), "draw": summary(times["draw"])}
    result["draw_over_remove"] = round(result["draw"]["median_s"] /
                                       result["remove"]["median_s"], 3)
    for mode in ("remove", "draw"):
        print(f"{mode:6s} click to canvas: median {result[mode]['median_s']} s, "
              f"p90 {result[mode]['p90_s']} s")
    print(f"draw / remove: {result['draw_over_remove']}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
