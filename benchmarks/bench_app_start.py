"""How long the app takes to be ready on a fresh install: ``python -m gandissect.app`` with the
shipped models and an empty cache, from the process start to the page answering (median of a
few).

    python benchmarks/bench_app_start.py [--repeats 3] [--threads 2]

The bar is 30 s. Each start gets a new, empty cache folder, so nothing computed by an
earlier start is reused (the shipped dissection and causal weights are read from ``models/``).
Prints one line per start and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path

from bench_app_load import serve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    seconds = []
    for repeat in range(args.repeats):
        with tempfile.TemporaryDirectory() as folder:
            start = time.monotonic()
            with serve("shipped", Path(folder), samples=1000, threads=args.threads,
                       startup_s=300) as server:
                ready = time.monotonic() - start
                with urllib.request.urlopen(server.url, timeout=30) as reply:
                    page = reply.read().decode("utf-8", "replace")
                assert "gandissect" in page, "the page is not the app's"
            seconds.append(ready)
            print(f"start {repeat + 1}: ready in {ready:.1f} s", flush=True)
    print(json.dumps({"repeats": args.repeats, "threads": args.threads,
                      "ready_s": [round(s, 1) for s in seconds],
                      "median_s": round(statistics.median(seconds), 1), "bar_s": 30}))


if __name__ == "__main__":
    main()
