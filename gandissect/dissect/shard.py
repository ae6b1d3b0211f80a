"""Splitting a dissection's samples across processes, and merging what they counted.

With ``torchrun --nproc_per_node K -m gandissect dissect ...`` every process runs the same
passes on its own share of the samples: the batches ``[b * batch, (b + 1) * batch)`` with
``b % K == rank`` (so a share never depends on timing, and batch boundaries match a
one-process run). After each pass the processes exchange their statistics' states
(``all_gather_object`` on the default ``torch.distributed`` group: gloo on CPU, NCCL on GPU) and
every process folds them in rank order with the statistics' ``merge``. Counts, quantile-sketch
bins and top-k lists merge exactly, so every process ends with the statistics of the whole
sample and the same thresholds for the next pass; only float sums (the mean activation map)
may differ in their last bits, by the order of addition.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch

from gandissect.errors import UserError

__all__ = ["Shard", "init_from_environment"]


@dataclass(frozen=True)
class Shard:
    """This process's place among ``world`` processes (``Shard()``: the only one)."""

    rank: int = 0
    world: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.rank < self.world:
            raise UserError(f"rank {self.rank} is not in 0..{self.world - 1}")

    @classmethod
    def current(cls) -> Shard:
        """The default process group's rank and size, or the only process when there is none."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        return cls()

    @property
    def single(self) -> bool:
        return self.world == 1

    def ids(self, n: int, batch: int) -> torch.Tensor:
        """The sample ids this process handles, in order: every ``world``-th batch."""
        starts = range(self.rank * batch, n, self.world * batch)
        if not starts:
            return torch.zeros(0, dtype=torch.int64)
        return torch.cat([torch.arange(s, min(s + batch, n)) for s in starts])

    def key(self) -> dict[str, Any]:
        """What a cache entry of this share adds to its key (nothing for a single process)."""
        return {} if self.single else {"shard": [self.rank, self.world]}

    def lock_name(self) -> str:
        """The lock file this process holds in a folder it writes to: rank 0 takes the same
        ``.lock`` as a one-process job (so a sharded and a plain job on one folder clash), the
        other ranks their own."""
        return ".lock" if self.rank == 0 else f".lock-{self.rank}-of-{self.world}"

    def gather(self, obj: Any) -> list[Any]:
        """Every process's ``obj``, in rank order (collective: every process must call it)."""
        if self.single:
            return [obj]
        import torch.distributed as dist

        gathered: list[Any] = [None] * self.world
        dist.all_gather_object(gathered, obj)
        return gathered


def init_from_environment(device: str) -> tuple[Shard, str]:
    """Join the process group ``torchrun`` describes in the environment (``WORLD_SIZE`` > 1).

    Returns the shard and the device this process should use: ``cuda`` becomes
    ``cuda:LOCAL_RANK`` (one GPU per process, NCCL); anything else uses gloo. Without torchrun's
    variables nothing happens and the single-process shard comes back.
    """
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Shard(), device
    if not dist.is_available():
        raise RuntimeError("this PyTorch build has no torch.distributed; run one process")
    if not dist.is_initialized():
        on_gpu = torch.device(device).type == "cuda"
        if on_gpu:
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
            torch.cuda.set_device(torch.device(device))
        dist.init_process_group("nccl" if on_gpu else "gloo")
    return Shard.current(), device
