"""The app under load: concurrent sessions painting edits through its API (latency, throughput,
errors, cross-talk, server memory).

    python benchmarks/bench_app_load.py [--clients 8] [--seconds 60] [--toy] [--canvas 512]

The app is started as a user starts it (``python -m gandissect.app``, served on 127.0.0.1 only) in a
subprocess whose resident memory (``VmRSS``) is sampled throughout. Each client is a thread with
its own ``gradio_client.Client``, hence its own session, and its own edit: scene seed, painted
box, brush, mode (remove or draw), strength and number of units.

1. Alone: one client does every edit in turn, with nobody else on the server; its outputs are
   what each edit must give (this also warms the caches up).
2. Load: all clients loop together for ``--seconds`` (at most ``--max-edits`` edits each):
   show the scene, press Remove or Draw, and check every output against the edit done alone:
   the pictures pixel for pixel (the app sends PNG, which is lossless, so the tolerance is
   zero), the units table and the status text. A difference is cross-talk between sessions;
   an exception is an error.

Figures: edits (a show and a press: two requests), errors (edits that raised), mismatches
(outputs that differ), median and p95 latency of a press (``edit``) and of a scene change
(``show``), under load and alone, throughput, and the server's RSS at the start and end of the
load, its growth after ``--warmup`` seconds and its slope (least squares) over that part; memory
is flat when that growth stays under ``--max-growth-mb``. The edits run on the shipped
SceneWorld generator when its weights exist, else on the same architecture with random weights
(as ``bench_app.py``; latency does not depend on the weights), with the shipped segmenter;
``--toy`` runs the tests' toy models instead (64 px, fast).
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from bench_app import percentiles
from gradio_client import Client
from PIL import Image

import gandissect.app  # noqa: F401  (switches analytics and Hugging Face calls off for clients too)
from gandissect.app.canvas import paint_value

ROOT = Path(__file__).resolve().parents[1]
MODES = ("remove", "draw")
IMAGES = ("before", "edited", "download", "native")  # pictures (compared by their pixels)
REQUEST_TIMEOUT_S = 120


def random_generator():
    """Plug-in factory ``bench_app_load:random_generator``: the shipped architecture with fixed
    random weights (``bench_app.py``'s stand-in, served as ``python -m gandissect.app`` serves
    a model)."""
    import torch

    from gandissect.train.gan import stand_in_generator

    generator = stand_in_generator()
    with torch.no_grad():  # random pixels reach about 3.4, past the plug-in loader's check
        side = generator.resolution
        getattr(generator, f"output_{side}x{side}").conv.weight.mul_(0.5)
    return generator


# ------------------------------------------------------------------------------- the server

def shipped_generator_exists() -> bool:
    """Whether the shipped SceneWorld generator's weights are there."""
    from gandissect.models.registry import shipped_path

    return shipped_path("generator").exists()


def server_command(models: str, port: int, canvas: int, samples: int,
                   cache: Path) -> tuple[list[str], str]:
    """``python -m gandissect.app`` for ``models`` ("toy", "shipped" or "random") and its
    PYTHONPATH."""
    command = [sys.executable, "-m", "gandissect.app", "--host", "127.0.0.1", "--port", str(port),
               "--canvas", str(canvas), "--samples", str(samples), "--cache", str(cache),
               "--device", "cpu"]
    if models == "toy":
        return command + ["--generator", "conftest:toy_generator", "--segmenter",
                          "conftest:toy_segmenter"], str(ROOT / "tests")
    if models == "random":
        return command + ["--generator", "bench_app_load:random_generator"], str(ROOT /
                                                                                 "benchmarks")
    return command, ""


@dataclass
class Server:
    """A running ``python -m gandissect.app`` subprocess."""

    process: subprocess.Popen
    url: str
    folder: Path  # its cache, temporary files (downloads, Gradio's cache) and log

    def rss_mb(self) -> float:
        """The server's resident memory, in MB (``VmRSS`` of ``/proc/PID/status``)."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS line")

    def files_mb(self) -> float:
        """What the server has written to its temporary folders, in MB."""
        return sum(p.stat().st_size for p in (self.folder / "tmp").rglob("*")
                   if p.is_file()) / 2**20

    def log(self) -> str:
        return (self.folder / "server.log").read_text(errors="replace")


def _answers(url: str) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never a proxy
    try:
        with opener.open(url, timeout=2) as reply:
            return reply.status == 200
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def serve(models: str, folder: Path, canvas: int = 512, samples: int = 200, threads: int = 1,
          malloc_arenas: int | None = None, startup_s: float = 600,
          stop_s: float = 3) -> Iterator[Server]:
    """Start the app in a subprocess on a free port of 127.0.0.1, wait until it answers, and
    stop it on leaving, whatever happened: SIGINT (Ctrl-C), then SIGKILL after ``stop_s``
    seconds. (Gradio's close waits 5 s for the streams the closed clients leave open; nothing
    is lost by not waiting: everything the server writes lies in ``folder``.)

    ``malloc_arenas`` (glibc's ``MALLOC_ARENA_MAX``): by default glibc gives each of Gradio's
    worker threads an arena of its own as it first runs a request, which adds some 40 MB of RSS
    over the first 20 seconds or so of load and then stops; with 1 or 2 arenas that warm-up
    all but disappears, and what is left of RSS growth is what the app and Gradio keep.
    """
    port = _free_port()
    command, path = server_command(models, port, canvas, samples, folder / "cache")
    tmp = folder / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TMPDIR": str(tmp),
           "GRADIO_TEMP_DIR": str(tmp / "gradio"), "PYTHONPATH": path}
    if malloc_arenas is not None:
        env["MALLOC_ARENA_MAX"] = str(malloc_arenas)
    with open(folder / "server.log", "w") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log,
                                   stderr=subprocess.STDOUT)
    server = Server(process, f"http://127.0.0.1:{port}/", folder)
    try:
        deadline = time.monotonic() + startup_s
        while not _answers(server.url):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the app did not start:\n{server.log()[-3000:]}")
            time.sleep(0.3)
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=stop_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


class RssSampler(threading.Thread):
    """Samples the server's RSS every ``interval`` seconds: ``samples`` of (seconds, MB)."""

    def __init__(self, server: Server, interval: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.server, self.interval = server, interval
        self.samples: list[tuple[float, float]] = []
        self._done = threading.Event()
        self._start = time.monotonic()

    def run(self) -> None:
        while not self._done.is_set():
            try:
                self.samples.append((time.monotonic() - self._start, self.server.rss_mb()))
            except (OSError, RuntimeError):
                return  # the server is gone
            self._done.wait(self.interval)

    def stop(self) -> list[tuple[float, float]]:
        self._done.set()
        self.join()
        return self.samples


def memory_summary(samples: list[tuple[float, float]], warmup_s: float) -> dict[str, float]:
    """RSS at the start and end of the load, its growth after ``warmup_s`` and the slope
    (least squares, MB per minute) of the samples after it."""
    settled = [(t, mb) for t, mb in samples if t >= warmup_s] or samples[-2:]
    t, mb = np.array(settled).T
    slope = float(np.polyfit(t, mb, 1)[0]) * 60 if len(settled) > 1 else 0.0
    return {"start_mb": round(samples[0][1], 1), "after_warmup_mb": round(settled[0][1], 1),
            "end_mb": round(samples[-1][1], 1), "max_mb": round(max(m for _, m in samples), 1),
            "growth_after_warmup_mb": round(samples[-1][1] - settled[0][1], 1),
            "slope_mb_per_min": round(slope, 2), "samples": len(samples),
            "per_second_mb": [round(mb, 1) for _, mb in _every(samples, 1.0)]}


def _every(samples: list[tuple[float, float]], seconds: float) -> list[tuple[float, float]]:
    """The first sample of each ``seconds``-long interval."""
    picked, next_t = [], 0.0
    for t, mb in samples:
        if t >= next_t:
            picked.append((t, mb))
            next_t = t + seconds
    return picked


# ------------------------------------------------------------------------------- the edits

@dataclass(frozen=True)
class ClientEdit:
    """One client's edit: scene ``seed``, a painted box (top, bottom, left, right) in canvas
    pixels, the brush ``concept``, ``mode``, ``strength`` and ``units``."""

    seed: int
    box: tuple[int, int, int, int]
    concept: str
    mode: str
    strength: float
    units: int

    def paint(self, side: int) -> str:
        """The paint over the edit's box on a ``side``-pixel canvas, as the page sends it
        (``gandissect.app.canvas``)."""
        top, bottom, left, right = self.box
        mask = np.zeros((side, side), bool)
        mask[top:bottom, left:right] = True
        return paint_value(mask)


def client_edits(n: int, brushes: list[str], max_units: int, side: int) -> list[ClientEdit]:
    """``n`` different edits: seeds, boxes, brushes, modes, strengths and unit counts vary."""
    edits = []
    for i in range(n):
        left = (i % 4) * side // 8
        box = (side // 4, 3 * side // 4, left, left + side // 2)  # across the horizon
        mode = MODES[i % 2]
        edits.append(ClientEdit(seed=3 + 7 * i, box=box,
                                concept=brushes[(i // 2) % len(brushes)], mode=mode,
                                strength=1.0 - 0.05 * i if mode == "draw" else 1.0,
                                units=min(max_units, 12 + 2 * i)))
    return edits


def connect(server: Server, downloads: Path) -> Client:
    """A new API client (a new session) downloading its outputs into ``downloads``."""
    return Client(server.url, analytics_enabled=False, verbose=False,
                  download_files=str(downloads))


def close(clients: list[Client]) -> None:
    """Close ``clients`` at once (each waits up to a second for its heartbeat to stop)."""
    closing = [threading.Thread(target=client.close) for client in clients]
    for thread in closing:
        thread.start()
    for thread in closing:
        thread.join()


def brush_settings(client: Client) -> tuple[list[str], int, int]:
    """The app's brushes, the most units a brush takes (from its config) and the canvas side
    (from a scene's canvas)."""
    props = {c["props"].get("elem_id"): c["props"] for c in client.config["components"]}
    if "brush-concept" not in props:
        raise RuntimeError(f"the app has no Paint tab: {props.get('problem', {}).get('value')}")
    brushes = [value for _, value in props["brush-concept"]["choices"]]
    canvas = _call(client, "/show_scene", 0)[0]
    side = int(re.search(r'data-side="(\d+)"', canvas).group(1))
    return brushes, int(props["brush-units"]["maximum"]), side


def _call(client: Client, api_name: str, *args: object) -> tuple:
    # a server that stops answering fails the request instead of hanging the load test
    return client.submit(*args, api_name=api_name).result(timeout=REQUEST_TIMEOUT_S)


Outputs = dict[str, object]  # output name -> value; pictures as their PNG bytes


def _read(reply: tuple) -> Outputs:
    """A reply's pictures (the canvas's, decoded from their data URIs, and the two downloads)
    and its texts."""
    canvas, used, status, download, native = reply
    uris = dict(re.findall(r'class="gd-(after|before)"[^>]*><img alt="[^"]*" src="([^"]+)"',
                           canvas))
    outputs: Outputs = {"edited": base64.b64decode(uris["after"].partition(",")[2]),
                        "before": base64.b64decode(uris["before"].partition(",")[2]),
                        "download": Path(download).read_bytes(),
                        "native": Path(native).read_bytes()}
    outputs.update(status=status, units=used["data"])
    return outputs


def do_edit(client: Client, edit: ClientEdit, paint: str) -> tuple[Outputs, Outputs,
                                                                     float, float]:
    """Show the edit's scene, then press the brush with ``paint``: what each returned and how
    long each took (ms)."""
    start = time.perf_counter()
    shown = _call(client, "/show_scene", edit.seed)
    middle = time.perf_counter()
    pressed = _call(client, f"/{edit.mode}", paint, edit.concept, edit.strength, edit.units)
    end = time.perf_counter()
    return _read(shown), _read(pressed), (middle - start) * 1000, (end - middle) * 1000


def picture_difference(got: bytes, expected: bytes) -> str | None:
    """None when two encoded pictures have the same pixels, else how they differ."""
    if got == expected:
        return None
    a, b = (np.asarray(Image.open(io.BytesIO(v)).convert("RGB"), np.int16)
            for v in (got, expected))
    if a.shape != b.shape:
        return f"shape {a.shape} != {b.shape}"
    return f"max difference {np.abs(a - b).max()}" if not np.array_equal(a, b) else None


def differences(got: Outputs, expected: Outputs) -> list[str]:
    """The outputs that differ; pictures are compared by their pixels, exactly."""
    found = []
    for name, value in expected.items():
        if name in IMAGES:
            detail = picture_difference(got[name], value)
            if detail is not None:
                found.append(f"{name} ({detail})")
        elif got[name] != value:
            found.append(f"{name} ({got[name]!r} != {value!r})")
    return found


# ------------------------------------------------------------------------------- the load

@dataclass
class ClientRun:
    """What one client saw under load."""

    edit: ClientEdit
    edits: int = 0
    show_ms: list[float] = field(default_factory=list)
    edit_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)


def _client_loop(client: Client, run: ClientRun, paint: str, expected: tuple[Outputs, Outputs],
                 start: threading.Barrier, clock: list[float], seconds: float,
                 max_edits: int) -> None:
    start.wait()
    deadline = clock[0] + seconds
    failures_in_a_row = 0
    while time.monotonic() < deadline and run.edits < max_edits and failures_in_a_row < 5:
        try:
            shown, pressed, show_ms, edit_ms = do_edit(client, run.edit, paint)
        except Exception as error:  # any failure under load is an error to report
            run.errors.append(f"{type(error).__name__}: {error}")
            failures_in_a_row += 1
            continue
        failures_in_a_row = 0
        run.edits += 1
        run.show_ms.append(show_ms)
        run.edit_ms.append(edit_ms)
        for step, got, want in (("show", shown, expected[0]), ("press", pressed, expected[1])):
            run.mismatches += [f"seed {run.edit.seed} {step}: {d}" for d in
                               differences(got, want)]


@dataclass
class Alone:
    """Every client's edit, its paint, and its outputs and times done alone."""

    canvas: int  # the painting canvas's side, in pixels
    edits: list[ClientEdit]
    paints: list[str]
    expected: list[tuple[Outputs, Outputs]]  # (show, press) outputs
    show_ms: list[float]
    edit_ms: list[float]


def edits_alone(server: Server, clients: int, folder: Path) -> Alone:
    """Make ``clients`` different edits and do each alone, one after the other, on one new
    session: what each must give under load."""
    solo = connect(server, folder / "alone")
    try:
        brushes, max_units, side = brush_settings(solo)
        edits = client_edits(clients, brushes, max_units, side)
        paints = [edit.paint(side) for edit in edits]
        done = [do_edit(solo, edit, paint) for edit, paint in zip(edits, paints)]
    finally:
        solo.close()
    return Alone(side, edits, paints, [(shown, pressed) for shown, pressed, _, _ in done],
                 [d[2] for d in done], [d[3] for d in done])


def run_clients(server: Server, alone: Alone, seconds: float, max_edits: int,
                folder: Path) -> tuple[list[ClientRun], float, list[tuple[float, float]]]:
    """All clients at once, each on its own session, for ``seconds``: their runs, the seconds
    it took and the server's RSS samples meanwhile."""
    runs = [ClientRun(edit) for edit in alone.edits]
    sessions = [connect(server, folder / f"client{i}") for i in range(len(runs))]
    clock: list[float] = []
    start = threading.Barrier(len(runs), action=lambda: clock.append(time.monotonic()))
    sampler = RssSampler(server)
    try:
        threads = [threading.Thread(target=_client_loop, args=(c, r, paint, e, start, clock,
                                                               seconds, max_edits))
                   for c, r, paint, e in zip(sessions, runs, alone.paints, alone.expected)]
        sampler.start()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - clock[0]
    finally:
        samples = sampler.stop()
        close(sessions)
    return runs, elapsed, samples


def load_test(server: Server, clients: int, seconds: float, warmup_s: float,
              max_edits: int, folder: Path) -> dict:
    """Every edit alone, then all together for ``seconds``; the figures (see the module)."""
    folder.mkdir(parents=True, exist_ok=True)
    alone = edits_alone(server, clients, folder)
    files_before = server.files_mb()
    runs, elapsed, samples = run_clients(server, alone, seconds, max_edits, folder)

    # cross-talk can only show if every client's edit gives its own, visible result
    edited = [pressed["edited"] for _, pressed in alone.expected]
    unchanged = [e.seed for e, (shown, pressed) in zip(alone.edits, alone.expected)
                 if picture_difference(pressed["edited"], shown["edited"]) is None]
    edit_ms = [t for r in runs for t in r.edit_ms]
    show_ms = [t for r in runs for t in r.show_ms]
    n_edits = sum(r.edits for r in runs)
    errors = [e for r in runs for e in r.errors]
    mismatches = [m for r in runs for m in r.mismatches]
    return {
        "clients": clients, "seconds": round(elapsed, 1), "canvas": alone.canvas,
        "edits": n_edits, "requests": 2 * n_edits,  # answered; an error is a failed edit
        "errors": len(errors), "error_examples": errors[:3],
        "mismatches": len(mismatches), "mismatch_examples": mismatches[:3],
        "edits_per_client": [r.edits for r in runs],
        "edits_distinct": len(set(edited)) == len(edited), "edits_without_effect": unchanged,
        "latency": {"edit": percentiles(edit_ms) if edit_ms else None,
                    "show": percentiles(show_ms) if show_ms else None,
                    "edit_alone": percentiles(alone.edit_ms),
                    "show_alone": percentiles(alone.show_ms)},
        "throughput": {"edits_per_s": round(n_edits / elapsed, 2),
                       "requests_per_s": round(2 * n_edits / elapsed, 2)},
        "rss": memory_summary(samples, warmup_s),
        "server_files_mb": {"start": round(files_before, 1),
                            "end": round(server.files_mb(), 1)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--warmup", type=float, default=None,
                        help="seconds of load before memory must stay flat (default: a fifth)")
    parser.add_argument("--max-edits", type=int, default=10000, help="per client")
    parser.add_argument("--max-growth-mb", type=float, default=32,
                        help="memory is flat when the server's RSS grows less after the "
                             "warm-up")
    parser.add_argument("--toy", action="store_true", help="the tests' toy models")
    parser.add_argument("--canvas", type=int, default=512)
    parser.add_argument("--threads", type=int, default=1, help="the server's torch threads")
    parser.add_argument("--dissect-samples", type=int, default=200)
    parser.add_argument("--malloc-arenas", type=int, default=None,
                        help="the server's MALLOC_ARENA_MAX (default: glibc's, as users run it)")
    args = parser.parse_args()
    models = "toy" if args.toy else "shipped" if shipped_generator_exists() else "random"
    warmup = args.seconds / 5 if args.warmup is None else args.warmup
    with tempfile.TemporaryDirectory(prefix="bench-app-load-") as folder, \
            serve(models, Path(folder) / "server", args.canvas, args.dissect_samples,
                  args.threads, args.malloc_arenas) as server:
        result = load_test(server, args.clients, args.seconds, warmup, args.max_edits,
                           Path(folder) / "clients")
    result = {"generator": {"toy": "toy (tests/conftest.py)", "shipped": "shipped",
                            "random": "random weights, shipped architecture"}[models],
              "server_threads": args.threads, "malloc_arenas": args.malloc_arenas, **result}
    result["memory_flat"] = result["rss"]["growth_after_warmup_mb"] < args.max_growth_mb
    edit, rss = result["latency"]["edit"] or {}, result["rss"]
    print(f"{result['clients']} clients for {result['seconds']} s: {result['edits']} edits "
          f"({result['requests']} requests), {result['errors']} errors, "
          f"{result['mismatches']} mismatches; press median {edit.get('median_ms')} ms, p95 "
          f"{edit.get('p95_ms')} ms; {result['throughput']['edits_per_s']} edits/s; server RSS "
          f"{rss['start_mb']} -> {rss['end_mb']} MB ({rss['slope_mb_per_min']} MB/min after "
          f"warm-up)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
