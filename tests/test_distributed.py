"""Sharded dissection: ``torchrun --nproc_per_node 2 -m gandissect dissect`` splits the samples
between two processes (gloo on the CPU), merges their statistics and writes the same
dissect.json as one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gandissect.dissect.shard import Shard

TESTS = Path(__file__).resolve().parent
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
       "OMP_NUM_THREADS": "1"}
TOY = ["--generator", "conftest:toy_generator", "--segmenter", "conftest:toy_segmenter"]


@pytest.mark.parametrize("n,batch,world", [(300, 16, 2), (7, 4, 3), (64, 64, 2), (1, 8, 4)])
def test_shards_split_the_samples_into_whole_batches(n, batch, world):
    shares = [Shard(rank, world).ids(n, batch).tolist() for rank in range(world)]
    assert sorted(i for share in shares for i in share) == list(range(n))
    for rank, share in enumerate(shares):  # batch b goes to rank b % world, in order
        expected = [i for i in range(n) if (i // batch) % world == rank]
        assert share == expected


def test_a_rank_outside_the_world_is_refused():
    with pytest.raises(ValueError, match="rank 2 is not in 0..1"):
        Shard(2, 2)


def _dissect(out: Path, processes: int, *extra: str) -> dict:
    argv = ["dissect", *TOY, "--samples", "400", "--batch", "16", "--no-html", "--out", str(out),
            *extra]
    if processes == 1:
        command = [sys.executable, "-m", "gandissect", *argv]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                   "--nproc_per_node", str(processes), "-m", "gandissect", *argv]
    done = subprocess.run(command, env=ENV, text=True, capture_output=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((out / "dissect.json").read_text())


@pytest.mark.parametrize("mode", ["quantile", "iqr"])
def test_two_processes_write_the_dissection_of_one(tmp_path, mode):
    extra = ["--threshold", mode] + (["--selection-samples", "200"] if mode == "iqr" else [])
    one = _dissect(tmp_path / "one", 1, *extra)
    two = _dissect(tmp_path / "two", 2, *extra)
    assert two == one  # labels, IoUs, thresholds, quantiles, top images: all exact
    assert any(u["interpretable"] for u in one["layers"][0]["units"])
    # each process kept its own share of the labels and statistics
    shares = sorted(p.name for p in (tmp_path / "two" / "cache").glob("labels-*"))
    assert len(shares) == (2 if mode == "quantile" else 4)
    stats_one = torch.load(tmp_path / "one" / "stats_layer4.pt", weights_only=True)
    stats_two = torch.load(tmp_path / "two" / "stats_layer4.pt", weights_only=True)
    torch.testing.assert_close(stats_two["mean_map"], stats_one["mean_map"])  # float sums
