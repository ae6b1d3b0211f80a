"""Long jobs lose nothing: killed with SIGKILL at a random moment and started again, dissect,
netdissect, ace and training finish with the same result as an uninterrupted run; a second job
on the same output folder is refused while the first runs.

Each job runs as ``python -m gandissect ...`` in a subprocess, checkpointing every 0.1 s. The
uninterrupted run is timed from its first checkpoint to its end; the interrupted one is killed
at a moment drawn uniformly from 10-60% of that time past its own first checkpoint (seeded, so
a failure can be replayed), then run again to the end. Both results are compared byte for
byte (JSON reports, trained weights).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

TESTS = Path(__file__).resolve().parent
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
       "OMP_NUM_THREADS": "1"}
TOY = ["--generator", "conftest:toy_generator", "--segmenter", "conftest:toy_segmenter"]


@dataclass
class Job:
    """A command line in a working folder, the file whose appearance shows it has
    checkpointed, and how to read its result."""

    argv: Callable[[Path], list[str]]
    checkpointed: Callable[[Path], bool]
    result: Callable[[Path, str], bytes]


def _any_file(pattern: str) -> Callable[[Path], bool]:
    return lambda folder: any(folder.glob(pattern))


def _file(name: str) -> Callable[[Path, str], bytes]:
    return lambda folder, stdout: (folder / name).read_bytes()


def _weights(folder: Path, stdout: str) -> bytes:
    """The exported weights and their metadata, less the wall-clock training time."""
    from safetensors import safe_open

    with safe_open(folder / "run" / "sceneworld_classifier.safetensors", "pt") as weights:
        metadata = {k: v for k, v in weights.metadata().items() if k != "training_seconds"}
        tensors = b"".join(weights.get_tensor(k).numpy().tobytes() for k in sorted(weights.keys()))
    return json.dumps(metadata, sort_keys=True).encode() + tensors


JOBS = {
    "dissect": Job(
        lambda d: ["dissect", *TOY, "--samples", "2400", "--batch", "16", "--no-html",
                   "--checkpoint-seconds", "0.1", "--out", str(d / "out")],
        _any_file("out/cache/layer-*/state.pt"),
        _file("out/dissect.json")),
    "netdissect": Job(
        lambda d: ["netdissect", "--classifier", "sceneworld", "--layer", "layer2",
                   "--n", "160", "--batch", "16", "--no-html", "--quiet",
                   "--checkpoint-seconds", "0.1", "--out", str(d / "out")],
        _any_file("out/cache/netdissect-*.pt"),
        _file("out/dissect.json")),
    "ace": Job(
        lambda d: ["ace", *TOY, "--concept", "tree", "--units", "10", "--samples", "600",
                   "--dissect-samples", "320", "--selection-samples", "60", "--epochs", "6",
                   "--checkpoint-seconds", "0.1", "--json", "--quiet", "--cache",
                   str(d / "cache")],
        _any_file("cache/dissect/layer-*/state.pt"),
        lambda folder, stdout: stdout.encode()),
    "train": Job(
        lambda d: ["train", "classifier", "--run", str(d / "run"), "--kimg", "0.25",
                   "--threads", "1", "--checkpoint-minutes", "0.002"],
        _any_file("run/checkpoint.pt"),
        _weights),
}


def _start(argv: list[str]) -> subprocess.Popen:
    """The command in a subprocess whose output goes to files (a pipe nobody reads while the
    test polls could fill up and stall the job)."""
    out = tempfile.TemporaryFile("w+")  # noqa: SIM115 (closed by _read)
    err = tempfile.TemporaryFile("w+")  # noqa: SIM115
    process = subprocess.Popen([sys.executable, "-m", "gandissect", *argv], env=ENV, text=True,
                               stdout=out, stderr=err)
    process.output = (out, err)
    return process


def _read(stream) -> str:
    stream.seek(0)
    text = stream.read()
    stream.close()
    return text


def _finish(process: subprocess.Popen) -> str:
    process.wait(timeout=600)
    stdout, stderr = (_read(stream) for stream in process.output)
    assert process.returncode == 0, stderr[-3000:]
    return stdout


def _check_real(name: str, result: bytes) -> None:
    """The compared results are real ones (two equal failures must not pass)."""
    if name == "train":
        assert len(result) > 10000  # a safetensors file of the classifier's weights
        return
    data = json.loads(result)
    if name == "ace":
        assert data["concept"] == "tree" and data["removed_fraction"]["iou"] > 0
    else:
        assert len(data["layers"][0]["units"]) > 0


def _wait_for_checkpoint(job: Job, folder: Path, process: subprocess.Popen, name: str) -> None:
    deadline = time.monotonic() + 300
    while not job.checkpointed(folder):
        assert process.poll() is None, f"{name} ended before its first checkpoint"
        assert time.monotonic() < deadline
        time.sleep(0.02)


@pytest.mark.parametrize("name", list(JOBS))
def test_killed_job_resumes_to_the_uninterrupted_result(name, tmp_path):
    job = JOBS[name]
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    process = _start(job.argv(whole))
    _wait_for_checkpoint(job, whole, process, name)
    checkpointed = time.monotonic()
    expected = job.result(whole, _finish(process))
    work = time.monotonic() - checkpointed  # from the first checkpoint to the end
    _check_real(name, expected)

    # kill past the first checkpoint (a real resume), before the end
    moment = random.Random(f"{name}-kill").uniform(0.1, 0.6)
    process = _start(job.argv(broken))
    _wait_for_checkpoint(job, broken, process, name)
    time.sleep(moment * work)
    assert process.poll() is None, f"{name} finished before it could be killed; make it longer"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL

    assert job.result(broken, _finish(_start(job.argv(broken)))) == expected
    assert not list(broken.rglob("*.tmp")), "a temporary file was left behind"


# the folder each job writes to, and so locks
LOCKED = {"dissect": "out", "netdissect": "out", "ace": "cache/ace", "train": "run"}


@pytest.mark.parametrize("name", list(LOCKED))
def test_a_job_on_a_folder_another_job_holds_is_refused(name, tmp_path):
    from gandissect.fileio import FolderLock

    folder = tmp_path / LOCKED[name]
    with FolderLock(folder):  # as the running job would hold it
        second = subprocess.run([sys.executable, "-m", "gandissect", *JOBS[name].argv(tmp_path)],
                                env=ENV, text=True, capture_output=True, timeout=300)
    assert second.returncode != 0
    assert f"another job is writing to {folder}" in second.stderr
    assert "Traceback" not in second.stderr
    assert sorted(p.name for p in folder.iterdir()) == [".lock"]  # nothing written


def test_two_dissections_on_one_folder_do_not_interleave(tmp_path):
    """Two real jobs: the second is refused while the first runs."""
    argv = [*JOBS["dissect"].argv(tmp_path), "--samples", "20000"]  # outlives an import
    first = _start(argv)
    try:
        deadline = time.monotonic() + 300
        while not JOBS["dissect"].checkpointed(tmp_path):  # it holds its lock by now
            assert first.poll() is None, _read(first.output[1])[-2000:]
            assert time.monotonic() < deadline
            time.sleep(0.02)
        second = subprocess.run([sys.executable, "-m", "gandissect", *argv], env=ENV,
                                text=True, capture_output=True, timeout=300)
        assert first.poll() is None, "the first job ended before the second was tried"
    finally:
        first.kill()
        first.wait()
        for stream in first.output:
            stream.close()
    assert second.returncode != 0 and "another job is writing to" in second.stderr
    assert not (tmp_path / "out" / "dissect.json").exists()


def test_a_temporary_left_by_a_killed_write_goes_with_the_next_write(tmp_path):
    from gandissect.fileio import load_state, save_state

    left = tmp_path / ".state.pt.k1ll3d.tmp"  # as a SIGKILL during save_state leaves it
    left.write_bytes(b"half a checkpoint")
    other = tmp_path / ".other.pt.k1ll3d.tmp"  # another file's: not ours to remove
    other.write_bytes(b"x")
    save_state(tmp_path / "state.pt", {"done": 3})
    assert load_state(tmp_path / "state.pt") == {"done": 3}
    assert not left.exists() and other.exists()


def test_images_are_saved_whole_in_the_format_their_suffix_names(tmp_path):
    from PIL import Image

    from gandissect.fileio import save_image

    picture = Image.new("RGB", (5, 3), (200, 40, 40))
    save_image(tmp_path / "a.png", picture)
    save_image(tmp_path / "b.JPG", picture)
    assert Image.open(tmp_path / "a.png").format == "PNG"
    assert Image.open(tmp_path / "b.JPG").format == "JPEG"
    assert np.array_equal(np.asarray(Image.open(tmp_path / "a.png")), np.asarray(picture))
    with pytest.raises(ValueError, match="end it in .png"):
        save_image(tmp_path / "c.txt", picture)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.JPG"]  # no temporaries
