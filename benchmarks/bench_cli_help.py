"""How fast the command line answers ``--help`` (bar: well under a second; no torch loaded).

    python benchmarks/bench_cli_help.py [--repeats 5]

Each run is a fresh ``python -m gandissect ... --help`` process, as a user types it: the top
level and every command. Printed: the median wall time of each beside that of a bare
``python -c pass`` and of ``python -c "import torch"`` (what help cost when it loaded torch),
and the ratio of the slowest help to the torch import, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

COMMANDS = [[], ["world", "sample"], ["layers"], ["unit-stats"], ["train", "generator"],
            ["eval"], ["dissect"], ["netdissect"], ["netdissect-experiment"],
            ["evaluate-attribution"], ["ace"], ["edit"], ["app"]]


def seconds(argv: list[str], repeats: int) -> float:
    """Median wall time of ``argv`` over ``repeats`` fresh processes."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    python = [sys.executable]
    result = {"python": round(seconds([*python, "-c", "pass"], args.repeats), 3),
              "import torch": round(seconds([*python, "-c", "import torch"], args.repeats), 3)}
    for command in COMMANDS:
        name = " ".join(["gandissect", *command, "--help"])
        result[name] = round(seconds([*python, "-m", "gandissect", *command, "--help"],
                                     args.repeats), 3)
        print(f"{name:45s} {result[name]:6.3f} s")
    slowest = max(v for k, v in result.items() if k.startswith("gandissect"))
    for name, key in (("python -c pass", "python"), ("python -c 'import torch'", "import torch")):
        print(f"{name:45s} {result[key]:6.3f} s")
    result["slowest_help_over_torch_import"] = round(slowest / result["import torch"], 3)
    print(f"slowest help: {slowest:.3f} s, {result['slowest_help_over_torch_import']:.2f}x the "
          "torch import alone")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
